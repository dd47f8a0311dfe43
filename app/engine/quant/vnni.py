"""Small-M int4/int8 CPU matmuls with AVX-512 VNNI integer dot products (cpu_vnni.c), built at
first use with the system C compiler and loaded with ctypes; the slow reference of each beside it.

Why: torch's CPU int4/int8 kernels convert every weight to float; at batch 1 that, not memory,
bounds a decode step (benchmarks: BENCHMARKS.md, issue 14). These kernels quantize the activation
row to int8 per block of 32 (as llama.cpp does for its q4_0/q8_0 dot products) and multiply in
integers. They read the weights exactly as Int4Linear / Int8Linear already store them.

It is an approximation the torch kernels do not make: activations rounded to int8 (relative
error ~1/254 of each block's largest value) instead of to bf16 (~1/256 of each value). Accuracy
on the trained model is measured in BENCHMARKS.md; `EngineConfig.cpu_kernels="torch"` (or
DOCGEN_CPU_VNNI=0) turns the kernels off.

Availability (`problem()` says why not, in a sentence): Linux x86-64 with avx512f/bw/vl, avx512_vnni
and avx512vbmi in /proc/cpuinfo, a C compiler (`$CC` or cc/gcc) and OpenMP; the .so is cached per
source/compiler/flags hash under $DOCGEN_KERNEL_CACHE or ~/.cache/docgen/kernels. It must load the
same libgomp as torch (checked), so threads come from torch's pool.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_vnni.c")
HEADER = Path(__file__).with_name("cpu_kernels.h")  # shared inner loops, included by both sources
# the fused decode step of the lean forward (models/fused_decode.py), built into the same library
STEP_SOURCE = Path(__file__).parent.parent / "models" / "cpu_decode_step.c"
FLAGS = ("-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx512vbmi", "-mavx512bf16", "-mfma",
         "-fopenmp", "-shared", "-fPIC")
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vbmi", "avx512_bf16")
BLOCK = 32  # activation block (QB in the C source)


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cache_dir() -> Path:
    base = os.environ.get("DOCGEN_KERNEL_CACHE") or os.path.join(Path.home(), ".cache", "docgen", "kernels")
    return Path(base)


@functools.lru_cache(maxsize=None)
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """(library, None) or (None, why not)."""
    if os.environ.get("DOCGEN_CPU_VNNI", "1") == "0":
        return None, "turned off by DOCGEN_CPU_VNNI=0"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"needs Linux on x86-64 (this is {platform.system()} {platform.machine()})"
    missing = [f for f in CPU_FLAGS if f not in _cpu_flags()]
    if missing:
        return None, f"this CPU lacks {', '.join(missing)}"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC or install gcc)"
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        code = b"".join(f.read_bytes() for f in (SOURCE, HEADER, STEP_SOURCE))
        key = hashlib.sha256(code + version.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
        out = _cache_dir() / f"cpu_vnni-{key}.so"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # build, then rename: no half-written .so
                part = Path(tmp) / out.name
                r = subprocess.run([cc, *FLAGS, f"-I{HEADER.parent}", str(SOURCE), str(STEP_SOURCE), "-o", str(part),
                                    "-lm"], capture_output=True,
                                   text=True, timeout=300)
                if r.returncode != 0:
                    return None, f"compiling {SOURCE.name} failed: {(r.stderr or r.stdout).strip()[:300]}"
                os.replace(part, out)
        lib = ctypes.CDLL(str(out))
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"building or loading {SOURCE.name} failed: {e}"
    problem = _openmp_problem()
    if problem:
        return None, problem
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.q4_mm.argtypes = [P, I, I, I, P, P, I, I, P, I]
    lib.q8_mm.argtypes = [P, I, I, I, P, P, I, P, I]
    lib.bf16_mm.argtypes = [P, I, I, I, P, I, P, I, I]
    lib.f32_mm.argtypes = [P, I, I, P, I, P, I]
    lib.decode_step.argtypes = [P, P, I, P, P, P, P, P, P, I, P, I]  # models/cpu_decode_step.c
    lib.q4_mm.restype = lib.q8_mm.restype = lib.bf16_mm.restype = lib.f32_mm.restype = lib.decode_step.restype = I
    return lib, None


def _openmp_problem() -> str | None:
    """Two OpenMP runtimes in one process would each keep threads spinning on the same cores."""
    try:
        maps = {line.split()[-1] for line in Path(f"/proc/{os.getpid()}/maps").read_text().splitlines()
                if "libgomp" in line or "libiomp" in line}
    except OSError:
        return None
    return None if len(maps) <= 1 else f"two OpenMP runtimes loaded ({', '.join(sorted(maps))})"


def problem() -> str | None:
    """None when the kernels can run here, else why not (a sentence)."""
    return _load()[1]


def available() -> bool:
    return _load()[0] is not None


def _check_x(x: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    if x.device.type != "cpu" or x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"expected a CPU (M, {k}) activation, got {tuple(x.shape)} on {x.device}")
    if x.dtype not in (torch.float32, torch.bfloat16):
        x = x.float()
    return x.contiguous(), int(x.dtype == torch.bfloat16)


def q4_mm(x: torch.Tensor, packed: torch.Tensor, sz: torch.Tensor, group_size: int, n: int) -> torch.Tensor:
    """x (M, K) fp32|bf16 @ the int4 weight in torch's CPU layout (packed (N, K/2) uint8, sz (K/g, N, 2)
    bf16) -> (M, N) float32. N % 64 == 0, K % group_size == 0, group_size % 32 == 0."""
    lib = _load()[0]
    k = packed.numel() * 2 // n
    x, is_bf16 = _check_x(x, k)
    if sz.dtype != torch.bfloat16 or not sz.is_contiguous() or not packed.is_contiguous():
        raise ValueError("q4_mm needs contiguous packed weights and bf16 scales_and_zeros")
    y = torch.empty(x.shape[0], n, dtype=torch.float32)
    rc = lib.q4_mm(x.data_ptr(), is_bf16, x.shape[0], k, packed.data_ptr(), sz.data_ptr(), n, group_size, y.data_ptr(),
                   torch.get_num_threads())
    if rc:
        raise ValueError(f"q4_mm refused (code {rc}): N={n} K={k} group={group_size}")
    return y


def q8_mm(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (M, K) fp32|bf16 @ w (N, K) int8 with per-row bf16 scale (N,) -> (M, N) float32. K % 64 == 0."""
    lib = _load()[0]
    n, k = w.shape
    x, is_bf16 = _check_x(x, k)
    if scale.dtype != torch.bfloat16 or not w.is_contiguous() or not scale.is_contiguous():
        raise ValueError("q8_mm needs a contiguous int8 weight and a bf16 scale")
    y = torch.empty(x.shape[0], n, dtype=torch.float32)
    rc = lib.q8_mm(x.data_ptr(), is_bf16, x.shape[0], k, w.data_ptr(), scale.data_ptr(), n, y.data_ptr(),
                   torch.get_num_threads())
    if rc:
        raise ValueError(f"q8_mm refused (code {rc}): N={n} K={k}")
    return y


