"""Entropic OS launcher and command-line console.

  python main.py [--home DIR]                 open the workbench (starts or attaches a backend)
  python main.py backend [--home DIR]         run the backend in the foreground
  python main.py call [--home DIR] KIND [JSON] send one command, print the reply as JSON
  python main.py sandbox run FILE [--timeout S] run a Python file in the sandbox (JSON result)
  python main.py models fetch [NAME]          download and verify a model (default: the capable one)
  python main.py models list                  the known models and whether each is ready

--model REF (before the command, or on `backend`) replaces the default model for this run:
tiny (SmolLM2-135M, fast and weak), qwen2.5-coder-1.5b, a GGUF path, or ollama:TAG.

The home directory defaults to $ENTROPIC_HOME or ~/.local/share/entropic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.home import default_home

EXIT_ERROR_REPLY, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

CALL_EPILOG = """\
commands and their JSON bodies (every body that names a persona calls it "proto"):
  ping           {}
  status         {}
  echo           {"data": "..."}
  list_protos    {}
  describe_proto {"proto": "BRICK"}
  get_state      {"proto": "BRICK", "path": "mood"}          (path optional, dotted)
  set_state      {"proto": "BRICK", "path": "mood.level", "value": 3}
  define_method  {"proto": "BRICK", "name": "greet", "source": "def greet(self, who): ..."}
  remove_method  {"proto": "BRICK", "name": "greet"}
  invoke         {"proto": "BRICK", "method": "greet", "args": {"who": "ROBIN"}}
  clone_proto    {"proto": "BRICK", "new_name": "BRICK-2"}   (new_name optional)
  remove_proto   {"proto": "BRICK-2"}                        (clones only)
  swap_proto     {"proto": "BRICK", "base_version": 3, "state": {...}, "methods": {...},
                  "remove_methods": [...]}
  ask_persona    {"proto": "BRICK", "text": "...", "max_tokens": 128}   (streams the answer)
  cancel         {"request_id": "..."}
  list_models    {}
  model_status   {}
  save_image     {}
  shutdown       {"save": true}
  search_memory  {"text": "...", "k": 5, "proto": "BRICK"}   (proto optional: that persona's only)
  ingest_document {"path": "notes.md", "proto": "BRICK"}     (proto optional; relative paths are
                  taken from this directory; "wait": false returns at once)
  ask_document   {"proto": "BRICK", "path": "notes.md"}      (what a drop does: remember the file
                  and ask the persona with its text; streams the answer)
  memory_stats   {}
  forge_tool     {"proto": "BRICK", "name": "word_count", "description": "count the words in text",
                  "examples": ["word_count(text='a b') == 2"], "max_attempts": 3}
                 (streams each attempt; cancel takes its request_id)
  list_tools     {"proto": "BRICK"}                          (proto optional)
  run_tool       {"proto": "BRICK", "name": "word_count", "args": {"text": "a b c"}}
  remove_tool    {"proto": "BRICK", "name": "word_count"}
  learning_status {"proto": "BRICK"}                        (proto optional; says how to enable
                  fine-tuning when the `learning` extra is missing)
  curate         {"proto": "BRICK", "limit": 8}              (ALFRED judges new interactions now)
  list_scores    {"proto": "BRICK"}
  list_golden    {"proto": "BRICK", "include_excluded": true}
  put_golden     {"proto": "BRICK", "prompt": "...", "reply": "..."}   ("id" edits one)
  exclude_golden {"proto": "BRICK", "id": "g-...", "excluded": true}
  start_finetune {"proto": "BRICK", "steps": 24, "adopt": true}  (runs in the background:
                  progress in the backend's log and as events; cancel takes its job_id)
  adopt_model    {"proto": "BRICK", "candidate": "BRICK-ft-...", "force": false}
  rollback_model {"proto": "BRICK"}
  propose_ascension {"proto": "BRICK"}
  ascend         {"proto": "BRICK", "base": "/path/to/model.gguf"}  (trial on a clone)

dialogues (BRICK and ROBIN argue a goal, ALFRED judges; progress arrives as dialogue_* events):
  start_dialogue     {"goal": "...", "max_rounds": 4, "breakpoints": ["alfred"], "paused": false}
  list_dialogues     {}
  dialogue_status    {"dialogue_id": "d-..."}      (summary, graph state, pending approvals)
  dialogue_graph     {}                             (nodes, edges, Mermaid text)
  debug_step         {"dialogue_id": "d-..."}      (run exactly one node)
  debug_continue     {"dialogue_id": "d-..."}
  debug_pause        {"dialogue_id": "d-..."}
  set_breakpoints    {"dialogue_id": "d-...", "nodes": ["robin", "alfred"]}
  debug_update_state {"dialogue_id": "d-...", "values": {"robin_view": "..."}}
  debug_history      {"dialogue_id": "d-...", "limit": 200}
  debug_rewind       {"dialogue_id": "d-...", "checkpoint_id": "...", "resume": true}
  cancel_dialogue    {"dialogue_id": "d-..."}
  list_approvals     {"all": false}
  decide_amendment   {"interrupt_id": "...", "approve": true, "note": "..."}
  list_goals         {}
  goal_action        {"goal_id": "g-...", "action": "approve"}   (approve|pause|resume|cancel)

ask_persona streams the answer's tokens to stderr as they arrive, then prints the final
persona_reply event as JSON on stdout (so `... | jq -r .text` works). forge_tool prints each
attempt's progress (and the errors fed back to the author) to stderr, then the final
forge_finished event as JSON on stdout; it exits 1 unless the tool was attached.

exit status: 0 success, 1 error reply (printed as JSON), 2 bad usage, 3 backend unreachable
"""


def _home_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="home directory (default: $ENTROPIC_HOME or ~/.local/share/entropic)",
    )


def cmd_backend(args: argparse.Namespace) -> int:
    from backend.__main__ import configure_logging, serve

    configure_logging(args.log_level)
    return _exit_now(serve(args.home or default_home()))


def _exit_now(code: int) -> int:
    """Exit without the interpreter's slow teardown (LanceDB's, onnxruntime's and Kivy's
    threads take seconds to wind down): everything is saved and fsynced by now."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_workbench(args: argparse.Namespace) -> int:
    import logging

    _configure_logging(args.log_level)
    home = (args.home or default_home()).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    from backend.launcher import starter

    start_backend = starter(home, started_by=f"workbench pid {os.getpid()}")
    spawned = _spawn_backend(home, start_backend)  # starts up while the UI imports Kivy
    from ui.window import configure_kivy, initial_geometry

    configure_kivy()
    logging.getLogger("kivy").setLevel(max(logging.WARNING, logging.getLogger().level))
    from ui.layout_io import DEFAULT_LAYOUT

    layout = home / "layout.json"
    initial_geometry(layout if layout.exists() else DEFAULT_LAYOUT)
    from ui.app import run

    # Importing Kivy may reset the root logger's level; keep the terminal readable.
    logging.getLogger().setLevel(args.log_level)
    quiet = max(logging.WARNING, logging.getLogger().level)
    for name in ("kivy", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(quiet)
    return _exit_now(run(home, start_backend, spawned))


def _configure_logging(level: str) -> None:
    """One handler on the root logger (the backend's format); Kivy logs through it too."""
    import logging

    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def _spawn_backend(home: Path, start: Callable[[], Any]) -> Any:
    """A backend started for ``home`` by ``start`` (not waited for), or None when a backend
    already answers there or the home holds a remote backend's connection file (the
    workbench attaches to it, or says why it cannot)."""
    from shared_api.connection import read_connection_file
    from shared_api.errors import EntropicError
    from shared_api.transport import Client, is_foreign, keys_for

    try:
        info = read_connection_file(home)
    except EntropicError:
        return start()
    if is_foreign(home, info):
        return None
    try:
        with Client(info, timeout=1.0, curve_keys=keys_for(home, info)) as probe:
            probe.call("ping", {})
        return None
    except EntropicError:
        pass
    return start()


def cmd_keys(args: argparse.Namespace) -> int:
    from backend.home import Home
    from shared_api.errors import EntropicError
    from shared_api.transport import authorize

    home = Home(args.home or default_home())
    try:
        home.ensure()
        server, client = home.curve_keys()
        added = [str(authorize(path, home.authorized_dir)) for path in args.authorize]
    except (EntropicError, OSError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return EXIT_USAGE
    report = {
        "server_public_key_file": str(server.with_suffix(".key")),
        "client_public_key_file": str(client.with_suffix(".key")),
        "authorized_dir": str(home.authorized_dir),
        "authorized_now": added,
    }
    print(json.dumps(report, indent=2))
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    from shared_api.connection import read_connection_file
    from shared_api.errors import ErrorReply, RequestTimeout, UnavailableError
    from shared_api.transport import Client, keys_for

    try:
        body: Any = json.loads(args.body) if args.body else {}
    except json.JSONDecodeError as exc:
        print(f"error: JSON_BODY is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(body, dict):
        print(
            'error: JSON_BODY must be a JSON object, e.g. \'{"proto": "BRICK"}\'', file=sys.stderr
        )
        return EXIT_USAGE
    if args.kind in ("ingest_document", "ask_document") and isinstance(body.get("path"), str):
        # The backend's cwd differs; the backend resolves links (and says why it cannot).
        body["path"] = os.path.abspath(os.path.expanduser(body["path"]))
    streaming = args.kind in STREAMED
    try:
        home = (args.home or default_home()).expanduser().resolve()
        info = read_connection_file(home)
        keys = keys_for(home, info)
        with Client(info, timeout=args.timeout, events=streaming, curve_keys=keys) as client:
            if streaming:  # subscribe before asking, so no token is missed
                client.wait_event(lambda e: e.kind == "heartbeat", timeout=args.timeout)
            reply: Any = client.call_raw(args.kind, body)
            if streaming and not isinstance(reply, ErrorReply):
                reply = _stream(client, reply.request_id, args.timeout)
    except (UnavailableError, RequestTimeout) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(reply.model_dump_json(indent=2))
    failed = isinstance(reply, ErrorReply) or getattr(reply, "error", None) is not None
    failed = failed or getattr(reply, "outcome", "attached") != "attached"
    return EXIT_ERROR_REPLY if failed else 0


STREAMED = frozenset({"ask_persona", "ask_document", "forge_tool"})


def _stream(client: Any, request_id: str, timeout: float) -> Any:
    """Print a request's tokens to stderr as they arrive; return its final reply event."""
    while True:
        event = client.wait_event(
            lambda e: getattr(e, "request_id", None) == request_id, timeout=timeout
        )
        if event.kind == "token":
            print(event.text, end="", file=sys.stderr, flush=True)
        elif event.kind == "forge_progress":
            print(f"[{event.attempt}/{event.max_attempts}] {event.phase}: {event.message}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if event.feedback:
                print("    " + event.feedback.replace("\n", "\n    "), file=sys.stderr)
        elif event.kind in ("persona_reply", "forge_finished"):
            print(file=sys.stderr)
            return event


# --- sandbox: run untrusted Python in the strongest sandbox available here ---------------

EXIT_SANDBOX_FAILED, EXIT_NO_SANDBOX = 1, 4

SANDBOX_EPILOG = """\
runtimes, strongest first; the first one that works is used unless --runtime names one:
  docker-gvisor  docker run --runtime=runsc (a Docker daemon with runsc, a local python image)
  runsc          gVisor with a generated OCI bundle (needs root)
  bubblewrap     bwrap namespaces + rlimits + seccomp, as host uid 65534

`sandbox run` prints the result as JSON: runtime, exit_code (null when killed), stdout,
stderr (capped), timed_out, killed_reason, duration_s, cpu_s, limits.
`sandbox status` prints the runtime in use, why the others are not, and how each one
enforces every limit.

exit status: 0 the sandbox worked (whatever the script did: see exit_code), 1 the sandbox
itself failed, 2 bad usage, 4 no sandbox runtime is available (stderr says what to install:
apt-get install bubblewrap runsc)
"""


def cmd_sandbox(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from backend.sandbox import Limits, SecureCodeExecutor
    from shared_api.errors import SandboxFailedError, SandboxUnavailableError

    executor = SecureCodeExecutor(pool_size=0)  # one run, then exit: nothing to keep warm
    if args.sandbox_command == "status":
        print(json.dumps(executor.status(), indent=2))
        return 0 if executor.runtime_name else EXIT_NO_SANDBOX
    try:
        source = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    given = {"wall_s": args.timeout, "cpu_s": args.cpu, "memory_mb": args.memory}
    given["disk_mb"] = args.disk
    try:
        limits = Limits(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid limits: {problems}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = executor.run_python(source, limits, runtime=args.runtime)
    except SandboxUnavailableError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_NO_SANDBOX
    except SandboxFailedError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_SANDBOX_FAILED
    print(result.model_dump_json(indent=2))
    return 0


def _add_sandbox_parser(sub: Any) -> None:
    from backend.sandbox import RUNTIME_ORDER

    sandbox = sub.add_parser(
        "sandbox",
        help="run a Python file in the sandbox, or show which sandbox runs code here",
        description="Run untrusted Python in the strongest sandbox available here. Code "
        "never runs unsandboxed: with no sandbox available, nothing runs.",
        epilog=SANDBOX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sandbox.set_defaults(func=cmd_sandbox)
    actions = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="run a Python file and print the result as JSON",
        description="Run FILE as /scratch/main.py in a fresh scratch directory and print "
        "the SandboxResult as JSON.",
        epilog=SANDBOX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("file", metavar="FILE", type=Path, help="the Python file to run")
    run.add_argument("--timeout", type=float, metavar="S", help="wall-clock seconds (default 10)")
    run.add_argument("--cpu", type=float, metavar="S", help="CPU seconds (default 5)")
    run.add_argument("--memory", type=int, metavar="MB", help="memory in MB (default 256)")
    run.add_argument(
        "--disk", type=int, metavar="MB", help="scratch space for all files, in MB (default 64)"
    )
    run.add_argument(
        "--runtime", choices=RUNTIME_ORDER, help="use this runtime (default: the first available)"
    )
    actions.add_parser(
        "status",
        help="show the runtime in use, why others are unavailable, and what each enforces",
        description="Print the sandbox status as JSON (exit 4 when no runtime is available).",
    )


# --- end of sandbox ---------------------------------------------------------------------


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="REF",
        default=argparse.SUPPRESS,
        help="the default model for this run: tiny, qwen2.5-coder-1.5b, a GGUF path or "
        "ollama:TAG (default: [models] default in config.toml, else qwen2.5-coder-1.5b)",
    )


def build_parser() -> argparse.ArgumentParser:
    from backend.llm.models_cli import add_models_parser

    parser = argparse.ArgumentParser(
        prog="main.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _home_arg(parser)
    _model_arg(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    backend = sub.add_parser(
        "backend",
        help="run the backend in the foreground",
        description="Run the backend in the foreground. Writes HOME/connection.json (endpoints "
        "and HMAC key, mode 0600) once it is ready; stop it with Ctrl-C or SIGTERM (it saves "
        "the image first).",
    )
    _home_arg(backend)
    _model_arg(backend)
    backend.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    backend.set_defaults(func=cmd_backend)

    call = sub.add_parser(
        "call",
        help="send one command to the running backend and print the reply",
        description="Send one command to the backend running for HOME and print its reply as JSON.",
        epilog=CALL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _home_arg(call)
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    call.add_argument("kind", metavar="KIND", help="command kind, e.g. ping, set_state")
    call.add_argument("body", metavar="JSON_BODY", nargs="?", help="command body as a JSON object")
    call.set_defaults(func=cmd_call)

    keys = sub.add_parser(
        "keys",
        help="create this home's CURVE keypairs; authorize a client's public key",
        description="Create HOME/keys/server.key and client.key (public) with their "
        ".key_secret files (0600), if missing, and authorize this home's own client key. "
        'A backend with transport = "tcp" and curve = true lets in only the keys in '
        "HOME/keys/authorized (read at its start). On a client machine, run `keys` in a home "
        "holding a copy of the backend's connection.json, then authorize the printed "
        "client_public_key_file on the backend's machine with --authorize.",
    )
    _home_arg(keys)
    keys.add_argument("--authorize", type=Path, nargs="*", default=[], metavar="FILE",
                      help="client public key files (.key) to let in")  # fmt: skip
    keys.set_defaults(func=cmd_keys)
    _add_sandbox_parser(sub)
    add_models_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args.func = cmd_workbench
    if getattr(args, "model", None):
        import os

        from backend.llm.catalog import MODEL_ENV

        os.environ[MODEL_ENV] = args.model  # the backend this process starts inherits it
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
