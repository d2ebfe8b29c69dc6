"""One attempt's trial: every candidate against every example, in one sandboxed run.

The examples are the oracle: a candidate that fails one is never attached. Of those that pass
them all, the one that agrees with most of the author's proposed checks (``probes``) wins, then
the one whose results on them most other passers share, then the first written; its own tests
are kept only where they agree with the examples. A probe never decides alone: the author may
have got its expected result wrong, so it only chooses among candidates the examples passed.
For the next attempt the feedback names the failing example and what came out, for the
candidate that got the most examples right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from backend.forge.program import (
    Candidate,
    Example,
    candidates_program,
    report,
    select_tests,
)
from backend.forge.prompts import clip
from backend.sandbox import SecureCodeExecutor
from shared_api.sandbox import Limits, SandboxResult
from shared_api.tools import CandidateOutcome

#: The proposal's token budget: a few one-line examples.
EXAMPLE_TOKENS = 200


class ProposedExamples(BaseModel):
    """The schema the author's proposed examples are generated under."""

    examples: list[Annotated[str, AfterValidator(lambda text: str(text).strip()[:300])]] = Field(
        min_length=1, max_length=4
    )


@dataclass
class Trial:
    outcomes: list[CandidateOutcome]
    #: (index, candidate, its own tests that agreed) of the first that passed, else None.
    winner: tuple[int, Candidate, str] | None
    feedback: str
    best_source: str
    test_names: list[str]
    runtime: str | None
    #: The first proposed check the winner missed: (the check, what came out), else None.
    missed: tuple[str, str] | None = None


@dataclass
class Choice:
    """A candidate that passed every example, as the forge keeps it across attempts: one
    that missed a proposed check buys one more attempt, and the best one found is attached."""

    attempt: int
    index: int
    candidate: Candidate
    kept_tests: str
    probes_passed: int
    missed: tuple[str, str] | None


def trial_limits(limits: Limits, count: int) -> Limits:
    """Each candidate gets what one run may use; the run as a whole, that times ``count``."""
    return limits.model_copy(
        update={
            "wall_s": min(3600.0, limits.wall_s * count + 2),
            "cpu_s": min(3600.0, limits.cpu_s * count + 1),
        }
    )


def trial_candidates(
    executor: SecureCodeExecutor,
    limits: Limits,
    runtime: str,
    name: str,
    candidates: list[tuple[int, Candidate]],
    examples: list[Example],
    probes: list[Example] | None = None,
) -> Trial:
    per = min(limits.wall_s, limits.cpu_s)
    probes = probes or []
    sources = [(c.source, c.tests) for _, c in candidates]
    program = candidates_program(name, sources, [*examples, *probes], per)
    result = executor.run_python(program, trial_limits(limits, len(candidates)), runtime=runtime)
    found, reported = report(result)
    rows: list[Any] = reported if found and isinstance(reported, list) else []
    outcomes, probe_results, misses = [], [], []
    for position, (index, candidate) in enumerate(candidates):
        row = rows[position] if position < len(rows) and isinstance(rows[position], dict) else {}
        outcome, gots, missed = _outcome(index, candidate, row, examples, len(probes), result)
        outcomes.append(outcome)
        probe_results.append(gots)
        misses.append(missed)
    winner, missed = None, None
    chosen = _choose(outcomes, probe_results)
    if chosen is not None:
        index, candidate = candidates[chosen]
        winner = (index, candidate, select_tests(candidate.tests, outcomes[chosen].tests_kept))
        missed = misses[chosen]
    best = max(outcomes, key=lambda o: (o.passed, o.examples_passed, -o.index))
    feedback = "" if winner else _feedback(best)
    return Trial(
        outcomes=outcomes,
        winner=winner,
        feedback=feedback,
        best_source=best.source,
        test_names=best.tests_kept,
        runtime=result.runtime,
        missed=missed,
    )


