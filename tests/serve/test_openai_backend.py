"""`docgen run --backend openai` against a live server: the same docs as the in-process engine
(greedy), and a server restart mid-run costs retries, not results. Plus the endpoint pool alone."""
from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time

import pytest

from app.llm.backends.endpoints import EndpointPool
from tests.docgen.conftest import DEMO

FLAGS = ["--plain", "--no-retry", "--max-new-tokens", "10", "--max-seq-length", "2048", "--batch-size", "8"]


@pytest.fixture(scope="module")
def wide_server(tiny_checkpoint):
    """A server whose window holds the documentation prompt (about 300 tokens)."""
    from app.serve.config import ServeConfig
    from app.serve.server import BackgroundServer

    srv = BackgroundServer(ServeConfig(model=str(tiny_checkpoint("tiny")), port=0, served_model_name="tiny",
                                       engine_kwargs=dict(max_model_len=2048)))
    yield srv
    srv.stop()


def project(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(DEMO / "geometry", dst / "geometry")
    return dst


def docs(store) -> dict[str, tuple[str, int, str]]:
    db = sqlite3.connect(str(store))
    rows = db.execute("SELECT u.uid, r.text, r.completion_tokens, r.finish_reason FROM units u "
                      "JOIN results r ON u.key = r.key").fetchall()
    db.close()
    return {uid: (text, n, fin) for uid, text, n, fin in rows}


def test_run_against_server_equals_in_process(wide_server, tiny_checkpoint, tmp_path):
    from app.cli import main

    a, b = project(tmp_path, "a"), project(tmp_path, "b")
    assert main(["run", str(a), "--model", str(tiny_checkpoint("tiny")), "--quantization", "none", *FLAGS]) == 0
    assert main(["run", str(b), "--backend", "openai", "--base-url", wide_server.url, *FLAGS]) == 0
    local, remote = docs(a / ".docgen" / "docgen.sqlite"), docs(b / ".docgen" / "docgen.sqlite")
    assert len(local) >= 8 and local == remote


def test_backend_sizes_chunks_with_the_served_tokenizer(wide_server, tiny_checkpoint):
    """Through /tokenize the generator counts exactly what the in-process generator counts."""
    from app.llm.backends.openai_client import OpenAIBackendConfig, OpenAIDocGenerator
    from app.llm.prompts import count_prompt_tokens, count_tokens
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint("tiny")))
    gen = OpenAIDocGenerator(OpenAIBackendConfig([wide_server.url]))
    chunk = {"code": "def area(r):\n    return 3.14159 * r ** 2", "name": "area", "path": "g.py"}
    try:
        assert gen.count_tokens("héllo wörld  x") == count_tokens(tok, "héllo wörld  x")
        assert gen.count_prompt_tokens(chunk) == count_prompt_tokens(tok, chunk)
    finally:
        gen.close()


def test_run_survives_a_server_restart(wide_server, tmp_path, monkeypatch):
    """Stop the HTTP server once a few requests are served, bring it back on the same port 1.5 s
    later: every chunk is still documented (connection errors were retried)."""
    from app.cli import main
    from app.serve.app import create_app
    from app.serve.server import BackgroundServer

    state = {"server": wide_server, "restarted": False, "stopped": False}
    metrics = wide_server.app.state.metrics
    served_before = sum(metrics.requests.values())

    def restart():
        deadline = time.monotonic() + 60
        while sum(metrics.requests.values()) < served_before + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        old = state["server"]
        old.stop(close_engine=False)
        state["stopped"] = True
        time.sleep(1.5)
        cfg = old.cfg
        cfg.port = old.port
        state["server"] = BackgroundServer(cfg, app_engine=(create_app(cfg, old.engine), old.engine))
        state["restarted"] = True

    from app.llm.backends import openai_client

    made = []
    real_init = openai_client.OpenAIDocGenerator.__init__

    def recording_init(self, cfg):
        real_init(self, cfg)
        made.append(self)

    monkeypatch.setattr(openai_client.OpenAIDocGenerator, "__init__", recording_init)
    # The 4th request waits until the server is down, so at least one request meets it down
    # whatever the machine's speed (a fast run could otherwise finish before the restart).
    real_generate, calls = openai_client.OpenAIDocGenerator.generate_async, [0]

    async def gated_generate(self, chunk):
        calls[0] += 1
        if calls[0] == 4:
            while not state["stopped"]:
                await asyncio.sleep(0.01)
        return await real_generate(self, chunk)

    monkeypatch.setattr(openai_client.OpenAIDocGenerator, "generate_async", gated_generate)
    t = threading.Thread(target=restart)
    t.start()
    p = project(tmp_path, "c")
    rc = main(["run", str(p), "--backend", "openai", "--base-url", wide_server.url, *FLAGS, "--batch-size", "2"])
    t.join(60)
    assert state["restarted"] and rc == 0
    got = docs(p / ".docgen" / "docgen.sqlite")
    assert len(got) >= 8 and all(fin in ("stop", "length") for _, _, fin in got.values())
    assert made[0].totals["retries"] > 0 and made[0].totals["errors"] == 0
    assert sum(state["server"].app.state.metrics.requests.values()) > 0  # the restart was mid-run
    wide_server.server = state["server"].server  # let the module fixture stop the live one
    wide_server.thread = state["server"].thread


