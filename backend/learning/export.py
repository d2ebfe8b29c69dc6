"""From merged Hugging Face weights to a quantized GGUF, shared by the CPU and GPU paths.

``convert_hf_to_gguf.py`` (from the llama.cpp that llama-cpp-python vendors) writes an f16
GGUF; ``llama_cpp.llama_model_quantize`` quantizes it in-process. The export never uses the
base GGUF's own quantization type: re-quantizing onto the base's grid snaps the weights back
and erases the fine-tune. The chat template and EOS are read back from the result, since a
template mismatch is what most often ruins a fine-tune once served.

Imports gguf and llama_cpp lazily: the workbench runs without the ``learning`` extra.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.learning.spec import QUANT_PREFERENCE
from shared_api.errors import InvalidValueError, ModelFailedError

CONVERT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class GgufFacts:
    """What a GGUF says about itself."""

    file_type: str
    chat_template: str
    eos_token: str
    architecture: str
    name: str


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8", "replace")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def read_facts(path: Path) -> GgufFacts:
    """File type (e.g. ``Q4_1``), chat template and EOS token of a GGUF file."""
    from gguf import GGUFReader
    from gguf.constants import LlamaFileType

    reader = GGUFReader(str(path))
    ftype = _field_value(reader, "general.file_type")
    try:
        file_type = (
            LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_") if ftype is not None else ""
        )
    except ValueError:
        file_type = str(ftype)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    eos_id = _field_value(reader, "tokenizer.ggml.eos_token_id")
    eos = ""
    if tokens is not None and eos_id is not None:
        eos = bytes(tokens.parts[tokens.data[int(eos_id)]]).decode("utf-8", "replace")
    return GgufFacts(
        file_type=file_type,
        chat_template=str(_field_value(reader, "tokenizer.chat_template") or ""),
        eos_token=eos,
        architecture=str(_field_value(reader, "general.architecture") or ""),
        name=str(_field_value(reader, "general.name") or ""),
    )


def choose_quant(wanted: str, base_type: str) -> str:
    """``wanted``, unless it is the base's own type: then the next preferred type."""
    wanted = wanted.upper()
    if wanted != base_type.upper():
        return wanted
    for quant in QUANT_PREFERENCE:
        if quant != base_type.upper():
            return quant
    raise InvalidValueError(f"no quantization type differs from the base's {base_type}")


def convert_to_f16(hf_dir: Path, out: Path, converter: Path) -> float:
    """Run ``convert_hf_to_gguf.py`` on ``hf_dir``; returns the seconds it took."""
    if not converter.is_file():
        raise ModelFailedError(
            f"convert_hf_to_gguf.py not found at {converter}. Run `make learning` (it installs "
            "llama.cpp's converter into .tools/llama.cpp) or set learning.llama_cpp_dir."
        )
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(  # noqa: S603 - llama.cpp's converter, on our own files
        [sys.executable, str(converter), str(hf_dir), "--outtype", "f16", "--outfile", str(out)],
        capture_output=True,
        text=True,
        timeout=CONVERT_TIMEOUT_S,
        env=env,
        check=False,
    )
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise ModelFailedError(f"convert_hf_to_gguf.py failed ({proc.returncode}):\n{tail}")
    return time.perf_counter() - started


def quantize(src: Path, dst: Path, quant: str, threads: int = 1) -> float:
    """Quantize ``src`` (an f16 GGUF) to ``quant`` in-process; returns the seconds taken."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        raise InvalidValueError(
            f"unknown quantization type {quant!r}; try one of {QUANT_PREFERENCE}"
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    started = time.perf_counter()
    tmp = dst.with_suffix(".part")
    status = llama_cpp.llama_model_quantize(
        str(src).encode(), str(tmp).encode(), ctypes.byref(params)
    )
    if status != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ModelFailedError(f"llama_model_quantize({quant}) failed with status {status}")
    os.replace(tmp, dst)
    return time.perf_counter() - started


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_export(path: Path, base: GgufFacts | None) -> GgufFacts:
    """The exported GGUF must keep the base's chat template and EOS (when the base had them)."""
    facts = read_facts(path)
    if base is not None:
        if base.chat_template and facts.chat_template != base.chat_template:
            raise ModelFailedError(
                f"{path.name}: its chat template differs from the base's; a model served with "
                "the wrong template answers badly. The export is refused."
            )
        if base.eos_token and facts.eos_token != base.eos_token:
            raise ModelFailedError(
                f"{path.name}: EOS {facts.eos_token!r} differs from the base's "
                f"{base.eos_token!r}; the export is refused."
            )
    return facts


# -- Ollama (the GPU path's serving side) ---------------------------------------------------
def modelfile(gguf: Path, facts: GgufFacts, system: str = "", num_ctx: int = 2048) -> str:
    """An Ollama Modelfile with the chat template and stop token pinned from training."""
    template = ollama_template(facts.chat_template)
    lines = [f"FROM {gguf.resolve()}", f'TEMPLATE """{template}"""']
    stops = [facts.eos_token] if facts.eos_token else []
    if "<|im_end|>" in facts.chat_template and "<|im_end|>" not in stops:
        stops.append("<|im_end|>")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines.append(f"PARAMETER num_ctx {num_ctx}")
    if system:
        escaped = system.replace('"""', '"')
        lines.append(f'SYSTEM """{escaped}"""')
    return "\n".join(lines) + "\n"


#: Ollama's Go template for ChatML (the template SmolLM2, Qwen and most fine-tunes use).
CHATML_OLLAMA = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def ollama_template(jinja: str) -> str:
    """The Ollama (Go) template for a GGUF's Jinja chat template. ChatML is recognised;
    anything else is refused rather than guessed (a wrong template ruins the model)."""
    if "<|im_start|>" in jinja and "<|im_end|>" in jinja:
        return CHATML_OLLAMA
    raise InvalidValueError(
        "Only ChatML chat templates can be pinned into a Modelfile automatically; write the "
        "TEMPLATE by hand for this model."
    )


def ollama_create(name: str, modelfile_path: Path, host: str = "") -> str:
    """Register the model with Ollama: ``ollama create NAME -f Modelfile`` when the CLI is
    installed, else the same through the Python client (blob upload + create). Returns how."""
    import shutil

    cli = shutil.which("ollama")
    if cli:
        env = {**os.environ, **({"OLLAMA_HOST": host} if host else {})}
        proc = subprocess.run(  # noqa: S603 - the user's own Ollama CLI
            [cli, "create", name, "-f", str(modelfile_path)],
            capture_output=True,
            text=True,
            timeout=CONVERT_TIMEOUT_S,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise ModelFailedError(f"ollama create {name} failed: {proc.stderr.strip()[-500:]}")
        return "cli"
    import ollama

    client = ollama.Client(host=host or None)
    text = modelfile_path.read_text()
    gguf = Path(text.splitlines()[0].removeprefix("FROM ").strip())
    digest = client.create_blob(gguf)
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    stops = [line.split('"')[1] for line in text.splitlines() if line.startswith("PARAMETER stop")]
    system = text.split('SYSTEM """', 1)[1].split('"""', 1)[0] if 'SYSTEM """' in text else None
    client.create(
        model=name,
        files={gguf.name: digest},
        template=template,
        system=system,
        parameters={"stop": stops},
    )
    return "api"
