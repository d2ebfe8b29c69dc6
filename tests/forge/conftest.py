"""The forge suites run code in a real sandbox: the sandbox suites' fixtures (a runtime that
is missing here skips loudly, and fails under ENTROPIC_REQUIRE_ALL=1)."""

from tests.sandbox.conftest import bubblewrap, require, runtimes

__all__ = ["bubblewrap", "require", "runtimes"]
