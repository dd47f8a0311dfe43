"""Server vs in-process engine on the CPU: N concurrent streaming clients against `python -m app.serve`
(a separate process) vs LLM.generate on the same prompts, same checkpoint and engine settings.

Prints generated tokens/s for both, their ratio (target >= 0.9), and time to first token
(client-side for the server: until the first streamed text; engine-side for in-process).

    python benchmarks/serve_cpu.py --preset tiny --clients 32 --max-new-tokens 32 --json bench_out/serve_cpu.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.workload import docgen_workload  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(path: str, wl, engine_kwargs: dict) -> dict:
    from app.engine import LLM, SamplingParams

    llm = LLM(path, **engine_kwargs)
    sp = SamplingParams(max_tokens=wl.max_new_tokens, ignore_eos=True)
    llm.generate(wl.prompts[:2], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    t = time.perf_counter()
    outs = llm.generate(wl.prompts, sp)
    wall = time.perf_counter() - t
    ttft = [o.metrics["time_to_first_token"] for o in outs]
    tokens = sum(len(o.token_ids) for o in outs)
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_p50_s": statistics.median(ttft), "ttft_max_s": max(ttft)}


def start_server(path: str, port: int, engine_kwargs: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "app.serve", "--model", path, "--port", str(port), "--served-model-name", "m"]
    for k, v in engine_kwargs.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).text == "ok":
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the server exited while starting")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 300 s")


async def clients(url: str, wl) -> dict:
    import openai

    ac = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=3600)
    await ac.completions.create(model="m", prompt=wl.prompts[0], max_tokens=4)  # warm-up

    async def one(p):
        t0, first, n = time.perf_counter(), None, 0
        stream = await ac.completions.create(model="m", prompt=p, max_tokens=wl.max_new_tokens, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})
        async for c in stream:
            if c.choices and c.choices[0].text and first is None:
                first = time.perf_counter() - t0
            if c.usage is not None:
                n = c.usage.completion_tokens
        return first, n

    t = time.perf_counter()
    res = await asyncio.gather(*(one(p) for p in wl.prompts))
    wall = time.perf_counter() - t
    await ac.close()
    ttft = [r[0] for r in res if r[0] is not None]
    tokens = sum(r[1] for r in res)
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_p50_s": statistics.median(ttft), "ttft_max_s": max(ttft)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prefix", type=int, default=100)
    ap.add_argument("--chunk-min", type=int, default=100)
    ap.add_argument("--chunk-max", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from benchmarks.random_checkpoint import build_checkpoint
    from transformers import AutoConfig

    path = str(build_checkpoint(tempfile.mkdtemp(prefix="serve-bench-"), args.preset))
    vocab = AutoConfig.from_pretrained(path).vocab_size
    wl = docgen_workload(args.clients, vocab, args.prefix, args.chunk_min, args.chunk_max, args.max_new_tokens)
    engine_kwargs = {"max_model_len": 2048}
    local = in_process(path, wl, engine_kwargs)
    port = free_port()
    proc = start_server(path, port, engine_kwargs)
    try:
        served = asyncio.run(clients(f"http://127.0.0.1:{port}/v1", wl))
    finally:
        proc.terminate()
        proc.wait(30)
    res = {"preset": args.preset, "clients": args.clients, "max_new_tokens": args.max_new_tokens,
           "prompt_tokens": wl.prompt_tokens, "in_process": local, "server": served,
           "ratio": served["tokens_per_s"] / local["tokens_per_s"], "cpu_count": os.cpu_count()}
    print(json.dumps(res, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
