"""Opening a llama-cpp-python model safely on this CPU.

On CPUs that advertise Intel AMX (``amx_int8``/``amx_tile`` in /proc/cpuinfo), a natively
built llama.cpp moves the weights into its AMX "extra buffer" and crashes with SIGSEGV in
``ggml_backend_amx_mul_mat`` on the first decode where the virtual machine does not really
grant the tile state. Loading with ``use_extra_bufts`` off keeps the weights in plain CPU
buffers; ``ENTROPIC_LLAMA_EXTRA_BUFFERS=1`` turns them back on where AMX works.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

_patch_lock = threading.Lock()


@cache
def cpu_has_amx() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "amx_int8" in text or "amx_tile" in text


def extra_buffers_safe() -> bool:
    return os.environ.get("ENTROPIC_LLAMA_EXTRA_BUFFERS") == "1" or not cpu_has_amx()


@contextmanager
def _without_extra_buffers() -> Iterator[None]:
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    with _patch_lock:
        native.llama_model_default_params = params
        try:
            yield
        finally:
            native.llama_model_default_params = original


def open_llama(model_path: str, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model_path, **kwargs)``, without the AMX buffers where they crash."""
    from llama_cpp import Llama

    if extra_buffers_safe():
        return Llama(model_path=model_path, **kwargs)
    with _without_extra_buffers():
        return Llama(model_path=model_path, **kwargs)