def test_pool_prefers_least_loaded_and_bounds_each_endpoint():
    pool = EndpointPool(["http://a/v1", "http://b/v1"], limit=2)

    async def run():
        got = [await pool.acquire() for _ in range(4)]
        assert [e.url for e in got] == ["http://a/v1", "http://b/v1", "http://a/v1", "http://b/v1"]
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # both endpoints are full
        await pool.release(got[1], ok=False)  # b failed: cooling down, but it has the only free slot
        assert (await asyncio.wait_for(waiter, 1)).url == "http://b/v1"
        await pool.release(got[0], ok=True)
        assert pool.pick().url == "http://a/v1"

    asyncio.run(run())
    with pytest.raises(ValueError, match="base-url"):
        EndpointPool([], limit=1)


def test_backend_sends_the_key_and_a_wrong_key_fails_fast(server):
    from app.llm.backends.openai_client import OpenAIBackendConfig, OpenAIDocGenerator
    from app.serve.app import create_app
    from app.serve.config import ServeConfig
    from app.serve.server import BackgroundServer

    cfg = ServeConfig(model="tiny", port=0, api_key="k3y")
    keyed = BackgroundServer(cfg, app_engine=(create_app(cfg, server.engine), server.engine))
    chunk = {"code": "def f(x):\n    return x", "name": "f"}
    try:
        with pytest.raises(ValueError, match="could not list models"):  # no key: /v1/models is refused
            OpenAIDocGenerator(OpenAIBackendConfig([keyed.url], max_new_tokens=4))
        gen = OpenAIDocGenerator(OpenAIBackendConfig([keyed.url], api_key="k3y", max_new_tokens=4))
        assert gen.model_id == "tiny" and gen.max_seq_length == 256  # the server's window
        gen.cfg.api_key = "wrong"
        bad = gen.generate_batch([chunk])[0]
        assert not bad.ok and "401" in bad.error and gen.totals["retries"] == 0  # 401 is not retried
    finally:
        keyed.stop(close_engine=False)


def test_backend_honours_a_chunks_own_token_limit(wide_server):
    """docgen retries a cut-off doc with a larger CodeChunk.max_new_tokens; the server gets it as max_tokens."""
    from app.llm.backends.openai_client import OpenAIBackendConfig, OpenAIDocGenerator

    gen = OpenAIDocGenerator(OpenAIBackendConfig([wide_server.url], max_new_tokens=3))
    code = {"code": "def area(r):\n    return 3.14159 * r ** 2", "name": "area"}
    try:
        default, larger = gen.generate_batch([code, dict(code, max_new_tokens=6)])
    finally:
        gen.close()
    assert (default.completion_tokens, default.finish_reason) == (3, "length")  # the tiny model never stops
    assert (larger.completion_tokens, larger.finish_reason) == (6, "length")


def test_backend_closes_once_like_the_other_generators(wide_server):
    """DocGeneratorBase's lifetime: the context manager closes it, a second close is harmless,
    and generating after close is a clear error, not a silent reconnect."""
    from app.llm.backends.openai_client import OpenAIBackendConfig, OpenAIDocGenerator

    with OpenAIDocGenerator(OpenAIBackendConfig([wide_server.url], max_new_tokens=2)) as gen:
        assert gen.generate({"code": "def f(x):\n    return x", "name": "f"}).finish_reason == "length"
    assert gen._tokenizer_http.is_closed
    gen.close()
    with pytest.raises(RuntimeError, match="OpenAIDocGenerator is closed"):
        gen.generate_batch([{"code": "x = 1", "name": "x"}])