def bf16_mm(x: torch.Tensor, w: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """x (M, K) fp32|bf16 @ w (N, K) bf16 -> (M, N) in out_dtype (default x's dtype; bf16 rounded
    once from the float32 sums; fp32 input is rounded to bf16 first). K % 32 == 0."""
    lib = _load()[0]
    n, k = w.shape
    x, is_bf16 = _check_x(x, k)
    if w.dtype != torch.bfloat16 or not w.is_contiguous():
        raise ValueError("bf16_mm needs a contiguous bf16 weight")
    out_dtype = out_dtype or x.dtype
    if out_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"bf16_mm writes float32 or bfloat16, not {out_dtype}")
    y = torch.empty(x.shape[0], n, dtype=out_dtype)
    rc = lib.bf16_mm(x.data_ptr(), is_bf16, x.shape[0], k, w.data_ptr(), n, y.data_ptr(),
                     int(out_dtype == torch.bfloat16), torch.get_num_threads())
    if rc:
        raise ValueError(f"bf16_mm refused (code {rc}): N={n} K={k}")
    return y


def f32_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (M, K) float32 @ w (N, K) float32 -> (M, N) float32 (F.linear's products, float32 sums in
    another order). K % 16 == 0."""
    lib = _load()[0]
    n, k = w.shape
    if x.dtype != torch.float32 or w.dtype != torch.float32 or not w.is_contiguous():
        raise ValueError("f32_mm needs float32 rows and a contiguous float32 weight")
    x, _ = _check_x(x, k)
    y = torch.empty(x.shape[0], n, dtype=torch.float32)
    rc = lib.f32_mm(x.data_ptr(), x.shape[0], k, w.data_ptr(), n, y.data_ptr(), torch.get_num_threads())
    if rc:
        raise ValueError(f"f32_mm refused (code {rc}): N={n} K={k}")
    return y


# ----- the obviously correct versions: same arithmetic, plain torch -----------------------------

def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, K) -> xq (M, K/32, 32) int values in float32, d (M, K/32, 1), block sums (M, K/32, 1)."""
    xb = x.float().reshape(x.shape[0], -1, BLOCK)
    amax = xb.abs().amax(-1, keepdim=True)
    # 127 / amax as one IEEE division, like the C code (`127.0 / tensor` is reciprocal(t) * 127 in torch)
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0).div(amax), torch.zeros_like(amax))
    return torch.round(xb * inv), amax / 127.0, xb.sum(-1, keepdim=True)


