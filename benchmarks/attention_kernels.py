"""Attention kernel benchmark: Triton paged kernels vs torch_ref vs dense SDPA, on one GPU.

    python benchmarks/attention_kernels.py --json attention_kernels.json      # H100: ~2-3 minutes
    python benchmarks/attention_kernels.py --tiny                           # CPU dry run (interpreter)

Shapes (Qwen2.5-Coder-7B attention): 28 query / 4 KV heads, head_dim 128, bf16, block_size 16.
- decode: B=64 sequences x 2048 context, bf16 and fp8 KV; Triton eager and replayed from a CUDA
  graph (also checks the graph stays correct when seq_lens change), plus a num_splits/block_n sweep.
- prefill: 4 x 2048 fresh prompts, and 8 x 512-token chunks over 1536 cached tokens, plus a tile sweep.
- store_kv: 64 (decode) and 8192 (prefill) tokens.
"SDPA" is F.scaled_dot_product_attention on dense, pre-gathered K/V already expanded to the query
heads (prepared outside the timing): the best case for a non-paged kernel, not a drop-in backend.
Every Triton row reports its max abs difference from torch_ref. Each section runs in a child process
(benchmarks/isolate.py: a CUDA error costs only its section) and the JSON is rewritten after each. Timings are medians of
triton.testing.do_bench (ms). Prints one table, writes JSON to --json. Needs a CUDA GPU, except
with --tiny, which runs tiny shapes under the Triton interpreter on the CPU to check the script.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write results to this path")
    p.add_argument("--tiny", action="store_true", help="tiny shapes; on a CPU-only machine uses the interpreter")
    p.add_argument("--no-sweep", action="store_true", help="skip the tile / num_splits sweeps")
    p.add_argument("--timeout", type=float, default=140, help="seconds for all sections together")
    p.add_argument("--phases", help=argparse.SUPPRESS)  # child process: comma-separated sections
    p.add_argument("--phase-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


class Bench:
    def __init__(self, torch, device, tiny: bool):
        self.torch, self.device, self.tiny, self.rows = torch, device, tiny, []

    def time_ms(self, fn) -> float:
        if self.device.type == "cuda":
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=10, rep=50, return_mode="median"))
        fn()  # CPU dry run: one timed call is enough to exercise the code
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    def add(self, section, name, fn, *, ref=None, work=None, unit="", **extra):
        """Time fn; if ref is given, fn's output is compared to it. work / ms -> the metric column."""
        row = dict(section=section, name=name, **extra)
        try:
            out = fn()
            if ref is not None:
                row["max_abs_err"] = float((out.float() - ref.float()).abs().max())
            row["ms"] = self.time_ms(fn)
            if work is not None:
                row["metric"], row["unit"] = work / (row["ms"] * 1e-3), unit
        except Exception as e:  # a baseline or tile config that cannot run here is reported, not fatal
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        self.rows.append(row)
        return row


