"""Forged tools: what the Tool Forge produces and keeps, as plain data that crosses the wire.

A ``Tool`` is a Python function a persona wrote, with the tests it passed in the sandbox and
the record of every attempt. It is attached to a Proto as a live method whose body runs in
the sandbox on every call, with JSON arguments and a JSON result.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

TOOL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
"""A tool's name: a lower-case Python identifier (it becomes a method name)."""
ToolName = Annotated[str, Field(pattern=TOOL_NAME.pattern)]

AttemptStage = Literal["write", "check", "test"]
"""Where an attempt stopped: ``write`` the model's reply held no usable code, ``check`` the
code or its tests were refused before running (e.g. a test that asserts nothing), ``test``
the tests ran in the sandbox."""


class CandidateOutcome(BaseModel):
    """One sampled candidate of an attempt, as the examples judged it."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=1, description="its place among the attempt's candidates")
    passed: bool
    #: The examples it got right, of how many.
    examples_passed: int = 0
    examples_total: int = 0
    #: The first example it failed, and what came out ("" when it passed or was refused).
    failed_example: str = ""
    got: str = ""
    #: Where what came out first departs from the expected value, e.g. "character 0:
    #: expected 'h', got 'H'" ("" when not told apart further).
    differs: str = ""
    #: The author's proposed checks it agreed with, of how many (they only choose among
    #: candidates that passed every given example; they never decide alone).
    probes_passed: int = 0
    probes_total: int = 0
    #: Its own tests that agreed with the examples (kept only for the winner).
    tests_kept: list[str] = []
    source: str = Field(default="", description="the candidate's code")


class ToolAttempt(BaseModel):
    """One write-check-test round of a forge: ``candidates`` sampled, tested in one run."""

    model_config = ConfigDict(frozen=True)

    number: int = Field(ge=1)
    stage: AttemptStage
    passed: bool
    feedback: str = Field(default="", description="what was wrong, as shown to the author")
    tests: list[str] = Field(default=[], description="the test functions that ran")
    runtime: str | None = None
    duration_s: float = 0.0
    candidates: list[CandidateOutcome] = []


class Provenance(BaseModel):
    model_config = ConfigDict(frozen=True)

    forge_id: str
    author: str = Field(description="the persona that wrote the code (BRICK)")
    requested_by: str = Field(description="user, or does_not_understand")
    backend: str = ""
    model: str = ""
    forged_at: float = Field(description="UNIX time the tests passed")
    #: The executable checks every candidate ran against (the oracle).
    examples: list[str] = []
    #: ``given`` by the requester, or ``proposed`` by the author from the description.
    examples_source: Literal["given", "proposed", "none"] = "none"
    #: Checks the author proposed beside the given examples, used only to choose among the
    #: candidates that passed those.
    probes: list[str] = []
    #: How many candidates were tried over all attempts, and which won (attempt, index).
    candidates_tried: int = 0
    winner: tuple[int, int] | None = None


class Tool(BaseModel):
    """A forged tool: its source, its tests and how it came to be."""

    model_config = ConfigDict(frozen=True)

    name: ToolName
    proto: str
    description: str
    source: str = Field(description="the module: the function plus any helpers and imports")
    tests: str = Field(description="the test functions it passed")
    params: list[str] = Field(default=[], description="the function's parameter names")
    provenance: Provenance
    attempts: list[ToolAttempt] = []

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(self.params)})"
