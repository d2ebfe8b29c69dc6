"""``python -m backend --home DIR``: build the services and serve until stopped."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from backend.attach import AttachWatch
from backend.bus import EventBus
from backend.config import BackendConfig, Config, load_config
from backend.dialogue.cast import memory_research
from backend.dialogue.service import DialogueService
from backend.forge import ToolForge
from backend.home import Home, default_home
from backend.learning.service import LearningService
from backend.llm.service import PersonaLLM
from backend.memory.service import MemoryService
from backend.protos import Proto
from backend.runtime import Runtime
from backend.server import Server
from shared_api.connection import CONNECTION_FILE, ConnectionInfo, write_connection_file
from shared_api.errors import ConfigInvalidError, EntropicError, ImageError, UnavailableError
from shared_api.transport import Curve, load_keypair

log = logging.getLogger("backend")

EXIT_CONFIG, EXIT_RUNNING, EXIT_IMAGE = 2, 3, 4
MEMORY_OPEN_DELAY_S = 5.0


@dataclass
class Backend:
    """The built services of one backend, ready to serve."""

    home: Home
    config: BackendConfig
    runtime: Runtime
    llm: PersonaLLM
    server: Server
    memory: MemoryService
    dialogues: DialogueService
    forge: ToolForge
    learning: LearningService
    key: bytes
    curve: Curve | None


def serve(home_dir: Path) -> int:
    """Run the backend in the foreground. Returns the process exit code."""
    home = Home(home_dir)
    try:
        home.ensure()
        full_config = load_config(home.config_path)
        home.acquire_lock()
    except ConfigInvalidError as exc:
        log.error("%s", exc.message)
        return EXIT_CONFIG
    except UnavailableError as exc:
        log.error("%s", exc.message)
        return EXIT_RUNNING
    try:
        backend = build(home, full_config)
    except EntropicError as exc:
        log.error("%s", exc.message)
        home.release_lock()
        return EXIT_IMAGE if isinstance(exc, ImageError) else EXIT_CONFIG
    run(backend)
    return 0


def build(home: Home, full_config: Config) -> Backend:
    """Build and start the services, wired to each other; nothing is served yet."""
    config = full_config.backend
    bus = EventBus()
    runtime = Runtime(home, config, bus)
    llm = PersonaLLM(runtime, full_config.models, bus)
    Proto.llm = llm
    key = secrets.token_bytes(32)
    curve = _curve(home) if config.transport == "tcp" and config.curve else None
    server = Server(runtime, llm, config, bus, key, *home.socket_dir(), curve=curve)
    memory = MemoryService(
        home.memory_dir,
        full_config.memory,
        bus,
        ollama_host=full_config.models.ollama_host,
        runtime=runtime,
    )
    llm.memory = server.ctx.memory = memory
    dialogues = server.ctx.dialogue = DialogueService(
        runtime, full_config, bus, home.root, research=memory_research(memory)
    )
    forge = ToolForge(runtime, llm, bus, full_config.forge)
    Proto.tool_runner = server.ctx.forge = forge
    runtime.on_does_not_understand = forge.on_does_not_understand
    learning = server.ctx.learning = LearningService(runtime, llm, full_config.learning, home.root)
    dialogues.motivator.forge_submit = forge.submit  # approved goals forge tools
    runtime.start()
    llm.refresh_selections()
    dialogues.start()
    forge.start()
    learning.start()
    return Backend(
        home, config, runtime, llm, server, memory, dialogues, forge, learning, key, curve
    )


def run(b: Backend) -> None:
    """Publish the connection file and serve until stopped; then close everything, the
    services first (in reverse order of need), then the socket and the home's lock."""
    with ExitStack() as stack:
        stack.callback(log.info, "backend stopped")
        stack.callback(b.home.release_lock)
        stack.callback(b.server.close)
        stack.callback((b.home.root / CONNECTION_FILE).unlink, missing_ok=True)
        stack.callback(lambda: b.runtime.close(save=b.server.save_on_exit))  # read at exit
        stack.callback(b.memory.close)  # after the models: the last answers are recorded
        stack.callback(b.llm.close)
        stack.callback(b.dialogues.close)
        stack.callback(b.forge.close)
        stack.callback(b.learning.close)
        stack.callback(b.llm.manager.cancel_all)  # a quit never waits for background model work
        _publish(b)
        server = b.server
        attach = server.ctx.attach = AttachWatch.from_environment(
            b.config.orphan_exit_s, lambda: server.request_stop(True)
        )
        stack.callback(attach.close)
        attach.start()
        # The memory opens on first use, or once the first seconds are over: importing
        # LanceDB and the embedder takes seconds of CPU that the first requests should not
        # wait behind.
        b.memory.start_when_idle(MEMORY_OPEN_DELAY_S)
        server.serve_forever()


def _publish(b: Backend) -> None:
    """Write the connection file, and stop (saving) on SIGTERM or SIGINT."""
    info = ConnectionInfo(
        request_endpoint=b.server.endpoints["requests"],
        event_endpoint=b.server.endpoints["events"],
        key=b.key.hex(),
        pid=os.getpid(),
        home=str(b.home.root),
        server_key=b.curve.public.decode() if b.curve else "",
    )
    write_connection_file(b.home.root, info)
    server = b.server
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop(True))
    log.info(
        "backend pid %d serving %s on %s (events %s)",
        os.getpid(),
        b.home.root,
        info.request_endpoint,
        info.event_endpoint,
    )


def _curve(home: Home) -> Curve:
    server_secret, _client = home.curve_keys()
    public, secret = load_keypair(server_secret)
    log.info("CURVE on: clients need a key authorized in %s", home.authorized_dir)
    return Curve(public=public, secret=secret, authorized=home.authorized_dir)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    parser.add_argument("--home", type=Path, default=default_home())
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return serve(args.home)


if __name__ == "__main__":
    sys.exit(main())
