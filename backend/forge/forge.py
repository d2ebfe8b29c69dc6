"""``ToolForge``: the closed loop in which a persona writes, tests and hot-loads its own tools.

1. The author (BRICK) is asked for a function plus tests.
2. The code is parsed (never run) here; tests that assert nothing are refused.
3. The tests run in the sandbox.
4. Failures go back to the author, up to ``max_attempts`` times.
5. On success the tool is journaled and attached to the requesting Proto as a method whose
   body runs in the sandbox on every call (``call``).

Each step is a ``forge_progress`` event; the end is one ``forge_finished`` event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from backend.bus import EventBus, current_request
from backend.config import ForgeConfig
from backend.forge.program import (
    Candidate,
    CandidateRejected,
    call_program,
    extract_code,
    parse_candidate,
    report,
    suite_program,
)
from backend.forge.prompts import clip, retry_prompt, task_prompt
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
    MethodFailedError,
    UnavailableError,
)
from shared_api.events import BackendLog, ForgeFinished, ForgeProgress, Progress
from shared_api.replies import DoesNotUnderstand, ForgeAccepted, InvokeResult, ToolResult
from shared_api.sandbox import SandboxResult
from shared_api.tools import TOOL_NAME, Provenance, Tool, ToolAttempt

log = logging.getLogger(__name__)


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
        name, cancel, attempts = job.name, job.cancel, job.attempts
        prompt = task_prompt(name, job.description, job.examples)
        for number in range(1, job.attempts_max + 1):
            if cancel.is_set():
                raise CancelledError(f"The forge of {name} was cancelled.")
            self._progress(
                job, number, "writing", f"{author.name} writes {name} (attempt {number})"
            )
            completion = self.llm.ask(  # no recalled memories: the task alone, exactly
                author, prompt, max_tokens=self.config.max_tokens, cancel=cancel, recall=False,
                role="code",
            )  # fmt: skip
            started = time.perf_counter()
            try:
                candidate = parse_candidate(name, completion.text)
            except CandidateRejected as exc:
                attempts.append(
                    ToolAttempt(number=number, stage=exc.stage, passed=False, feedback=str(exc))
                )
                self._progress(job, number, "failed", f"refused before running: {exc}", str(exc))
                code = extract_code(completion.text) or completion.text
                prompt = retry_prompt(name, job.description, job.examples, code, str(exc))
                continue
            if cancel.is_set():
                raise CancelledError(f"The forge of {name} was cancelled.")
            tests = len(candidate.test_names)
            self._progress(job, number, "testing", f"{tests} tests in {sandbox.name}")
            program = suite_program(name, candidate.source, candidate.tests)
            result = self.executor.run_python(program, self.config.limits, runtime=sandbox.name)
            passed, feedback = judge(result)
            attempts.append(
                ToolAttempt(
                    number=number, stage="test", passed=passed, feedback=feedback,
                    tests=candidate.test_names, runtime=result.runtime,
                    duration_s=round(time.perf_counter() - started, 3),
                )
            )  # fmt: skip
            if passed:
                self._progress(job, number, "passed", f"all {tests} tests passed")
                return self._attach(job, author.name, candidate)
            self._progress(job, number, "failed", "the tests failed", feedback)
            code = candidate.source + "\n" + candidate.tests
            prompt = retry_prompt(name, job.description, job.examples, code, feedback)
        return None

    def _attach(self, job: ForgeJob, author: str, candidate: Candidate) -> Tool:
        selection = self.llm.role_selections.get(author, {}).get("code")
        tool = Tool(
            name=job.name, proto=job.proto, description=job.description,
            source=candidate.source, tests=candidate.tests, params=candidate.params,
            attempts=list(job.attempts),
            provenance=Provenance(
                forge_id=job.id, author=author, requested_by=job.requested_by,
                backend=selection.backend if selection else "",
                model=selection.model if selection else "", forged_at=time.time(),
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


def judge(result: SandboxResult) -> tuple[bool, str]:
    """Did a test run pass, and if not, what to tell the author."""
    found, outcomes = report(result)
    if result.killed_reason:
        limit = result.limits
        return False, (
            f"The tests were stopped by the sandbox's {result.killed_reason} limit "
            f"(wall {limit.wall_s}s, CPU {limit.cpu_s}s, memory {limit.memory_mb} MB). "
            "Make the function faster and smaller.\n" + clip(result.stderr, 1500)
        )
    if found and isinstance(outcomes, list) and outcomes:
        failed = [o for o in outcomes if isinstance(o, dict) and not o.get("ok")]
        if not failed and result.exit_code == 0:
            return True, ""
        lines = [f"{o.get('test')} failed:\n{o.get('error', '').strip()}" for o in failed]
        return False, clip("\n\n".join(lines) or result.stderr)
    return False, clip(
        f"The test program exited with status {result.exit_code} without reporting.\n"
        + result.stderr
    )
