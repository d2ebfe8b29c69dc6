"""Concurrency against a real backend: invokes racing hot swaps, racing swaps, and slow
methods that must not hold up the request loop."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from backend.launcher import BackendProcess
from shared_api.errors import RemoteError
from shared_api.replies import InvokeResult, Pong, ProtoDescription, ProtoUpdated

INVOKERS = 4
SWAPS = 200
WORK = "def work(self, x):\n    return x * 2\n"


def probe_source(n: int) -> str:
    """A method that reports which swap defined it and which swap's state it sees."""
    return f"def probe(self):\n    return [{n}, self.state['swap']]\n"


def describe(backend_client: Any, proto: str) -> ProtoDescription:
    reply = backend_client.call("describe_proto", {"proto": proto})
    assert isinstance(reply, ProtoDescription)
    return reply


def test_invokes_never_fail_during_repeated_swaps(backend: BackendProcess) -> None:
    """Four clients invoke while the main thread hot-swaps BRICK 200 times: no request fails,
    every result is right, each swap is atomic (a method always sees the state it was swapped
    in with) and no client ever sees an older version after a newer one."""
    with backend.client() as client:
        client.call("define_method", {"proto": "BRICK", "name": "work", "source": WORK})
        client.call(
            "define_method", {"proto": "BRICK", "name": "probe", "source": probe_source(-1)}
        )
        client.call("set_state", {"proto": "BRICK", "path": "swap", "value": -1})
        initial = describe(client, "BRICK").version

    stop = threading.Event()
    swapping = threading.Event()
    failures: list[str] = []
    counts = [0] * INVOKERS
    during_swaps = [0] * INVOKERS

    def invoker(n: int) -> None:
        rng = random.Random(n)
        last_version = initial
        with backend.client(timeout=30) as own:
            while not stop.is_set():
                x = rng.randrange(-(10**9), 10**9)
                probing = counts[n] % 2 == 1
                body = (
                    {"proto": "BRICK", "method": "probe"}
                    if probing
                    else {
                        "proto": "BRICK",
                        "method": "work",
                        "args": {"x": x},
                    }
                )
                try:
                    reply = own.call("invoke", body)
                except Exception as exc:  # an ErrorReply (RemoteError) or a timeout
                    failures.append(f"invoker {n}: {exc!r}")
                    continue
                if not isinstance(reply, InvokeResult):
                    failures.append(f"invoker {n}: {body} -> {reply!r}")
                elif probing and reply.result[0] != reply.result[1]:
                    failures.append(f"invoker {n}: torn swap, probe -> {reply.result}")
                elif not probing and reply.result != x * 2:
                    failures.append(f"invoker {n}: work({x}) -> {reply.result!r}")
                elif reply.version < last_version:
                    failures.append(f"invoker {n}: saw v{reply.version} after v{last_version}")
                else:
                    last_version = reply.version
                counts[n] += 1
                if swapping.is_set():
                    during_swaps[n] += 1

    threads = [threading.Thread(target=invoker, args=(n,), daemon=True) for n in range(INVOKERS)]
    for t in threads:
        t.start()
    try:
        with backend.client() as client:
            swapping.set()
            for i in range(SWAPS):
                version = describe(client, "BRICK").version
                source = f"# swap {i}: {'-' * (i % 7)}\n{WORK}"
                reply = client.call(
                    "swap_proto",
                    {
                        "proto": "BRICK",
                        "base_version": version,
                        "state": {"swap": i, "pad": list(range(i % 5))},
                        "methods": {"work": source, "probe": probe_source(i)},
                    },
                )
                assert isinstance(reply, ProtoUpdated) and reply.version == version + 1
            swapping.clear()
            final = describe(client, "BRICK")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert all(n > 0 for n in during_swaps), f"invokes per thread during the swaps: {during_swaps}"
    assert final.version == initial + SWAPS
    assert (final.state["swap"], final.state["pad"]) == (SWAPS - 1, list(range((SWAPS - 1) % 5)))
    assert final.methods["work"].startswith(f"# swap {SWAPS - 1}:")


def test_two_swaps_from_one_version_one_wins(backend: BackendProcess) -> None:
    """Two clients race a swap based on the same version: exactly one applies, the other is
    refused with stale_version, and the live state is the winner's."""
    clients = [backend.client(), backend.client()]
    try:
        for round_no in range(20):
            base = describe(clients[0], "BRICK").version
            barrier = threading.Barrier(2)
            results: list[Any] = [None, None]

            def swap(
                n: int,
                base: int = base,
                barrier: threading.Barrier = barrier,
                results: list[Any] = results,
                round_no: int = round_no,
            ) -> None:
                barrier.wait()
                body = {
                    "proto": "BRICK",
                    "base_version": base,
                    "state": {"by": n, "round": round_no},
                }
                try:
                    results[n] = clients[n].call("swap_proto", body)
                except RemoteError as exc:
                    results[n] = exc

            threads = [threading.Thread(target=swap, args=(n,)) for n in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            won = [n for n in (0, 1) if isinstance(results[n], ProtoUpdated)]
            lost = [n for n in (0, 1) if isinstance(results[n], RemoteError)]
            assert len(won) == 1 and len(lost) == 1, results
            assert results[won[0]].version == base + 1
            error = results[lost[0]]
            assert error.code == "stale_version"
            assert (error.detail["base_version"], error.detail["live_version"]) == (base, base + 1)
            live = describe(clients[0], "BRICK")
            assert live.version == base + 1
            assert (live.state["by"], live.state["round"]) == (won[0], round_no)
    finally:
        for c in clients:
            c.close()


def test_stale_swap_changes_nothing(backend: BackendProcess) -> None:
    with backend.client() as client:
        base = describe(client, "BRICK").version
        client.call("set_state", {"proto": "BRICK", "path": "moved_on", "value": True})
        before = describe(client, "BRICK")
        with pytest.raises(RemoteError) as refused:
            client.call(
                "swap_proto",
                {
                    "proto": "BRICK",
                    "base_version": base,
                    "state": {},
                    "methods": {"extra": "def extra(self):\n    return 1\n"},
                },
            )
        assert refused.value.code == "stale_version"
        after = describe(client, "BRICK")
        assert (after.version, after.state, after.methods) == (
            before.version,
            before.state,
            before.methods,
        )


NAP = "def nap(self, s):\n    import time\n    time.sleep(s)\n    return s\n"


def test_slow_method_does_not_block_other_requests(backend: BackendProcess) -> None:
    with backend.client() as client:
        client.call("define_method", {"proto": "BRICK", "name": "nap", "source": NAP})
    result: list[Any] = []

    def napper() -> None:
        with backend.client(timeout=30) as own:
            result.append(own.call("invoke", {"proto": "BRICK", "method": "nap", "args": {"s": 2}}))

    thread = threading.Thread(target=napper)
    started = time.monotonic()
    thread.start()
    try:
        time.sleep(0.3)  # the invoke is on its way and then in flight
        with backend.client() as client:
            for _ in range(5):
                t0 = time.monotonic()
                assert isinstance(client.call("ping", {}), Pong)
                assert time.monotonic() - t0 < 0.5
            t0 = time.monotonic()
            client.call("set_state", {"proto": "BRICK", "path": "awake", "value": 1})
            assert client.call("get_state", {"proto": "BRICK", "path": "awake"}).value == 1
            assert time.monotonic() - t0 < 0.5
            assert thread.is_alive(), "the nap finished too early to prove anything"
    finally:
        thread.join(timeout=30)
    assert time.monotonic() - started >= 2.0
    assert len(result) == 1 and isinstance(result[0], InvokeResult) and result[0].result == 2