def paged_kv(torch, seq_lens, bs, hkv, d, kv_dtype, device, scale, gen):
    """Random paged caches with shuffled block tables; returns (k_cache, v_cache, block_tables)."""
    nblocks = [(s + bs - 1) // bs for s in seq_lens]
    total = sum(nblocks) + 1
    perm = torch.randperm(total, generator=gen)
    bt = torch.zeros(len(seq_lens), max(nblocks), dtype=torch.int32)
    used = 0
    for i, n in enumerate(nblocks):
        bt[i, :n] = perm[used:used + n]
        used += n
    caches = []
    for _ in range(2):
        x = torch.randn(total, bs, hkv, d, generator=gen).to(device)
        caches.append((x / scale).to(kv_dtype) if kv_dtype != torch.bfloat16 else x.to(kv_dtype))
    return caches[0], caches[1], bt.to(device)


def make_meta(torch, seq_lens, q_lens, bt, device):
    from app.engine.attention.metadata import AttentionMetadata

    qsl = [0]
    for q in q_lens:
        qsl.append(qsl[-1] + q)
    return AttentionMetadata(
        slot_mapping=torch.full((qsl[-1],), -1, dtype=torch.int64, device=device),
        query_start_loc=torch.tensor(qsl, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device), block_tables=bt,
        query_lens_cpu=list(q_lens), seq_lens_cpu=list(seq_lens), max_query_len=max(q_lens), max_seq_len=max(seq_lens),
    )


def dense_expanded(torch, cache, bt, length, group, dtype, scale):
    """(B, Hq, L, D) contiguous K or V for the SDPA baseline, from the paged cache."""
    from app.engine.attention.torch_ref import gather_kv

    kv = gather_kv(cache, bt, length, dtype, scale)  # (B, L, Hkv, D)
    return kv.transpose(1, 2).repeat_interleave(group, dim=1).contiguous()


def bench_decode(b: Bench, shp, sweep: bool):
    torch = b.torch
    import torch.nn.functional as F

    from app.engine.attention import torch_ref, triton_backend
    from app.engine.attention.triton_decode import DecodeConfig, decode_attention, decode_num_splits

    B, L, hq, hkv, d, bs = shp["decode_b"], shp["decode_ctx"], shp["hq"], shp["hkv"], shp["d"], shp["bs"]
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, hq, d, generator=gen).to(b.device, torch.bfloat16)
    scale = d**-0.5
    fp8 = getattr(torch, "float8_e4m3fn", None)
    for kv_name, kv_dtype, kv_scale in [("bf16", torch.bfloat16, None), ("fp8", fp8, 0.05)]:
        if kv_dtype is None:
            continue
        kc, vc, bt = paged_kv(torch, [L] * B, bs, hkv, d, kv_dtype, b.device, kv_scale or 1.0, gen)
        meta = make_meta(torch, [L] * B, [1] * B, bt, b.device)
        ks = None if kv_scale is None else torch.tensor(kv_scale, device=b.device)
        elem = 1 if kv_dtype == fp8 else 2
        kv_bytes = 2 * B * L * hkv * d * elem  # K and V read once each (GQA-grouped)
        ref = torch_ref.paged_attention(q, kc, vc, meta, scale, ks, ks)
        sec = f"decode B={B} ctx={L} kv={kv_name}"
        splits = decode_num_splits(B, hkv, bt.shape[1] * bs, b.device)
        b.add(sec, f"triton (num_splits={splits})", lambda: triton_backend.paged_attention(q, kc, vc, meta, scale, ks, ks),
              ref=ref, work=kv_bytes / 1e9, unit="GB/s")
        b.add(sec, "torch_ref", lambda: torch_ref.paged_attention(q, kc, vc, meta, scale, ks, ks), work=kv_bytes / 1e9,
              unit="GB/s")
        if kv_name == "bf16":
            kd = dense_expanded(torch, kc, bt, L, hq // hkv, torch.bfloat16, None)
            vd = dense_expanded(torch, vc, bt, L, hq // hkv, torch.bfloat16, None)
            q4 = q.unsqueeze(2)  # (B, Hq, 1, D)
            b.add(sec, "SDPA dense (pre-gathered, expanded KV)",
                  lambda: F.scaled_dot_product_attention(q4, kd, vd, scale=scale).squeeze(2), ref=ref)
            del kd, vd
        if b.device.type == "cuda":
            bench_decode_graph(b, sec, q, kc, vc, meta, scale, ks, kv_bytes)
        if sweep and kv_name == "bf16":
            for ns in shp["sweep_splits"]:
                for bn in shp["sweep_block_n"]:
                    cfg = DecodeConfig(num_splits=ns, block_n=bn, **shp["decode_opts"])
                    b.add(sec + " sweep", f"splits={ns} block_n={bn}",
                          lambda cfg=cfg: decode_attention(q, kc, vc, meta, scale, ks, ks, config=cfg),
                          ref=ref, work=kv_bytes / 1e9, unit="GB/s", config=cfg.__dict__)
        del kc, vc


def bench_decode_graph(b: Bench, sec, q, kc, vc, meta, scale, ks, kv_bytes):
    """Capture one decode call, replay it; then change seq_lens in place and replay again."""
    torch = b.torch
    from app.engine.attention import torch_ref, triton_backend

    out = torch.empty_like(q)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        triton_backend.paged_attention(q, kc, vc, meta, scale, ks, ks, out=out)  # compile outside capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        triton_backend.paged_attention(q, kc, vc, meta, scale, ks, ks, out=out)
    full = meta.seq_lens.clone()
    g.replay()
    ref = torch_ref.paged_attention(q, kc, vc, meta, scale, ks, ks)
    b.add(sec, "triton in CUDA graph (replay)", lambda: (g.replay(), out)[1], ref=ref, work=kv_bytes / 1e9,
          unit="GB/s")
    # Shorter, uneven contexts through the same graph: launch config must not depend on them.
    meta.seq_lens.copy_(torch.randint(1, int(full[0]) + 1, full.shape, device=full.device, dtype=full.dtype))
    g.replay()
    short = make_meta(torch, meta.seq_lens.tolist(), [1] * q.shape[0], meta.block_tables, q.device)
    err = float((out.float() - torch_ref.paged_attention(q, kc, vc, short, scale, ks, ks).float()).abs().max())
    b.rows.append(dict(section=sec, name="CUDA graph replay after seq_lens change", max_abs_err=err))
    meta.seq_lens.copy_(full)


def bench_prefill(b: Bench, shp, sweep: bool):
    torch = b.torch
    import torch.nn.functional as F

    from app.engine.attention import torch_ref, triton_backend
    from app.engine.attention.triton_prefill import PrefillConfig, prefill_attention

    hq, hkv, d, bs = shp["hq"], shp["hkv"], shp["d"], shp["bs"]
    scale = d**-0.5
    gen = torch.Generator().manual_seed(1)
    for n, ctx, qlen in shp["prefill_cases"]:
        kc, vc, bt = paged_kv(torch, [ctx] * n, bs, hkv, d, torch.bfloat16, b.device, 1.0, gen)
        meta = make_meta(torch, [ctx] * n, [qlen] * n, bt, b.device)
        q = torch.randn(n * qlen, hq, d, generator=gen).to(b.device, torch.bfloat16)
        # causal FLOPs: QK^T and PV over the visible keys of every query row
        visible = n * sum(ctx - qlen + r + 1 for r in range(qlen))
        tflop = 4 * visible * hq * d / 1e12
        sec = f"prefill {n}x{qlen} new / ctx {ctx}"
        ref = torch_ref.paged_attention(q, kc, vc, meta, scale)
        b.add(sec, "triton", lambda: triton_backend.paged_attention(q, kc, vc, meta, scale), ref=ref, work=tflop,
              unit="TFLOP/s")
        b.add(sec, "torch_ref", lambda: torch_ref.paged_attention(q, kc, vc, meta, scale), work=tflop, unit="TFLOP/s")
        kd = dense_expanded(torch, kc, bt, ctx, hq // hkv, torch.bfloat16, None)
        vd = dense_expanded(torch, vc, bt, ctx, hq // hkv, torch.bfloat16, None)
        qd = q.view(n, qlen, hq, d).transpose(1, 2)  # (n, Hq, qlen, D)
        if qlen == ctx:
            sdpa = lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=True, scale=scale)  # noqa: E731
        else:
            from torch.nn.attention.bias import causal_lower_right

            bias = causal_lower_right(qlen, ctx)
            sdpa = lambda: F.scaled_dot_product_attention(qd, kd, vd, attn_mask=bias, scale=scale)  # noqa: E731
        b.add(sec, "SDPA dense (pre-gathered, expanded KV)", lambda: sdpa().transpose(1, 2).reshape(q.shape),
              ref=ref, work=tflop, unit="TFLOP/s")
        del kd, vd
        if sweep:
            for bm, bn, w, st in shp["sweep_prefill"]:
                cfg = PrefillConfig(block_m=bm, block_n=bn, num_warps=w, num_stages=st)
                b.add(sec + " sweep", f"block_m={bm} block_n={bn} warps={w} stages={st}",
                      lambda cfg=cfg: prefill_attention(q, kc, vc, meta, scale, config=cfg),
                      ref=ref, work=tflop, unit="TFLOP/s", config=cfg.__dict__)
        del kc, vc


def bench_store(b: Bench, shp):
    torch = b.torch
    from app.engine.attention import torch_ref, triton_backend

    hkv, d, bs = shp["hkv"], shp["d"], shp["bs"]
    for t in shp["store_tokens"]:
        gen = torch.Generator().manual_seed(2)
        key = torch.randn(t, hkv, d, generator=gen).to(b.device, torch.bfloat16)
        value = torch.randn(t, hkv, d, generator=gen).to(b.device, torch.bfloat16)
        nb = (t + bs - 1) // bs + 4
        slots = torch.randperm(nb * bs, generator=gen)[:t].to(b.device)
        kc = torch.zeros(nb, bs, hkv, d, dtype=torch.bfloat16, device=b.device)
        vc, kr, vr = kc.clone(), kc.clone(), kc.clone()
        torch_ref.store_kv(key, value, kr, vr, slots)
        gb = 4 * t * hkv * d * 2 / 1e9  # read K, V; write K, V
        b.add(f"store_kv {t} tokens", "triton", lambda: (triton_backend.store_kv(key, value, kc, vc, slots), kc)[1],
              ref=kr, work=gb, unit="GB/s")
        b.add(f"store_kv {t} tokens", "torch_ref", lambda: torch_ref.store_kv(key, value, kr, vr, slots), work=gb,
              unit="GB/s")


SHAPES = {
    "full": dict(
        hq=28, hkv=4, d=128, bs=16, decode_b=64, decode_ctx=2048,
        prefill_cases=[(4, 2048, 2048), (8, 2048, 512)], store_tokens=[64, 8192],
        sweep_splits=[1, 2, 4, 8, 16], sweep_block_n=[32, 64, 128], decode_opts=dict(num_warps=4, num_stages=3),
        sweep_prefill=[(64, 64, 4, 2), (64, 32, 4, 3), (128, 64, 8, 2), (128, 64, 4, 3), (128, 32, 4, 3),
                       (128, 128, 8, 2)],
    ),
    "tiny": dict(
        hq=4, hkv=2, d=16, bs=4, decode_b=2, decode_ctx=40,
        prefill_cases=[(2, 24, 24), (2, 24, 8)], store_tokens=[8],
        sweep_splits=[1, 3], sweep_block_n=[16], decode_opts=dict(num_warps=1, num_stages=1),
        sweep_prefill=[(16, 16, 1, 1)],
    ),
}


def print_table(rows):
    print(f"{'section':<40} {'kernel':<44} {'ms':>9} {'metric':>16} {'max_abs_err':>12}")
    for r in rows:
        ms = f"{r['ms']:.4f}" if "ms" in r else "-"
        metric = f"{r['metric']:.1f} {r['unit']}" if "metric" in r else ""
        err = f"{r['max_abs_err']:.2e}" if "max_abs_err" in r else ""
        print(f"{r['section']:<40} {r['name']:<44} {ms:>9} {metric:>16} {err:>12}")
        if "error" in r:
            print(f"{'':<40}   ! {r['error']}")


PHASES = ("store", "decode", "prefill")


def run_phase(name: str, args) -> dict:
    """One section in this (child) process: its rows; "failed" if any kernel row raised."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shp = SHAPES["tiny" if args.tiny else "full"]
    b = Bench(torch, device, args.tiny)
    with torch.inference_mode():
        if name == "store":
            bench_store(b, shp)
        elif name == "decode":
            bench_decode(b, shp, sweep=not args.no_sweep)
        else:
            bench_prefill(b, shp, sweep=not args.no_sweep)
    errors = [f"{r['section']} / {r['name']}: {r['error']}" for r in b.rows if "error" in r]
    return {"rows": b.rows, "status": "failed" if errors else "ok", "error": "; ".join(errors)[:2000] or None}


def check_environment(args) -> int:
    import torch

    if not torch.cuda.is_available():
        if not args.tiny:
            print("benchmarks/attention_kernels.py needs a CUDA GPU (none found); run it on the GPU, or use "
                  "--tiny for a CPU dry run under the Triton interpreter.", file=sys.stderr)
            return 2
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported
    elif os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET to benchmark compiled kernels on the GPU", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if check_environment(args):
        return 2
    from benchmarks.isolate import child_main, run_isolated

    if args.phases:  # child: run these sections here
        return child_main(args.phases.split(","), args.phase_out, lambda n: run_phase(n, args))
    import torch
    import triton

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.time()
    result = dict(
        benchmark="attention_kernels", date=datetime.datetime.now().isoformat(timespec="seconds"),
        command=" ".join([Path(sys.executable).name] + sys.argv),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)",
        torch=torch.__version__, triton=triton.__version__, shapes=SHAPES["tiny" if args.tiny else "full"],
        phases={}, rows=[], errors=0,
    )

    def on_phase(name, res):  # JSON after every section: a later crash keeps these rows
        result["rows"] += res.pop("rows", [])
        result["phases"][name] = res
        result["errors"] = sum(r.get("status") != "ok" for r in result["phases"].values())
        result["wall_s"] = round(time.time() - t0, 1)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))

    cmd = [sys.executable, str(Path(__file__).resolve())] + (["--tiny"] if args.tiny else []) + \
        (["--no-sweep"] if args.no_sweep else [])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    run_isolated(cmd, list(PHASES), args.timeout, on_phase, env=env)
    print_table(result["rows"])
    for name, r in result["phases"].items():
        if r.get("status") != "ok":
            print(f"phase {name} FAILED: {r.get('error')}")
    print(f"\n{result['device']}  torch {result['torch']}  triton {result['triton']}  ({result['wall_s']} s)")
    if args.json:
        print(f"wrote {args.json}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
