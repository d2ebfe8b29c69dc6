"""Running the training subprocess: spawn, stream its progress, watch its memory, cancel it.

The worker runs in its own session (process group), so cancelling or a memory overrun stops
it and the converter it may have started. Nothing it wrote is trusted unless it exited 0
and left ``result.json`` naming a GGUF whose sha256 matches.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from backend.learning.export import sha256_file
from backend.learning.spec import RESULT_FILE, TrainResult, TrainSpec
from shared_api.errors import CancelledError, ModelFailedError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
OnEvent = Callable[[dict[str, Any]], None]
GRACE_S = 10.0


class Trainer(Protocol):
    def __call__(
        self, spec: TrainSpec, on_event: OnEvent, cancel: threading.Event
    ) -> TrainResult: ...


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its direct children, in MiB (0 when gone)."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return 0.0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


class SubprocessTrainer:
    """``python -m backend.learning.worker SPEC`` with a memory cap and a deadline."""

    def __init__(self, *, max_memory_mb: int = 8192, timeout_s: float = 6 * 3600.0) -> None:
        self.max_memory_mb = max_memory_mb
        self.timeout_s = timeout_s

    def __call__(self, spec: TrainSpec, on_event: OnEvent, cancel: threading.Event) -> TrainResult:
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULT_FILE).unlink(missing_ok=True)
        spec_path = out / "spec.json"
        spec_path.write_text(spec.model_dump_json(indent=2))
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_WAIT_POLICY": "PASSIVE",  # spinning OpenMP threads collapse on a busy CPU
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONWARNINGS": "ignore",
        }
        with (
            (out / "worker.log").open("ab") as stderr,
            subprocess.Popen(  # noqa: S603 - our own worker module
                [sys.executable, "-m", "backend.learning.worker", str(spec_path)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
            ) as proc,
        ):
            on_event({"event": "started", "pid": proc.pid})
            last: dict[str, Any] = {}
            reader = threading.Thread(
                target=self._read, args=(proc, on_event, last), name="trainer-out", daemon=True
            )
            reader.start()
            reason = self._watch(proc, cancel)
            reader.join(timeout=30)
        return self._outcome(proc, spec, reason, last)

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], on_event: OnEvent, last: dict[str, Any]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                if event.get("event") == "error":
                    last.update(event)
                try:
                    on_event(event)
                except Exception:
                    log.exception("trainer progress hook failed")

    def _watch(self, proc: subprocess.Popen[bytes], cancel: threading.Event) -> str:
        """Wait for the worker; returns "" or why it was stopped."""
        deadline = time.monotonic() + self.timeout_s
        while proc.poll() is None:
            reason = ""
            if cancel.is_set():
                reason = "cancelled"
            elif time.monotonic() > deadline:
                reason = f"ran past learning.job_timeout_s ({self.timeout_s:.0f} s)"
            elif (mb := rss_mb(proc.pid)) > self.max_memory_mb:
                reason = (
                    f"used {mb:.0f} MiB, over learning.max_memory_mb ({self.max_memory_mb}); "
                    "lower max_seq_len or batch_size, or raise the budget"
                )
            if reason:
                self._stop(proc)
                return reason
            time.sleep(0.25)
        return ""

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()

    @staticmethod
    def _outcome(
        proc: subprocess.Popen[bytes], spec: TrainSpec, reason: str, last: dict[str, Any]
    ) -> TrainResult:
        if reason == "cancelled":
            raise CancelledError("The fine-tune was cancelled; nothing was adopted.")
        if reason:
            raise ModelFailedError(f"The trainer was stopped: it {reason}.")
        result_path = Path(spec.out_dir) / RESULT_FILE
        if proc.returncode != 0 or not result_path.is_file():
            said = last.get("message") or f"exit status {proc.returncode}"
            if proc.returncode is not None and proc.returncode < 0:
                said = f"killed by signal {-proc.returncode}"
            raise ModelFailedError(
                f"The trainer failed ({said}); nothing was adopted. See "
                f"{Path(spec.out_dir) / 'worker.log'}."
            )
        result = TrainResult.model_validate_json(result_path.read_text())
        gguf = Path(result.gguf)
        if not gguf.is_file() or sha256_file(gguf) != result.sha256:
            raise ModelFailedError(f"The trainer's {gguf.name} does not match its result; refused.")
        return result
