"""`python -m app.serve --model PATH [--host H --port P --api-key KEY ...]` (same flags as `docgen serve`)."""
from __future__ import annotations

import argparse
import os
import sys


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="local model folder or hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --api-key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("DOCGEN_SERVE_API_KEY"),
                   help="clients must send `Authorization: Bearer KEY` (default: $DOCGEN_SERVE_API_KEY)")
    p.add_argument("--served-model-name", help="the model name clients use (default: --model)")
    p.add_argument("--max-model-len", type=int, help="context window (default: the model's)")
    p.add_argument("--max-num-seqs", type=int, help="requests in the running batch (default 256)")
    p.add_argument("--dtype", help="auto, float32, bfloat16, float16")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--quantization", help="weight quantization (see README: weight formats)")
    p.add_argument("--kv-cache-memory-gb", type=float)
    p.add_argument("--log-level", default="warning")


def config_from_args(args):
    from .config import ServeConfig

    engine = {k: getattr(args, k) for k in ("max_model_len", "max_num_seqs", "dtype", "device", "quantization",
                                            "kv_cache_memory_gb") if getattr(args, k) is not None}
    return ServeConfig(model=args.model, host=args.host, port=args.port, api_key=args.api_key,
                       served_model_name=args.served_model_name, engine_kwargs=engine, log_level=args.log_level)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.serve", description="OpenAI-compatible server over app.engine")
    add_serve_args(p)
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args)
        from .server import serve_forever

        serve_forever(cfg)
    except ValueError as e:
        print(f"docgen serve: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
