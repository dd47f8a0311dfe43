"""EngineConfig: every engine setting in one dataclass, validated once in __post_init__."""
from __future__ import annotations

from dataclasses import dataclass, field

from .names import normalize_quantization
KV_DTYPES = ("auto", "fp8")
# EngineConfig.max_num_batched_tokens=None: the per-step token budget by device type (and, on the
# CPU, weight format). Measured on a 1.5B model, 1 thread (BENCHMARKS.md, issue 14): on the CPU at
# 8 bits 1024 is as fast as 8192 (a 16-prompt batch and a 1200-token prompt) with ~170 MiB less
# peak; 512 saves ~110 MiB more but a 1200-token prompt took 5% longer. At 4 bits every prefill
# step dequantizes all int4 weights for the dense path (quant/dense_blocks.py), so more steps cost:
# 1024 was 7% slower and 2048 3-5% (with no lower peak), so 4 bits keeps 8192 there. With the
# VNNI int4 kernel (quant/vnni.py; weight_format "4bit-vnni") nothing is dequantized: 1024 vs 8192
# at 2 threads, 16 prompts / 4922 tokens: 17.2-17.4 s vs 17.2 s, peak 210-231 vs 722-727 MiB.
MAX_NUM_BATCHED_TOKENS = 8192
CPU_MAX_NUM_BATCHED_TOKENS = 1024


def budget_weight_format(quant_report) -> str | None:
    """The loaded weights' format as the token budget sees it (a QuantReport or None): "4bit-vnni"
    when int4 runs on quant/vnni.py's kernel, whose prefill dequantizes nothing."""
    fmt = quant_report.format if quant_report else None
    kernel = quant_report.cpu_kernel if quant_report else None
    return "4bit-vnni" if fmt == "4bit" and kernel and kernel.get("kernel") == "vnni" else fmt


@dataclass
class SpeculativeConfig:
    method: str | None = None  # None | "ngram" | "draft"
    draft_model: str | None = None
    num_speculative_tokens: int = 4
    ngram_max: int = 4
    ngram_min: int = 2
    # Speculate only while at most this many sequences run (None = decided automatically).
    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.method not in (None, "ngram", "draft"):
            raise ValueError(f"speculative method must be None, 'ngram' or 'draft', got {self.method!r}")
        if self.method == "draft" and not self.draft_model:
            raise ValueError("speculative method 'draft' needs draft_model (a path or hub id)")
        if self.num_speculative_tokens < 1:
            raise ValueError("num_speculative_tokens must be >= 1")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError("need 1 <= ngram_min <= ngram_max")


