"""``python -m backend --home DIR``: build the services and serve until stopped."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

from backend.attach import AttachWatch
from backend.bus import EventBus
from backend.config import load_config
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


def serve(home_dir: Path) -> int:
    """Run the backend in the foreground. Returns the process exit code."""
    home = Home(home_dir)
    try:
        home.ensure()
        full_config = load_config(home.config_path)
        config = full_config.backend
        home.acquire_lock()
    except ConfigInvalidError as exc:
        log.error("%s", exc.message)
        return EXIT_CONFIG
    except UnavailableError as exc:
        log.error("%s", exc.message)
        return EXIT_RUNNING
    connection_path = home.root / CONNECTION_FILE
    try:
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
        learning = server.ctx.learning = LearningService(
            runtime, llm, full_config.learning, home.root
        )
        dialogues.motivator.forge_submit = forge.submit  # approved goals forge tools
        runtime.start()
        llm.refresh_selections()
        dialogues.start()
        forge.start()
        learning.start()
    except ImageError as exc:
        log.error("%s", exc.message)
        home.release_lock()
        return EXIT_IMAGE
    except EntropicError as exc:
        log.error("%s", exc.message)
        home.release_lock()
        return EXIT_CONFIG
    info = ConnectionInfo(
        request_endpoint=server.endpoints["requests"],
        event_endpoint=server.endpoints["events"],
        key=key.hex(),
        pid=os.getpid(),
        home=str(home.root),
        server_key=curve.public.decode() if curve else "",
    )
    write_connection_file(home.root, info)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop(True))
    log.info(
        "backend pid %d serving %s on %s (events %s)",
        os.getpid(),
        home.root,
        info.request_endpoint,
        info.event_endpoint,
    )
    attach = server.ctx.attach = AttachWatch.from_environment(
        config.orphan_exit_s, lambda: server.request_stop(True)
    )
    attach.start()
    # The memory opens on first use, or once the first seconds are over: importing LanceDB
    # and the embedder takes seconds of CPU that the first requests should not wait behind.
    memory.start_when_idle(MEMORY_OPEN_DELAY_S)
    try:
        server.serve_forever()
    finally:
        try:
            attach.close()
            llm.manager.cancel_all()  # a quit never waits for background model work
            learning.close()
            forge.close()
            dialogues.close()
            llm.close()
            memory.close()  # after the models: the last answers are recorded
            runtime.close(save=server.save_on_exit)
        finally:
            connection_path.unlink(missing_ok=True)
            server.close()
            home.release_lock()
            log.info("backend stopped")
    return 0


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
