"""``python -m tests.llama_server_main ARGS``: llama.cpp's OpenAI-compatible server
(``python -m llama_cpp.server ARGS``) with llama.cpp's extra CPU buffer types turned off.

On CPUs with AMX, llama.cpp 0.3.36 repacks Q4_1 weights for AMX and then crashes (SIGSEGV) in
the first decode; with ``use_extra_bufts = False`` the plain CPU kernels run. Everything else
is the stock server.
"""

from __future__ import annotations

import runpy
from typing import Any

import llama_cpp.llama_cpp as low_level  # what llama_cpp.Llama calls

_default_params = low_level.llama_model_default_params


def _plain_cpu_params() -> Any:
    params = _default_params()
    params.use_extra_bufts = False
    return params


low_level.llama_model_default_params = _plain_cpu_params

if __name__ == "__main__":
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
