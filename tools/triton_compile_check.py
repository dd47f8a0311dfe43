"""Compile the attention kernels for an NVIDIA GPU without one: catches GPU-only compile errors.

The interpreter (CPU tests) runs kernels as numpy code, so it accepts things the GPU compiler
rejects (dot shapes, dtype conversions, shared-memory overflow). This builds the exact launches
the wrappers plan for 7B-like shapes (28 q / 4 kv heads, head_dim 128, bf16 and fp8 KV) and
compiles each to a cubin for sm_90 (H100) with triton's bundled ptxas, reporting shared memory,
registers and spills. Must run with TRITON_INTERPRET unset (the tests use a subprocess):

    python -m tools.triton_compile_check [--arch 90] [--ptxas DIR_OR_BINARY]   # from the repository root

--ptxas compiles with another ptxas (and its cuobjdump, if beside it), e.g. the one in the GPU
machine's triton wheel, which allocates registers differently: `pip download triton==3.6.0
--no-deps`, unzip 'triton/backends/nvidia/bin/*' to a temp dir, pass that bin dir. The whole
other triton (its LLVM too) can be used by putting the unzipped wheel first on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import torch

_TYPES = {
    torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int32: "i32",
    torch.int64: "i64", torch.uint8: "u8",
}
if hasattr(torch, "float8_e4m3fn"):
    _TYPES[torch.float8_e4m3fn] = "fp8e4nv"
    _TYPES[torch.float8_e5m2] = "fp8e5"


def _signature(launch):
    """Mirror the JIT's specialization: ints equal to 1 become constants, multiples of 16 and
    tensors get the divisibility-16 hint (torch allocations are 16-byte aligned)."""
    names = launch.kernel.arg_names
    signature, constexprs, attrs = {}, dict(launch.constexprs), {}
    for i, a in enumerate(launch.args):
        name = names[i]
        if isinstance(a, torch.Tensor):
            signature[name] = "*" + _TYPES[a.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(a, bool):
            signature[name] = "i1"
        elif isinstance(a, int):
            if a == 1:
                constexprs[name] = 1
                continue
            signature[name] = "i32" if -(2**31) <= a < 2**31 else "i64"
            if a % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(a, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"unsupported argument {name}={a!r}")
    for name in constexprs:
        signature[name] = "constexpr"
    return signature, constexprs, attrs


def _tool(name: str) -> str:
    """A CUDA tool beside the chosen ptxas (TRITON_PTXAS_PATH) if there, else triton's bundled one."""
    import triton

    chosen = os.environ.get("TRITON_PTXAS_PATH")
    if chosen and os.path.exists(os.path.join(os.path.dirname(chosen), name)):
        return os.path.join(os.path.dirname(chosen), name)
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def use_ptxas(path: str) -> str:
    """Point triton at another ptxas (a binary or the bin dir holding one); returns its version line."""
    binary = os.path.join(path, "ptxas") if os.path.isdir(path) else path
    if not os.access(binary, os.X_OK):
        raise FileNotFoundError(f"no executable ptxas at {binary}: pass the bin dir of an unzipped triton wheel")
    os.environ["TRITON_PTXAS_PATH"] = os.path.abspath(binary)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def _resources(cubin: bytes) -> dict:
    """Registers and spills per kernel from cuobjdump."""
    tool = _tool("cuobjdump")
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    out = {}
    for key in ("REG", "STACK", "SHARED"):
        m = re.search(rf"{key}:(\d+)", text)
        if m:
            out[key.lower()] = int(m.group(1))
    return out


def compile_launch(launch, arch: int = 90) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs = _signature(launch)
    src = ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    options = backend.parse_options(dict(launch.options))
    compiled = triton.compile(src, target=target, options=options.__dict__)
    info = {"kernel": launch.kernel.__name__, "grid": list(launch.grid), "shared_bytes": compiled.metadata.shared,
            "options": {k: launch.options[k] for k in ("num_warps", "num_stages") if k in launch.options}}
    info.update(_resources(compiled.asm["cubin"]))
    return info


