"""``kivy_deliver``: calls from other threads run on the Kivy thread, in order, batched."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kivy.clock import Clock

from tests.ui.conftest import frames
from ui.link import kivy_deliver


def test_calls_from_threads_run_in_order_on_one_clock_event(window: Any) -> None:
    ran: list[tuple[int, bool]] = []
    ui_thread = threading.current_thread()
    scheduled: list[Any] = []
    original = Clock.schedule_once

    def counting(callback: Any, timeout: float = 0) -> Any:
        scheduled.append(callback)
        return original(callback, timeout)

    Clock.schedule_once = counting  # type: ignore[method-assign]  # counts, then schedules
    try:
        sender = threading.Thread(
            target=lambda: [
                kivy_deliver(lambda i=i: ran.append((i, threading.current_thread() is ui_thread)))
                for i in range(500)
            ]
        )
        sender.start()
        sender.join()
        frames(2)
    finally:
        Clock.schedule_once = original  # type: ignore[method-assign]
    assert ran == [(i, True) for i in range(500)]
    assert 1 <= len(scheduled) <= 2  # one clock event for the burst, not 500


def test_a_call_that_raises_loses_none_of_the_later_ones(window: Any) -> None:
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("a handler's bug")

    kivy_deliver(lambda: ran.append(1))
    kivy_deliver(boom)
    kivy_deliver(lambda: ran.append(2))
    with pytest.raises(RuntimeError):
        frames(1)  # Kivy lets a callback's error out of the frame, as before
    kivy_deliver(lambda: ran.append(3))
    frames(2)
    assert ran == [1, 2, 3]


def test_a_slow_burst_spreads_over_frames_in_order(window: Any) -> None:
    ran: list[int] = []

    def slow(i: int) -> None:
        time.sleep(0.002)  # an event whose handling takes 2 ms
        ran.append(i)

    for i in range(20):
        kivy_deliver(lambda i=i: slow(i))
    frames(1)
    assert 1 <= len(ran) < 20  # this frame stopped at its budget (FRAME_BUDGET_S)
    for _ in range(40):
        frames(1)
        if len(ran) == 20:
            break
    assert ran == list(range(20))  # the rest came in the next frames, in order
