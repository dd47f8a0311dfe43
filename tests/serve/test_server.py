"""The official openai client against a live server: equal to LLM.generate, streaming, stop, n,
min_tokens, logprobs, concurrency, disconnects, errors and keys."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from app.engine import SamplingParams

PROMPT = "def add(a, b):\n    return"
MESSAGES = [{"role": "system", "content": "Document code."}, {"role": "user", "content": "def f(x): return x"}]


def chat_ids(server, messages=MESSAGES):
    tok = server.engine.tokenizer
    return tok.encode(tok.apply_chat_template(messages))


def test_greedy_completion_and_chat_equal_llm_generate(server, client, reference):
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    ref = reference([PROMPT], sp)[0]
    assert r.choices[0].text == ref.text and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ref.prompt_token_ids), 12)
    c = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0,
                                       extra_body={"ignore_eos": True})
    ref = reference([chat_ids(server)], sp)[0]
    assert c.choices[0].message.content == ref.text and c.usage.total_tokens == len(ref.prompt_token_ids) + 12


@pytest.mark.parametrize("chat", [False, True])
def test_stream_concatenates_to_the_same_text(client, chat):
    kw = dict(model="tiny", max_tokens=16, temperature=0, extra_body={"ignore_eos": True, "stop": ["zq"]})
    if chat:
        full = client.chat.completions.create(messages=MESSAGES, **kw).choices[0].message.content
        chunks = list(client.chat.completions.create(messages=MESSAGES, stream=True, **kw))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        full = client.completions.create(prompt=PROMPT, **kw).choices[0].text
        chunks = list(client.completions.create(prompt=PROMPT, stream=True, **kw))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full and len([c for c in chunks if c.choices]) > 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


def test_stop_string(client, reference):
    free = reference([PROMPT], SamplingParams(max_tokens=16, ignore_eos=True))[0].text
    stop = free[4:7]
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop],
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "stop" and r.choices[0].text == free[: free.find(stop)]
    s = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop], stream=True,
                                  extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text


def test_n2_with_seed_and_min_tokens_match_the_engine(client, reference):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=1.0, seed=7, n=2)
    ref = reference([PROMPT], SamplingParams(max_tokens=10, temperature=1.0, seed=7, n=2))[0]
    assert [c.text for c in r.choices] == [s.text for s in ref.samples]
    assert r.usage.completion_tokens == sum(len(s.token_ids) for s in ref.samples)
    first = reference([PROMPT], SamplingParams(max_tokens=8, ignore_eos=True))[0].token_ids[0]
    sp = SamplingParams(max_tokens=8, min_tokens=5, stop_token_ids=[first])
    m = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0,
                                  extra_body={"min_tokens": 5, "stop_token_ids": [first]})
    ref = reference([PROMPT], sp)[0]
    assert m.choices[0].text == ref.text and m.usage.completion_tokens == len(ref.token_ids) >= 5


def test_logprobs(client, reference, server):
    ref = reference([PROMPT], SamplingParams(max_tokens=6, ignore_eos=True, logprobs=2))[0]
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert lp.token_logprobs == pytest.approx([e["logprob"] for e in ref.logprobs])
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    c = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=2, extra_body={"ignore_eos": True})
    ref = reference([chat_ids(server)], SamplingParams(max_tokens=4, ignore_eos=True, logprobs=2))[0]
    got = c.choices[0].logprobs.content
    assert [x.logprob for x in got] == pytest.approx([e["logprob"] for e in ref.logprobs])
    assert all(len(x.top_logprobs) == 2 for x in got)


@pytest.mark.parametrize("chat", [False, True])
def test_streamed_logprobs_add_up_to_the_plain_ones(client, chat):
    kw = dict(model="tiny", max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
    if chat:
        kw.update(messages=MESSAGES, logprobs=True, top_logprobs=2)
        plain = client.chat.completions.create(**kw).choices[0].logprobs.content
        streamed = [x for c in client.chat.completions.create(stream=True, **kw) if c.choices
                    for x in (c.choices[0].logprobs.content if c.choices[0].logprobs else [])]
        assert [(x.token, x.logprob) for x in streamed] == [(x.token, x.logprob) for x in plain]
    else:
        kw.update(prompt=PROMPT, logprobs=1)
        plain = client.completions.create(**kw).choices[0].logprobs
        parts = [c.choices[0].logprobs for c in client.completions.create(stream=True, **kw) if c.choices]
        parts = [p for p in parts if p is not None]
        assert [t for p in parts for t in p.tokens] == plain.tokens and len(plain.tokens) == 8
        assert [x for p in parts for x in p.token_logprobs] == plain.token_logprobs
        assert [x for p in parts for x in p.text_offset] == plain.text_offset


def test_64_concurrent_requests_all_correct(server, reference):
    prompts = [f"def f{i}(x):\n    return x + {i}" for i in range(64)]
    lens = [4 + i % 9 for i in range(64)]
    refs = reference(prompts, [SamplingParams(max_tokens=n, ignore_eos=True) for n in lens])

    async def main():
        ac = openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=120)
        rs = await asyncio.gather(*(ac.completions.create(model="tiny", prompt=p, max_tokens=n, temperature=0,
                                                          extra_body={"ignore_eos": True})
                                    for p, n in zip(prompts, lens)))
        await ac.close()
        return rs

    got = asyncio.run(main())
    assert [r.choices[0].text for r in got] == [o.text for o in refs]
    assert [r.usage.completion_tokens for r in got] == lens


def _engine_idle(server) -> tuple[bool, int]:
    return server.engine.thread.call(lambda llm: (not llm.has_unfinished(), llm.block_manager.num_free_blocks))


@pytest.fixture
def slow_steps(server):
    """Each engine step takes >= 5 ms: "aborted before its 240 tokens" must not depend on how fast
    the tiny model runs (the lean CPU forward finished all 240 before the 0.1 s disconnect poll)."""
    def install(llm):
        real = llm.step

        def step(*a, **k):
            time.sleep(0.005)
            return real(*a, **k)

        llm.step = step  # the engine thread calls self.llm.step(): the instance attribute wins

    server.engine.thread.call(install)
    yield
    server.engine.thread.call(lambda llm: vars(llm).pop("step", None))


def test_disconnect_mid_stream_frees_kv_blocks(server, slow_steps):
    idle, free_before = _engine_idle(server)
    assert idle
    computed = server.engine.thread.call(lambda llm: llm.stats["computed_tokens"])
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 240, "temperature": 0, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=30) as h:
        with h.stream("POST", server.url + "/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            got = [json.loads(x[6:]) for x in (next(lines) for _ in range(6)) if x.startswith("data: {")]
            assert got  # mid-stream: generation has started and is far from its 200 tokens
            assert not _engine_idle(server)[0]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _engine_idle(server) != (True, free_before):
        time.sleep(0.05)
    assert _engine_idle(server) == (True, free_before)
    # aborted, not run to its 240 tokens: the engine computed far fewer positions than that
    assert server.engine.thread.call(lambda llm: llm.stats["computed_tokens"]) - computed < 120
    assert "docgen_client_disconnects_total 1" in httpx.get(server.url[:-3] + "/metrics").text


def test_disconnect_while_waiting_for_a_plain_response_aborts_it(server, slow_steps):
    idle, free_before = _engine_idle(server)
    computed = server.engine.thread.call(lambda llm: llm.stats["computed_tokens"])
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 240, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/completions", json=body, timeout=httpx.Timeout(30, read=0.05))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _engine_idle(server) != (True, free_before):
        time.sleep(0.05)
    assert _engine_idle(server) == (True, free_before)
    # not run to its 240 tokens (the server polls for the disconnect every 0.1 s)
    assert server.engine.thread.call(lambda llm: llm.stats["computed_tokens"]) - computed < 240


def test_errors_in_openai_shape(client, server):
    too_long = list(range(5, 5 + 256))  # the window is 256 tokens
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=too_long, max_tokens=4)
    assert e.value.status_code == 400 and "maximum context length is 256" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=250)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt=PROMPT, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="min_tokens"):
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, extra_body={"min_tokens": 3})
    for stream in (False, True):
        r = httpx.post(server.url + "/completions", json={"model": "tiny", "prompt": [10**6], "stream": stream})
        assert r.status_code == 400 and "out of range" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/completions", json={"model": "tiny", "prompt": PROMPT, "max_tokens": "x"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_health_models_metrics(server, client):
    assert httpx.get(server.url[:-3] + "/health").text == "ok"
    assert [m.id for m in client.models.list().data] == ["tiny"]
    text = httpx.get(server.url[:-3] + "/metrics").text
    for name in ("docgen_requests_total", "docgen_queue_depth", "docgen_kv_cache_usage",
                 "docgen_prefix_cache_hit_tokens_total", "docgen_generation_tokens_total"):
        assert name in text


def test_api_key_checked_and_required_off_loopback(server, tiny_checkpoint, capsys):
    from app.cli import main
    from app.serve.app import create_app
    from app.serve.config import ServeConfig
    from app.serve.server import BackgroundServer

    assert main(["serve", "--model", str(tiny_checkpoint("tiny")), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err
    cfg = ServeConfig(model="tiny", port=0, api_key="s3cret")
    keyed = BackgroundServer(cfg, app_engine=(create_app(cfg, server.engine), server.engine))
    try:
        with pytest.raises(openai.AuthenticationError) as e:
            openai.OpenAI(base_url=keyed.url, api_key="wrong", max_retries=0).models.list()
        assert e.value.status_code == 401
        ok = openai.OpenAI(base_url=keyed.url, api_key="s3cret", max_retries=0)
        assert ok.completions.create(model="tiny", prompt=PROMPT, max_tokens=2).usage.completion_tokens >= 1
    finally:
        keyed.stop(close_engine=False)
