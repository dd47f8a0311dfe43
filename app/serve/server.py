"""Start the server: in the foreground (`docgen serve`), or in a background thread (tests, benchmarks).

The engine is loaded before the socket opens, so a client never sees a half-started server.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from .config import ServeConfig


def _imports():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise ValueError(f"`docgen serve` needs FastAPI and uvicorn ({e}); install them with "
                         "pip install '.[serve]' in the docgen checkout (or pip install fastapi uvicorn)") from e
    return uvicorn


def build(cfg: ServeConfig, llm: Any = None):
    """The FastAPI app and its engine; `llm` may be a ready engine or a factory (default: load cfg.model)."""
    _imports()
    from .app import create_app
    from .engine_client import AsyncEngine

    def load():
        from app.engine import LLM

        return LLM(cfg.model, **cfg.engine_kwargs)

    engine = AsyncEngine(llm if llm is not None else load)
    return create_app(cfg, engine), engine


def serve_forever(cfg: ServeConfig) -> None:
    uvicorn = _imports()
    app, engine = build(cfg)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, timeout_graceful_shutdown=5)
    finally:
        engine.close()


class BackgroundServer:
    """uvicorn in a daemon thread on cfg.host:cfg.port (port 0: a free port). `url` is its /v1 base."""

    def __init__(self, cfg: ServeConfig, llm: Any = None, app_engine=None) -> None:
        uvicorn = _imports()
        self.cfg = cfg
        self.app, self.engine = app_engine or build(cfg, llm)
        config = uvicorn.Config(self.app, host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                                timeout_graceful_shutdown=1, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="docgen-serve-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {cfg.host}:{cfg.port}")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{cfg.host}:{self.port}/v1"

    def stop(self, close_engine: bool = True) -> None:
        """Stop serving (the socket closes); close the engine too unless another server reuses it."""
        self.server.should_exit = True
        self.thread.join(15)
        if close_engine:
            self.engine.close()
