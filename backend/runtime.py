"""The living image: live Protos + change journal + signed image generations.

Every change is applied and journaled (fsynced) under the manager lock before it is
acknowledged, so ``kill -9`` loses nothing acknowledged. Saving snapshots the graph under the
lock and serializes outside it, so the live system never stalls for a save.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from backend import ops
from backend.bus import EventBus
from backend.codex import Codex, load_personas
from backend.config import BackendConfig
from backend.home import Home
from backend.image import ImageStore
from backend.journal import Journal
from backend.protos import DoesNotUnderstand, Proto, ProtoManager
from backend.state_tree import MAX_DEPTH, depth, set_path
from shared_api.envelope import new_msg_id
from shared_api.errors import EntropicError, InvalidValueError, MethodFailedError
from shared_api.events import BackendLog, CognitiveDissonance, ProtoChanged
from shared_api.events import Progress as ProgressEvent
from shared_api.replies import DoesNotUnderstand as DoesNotUnderstandReply
from shared_api.replies import ImageInfo, ImageSaved, InvokeResult
from shared_api.wire import pack, unpack

log = logging.getLogger(__name__)

DNU_SCORE = 0.5  # an unmet expectation: moderate dissonance


class _Committed:
    """The journaled state of one Proto while methods run on it.

    A method edits the live state in place, uncommitted, until it returns. If it fails, the
    state goes back to this: its own edits are undone, and ``set_state`` writes acknowledged
    meanwhile stay, exactly as a journal replay would rebuild them. Kept as packed bytes
    plus the edits since, so a method that succeeds costs no copy.
    """

    def __init__(self, state: bytes) -> None:
        self.users = 0
        self._base = state
        self._edits: list[bytes] = []

    def record(self, op: ops.Op) -> None:
        """Follow a journaled change of this Proto's state."""
        kind = op["op"]
        if kind == "set_state":
            self._edits.append(pack((op["path"], op["value"])))
        elif kind in ("replace_state", "swap"):
            self._base = pack(op["state"])
            self._edits.clear()

    def state(self) -> dict[str, Any]:
        tree: dict[str, Any] = unpack(self._base)
        for raw in self._edits:
            path, value = unpack(raw)
            with contextlib.suppress(EntropicError):  # replay skips such a record too
                set_path(tree, path, value)
        return tree