def _choose(outcomes: list[CandidateOutcome], gots: list[list[str]]) -> int | None:
    """The position of the winner among the candidates that passed: most probes agreed
    with, then most agreement with the other passers' results on the probes, then first."""
    passed = [i for i, o in enumerate(outcomes) if o.passed]
    if not passed:
        return None

    def agreement(i: int) -> int:
        return sum(
            1 for j in passed if j != i for a, b in zip(gots[i], gots[j], strict=False) if a == b
        )

    return max(passed, key=lambda i: (outcomes[i].probes_passed, agreement(i), -i))


def _outcome(
    index: int,
    candidate: Candidate,
    row: dict[str, Any],
    examples: list[Example],
    probes: int,
    result: SandboxResult,
) -> tuple[CandidateOutcome, list[str], tuple[str, str] | None]:
    """How the candidate did, what came out of it for each probe, and the first probe it
    missed (the check, what came out)."""
    checks = [c for c in row.get("examples", []) if isinstance(c, dict)]
    checks, probed = checks[: len(examples)], checks[len(examples) :]
    gots = [str(c.get("got", "")) for c in probed]
    probes_passed = sum(1 for c in probed if c.get("ok"))
    missed = next(
        (
            (str(c.get("example", "")), _came_out(str(c.get("got", "")), str(c.get("why") or "")))
            for c in probed
            if not c.get("ok")
        ),
        None,
    )
    tests = [t for t in row.get("tests", []) if isinstance(t, dict)]
    passed_tests = [str(t.get("test")) for t in tests if t.get("ok")]
    if not row:  # the run was stopped before it reported this candidate
        why = (
            f"the sandbox's {result.killed_reason} limit stopped the run"
            if result.killed_reason
            else f"the run exited with status {result.exit_code} without reporting"
        )
        return CandidateOutcome(
            index=index, passed=False, examples_total=len(examples), failed_example="(all)",
            got=clip(f"{why}\n{result.stderr}", 1500), source=candidate.source,
        ), gots, missed  # fmt: skip
    if row.get("load"):
        return CandidateOutcome(
            index=index, passed=False, examples_total=len(examples), failed_example="(load)",
            got="it did not load:\n" + clip(str(row["load"]), 1500), source=candidate.source,
        ), gots, missed  # fmt: skip
    ok = [c for c in checks if c.get("ok")]
    failed = next((c for c in checks if not c.get("ok")), None)
    if examples:
        passed = len(ok) == len(examples)
    else:  # no examples: its own tests are the oracle, and it must have some
        passed = bool(tests) and len(passed_tests) == len(tests)
        failed_test = next((t for t in tests if not t.get("ok")), None)
        if failed_test is not None:
            failed = {"example": failed_test.get("test"), "got": failed_test.get("error", "")}
    return CandidateOutcome(
        index=index, passed=passed, examples_passed=len(ok), examples_total=len(examples),
        failed_example=str(failed.get("example", "")) if failed and not passed else "",
        got=clip(str(failed.get("got", "")), 1500) if failed and not passed else "",
        differs=str(failed.get("why") or "") if failed and not passed else "",
        probes_passed=probes_passed, probes_total=probes,
        tests_kept=passed_tests, source=candidate.source,
    ), gots, missed  # fmt: skip


def _came_out(got: str, differs: str) -> str:
    """What came out of a failed check, with where it departs from the expected value (a
    small model reads 'HelloWorld' for 'helloWorld' as right: told "character 0: expected
    'h', got 'H'", it sees the case)."""
    return f"{got} ({differs})" if differs else got


def _feedback(best: CandidateOutcome) -> str:
    if best.failed_example == "(load)":
        return best.got
    if best.failed_example == "(all)":
        return f"The test run failed: {best.got}"
    got = best.got if best.got.startswith("raised") else f"it returned {best.got}"
    got = _came_out(got, best.differs)
    return (
        f"It got {best.examples_passed} of {best.examples_total} example(s) right. "
        f"It failed the example `{best.failed_example}`: {got}."
    )
