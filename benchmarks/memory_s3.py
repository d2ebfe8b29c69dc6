"""The memory on S3 (SeaweedFS on 127.0.0.1) vs local disk, in one run: ingest rate (chunks/s,
embedding included, as a user sees it) and search p50/p95 (embedding the query included).

The same documents and queries on both; S3 is the server ``.ci/run`` started
(``ENTROPIC_TEST_S3`` with ``AWS_*``) or a SeaweedFS started here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from backend.bus import EventBus
from backend.memory.config import MemoryConfig
from backend.memory.service import MemoryService
from benchmarks._common import log, percentile, summary
from tests.servers import S3, S3_ACCESS, S3_SECRET, start_seaweed, stop

QUERIES = [f"what did clerk number {i % 13} catalogue on day {i * 3}?" for i in range(40)]


def _documents(folder: Path, count: int) -> list[Path]:
    paths = []
    for d in range(count):
        text = "\n\n".join(
            f"Volume {d} paragraph {i}: the archive of shelf {d} notes that item {i * 7} was "
            f"catalogued on day {i} by clerk number {i % 13}, in room {(i * d) % 17}."
            for i in range(60)
        )
        path = folder / f"volume-{d}.txt"
        path.write_text(text)
        paths.append(path)
    return paths


def _measure(root: Path, docs: list[Path], **config: Any) -> dict[str, Any]:
    service = MemoryService(root, MemoryConfig(**config), EventBus())
    service.start()
    try:
        if not service.wait_ready(120):
            raise RuntimeError(f"the memory did not open: {service.error}")
        started = time.perf_counter()
        chunks = sum(service.ingest(str(p), "BRICK").chunks for p in docs)
        ingest_s = time.perf_counter() - started
        service.search(QUERIES[0], 4)  # warm
        times = []
        for query in QUERIES:
            t = time.perf_counter()
            service.search(query, 4)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        service.close()
    return {
        "chunks": chunks,
        "ingest_chunks_per_s": round(chunks / ingest_s, 1),
        "search_ms": {**summary(times, 2), "p95": round(percentile(times, 95), 2)},
    }


def run(quick: bool = False) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="entropic-bench-s3-"))
    proc = None
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    try:
        endpoint = os.environ.get("ENTROPIC_TEST_S3", "")
        if not endpoint:
            (tmp / "s3").mkdir()
            proc, endpoint = start_seaweed(tmp / "s3")
            os.environ.update(AWS_ACCESS_KEY_ID=S3_ACCESS, AWS_SECRET_ACCESS_KEY=S3_SECRET)
        server = S3(endpoint, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
        uri = f"s3://{server.bucket()}/bench-{secrets.token_hex(4)}"
        (tmp / "docs").mkdir()
        docs = _documents(tmp / "docs", 4 if quick else 16)
        local = _measure(tmp / "local", docs)
        log(f"local: {local['ingest_chunks_per_s']} chunks/s, search p50 "
            f"{local['search_ms']['p50']} ms")  # fmt: skip
        remote = _measure(
            tmp / "s3-home",
            docs,
            uri=uri,
            storage_options={"aws_endpoint": endpoint, "allow_http": "true"},
        )
        log(f"S3: {remote['ingest_chunks_per_s']} chunks/s, search p50 "
            f"{remote['search_ms']['p50']} ms")  # fmt: skip
    finally:
        if proc is not None:
            stop(proc)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "memory_s3",
        "s3": "SeaweedFS 4.48 on 127.0.0.1",
        "documents": len(docs),
        "local": local,
        "s3_store": remote,
        "ingest_ratio_s3_over_local": round(
            remote["ingest_chunks_per_s"] / local["ingest_chunks_per_s"], 2
        ),
        "search_p50_ratio_s3_over_local": round(
            remote["search_ms"]["p50"] / local["search_ms"]["p50"], 2
        ),
    }