def representative_launches(kv_dtype: torch.dtype, block_size: int = 16, dtype: torch.dtype = torch.bfloat16,
                            hq: int = 28, hkv: int = 4, d: int = 128) -> list:
    """Plans of every kernel at the given shapes (default: 7B-like); only shapes matter."""
    from app.engine.attention.metadata import AttentionMetadata
    from app.engine.attention.triton_decode import DecodeConfig, plan_decode
    from app.engine.attention.triton_prefill import default_prefill_config, plan_prefill
    from app.engine.attention.triton_store_kv import plan_store_kv

    dt = dtype
    # "meta" tensors: shapes and strides without memory; a meta scale takes the pointer path
    # (SCALE_FROM_PTR), as a model's per-layer device scale does.
    dev = torch.device("meta")
    kc = torch.empty(8, block_size, hkv, d, dtype=kv_dtype, device=dev)
    vc = torch.empty_like(kc)
    ks = torch.ones((), dtype=torch.float32, device=dev) if kv_dtype.itemsize == 1 else None
    t, b = 64, 4
    qkv = torch.empty(t, (hq + 2 * hkv) * d, dtype=dt, device=dev)  # q/k/v as views of a fused projection
    q = qkv[:, :hq * d].view(t, hq, d)
    k = qkv[:, hq * d:(hq + hkv) * d].view(t, hkv, d)
    v = qkv[:, (hq + hkv) * d:].view(t, hkv, d)

    def meta_for(q_len: int) -> AttentionMetadata:
        i32 = dict(dtype=torch.int32, device=dev)
        return AttentionMetadata(
            slot_mapping=torch.empty(b * q_len, dtype=torch.int64, device=dev),
            query_start_loc=torch.empty(b + 1, **i32), seq_lens=torch.empty(b, **i32),
            block_tables=torch.empty(b, 128, **i32), query_lens_cpu=[q_len] * b, seq_lens_cpu=[q_len] * b,
            max_query_len=q_len, max_seq_len=q_len,
        )

    meta = meta_for(t // b)
    qd = torch.empty(b, hq, d, dtype=dt, device=dev)
    launches = plan_store_kv(k, v, kc, vc, meta.slot_mapping, ks, ks)
    launches += plan_prefill(q, kc, vc, meta, d**-0.5, ks, ks, torch.empty(t, hq, d, dtype=dt, device=dev),
                             default_prefill_config(d, dt))
    launches += plan_decode(qd, kc, vc, meta_for(1), d**-0.5, ks, ks, torch.empty_like(qd),
                            DecodeConfig(num_splits=8))
    return launches


VARIANTS = [dict(kv_dtype=torch.bfloat16)]
if hasattr(torch, "float8_e4m3fn"):
    VARIANTS.append(dict(kv_dtype=torch.float8_e4m3fn))
VARIANTS += [
    dict(kv_dtype=torch.bfloat16, hq=16, hkv=2, d=64),  # small models (head_dim 64)
    # The fp32 test shapes, as the GPU test run compiles them (fp32 dot, head_dims 16 / 24 / 32).
    dict(kv_dtype=torch.float32, dtype=torch.float32, block_size=4, hq=4, hkv=2, d=16),
    dict(kv_dtype=torch.float32, dtype=torch.float32, block_size=4, hq=6, hkv=2, d=32),
    dict(kv_dtype=torch.float32, dtype=torch.float32, block_size=16, hq=4, hkv=2, d=128),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90 = H100)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--ptxas", help="compile with this ptxas (binary or bin dir), e.g. triton 3.6's")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter replaces the compiler", file=sys.stderr)
        return 2
    import triton

    ptxas = use_ptxas(args.ptxas) if args.ptxas else "bundled"
    print(f"# triton {triton.__version__}, ptxas {ptxas}", file=sys.stderr)
    results = []
    for v in VARIANTS:
        for launch in representative_launches(**v):
            info = compile_launch(launch, args.arch)
            info["variant"] = {k: str(x).removeprefix("torch.") for k, x in v.items()}
            results.append(info)
            print(json.dumps(info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
