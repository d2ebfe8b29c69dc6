"""``ToolForge``: the closed loop in which a persona writes, tests and hot-loads its own tools.

1. The requester's examples (``word_count(text="a b") == 2``) are the oracle. Without any,
   the author (BRICK) first proposes some from the description (schema-constrained). With
   them, it proposes more checks ("probes") that only choose among candidates the examples
   passed. The prompt states the signature the examples imply.
2. Each attempt, the author writes ``candidates`` functions (the first greedy, the others
   sampled); each is parsed (never run) here, and its import slips are mended (``repair``).
3. All of them run against every example and probe in ONE sandboxed run; of those that pass
   every example, the one that agrees with most probes wins (``trial``), and its own tests are
   kept only where they agree with the examples.
4. Otherwise the failing example and what came out go back to the author, up to
   ``max_attempts`` times.
5. The winner is journaled and attached to the requesting Proto as a method whose body runs
   in the sandbox on every call (``call``); its provenance records the examples, the
   candidates tried and which won.

Each step is a ``forge_progress`` event; the end is one ``forge_finished`` event.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from backend.bus import EventBus, current_request
from backend.config import ForgeConfig
from backend.forge.program import (
    Candidate,
    CandidateRejected,
    Example,
    ExampleRejected,
    call_program,
    examples_tests,
    extract_code,
    parse_candidate,
    parse_example,
    report,
    signature,
)
from backend.forge.prompts import (
    anew_prompt,
    clip,
    examples_prompt,
    probe_retry_prompt,
    probes_prompt,
    retry_prompt,
    task_prompt,
)
from backend.forge.repair import repair
from backend.forge.trial import (
    EXAMPLE_TOKENS,
    Choice,
    ProposedExamples,
    Trial,
    trial_candidates,
)
from backend.llm import structured
from backend.llm.base import ChatMessage, GenerationParams
from backend.llm.roles import role_selection
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from backend.sandbox import SecureCodeExecutor
from shared_api.envelope import new_msg_id
from shared_api.errors import (
    AlreadyExistsError,
    CancelledError,
    EntropicError,
    ErrorCode,
    ErrorReply,
    InvalidValueError,
    MethodFailedError,
    ModelOutputError,
    UnavailableError,
)
from shared_api.events import BackendLog, ForgeFinished, ForgeProgress, Progress
from shared_api.replies import (
    DoesNotUnderstand,
    ForgeAccepted,
    InvokeResult,
    ModelSelection,
    ToolResult,
)
from shared_api.tools import TOOL_NAME, Provenance, Tool, ToolAttempt

log = logging.getLogger(__name__)

#: A reply whose fenced code block is complete.
CLOSED_BLOCK = re.compile(r"```[^\n`]*\n.*?\n\s*```", re.DOTALL)


@dataclass
class ForgeJob:
    """One forge under way; ``attempts`` grows as it goes."""

    proto: str
    name: str
    description: str
    examples: list[str]
    attempts_max: int
    id: str
    cancel: threading.Event
    requested_by: str = "user"
    attempts: list[ToolAttempt] = field(default_factory=list)
    examples_source: Literal["given", "proposed", "none"] = "none"
    #: The author's extra checks beside given examples (they only choose among passers).
    probes: list[str] = field(default_factory=list)
    #: Candidates written over all attempts.
    tried: int = 0
    #: The last attempt's winner missed this proposed check: (the check, what came out).
    missed: tuple[str, str] | None = None


class ToolForge:
    def __init__(
        self,
        runtime: Runtime,
        llm: PersonaLLM,
        bus: EventBus,
        config: ForgeConfig,
        executor: SecureCodeExecutor | None = None,
    ) -> None:
        self.runtime = runtime
        self.llm = llm
        self.bus = bus
        self.config = config
        self.executor = executor or SecureCodeExecutor(limits=config.limits)
        self._pool = ThreadPoolExecutor(config.concurrent, thread_name_prefix="forge")
        self._lock = threading.Lock()
        self._forges: dict[str, threading.Event] = {}
        self._sandbox: dict[str, Any] | None = None

    # -- the sandbox in use ------------------------------------------------------------------
    def start(self) -> None:
        """Probe the sandbox runtimes in the background (a real sandboxed run each)."""
        threading.Thread(target=self._probe, name="sandbox-probe", daemon=True).start()

    def _probe(self) -> None:
        status = self.executor.status()
        self._sandbox = status
        if status["runtime"]:
            log.info("tool forge: sandbox runtime %s", status["runtime"])
        else:
            message = (
                "No sandbox runtime works here, so the Tool Forge will not run code. "
                f"Install one, as root: {status['install_hint']}"
            )
            log.warning("%s", message)
            self.bus.publish(BackendLog(level="warning", message=message))

    def status(self) -> dict[str, Any]:
        sandbox = self._sandbox
        with self._lock:
            forging = list(self._forges)
        return {
            "autonomy": self.config.autonomy,
            "author": self.config.author,
            "max_attempts": self.config.max_attempts,
            "forging": forging,
            "sandbox": sandbox if sandbox is not None else {"runtime": None, "probing": True},
        }

    # -- forging -----------------------------------------------------------------------------
    def submit(
        self,
        proto_name: str,
        name: str,
        description: str,
        examples: list[str] | None = None,
        max_attempts: int | None = None,
    ) -> ForgeAccepted:
        """Start a forge in the background; its progress and end arrive as events."""
        proto = self.runtime.manager.get(proto_name)
        self._check_name(proto, name)
        self._check_examples(name, examples or [])
        author = self.runtime.manager.get(self.config.author)
        attempts = max_attempts or self.config.max_attempts
        request_id, cancel = self._register()
        job = ForgeJob(proto.name, name, description, examples or [], attempts, request_id, cancel)
        self._pool.submit(self._run, job, current_request.get())
        return ForgeAccepted(
            request_id=request_id,
            proto=proto.name,
            name=name,
            author=author.name,
            max_attempts=attempts,
        )

    def _register(self) -> tuple[str, threading.Event]:
        request_id = new_msg_id()
        with self._lock:
            cancel = self._forges[request_id] = threading.Event()
        return request_id, cancel

    def _check_name(self, proto: Proto, name: str) -> None:
        if proto.has_method(name):
            raise AlreadyExistsError(
                f"{proto.name} already has a method named {name!r}; a tool never replaces a "
                "method. Pick another name, or remove the method first.",
                proto=proto.name,
            )

    @staticmethod
    def _check_examples(name: str, examples: list[str]) -> None:
        for text in examples:
            try:
                parse_example(name, text)
            except ExampleRejected as exc:
                raise InvalidValueError(str(exc), example=text) from None

    def _run(self, job: ForgeJob, parent: str | None) -> None:
        token = current_request.set(parent)
        try:
            self.run_job(job)
        finally:
            current_request.reset(token)

    def forge(
        self,
        proto: str,
        name: str,
        description: str,
        examples: list[str],
        max_attempts: int,
        request_id: str,
        cancel: threading.Event,
        requested_by: str = "user",
    ) -> ForgeFinished:
        """Run a forge to its end in this thread; publish and return its ``forge_finished``."""
        job = ForgeJob(
            proto, name, description, examples, max_attempts, request_id, cancel, requested_by
        )
        return self.run_job(job)

    def run_job(self, job: ForgeJob) -> ForgeFinished:
        log.info(
            "forge %s: %s.%s, up to %d attempts", job.id, job.proto, job.name, job.attempts_max
        )
        finished: dict[str, Any] = {"request_id": job.id, "proto": job.proto, "name": job.name}
        try:
            tool = self._loop(job)
            finished.update(outcome="attached" if tool else "gave_up", tool=tool)
        except EntropicError as exc:
            cancelled = exc.code == ErrorCode.CANCELLED
            finished.update(outcome="cancelled" if cancelled else "error", error=exc.to_reply())
        except Exception as exc:
            log.exception("forge %s failed", job.id)
            error = ErrorReply(code=ErrorCode.INTERNAL, message=f"The forge broke: {exc}")
            finished.update(outcome="error", error=error)
        finally:
            with self._lock:
                self._forges.pop(job.id, None)
        event = ForgeFinished(attempts=job.attempts, **finished)
        log.info("forge %s: %s after %d attempt(s)", job.id, event.outcome, len(job.attempts))
        self._fraction(job.id, 1.0, f"{job.name}: {event.outcome}", done=True)
        self.bus.publish(event)
        return event

    def _progress(
        self, job: ForgeJob, attempt: int, phase: str, message: str, feedback: str = ""
    ) -> None:
        log.info("forge %s: attempt %d %s: %s", job.id, attempt, phase, message)
        self.bus.publish(
            ForgeProgress.model_validate(
                {
                    "request_id": job.id, "proto": job.proto, "name": job.name,
                    "attempt": attempt, "max_attempts": job.attempts_max, "phase": phase,
                    "message": message, "feedback": feedback,
                }
            )
        )  # fmt: skip
        self._fraction(job.id, (attempt - 1) / job.attempts_max, f"{job.name}: {message}")

    def _loop(self, job: ForgeJob) -> Tool | None:
        sandbox = self.executor.select(self.config.runtime)  # no sandbox: refuse before writing
        author = self.runtime.manager.get(self.config.author)
        selection = role_selection(self.llm, "code", author)
        examples = self._examples(job, author.name, selection)
        probes = self._probes(job, author.name, selection, examples)
        texts, shape = [e.text for e in examples], signature(job.name, examples)
        prompt = task_prompt(job.name, job.description, texts, shape)
        best: Choice | None = None
        for number in range(1, job.attempts_max + 1):
            choice, prompt = self._attempt(
                job, number, author.name, selection, sandbox.name, (examples, probes), prompt
            )
            if choice is not None and (best is None or choice.probes_passed > best.probes_passed):
                best = choice
            if best is not None and (best.missed is None or number == job.attempts_max):
                break
            job.missed = choice.missed if choice is not None else None
            if choice is not None and choice.missed is not None:  # one more try at the probe
                code = choice.candidate.source
                prompt = probe_retry_prompt(job.name, job.description, texts, code, choice.missed,
                                            shape)  # fmt: skip
        if best is None:
            return None
        winner = (best.attempt, best.index)
        return self._attach(job, author.name, selection, best.candidate, best.kept_tests, winner)

    def _attempt(
        self,
        job: ForgeJob,
        number: int,
        author: str,
        selection: ModelSelection,
        sandbox: str,
        checks: tuple[list[Example], list[Example]],
        prompt: str,
    ) -> tuple[Choice | None, str]:
        """One attempt: the greedy candidate first, tried against the examples and probes
        (``checks``) in the sandbox; unless it passed them all, ``candidates - 1`` sampled
        ones are written and all are tried together in one sandbox run. The one chosen if
        any passed, and the prompt for the next attempt."""
        self._check_cancel(job)
        examples, probes = checks
        count, texts = self._count(number), [e.text for e in examples]
        shape = signature(job.name, examples)
        self._progress(job, number, "writing", f"{author} writes {job.name} (attempt {number})")
        started = time.perf_counter()
        replies = [self._write(job, author, selection, prompt, number, 0)]
        parsed = self._prepare(job, number, replies, bool(examples))
        trial = self._try(job, number, sandbox, parsed, checks)
        if count > 1 and (trial is None or trial.winner is None or trial.missed is not None):
            failed = trial.feedback if trial is not None and trial.winner is None else ""
            fresh = anew_prompt(
                job.name, job.description, texts, shape, failed or _last_failure(job)
            )
            extra = self._sampled(job, number, author, selection, fresh, count - 1)
            parsed += self._prepare(job, number, extra, bool(examples), first=2)
            replies += extra
            trial = self._try(job, number, sandbox, parsed, checks)
        job.tried += len(replies)
        if trial is None:
            problem = next(p for p in parsed if isinstance(p, CandidateRejected))
            job.attempts.append(
                ToolAttempt(
                    number=number, stage=problem.stage, passed=False, feedback=str(problem),
                    duration_s=round(time.perf_counter() - started, 3),
                )
            )  # fmt: skip
            self._progress(job, number, "failed", f"refused before running: {problem}",
                           str(problem))  # fmt: skip
            code = extract_code(replies[0]) or replies[0]
            return None, retry_prompt(job.name, job.description, texts, code, str(problem), shape)
        job.attempts.append(
            ToolAttempt(
                number=number, stage="test", passed=trial.winner is not None,
                feedback=trial.feedback, tests=[*texts, *trial.test_names],
                runtime=trial.runtime, duration_s=round(time.perf_counter() - started, 3),
                candidates=trial.outcomes,
            )
        )  # fmt: skip
        if trial.winner is None:
            self._progress(job, number, "failed", "no candidate passed", trial.feedback)
            return None, retry_prompt(
                job.name, job.description, texts, trial.best_source, trial.feedback, shape
            )
        return self._chosen(job, number, trial, len(examples), len(probes)), prompt

    def _chosen(
        self, job: ForgeJob, number: int, trial: Trial, examples: int, probes: int
    ) -> Choice:
        """The attempt's winner (``trial.winner`` is set), said in progress."""
        assert trial.winner is not None
        index, candidate, kept = trial.winner
        outcome = next(o for o in trial.outcomes if o.index == index)
        passed = f"candidate {index} passed all {examples} example(s)"
        if probes:
            passed += f" and {outcome.probes_passed} of {probes} proposed check(s)"
        missed = trial.missed
        if missed is not None and number < job.attempts_max:
            passed += f"; it missed `{missed[0]}` (got {missed[1]}): one more attempt at that"
        self._progress(job, number, "passed", passed)
        return Choice(number, index, candidate, kept, outcome.probes_passed, missed)

    def _prepare(
        self, job: ForgeJob, number: int, replies: list[str], examples: bool, first: int = 1
    ) -> list[Candidate | CandidateRejected]:
        """Each reply parsed (never run) and, when usable, its import slips mended."""
        parsed = [self._parse(job.name, reply, examples) for reply in replies]
        return [
            self._mend(job, number, i, p) if isinstance(p, Candidate) else p
            for i, p in enumerate(parsed, first)
        ]

    def _try(
        self,
        job: ForgeJob,
        number: int,
        sandbox: str,
        parsed: list[Candidate | CandidateRejected],
        checks: tuple[list[Example], list[Example]],
    ) -> Trial | None:
        """The usable candidates against the examples and probes, in one sandbox run; None
        when none is usable."""
        examples, probes = checks
        runnable = [(i, c) for i, c in enumerate(parsed, 1) if isinstance(c, Candidate)]
        if not runnable:
            return None
        self._check_cancel(job)
        testing = f"{len(runnable)} candidate(s) x {len(examples)} example(s) in {sandbox}"
        if probes:
            testing += f", {len(probes)} proposed check(s) to choose among them"
        self._progress(job, number, "testing", testing)
        return trial_candidates(
            self.executor, self.config.limits, sandbox, job.name, runnable, examples, probes
        )

    def _check_cancel(self, job: ForgeJob) -> None:
        if job.cancel.is_set():
            raise CancelledError(f"The forge of {job.name} was cancelled.")

    def _count(self, number: int) -> int:
        """Candidates in attempt ``number``: after the first, the greedy one has already
        failed (or missed a check), so ``retry_candidates`` when set: more samples, more
        chances that one of them gets the case right."""
        if number == 1 or not self.config.retry_candidates:
            return self.config.candidates
        return self.config.retry_candidates

    def _sampled(
        self,
        job: ForgeJob,
        number: int,
        author: str,
        selection: ModelSelection,
        prompt: str,
        count: int,
    ) -> list[str]:
        """The attempt's ``count`` sampled candidates, written from ``prompt``."""
        more = f"{author} writes {count} more candidate(s) of {job.name}"
        self._progress(job, number, "writing", more)
        return [self._write(job, author, selection, prompt, number, i) for i in range(1, count + 1)]

    def _write(
        self,
        job: ForgeJob,
        author: str,
        selection: ModelSelection,
        prompt: str,
        attempt: int,
        index: int,
    ) -> str:
        """One candidate: the first of an attempt greedy, the others sampled. It stops as
        soon as the code block is closed: what a model adds after it is never read."""
        self._check_cancel(job)
        persona = self.runtime.manager.get(author)
        written: list[str] = []
        enough = threading.Event()

        def on_token(piece: str) -> None:
            written.append(piece)
            if job.cancel.is_set() or (piece.count("`") and CLOSED_BLOCK.search("".join(written))):
                enough.set()

        completion = self.llm.manager.generate(
            backend=selection.backend,
            model=selection.model,
            messages=[ChatMessage("user", prompt)],
            system=persona.codex.system_prompt,
            params=GenerationParams(
                max_tokens=self.config.max_tokens,
                temperature=self.config.temperature if index else 0.0,
                seed=attempt * 1000 + index if index else None,
            ),
            caller=author,
            on_token=on_token,
            cancel=enough,
        )
        self._check_cancel(job)
        return completion.text

    def _mend(self, job: ForgeJob, attempt: int, index: int, candidate: Candidate) -> Candidate:
        """The candidate with its import slips mended (``repair``), said in progress."""
        mended = repair(candidate.source)
        if not mended.notes:
            return candidate
        notes = "; ".join(mended.notes)
        self._progress(job, attempt, "writing", f"candidate {index}: mended imports: {notes}")
        return dataclasses.replace(candidate, source=mended.source)

    @staticmethod
    def _parse(name: str, reply: str, examples: bool) -> Candidate | CandidateRejected:
        try:
            return parse_candidate(name, reply, require_tests=not examples)
        except CandidateRejected as exc:
            return exc

    def _examples(self, job: ForgeJob, author: str, selection: ModelSelection) -> list[Example]:
        """The requester's examples as checks, or (none given) the author's proposal from
        the description, a separate schema-constrained step shown in progress."""
        if job.examples:
            job.examples_source = "given"
            self._check_examples(job.name, job.examples)
            return [parse_example(job.name, text) for text in job.examples]
        self._progress(job, 1, "examples", f"{author} proposes examples for {job.name}")
        examples = self._propose(job, author, selection, examples_prompt(job.name, job.description))
        if examples is None:  # no usable proposal: its own tests decide
            job.examples_source = "none"
            return []
        job.examples = [e.text for e in examples]
        job.examples_source = "proposed" if examples else "none"
        listed = "; ".join(job.examples) or "none usable: its own tests decide"
        self._progress(job, 1, "examples", f"examples: {listed}")
        return examples

    def _probes(
        self, job: ForgeJob, author: str, selection: ModelSelection, examples: list[Example]
    ) -> list[Example]:
        """Beside given examples, the author's own checks of the cases the description
        states. They only choose among candidates that passed the examples, so a wrong one
        cannot attach a wrong tool on its own."""
        if job.examples_source != "given" or not self.config.probes:
            return []
        self._progress(job, 1, "examples", f"{author} proposes more checks for {job.name}")
        prompt = probes_prompt(
            job.name, job.description, [e.text for e in examples], signature(job.name, examples)
        )
        given = {e.call for e in examples}
        probes = [
            p for p in self._propose(job, author, selection, prompt) or [] if p.call not in given
        ]
        job.probes = [p.text for p in probes]
        listed = "; ".join(job.probes) or "none usable"
        self._progress(job, 1, "examples", f"proposed checks: {listed}")
        return probes

    def _propose(
        self, job: ForgeJob, author: str, selection: ModelSelection, prompt: str
    ) -> list[Example] | None:
        """Examples the author proposes (schema-constrained), the unusable ones dropped;
        ``None`` when the model produced no proposal at all."""
        persona = self.runtime.manager.get(author)
        try:
            proposal, _ = structured.generate(
                self.llm.manager, ProposedExamples,
                backend=selection.backend, model_name=selection.model,
                prompt=prompt, system=persona.codex.system_prompt,
                max_tokens=EXAMPLE_TOKENS, caller=author, cancel=job.cancel,
            )  # fmt: skip
        except ModelOutputError as exc:
            self._progress(job, 1, "examples", f"no examples proposed: {exc.message}")
            return None
        examples = []
        for text in proposal.examples:
            try:
                examples.append(parse_example(job.name, text))
            except ExampleRejected as exc:
                log.info("forge %s: proposed example dropped: %s", job.id, exc)
        return examples

    def _attach(
        self,
        job: ForgeJob,
        author: str,
        selection: ModelSelection,
        candidate: Candidate,
        kept_tests: str,
        winner: tuple[int, int],
    ) -> Tool:
        examples = [parse_example(job.name, text) for text in job.examples]
        tests = "\n\n".join(t for t in (examples_tests(job.name, examples), kept_tests) if t)
        tool = Tool(
            name=job.name, proto=job.proto, description=job.description,
            source=candidate.source, tests=tests, params=candidate.params,
            attempts=list(job.attempts),
            provenance=Provenance(
                forge_id=job.id, author=author, requested_by=job.requested_by,
                backend=selection.backend, model=selection.model, forged_at=time.time(),
                examples=list(job.examples), examples_source=job.examples_source,
                probes=list(job.probes),
                candidates_tried=job.tried, winner=winner,
            ),
        )  # fmt: skip
        self.runtime.commit(
            {"op": "attach_tool", "proto": job.proto, "tool": tool.model_dump(mode="json")}
        )
        return tool

    def _fraction(self, request_id: str, fraction: float, message: str, done: bool = False) -> None:
        self.bus.publish(
            Progress(op="forge", op_id=request_id, fraction=fraction, message=message, done=done)
        )

    def cancel(self, request_id: str) -> bool:
        with self._lock:
            event = self._forges.get(request_id)
        if event is None:
            return False
        event.set()
        return True

    # -- calling tools -----------------------------------------------------------------------
    def call(self, proto: str, tool: Tool, args: dict[str, Any]) -> ToolResult:
        """Run ``tool(**args)`` in the sandbox. Raises ``MethodFailedError`` when it raises,
        is stopped by a limit, or returns something that is not JSON."""
        program = call_program(tool.name, tool.source, args)
        result = self.executor.run_python(program, self.config.limits, self.config.runtime)
        found, value = report(result)
        if result.exit_code != 0 or not found:
            if result.killed_reason:
                why = f"it was stopped by the sandbox's {result.killed_reason} limit"
            elif result.exit_code == 3:
                why = "it returned a value that is not JSON"
            else:
                why = f"it exited with status {result.exit_code}"
            raise MethodFailedError(
                f"The tool {proto}.{tool.name} failed in the sandbox ({result.runtime}): {why}. "
                "See the traceback; re-forge or remove the tool.",
                method=tool.name,
                traceback=clip(result.stderr, 4000),
            )
        return ToolResult(
            proto=proto,
            name=tool.name,
            result=value,
            stderr=clip(result.stderr, 4000),
            runtime=result.runtime,
            duration_s=result.duration_s,
        )

    # -- doesNotUnderstand -------------------------------------------------------------------
    def on_does_not_understand(
        self, proto: Proto, message: str, args: dict[str, Any]
    ) -> InvokeResult | DoesNotUnderstand:
        """Autonomy on: forge a tool named ``message`` and retry the call. Off: propose it."""
        if not TOOL_NAME.match(message) or proto.has_method(message):
            return self.runtime.does_not_understand(proto, message, args)
        description = (
            f"Answer the message `{message}` that was sent to {proto.name} with the keyword "
            f"arguments {json.dumps(args)}: infer from the name and the arguments what it must "
            "compute, and return that."
        )
        body = {"proto": proto.name, "name": message, "description": description}
        if not self.config.autonomy:
            return self.runtime.does_not_understand(proto, message, args, proposal=body)
        if self.config.author not in self.runtime.manager.names():
            raise UnavailableError(f"The forge's author {self.config.author} does not exist.")
        request_id, cancel = self._register()
        finished = self.forge(
            proto.name, message, description, [], self.config.max_attempts, request_id, cancel,
            requested_by="does_not_understand",
        )  # fmt: skip
        if finished.outcome == "attached":
            reply = self.runtime.invoke(proto.name, message, args)
            return reply
        summary = finished.model_dump(mode="json", include={"request_id", "outcome", "error"})
        summary["attempts"] = len(finished.attempts)
        return self.runtime.does_not_understand(proto, message, args, forge=summary)

    def close(self) -> None:
        with self._lock:
            for event in self._forges.values():
                event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _last_failure(job: ForgeJob) -> str:
    """What the last attempt got wrong: the example it failed, or the proposed check its
    winner missed ("" when there is none)."""
    last = job.attempts[-1] if job.attempts else None
    if last is not None and not last.passed:
        return last.feedback
    if job.missed is not None:
        check, got = job.missed
        return (
            f"It passed the examples, but for the proposed check `{check}` it gave {got}. "
            "That check may itself be wrong: follow the description."
        )
    return ""