@dataclass
class EngineConfig:
    model: str
    tokenizer: str | None = None
    max_num_seqs: int = 256
    # Tokens one step computes at most (decodes plus prefill chunks: a longer prompt is prefilled over
    # several steps), so the size of a step's activations. None = by device: 8192 on a GPU and for
    # 4-bit weights on torch's CPU kernels, 1024 otherwise on the CPU (CPU_MAX_NUM_BATCHED_TOKENS: as fast,
    # less peak memory). LLM.__init__ writes the resolved value back here.
    max_num_batched_tokens: int | None = None
    block_size: int = 16
    enable_prefix_caching: bool = True
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    kv_cache_memory_gb: float | None = None
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False
    attention_backend: str = "auto"  # auto | torch_ref | torch_cpu | triton
    seed: int = 0
    allow_pickle: bool = False
    trust_remote_code: bool = False
    quantization: str | None = None
    quant_cache_dir: str | None = None  # None: ~/.cache/docgen-engine/quant; "": no cache
    # The LM head (and the embedding, when tied to it) with 4bit/8bit weights: "auto" (per-row int8 on
    # the CPU, dense on CUDA), "8bit" or "dense". 8 bits: a quarter of the fp32 memory (700 MB less on
    # Qwen2.5-Coder-1.5B) and of the LM head's bytes read per token; costs 8bit ~0.8 points of
    # teacher-forced agreement on docstring-13m, 4bit nothing measurable (BENCHMARKS.md, issue 14).
    quant_lm_head: str = "auto"
    # CPU: torch.set_num_threads(cpu_threads) when the engine is built (process-wide); None leaves
    # torch's default (one thread per core). On a machine whose cores are busy with other work, fewer
    # threads than cores avoids waiting at every op for a preempted thread: on the 2-core VM loaded by
    # other jobs, 1 thread decoded cpu-31m at 4 bits ~100x faster than 2 (BENCHMARKS.md, issue 14).
    cpu_threads: int | None = None
    # CPU int4/int8 matmuls of at most a few rows (batch-1 decode, the LM head of one sequence):
    # "auto" = the AVX-512 VNNI kernels of quant/vnni.py where the CPU and a C compiler allow them
    # (activations rounded to int8 per block of 32, as llama.cpp does; faster, slightly lossy:
    # BENCHMARKS.md, issue 14), else torch's; "torch" = torch's kernels only (bf16 activations);
    # "vnni" = the VNNI kernels or an error saying why they cannot run.
    cpu_kernels: str = "auto"
    kv_cache_dtype: str = "auto"
    # fp8 KV: a JSON file of per-layer scales (KVScales.save); None = calibrate at load on a fixed prompt
    kv_cache_scales: str | None = None
    lora_path: str | list[str] | None = None
    enable_compilation: bool = False
    # CPU: run steps through the lean forward (models/lean.py: the same ops as the module path, as
    # plain function calls; equal hidden states) where it applies; False: always the module path.
    cpu_lean_forward: bool = True
    # CPU: run each pure-decode step of the lean forward as one C call with our kernels
    # (models/fused_decode.py; float32 models with int4/int8/float32 linears); off with
    # cpu_kernels="torch". Close to the lean forward, not bit-identical (tests bound the difference).
    cpu_fused_decode: bool = True
    # Overlap the step loop: schedule and prepare step N+1 while step N runs on the device, and
    # read step N's tokens back with one non-blocking copy. None = on for CUDA, off on the CPU
    # (where the forward is synchronous and nothing can overlap); True forces it on the CPU too.
    async_scheduling: bool | None = None
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    # Features turned off in place (load_report.disabled_features) instead of raising
    # errors.UnsupportedFeature when they cannot be set up: see errors.FEATURES.
    optional_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.quantization = normalize_quantization(self.quantization)
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            v = getattr(self, name)
            if v is None and name == "max_num_batched_tokens":
                continue  # by device: resolve_max_num_batched_tokens
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.kv_cache_dtype not in KV_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {KV_DTYPES}, got {self.kv_cache_dtype!r}")
        if self.cpu_threads is not None and (not isinstance(self.cpu_threads, int) or self.cpu_threads < 1):
            raise ValueError(f"cpu_threads must be None or a positive integer, got {self.cpu_threads!r}")
        if self.cpu_kernels not in ("auto", "torch", "vnni"):
            raise ValueError(f"cpu_kernels must be 'auto', 'torch' or 'vnni', got {self.cpu_kernels!r}")
        if self.quant_lm_head not in ("auto", "8bit", "dense"):
            raise ValueError(f"quant_lm_head must be 'auto', '8bit' or 'dense', got {self.quant_lm_head!r}")
        if self.kv_cache_scales is not None and self.kv_cache_dtype != "fp8":
            raise ValueError("kv_cache_scales is only used with kv_cache_dtype='fp8'")
        if self.kv_cache_memory_gb is not None and self.kv_cache_memory_gb <= 0:
            raise ValueError("kv_cache_memory_gb must be > 0")
        if not 0.05 <= self.gpu_memory_utilization <= 0.99:
            raise ValueError("gpu_memory_utilization must be between 0.05 and 0.99")
        if self.attention_backend not in ("auto", "torch_ref", "torch_cpu", "triton"):
            raise ValueError("attention_backend must be auto, torch_ref, torch_cpu or triton")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError("max_model_len must be >= 2")
        if self.async_scheduling not in (None, True, False):
            raise ValueError(f"async_scheduling must be None (auto), True or False, got {self.async_scheduling!r}")
        if isinstance(self.lora_path, str):
            self.lora_path = [self.lora_path]
        from .errors import FEATURES

        self.optional_features = tuple(self.optional_features)
        unknown = sorted(set(self.optional_features) - set(FEATURES))
        if unknown:
            raise ValueError(f"optional_features {unknown} are unknown; choose from {list(FEATURES)}")

    def resolve_max_num_batched_tokens(self, device, weight_format: str | None = None) -> int:
        """Fill in max_num_batched_tokens=None for `device` (a torch.device or its type) and the
        loaded weights' format (load_report.quantization.format: None, "8bit", "4bit", ...)."""
        if self.max_num_batched_tokens is None:
            small = getattr(device, "type", device) == "cpu" and weight_format != "4bit"
            self.max_num_batched_tokens = CPU_MAX_NUM_BATCHED_TOKENS if small else MAX_NUM_BATCHED_TOKENS
        return self.max_num_batched_tokens
