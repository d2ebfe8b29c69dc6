"""AttachWatch: a backend a workbench started stops once no workbench has pinged it for
``orphan_exit_s``; one started from the command line never does."""

from __future__ import annotations

from backend.attach import AttachWatch


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_orphan_started_by_a_workbench_stops_after_the_idle_time() -> None:
    clock, stopped = FakeClock(), []
    watch = AttachWatch("workbench pid 7", 600, lambda: stopped.append(1), clock=clock)
    assert watch.stops_when_idle
    clock.now += 599
    assert not watch.check()
    watch.seen("workbench")  # a workbench is attached: the count starts again
    clock.now += 599
    assert not watch.check() and not stopped
    watch.seen("")  # the console (main.py call) does not keep it alive
    clock.now += 2
    assert watch.check() and stopped == [1]
    status = watch.status()
    assert status["started_by"] == "workbench pid 7" and status["stops_when_idle"] is True
    assert status["no_workbench_for_s"] >= 600


def test_a_backend_from_the_command_line_or_with_zero_never_stops_by_itself() -> None:
    clock = FakeClock()
    for watch in (
        AttachWatch("command line", 600, lambda: None, clock=clock),
        AttachWatch("workbench pid 7", 0, lambda: None, clock=clock),
    ):
        clock.now += 10_000
        assert not watch.stops_when_idle and not watch.check()