class Runtime:
    def __init__(
        self,
        home: Home,
        config: BackendConfig,
        bus: EventBus,
        codices: dict[str, Codex] | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.bus = bus
        self.codices = codices if codices is not None else load_personas()
        self.manager = ProtoManager()
        key = home.image_key()
        self.journal = Journal(home.journal_dir, key)
        self.images = ImageStore(home.image_dir, key, config.image_generations)
        self.image_info = ImageInfo()
        self._save_lock = threading.Lock()
        self._stop = threading.Event()
        #: Wakes the autosaver: a stop, or ``autosave_records`` unsaved journal records.
        self._wake = threading.Event()
        self._autosaver: threading.Thread | None = None
        #: Proto name -> its journaled state, while methods run on it (see ``_Committed``).
        self._committed: dict[str, _Committed] = {}
        #: True while the journal is replayed: a reconstruction, not a change, so nothing
        #: is announced (and nothing can block on an event socket nobody reads yet).
        self._replaying = False
        #: Answers an unknown message instead of ``does_not_understand`` (the Tool Forge).
        self.on_does_not_understand: (
            Callable[[Proto, str, dict[str, Any]], InvokeResult | DoesNotUnderstandReply] | None
        ) = None
        self.manager.subscribe(self._announce)

    # -- startup ----------------------------------------------------------------------------
    def start(self) -> None:
        """Load the newest good image (or seed from the codex files), then replay the journal."""
        loaded = self.images.load_latest()
        info = self.image_info
        info.warnings.extend(loaded.warnings)
        if loaded.payload is not None:
            for proto in loaded.payload["protos"]:
                self.manager.register(proto)
            info.path, info.generation = str(loaded.path), loaded.generation
            info.journal_seq = loaded.journal_seq
            info.loaded_from = str(loaded.path)
            info.fallback_used = bool(loaded.warnings)
        elif loaded.warnings:
            info.warnings.append("no image generation could be verified: starting from codex")
        for name, codex in self.codices.items():
            if name not in self.manager.names():
                self.manager.register(Proto(name, codex))
        needs_save = self._replay(loaded.journal_seq) or loaded.payload is None
        for warning in info.warnings:
            log.warning(warning)
            self.bus.publish(BackendLog(level="warning", message=warning))
        if needs_save:
            self.save_image()
        if self.config.autosave_interval_s > 0 or self.config.autosave_records > 0:
            self._autosaver = threading.Thread(target=self._autosave, name="autosave", daemon=True)
            self._autosaver.start()
            if self._records_due():
                self._wake.set()  # a long replay: save it now, in the background

    def _replay(self, after_seq: int) -> bool:
        """Replay journal records after ``after_seq``. Returns True when an image must be
        saved now (the journal had an untrusted record and was set aside)."""
        started = time.perf_counter()
        report = self.journal.replay(after_seq)
        self._replaying = True
        try:
            with self.manager.lock:
                for seq, op in report.records:
                    try:
                        ops.apply(self.manager, op)
                    except EntropicError as exc:
                        report.warnings.append(
                            f"journal record {seq} ({op.get('op')}) failed: {exc}"
                        )
        finally:
            self._replaying = False
        self.image_info.replayed_records = len(report.records)
        self.image_info.warnings.extend(report.warnings)
        untrusted = report.untrusted
        if untrusted:
            quarantine = self.home.journal_dir / "quarantine" / time.strftime("%Y%m%dT%H%M%S")
            quarantine.mkdir(parents=True, exist_ok=True)
            for segment in self.home.journal_dir.glob("*.log"):
                shutil.move(segment, quarantine / segment.name)
            self.image_info.warnings.append(f"untrusted journal moved to {quarantine}")
        self.journal.open(max(report.last_seq, after_seq) if not untrusted else after_seq)
        if report.records:
            log.info(
                "replayed %d journal records in %.2fs",
                len(report.records),
                time.perf_counter() - started,
            )
        return untrusted

    # -- changes ----------------------------------------------------------------------------
    def commit(self, op: ops.Op) -> Proto:
        """Apply and journal one change atomically; durable when this returns."""
        with self.manager.lock:
            proto = ops.apply(self.manager, op)
            self.journal.append(op)
            if self._committed:
                self._follow(op, proto)
        if self._autosaver is not None and self._records_due():
            self._wake.set()
        return proto

    def _follow(self, op: ops.Op, proto: Proto) -> None:
        """Keep the journaled state of Protos with running methods in step with ``op``."""
        committed = self._committed.get(op["proto"])
        if committed is None:
            return
        if op["op"] == "clone":  # replay clones the journaled state, not uncommitted edits
            proto.state = committed.state()
        else:
            committed.record(op)

    def _announce(self, proto: Proto, change: str, detail: dict[str, Any]) -> None:
        if self._replaying:
            return
        self.bus.publish(
            ProtoChanged(proto=proto.name, version=proto.version, change=change, detail=detail)
        )

    def invoke(
        self, name: str, method: str, args: dict[str, Any]
    ) -> InvokeResult | DoesNotUnderstandReply:
        proto = self.manager.get(name)
        if not proto.understands(method):
            if self.on_does_not_understand is not None:
                return self.on_does_not_understand(proto, method, args)
            return self.does_not_understand(proto, method, args)
        with self.manager.lock:
            committed = self._committed.get(name)
            try:
                before: bytes | None = pack(proto.state)
            except TypeError:  # a method running beside this one left a non-JSON value
                before = None
            if committed is None:  # no method runs on it: the live state is the journaled one
                assert before is not None
                committed = self._committed[name] = _Committed(before)
            committed.users += 1
        try:
            result = proto.invoke(method, args)
        except DoesNotUnderstand as exc:  # the method sent an unknown message onward
            dnu = self.manager.get(exc.proto) if exc.proto in self.manager.names() else proto
            return self.does_not_understand(dnu, exc.message, {})
        except RecursionError:  # e.g. a forged tool's JSON result, 50,000 levels deep
            raise MethodFailedError(
                f"{name}.{method} produced a value nested too deeply to process; return "
                f"data within {MAX_DEPTH} levels of lists and maps.",
                method=method,
            ) from None
        finally:
            try:
                self._persist_state(proto, before, committed)
            finally:
                with self.manager.lock:
                    committed.users -= 1
                    if not committed.users and self._committed.get(name) is committed:
                        del self._committed[name]
        if depth(result) > MAX_DEPTH:
            raise MethodFailedError(
                f"{name}.{method} returned a value nested deeper than {MAX_DEPTH} levels; "
                "return flatter data.",
                method=method,
            )
        try:
            return InvokeResult(proto=name, method=method, result=result, version=proto.version)
        except ValidationError:
            raise MethodFailedError(
                f"{name}.{method} returned a {type(result).__name__}, which is not JSON. "
                "Return dicts, lists, strings, numbers, booleans or None.",
                method=method,
            ) from None

    def _persist_state(self, proto: Proto, before: bytes | None, committed: _Committed) -> None:
        """Journal the state a method left behind, if it changed it; if it cannot be
        journaled, go back to the journaled state (``_Committed``)."""
        with self.manager.lock:
            if self.manager.get(proto.name) is not proto:
                return  # swapped out meanwhile: its edits went to the old object
            try:
                after = pack(proto.state)
            except TypeError:
                self._roll_back(proto, committed)
                raise MethodFailedError(
                    f"A method of {proto.name} stored a non-JSON value in its state; the state "
                    "was rolled back. Store only dicts, lists, strings, numbers, booleans, None."
                ) from None
            if after != before:
                try:
                    self.commit(
                        {"op": "replace_state", "proto": proto.name, "state": unpack(after)}
                    )
                except InvalidValueError as exc:
                    self._roll_back(proto, committed)
                    raise MethodFailedError(
                        f"A method of {proto.name} left its state invalid ({exc.message}); "
                        "the state was rolled back."
                    ) from None

    def _roll_back(self, proto: Proto, committed: _Committed) -> None:
        proto.state = committed.state()
        self.manager.notify(proto, "rolled_back", {})

    def does_not_understand(
        self,
        proto: Proto,
        message: str,
        args: dict[str, Any],
        proposal: dict[str, Any] | None = None,
        forge: dict[str, Any] | None = None,
    ) -> DoesNotUnderstandReply:
        """Publish the dissonance and answer it. ``proposal``: the ``forge_tool`` body that
        would teach the message (a goal for the user); ``forge``: the forge that was tried."""
        known = sorted([*proto.methods, *proto.tools])
        self.bus.publish(
            CognitiveDissonance(
                proto=proto.name,
                source="does_not_understand",
                score=DNU_SCORE,
                views=[
                    f"{proto.name} was asked to {message!r}",
                    f"{proto.name} knows only: {', '.join(known) or 'no methods'}",
                ],
                detail={
                    "message": message,
                    "args": args,
                    **({"proposal": proposal} if proposal else {}),
                    **({"forge": forge} if forge else {}),
                },
            )
        )
        return DoesNotUnderstandReply(
            proto=proto.name,
            message=message,
            args=args,
            known_methods=known,
            proposal=proposal,
            forge=forge,
        )

    # -- image ------------------------------------------------------------------------------
    def save_image(self) -> ImageSaved:
        """Snapshot under the lock, serialize and write outside it."""
        with self._save_lock:
            op_id = new_msg_id()
            started = time.perf_counter()
            self._progress(op_id, 0.0, "snapshot")
            with self.manager.lock:
                seq = self.journal.rotate()
                protos = [p.clone() for p in self.manager.list()]
            payload = {"format": 1, "saved_at": time.time(), "journal_seq": seq, "protos": protos}
            path, generation, nbytes = self.images.save(
                payload, seq, lambda f, m: self._progress(op_id, f, m)
            )
            self.journal.prune(self.images.oldest_journal_seq())
            seconds = time.perf_counter() - started
            info = self.image_info
            info.path, info.generation, info.journal_seq = str(path), generation, seq
            self._progress(op_id, 1.0, f"saved generation {generation} ({nbytes} bytes)", done=True)
            log.info("image generation %d saved: %d bytes in %.3fs", generation, nbytes, seconds)
            return ImageSaved(
                path=str(path),
                generation=generation,
                bytes=nbytes,
                seconds=seconds,
                journal_seq=seq,
            )

    def _progress(self, op_id: str, fraction: float, message: str, done: bool = False) -> None:
        self.bus.publish(
            ProgressEvent(
                op="image_save", op_id=op_id, fraction=fraction, message=message, done=done
            )
        )

    @property
    def dirty(self) -> bool:
        return self.journal.seq > self.image_info.journal_seq

    def _records_due(self) -> bool:
        """True when ``autosave_records`` or more journal records are not in an image."""
        limit = self.config.autosave_records
        return limit > 0 and self.journal.seq - self.image_info.journal_seq >= limit

    def _autosave(self) -> None:
        """Save every ``autosave_interval_s`` while dirty, and after ``autosave_records``
        journal records, so a crash never leaves a long journal to replay."""
        interval = self.config.autosave_interval_s or None
        while not self._stop.is_set():
            timed_out = not self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            if (timed_out and self.dirty) or self._records_due():
                try:
                    self.save_image()
                except Exception as exc:
                    log.exception("autosave failed")
                    self.bus.publish(BackendLog(level="error", message=f"autosave failed: {exc}"))

    def close(self, save: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if self._autosaver is not None:
            self._autosaver.join(timeout=60)
        if save and self.dirty:
            self.save_image()
        self.journal.close()
        log.info("runtime closed (pid %d)", os.getpid())
