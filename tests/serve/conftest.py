"""One live server per test session: the tiny checkpoint behind `docgen serve`'s app on a free
loopback port. `reference(prompts, params)` runs LLM.generate on the same engine, in its thread."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")


@pytest.fixture(scope="session")
def server(tiny_checkpoint):
    from app.serve.config import ServeConfig
    from app.serve.server import BackgroundServer

    path = str(tiny_checkpoint("tiny"))
    srv = BackgroundServer(ServeConfig(model=path, port=0, served_model_name="tiny",
                                       engine_kwargs=dict(block_size=4, max_model_len=256)))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def reference(server):
    def run(prompts, params):
        return server.engine.thread.call(lambda llm: llm.generate(prompts, params), timeout=120)

    return run


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