def reference_q4(x: torch.Tensor, levels: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 group_size: int) -> torch.Tensor:
    """levels (N, K) 0..15, scales/zeros (N, K/g) -> (M, N) float64: the kernel's formula,
    (q - 8) * scale against the rounded activations, zero against their exact sums."""
    xq, d, s = quantize_activations(x)  # (M, B, 32), (M, B, 1), (M, B, 1)
    m, nb = xq.shape[:2]
    q = levels.double().reshape(levels.shape[0], nb, BLOCK) - 8  # (N, B, 32)
    dots = torch.einsum("mbi,nbi->mnb", xq.double(), q) * d.double().squeeze(-1)[:, None, :]  # (M, N, B)
    per_group = group_size // BLOCK
    g_dots = dots.reshape(m, -1, nb // per_group, per_group).sum(-1)  # (M, N, G)
    g_sums = s.double().reshape(m, nb // per_group, per_group).sum(-1)  # (M, G)
    sc, ze = scales.double(), zeros.double()
    return (g_dots * sc[None]).sum(-1) + (ze[None] * g_sums[:, None, :]).sum(-1)


def reference_q8(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """w (N, K) int8, scale (N,) -> (M, N) float64: the kernel's formula."""
    xq, d, _ = quantize_activations(x)
    dots = torch.einsum("mbi,nbi->mnb", xq.double(), w.double().reshape(w.shape[0], -1, BLOCK))
    return (dots * d.double().squeeze(-1)[:, None, :]).sum(-1) * scale.double()[None]


# ----- which layers use them ----------------------------------------------------------------------

# Largest M (rows in the call) each kernel takes (None: any); torch's kernels above. Measured with
# 1 thread on the 2-core Zen 5 VM (CPU seconds, machine loaded by other jobs), Qwen2.5-Coder-1.5B
# shapes, torch 2.13, 2026-11-29:
#   int4, 28 layers x (qkv, o, gate_up, down): M=1 16.3 ms vs 38.1 (torch int4), M=2 26.5 vs 46.9,
#   M=4 43.3 vs 66.7. The 1536 -> 17920 gate|up alone: M=8 1.1 ms vs 2.8 (torch int4) vs 28.7
#   (dequantize + bf16 matmul, the old prefill path), M=64 6.1 vs 21.2 vs 37.5, M=271 24.8 vs 90.2
#   vs 62.0: faster at every M, so int4 prefill uses it too (no dequantized blocks either).
#   int8 LM head 151936 x 1536: M=1 10.5 vs 15.6 ms, M=4 18.9 vs 15.7 (the int8 kernel re-signs
#   the weights for each row): decode of one sequence only.
MAX_M = {"4bit": None, "8bit": 1}
MODES = ("auto", "torch", "vnni")
ANY_M = 1 << 62


def layer_problem(m) -> str | None:
    """Why this Int4Linear / Int8Linear cannot use the kernels (None when it can)."""
    if getattr(m, "kdevice", None) == "cpu":  # Int4Linear
        from . import int4_kernels as K

        if not K.cpu_layout_known():
            return "unknown CPU int4 layout in this torch"
        if m.out_features % 64 or m.group_size % BLOCK or m.scales_and_zeros.dtype != torch.bfloat16:
            return f"shape {m.out_features}x{m.in_features} group {m.group_size} / scales {m.scales_and_zeros.dtype}"
        return None
    if getattr(m, "use_kernel", False):  # Int8Linear on the CPU
        if m.in_features % 64 or m.scale.dtype != torch.bfloat16:
            return f"in_features {m.in_features} (needs a multiple of 64) / scale {m.scale.dtype}"
        return None
    return "not a CPU int4/int8 layer"


def use_vnni_(model: torch.nn.Module, mode: str = "auto") -> dict:
    """Sets `vnni_max_m` on every CPU int4/int8 layer of `model` that can use the kernels;
    returns the report entry {"kernel", "layers", "max_m", "reason"}. mode: "auto" (where they can
    run), "torch" (never), "vnni" (required: ValueError with the reason when they cannot run)."""
    if mode not in MODES:
        raise ValueError(f"cpu_kernels must be one of {MODES}, got {mode!r}")
    layers = [m for m in model.modules() if hasattr(m, "vnni_max_m")]
    for m in layers:
        m.vnni_max_m = 0
    why = "cpu_kernels='torch'" if mode == "torch" else problem()
    if why is not None:
        if mode == "vnni":
            raise ValueError(f"cpu_kernels='vnni' but the VNNI kernels cannot run here: {why}; "
                             "use 'auto' or 'torch'")
        return {"kernel": "torch", "layers": 0, "reason": why}
    n, skipped = 0, {}
    for name, m in model.named_modules():
        if not hasattr(m, "vnni_max_m"):
            continue
        p = layer_problem(m)
        if p is None:
            limit = MAX_M["4bit" if hasattr(m, "group_size") else "8bit"]
            m.vnni_max_m = ANY_M if limit is None else limit
            n += 1
        else:
            skipped[name] = p
    out = {"kernel": "vnni" if n else "torch", "layers": n, "max_m": dict(MAX_M), "reason": None}
    if skipped:
        out["skipped"] = skipped
    return out
