"""The guide's Quick Start, Integration Example and Benchmarking snippets run as written.

The snippets are copied below verbatim. The guide itself lives outside this repository, so the
suite does not read it; set DOCGEN_GUIDE to its path to check that the copies have not drifted. The only change when running them: the hub ids become a tiny local
checkpoint, since no model hub is reachable; the benchmark's sizes are shrunk to keep the test fast.
"""
import asyncio
import os
import pathlib
import re
import shlex
import warnings

import pytest

GUIDE_ENV = "DOCGEN_GUIDE"  # path of the user's guide (a text file outside the repository)

QUICK_START = '''from app.llm.local_client_optimized import create_optimized_local_generator

# Create optimized generator
generator = create_optimized_local_generator(
    model_id="Qwen/Qwen2.5-Coder-7B-Instruct",  # 7B is faster than 32B!
    quantization="4bit",
    max_batch_size=8,  # Process 8 chunks at once
    enable_speculative_decoding=True,  # 2-3x speedup
)

# Use it exactly like the old generator
result = await generator.generate_batch_async(chunks)
'''

INTEGRATION = '''# OLD
from app.llm.local_client import create_local_generator
generator = create_local_generator(
    model_id="Qwen/Qwen2.5-Coder-32B-Instruct",
    quantization="4bit",
)

# NEW (5-10x faster)
from app.llm.local_client_optimized import create_optimized_local_generator
generator = create_optimized_local_generator(
    model_id="Qwen/Qwen2.5-Coder-7B-Instruct",  # Smaller model
    quantization="4bit",
    max_batch_size=8,  # Batching
    enable_speculative_decoding=True,  # Extra 2-3x
)
'''

BENCHMARK = '''python -m app.llm.benchmark_local \\
    --model "Qwen/Qwen2.5-Coder-7B-Instruct" \\
    --chunks 100 \\
    --batch-size 8
'''

CHUNKS = ["def area(r):\n    return 3.14159 * r * r\n",
          {"code": "class Stack:\n    def __init__(self):\n        self.items = []\n", "name": "Stack"}]
HUB_ID = re.compile(r"Qwen/Qwen2\.5-Coder-\d+B-Instruct")


def _guide_blocks():
    path = os.environ.get(GUIDE_ENV)
    if not path:
        return None
    return re.findall(r"```(?:python|bash)\n(.*?)```", pathlib.Path(path).read_text(), flags=re.S)


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return str(tiny_checkpoint("tiny", overrides={"max_position_embeddings": 2048}))


def _local(snippet: str, ckpt: str) -> str:
    return HUB_ID.sub(ckpt, snippet)


def test_snippets_are_the_guides():
    blocks = _guide_blocks()
    if blocks is None:
        pytest.skip(f"set {GUIDE_ENV} to the user's guide to check the snippets against it")
    for snippet in (QUICK_START, INTEGRATION, BENCHMARK):
        assert snippet in blocks


def _limit_new_tokens(monkeypatch):
    # The snippets leave max_new_tokens at its default (256); a random tiny model rarely stops early.
    import app.llm.local_client_optimized as m

    real = m.create_optimized_local_generator
    monkeypatch.setattr(m, "create_optimized_local_generator",
                        lambda *a, **k: real(*a, **{"max_new_tokens": 8, "max_seq_length": 2048, **k}))


def test_quick_start(ckpt, monkeypatch):
    _limit_new_tokens(monkeypatch)
    # Top-level `await` as in a notebook: compile the snippet with that flag, run it in a loop.
    import ast

    code = compile(_local(QUICK_START, ckpt), "<quick start>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    ns = {"chunks": CHUNKS}

    async def main():
        coro = eval(code, ns)
        if coro is not None:
            await coro

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU: no flash attention, maybe no speculation (asserted elsewhere)
        asyncio.run(main())
    try:
        assert len(ns["result"]) == len(CHUNKS)
        assert all(r.ok and r.text and r.completion_tokens > 0 for r in ns["result"]), [r.error for r in ns["result"]]
    finally:
        ns["generator"].close()


def test_integration_example(ckpt, monkeypatch):
    _limit_new_tokens(monkeypatch)
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(_local(INTEGRATION, ckpt), ns)
    from app.llm.local_client import LocalDocGenerator
    from app.llm.local_client_optimized import OptimizedLocalDocGenerator

    new = ns["generator"]
    assert isinstance(new, OptimizedLocalDocGenerator)
    try:
        results = new.generate_batch(CHUNKS)  # "No other code changes needed"
        assert all(r.ok and r.text for r in results)
    finally:
        new.close()
    # The OLD generator was replaced by the snippet; build it again from the same lines to use it.
    old_src = _local(INTEGRATION, ckpt).split("# NEW")[0]
    old_ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(old_src, old_ns)
    old = old_ns["generator"]
    assert isinstance(old, LocalDocGenerator)
    old.max_new_tokens = 8
    try:
        assert all(r.ok and r.text for r in old.generate_batch(CHUNKS[:1]))
    finally:
        old.close()


@pytest.mark.slow
def test_benchmarking_command(ckpt, tmp_path, capsys):
    from app.llm import benchmark_local

    argv = shlex.split(_local(BENCHMARK, ckpt).replace("\\\n", " "))
    assert argv[:3] == ["python", "-m", "app.llm.benchmark_local"]
    args = argv[3:]
    args[args.index("--chunks") + 1] = "3"  # 100 chunks take too long for a test
    out_json = tmp_path / "b.json"
    assert benchmark_local.main(args + ["--max-new-tokens", "4", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Original generator: 3 chunks in [\d.]+s \([\d.]+s/chunk\)$", out, re.M)
    assert re.search(r"^Optimized generator: 3 chunks in [\d.]+s \([\d.]+s/chunk\)$", out, re.M)
    assert re.search(r"^Speedup: [\d.]+x$", out, re.M)
    assert out_json.is_file()
