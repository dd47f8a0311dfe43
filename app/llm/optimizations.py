"""How the guide's optimization parameters map onto the engine, and which ones really are active.

`OptimizationPlan` turns `create_optimized_local_generator`'s arguments into `app.engine.LLM`
keyword arguments, turns off (with one warning each) what this machine or this engine build cannot
do, and after the engine is built asks the engine itself what is active, so `report()` never
claims an optimization the engine is not running.

| guide parameter                | engine setting                                                    |
|--------------------------------|-------------------------------------------------------------------|
| max_batch_size                 | max_num_seqs (plus the per-step token budget max_num_batched_tokens)|
| enable_static_cache            | enable_prefix_caching (the paged pool itself is always pre-allocated)|
| enable_kv_cache_quantization   | kv_cache_dtype="fp8"                                              |
| quantization "4bit"/"8bit"     | quantization (weight-only, app.engine.quant)                      |
| enable_speculative_decoding    | speculative_method "draft" (draft_model_id) or "ngram"            |
| enable_compilation             | enable_compilation                                                |
| use_flash_attention            | attention_backend: Triton paged attention on CUDA, torch_ref else |
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch


Warn = Callable[[str, str], None]  # (key, message): the generator warns once per key


@dataclass
class Optimization:
    name: str
    parameter: str  # the guide's parameter that asks for it
    requested: Any
    active: bool = False
    detail: str = ""  # what runs, or why it does not


class OptimizationPlan:
    def __init__(self, *, device: torch.device, quantization: str | None, max_batch_size: int,
                 enable_speculative_decoding: bool, draft_model_id: str | None, enable_static_cache: bool,
                 enable_kv_cache_quantization: bool, enable_compilation: bool, use_flash_attention: bool,
                 warn: Warn) -> None:
        self.device, self.warn = device, warn
        self.requested = dict(
            quantization=quantization, max_batch_size=max_batch_size,
            enable_speculative_decoding=enable_speculative_decoding, draft_model_id=draft_model_id,
            enable_static_cache=enable_static_cache, enable_kv_cache_quantization=enable_kv_cache_quantization,
            enable_compilation=enable_compilation, use_flash_attention=use_flash_attention)
        self.quantization = quantization
        self.kv_fp8 = enable_kv_cache_quantization
        self.compile = enable_compilation
        self.spec_method: str | None = None
        self.draft = draft_model_id
        self.notes: dict[str, str] = {}  # optimization name -> why it is off
        self._precheck(enable_speculative_decoding, use_flash_attention)

    # ----- before loading: what this machine / engine build cannot do --------------------------
    def _precheck(self, speculative: bool, flash: bool) -> None:
        cuda = self.device.type == "cuda"
        if self.quantization:
            problem = _quant_problem(self.quantization, self.device)
            if problem:
                self.degrade("quantization", problem)
        if speculative:
            try:
                from app.engine.spec import build_speculator  # noqa: F401
            except ImportError as e:
                self.notes["speculative_decoding"] = f"the engine has no speculative decoding yet ({e})"
                self.warn("speculative_decoding", "enable_speculative_decoding=True: the engine's speculative "
                          f"decoding (app.engine.spec) is not available ({e}); decoding without speculation")
            else:
                if self.draft:
                    self.spec_method = "draft"
                else:
                    self.spec_method = "ngram"
                    self.warn("speculative_decoding", "enable_speculative_decoding=True without draft_model_id: "
                              "using n-gram prompt lookup (proposals copied from the prompt) instead of a draft "
                              "model; pass draft_model_id (same family and tokenizer) for draft speculation")
        if self.compile and not cuda:
            self.compile = False
            self.notes["compilation"] = f"torch.compile here targets CUDA; the device is {self.device.type}"
            self.warn("compilation", f"enable_compilation=True: compilation targets CUDA and the device is "
                      f"{self.device.type}; the model runs eagerly")
        # CUDA: Triton kernels when flash attention is asked for, else the torch reference.
        # CPU: the engine's own choice (its CPU backend); flash attention is not available there.
        self.attention_backend = "torch_ref" if (cuda and not flash) else "auto"
        if flash and not cuda:
            self.notes["flash_attention"] = f"flash attention needs CUDA; the device is {self.device.type}"
            self.warn("flash_attention", "use_flash_attention=True: flash attention needs CUDA and the device is "
                      f"{self.device.type}; attention runs on the engine's CPU backend (torch) "
                      "(pass use_flash_attention=False to silence this)")
        elif not flash:
            self.notes["flash_attention"] = ("use_flash_attention=False: the torch reference backend" if cuda
                                             else "use_flash_attention=False: the engine's CPU backend (torch)")

    def engine_kwargs(self, max_batch_size: int, enable_static_cache: bool) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            max_num_seqs=max_batch_size, enable_prefix_caching=enable_static_cache,
            quantization=self.quantization, kv_cache_dtype="fp8" if self.kv_fp8 else "auto",
            enable_compilation=self.compile, attention_backend=self.attention_backend)
        if self.spec_method:
            kw["speculative_method"] = self.spec_method
            if self.spec_method == "draft":
                kw["speculative_draft_model"] = self.draft
        return kw

    # ----- a failed load: the engine names the feature (app.engine.errors) ----------------------
    def optional_features(self) -> tuple[str, ...]:
        """What the engine may turn off in place (keeping the weights it loaded) instead of failing:
        every optimization asked for, since the guide promises a warning, not an error, for those."""
        names = []
        if self.quantization:
            names.append("quantization")
        if self.kv_fp8:
            names.append("kv_cache_quantization")
        if self.spec_method:
            names += ["draft_model", "speculative_decoding"] if self.spec_method == "draft" else ["speculative_decoding"]
        if self.compile:
            names.append("compilation")
        return tuple(names)

    def degrade(self, name: str, reason: str) -> None:
        """Turn `name` off (or down: draft -> ngram speculation) with one warning."""
        if name == "quantization":
            q, self.quantization = self.quantization, None
            self.notes[name] = reason
            self.warn(name, f"quantization={q!r}: not available here ({reason}); running with unquantized weights")
        elif name == "draft_model" or (name == "speculative_decoding" and self.spec_method == "draft"):
            self.spec_method = "ngram"
            self.notes["draft_model"] = reason
            self.warn("draft_model", f"draft_model_id={self.draft!r} could not be used ({reason}); "
                      "speculating with n-gram prompt lookup instead")
        elif name == "speculative_decoding":
            self.spec_method = None
            self.notes[name] = reason
            self.warn(name, f"enable_speculative_decoding=True: speculation failed to start ({reason}); "
                      "decoding without speculation")
        elif name == "compilation":
            self.compile = False
            self.notes[name] = reason
            self.warn(name, f"enable_compilation=True: compilation failed ({reason}); the model runs eagerly")
        elif name == "kv_cache_quantization":
            self.kv_fp8 = False
            self.notes[name] = reason
            self.warn(name, f"enable_kv_cache_quantization=True: fp8 KV cache failed ({reason}); "
                      "the KV cache keeps the model dtype")
        else:  # pragma: no cover - programming error
            raise KeyError(name)

    # ----- after loading: ask the engine what is running ----------------------------------------
    def finalize(self, llm: Any) -> dict[str, Optimization]:
        r, cfg = llm.load_report, llm.config
        req = self.requested
        opts: dict[str, Optimization] = {}

        def add(name, param, requested, active, detail):
            opts[name] = Optimization(name, param, requested, bool(active), detail)

        n = cfg.max_num_seqs
        add("continuous_batching", "max_batch_size", req["max_batch_size"], n > 1,
            f"up to {n} sequences per step (max_num_seqs), within {cfg.max_num_batched_tokens} tokens per step "
            "(max_num_batched_tokens; long prompts are prefilled in chunks); requests join and leave between steps"
            if n > 1 else "max_batch_size=1: one sequence per step")
        add("kv_cache_reuse", "enable_static_cache", req["enable_static_cache"], llm.prefix_caching,
            f"prefix caching: prompt blocks of {cfg.block_size} tokens (the shared system prompt) are computed once "
            "and reused by later requests, also within the first batch" if llm.prefix_caching
            else f"unavailable on the {llm.backend} backend (no paged KV cache): every prompt computed in full"
            if llm.backend != "native"
            else "enable_static_cache=False: prefix caching off, every prompt computed in full")
        pool = (r.kv_blocks or 0) * llm.runner.kv_bytes_per_block(llm.runner.kv_dtype)
        add("static_cache", "enable_static_cache", req["enable_static_cache"], True,
            f"KV pool pre-allocated at load: {r.kv_blocks} blocks x {cfg.block_size} tokens = "
            f"{r.kv_tokens} tokens ({_bytes(pool)} {r.kv_cache_dtype}); always on in this engine"
            + ("" if req["enable_static_cache"] else " (enable_static_cache=False only turned off prefix reuse)"))
        q = r.quantization
        add("quantization", "quantization", req["quantization"] or "none", bool(q),
            f"weights quantized by the engine: {_short(q)}" if q
            else self.notes.get("quantization", "quantization='none': weights in " + str(r.dtype)))
        kvd = r.kv_cache_dtype or ""
        add("kv_cache_quantization", "enable_kv_cache_quantization", req["enable_kv_cache_quantization"],
            r.kv_fp8, f"KV cache stored as {kvd} (per-layer scales: {(r.kv_cache_scales or {}).get('source')})" if r.kv_fp8
            else self.notes.get("kv_cache_quantization", f"KV cache in {kvd}"))
        compiled = r.compiled
        if self.compile and not compiled:
            self.notes["compilation"] = "the engine loaded without compiling (it reports no compiled model)"
            reason = (r.compile.error if r.compile is not None else None) or "no compiled model reported"
            self.warn("compilation", f"enable_compilation=True: the engine did not compile ({reason}); "
                      "the model runs eagerly")
        add("compilation", "enable_compilation", req["enable_compilation"], compiled,
            f"compiled: {_short(r.compile)}" if compiled
            else self.notes.get("compilation", "enable_compilation=False"))
        spec = getattr(llm, "spec", None)
        sc = cfg.speculative
        add("speculative_decoding", "enable_speculative_decoding", req["enable_speculative_decoding"],
            spec is not None,
            (f"method {sc.method}" + (f", draft {sc.draft_model}" if sc.method == "draft" else "")
             + f", {sc.num_speculative_tokens} proposed tokens per step") if spec is not None
            else self.notes.get("speculative_decoding", "enable_speculative_decoding=False"))
        backend = _backend_name(llm)
        add("flash_attention", "use_flash_attention", req["use_flash_attention"], backend == "triton",
            "the engine's Triton paged-attention kernels (prefill + decode) serve as flash attention "
            "(the flash-attn package is not used)" if backend == "triton"
            else self.notes.get("flash_attention", f"attention backend {backend}"))
        if r.kv_fp8 and str(getattr(llm.hf_config, "model_type", "")).startswith("qwen"):
            self.warn("kv_fp8_qwen", "enable_kv_cache_quantization=True on a Qwen2-family model: fp8 KV "
                      "(our scales are calibrated on one fixed prompt, not on your data) is known to degrade Qwen2/Qwen2.5 outputs; measure agreement "
                      "(python -m app.llm.benchmark_local --ablation reports identical-output shares)")
        return opts


def _quant_problem(fmt: str, device: torch.device) -> str | None:
    try:
        from app.engine.quant import quantize_model_  # noqa: F401
        from app.engine.quant.support import supported_formats
    except ImportError as e:
        return f"the engine's weight quantization (app.engine.quant) cannot be imported: {e}"
    return supported_formats(device).get(fmt, f"format {fmt!r} is unknown to the engine")


def _backend_name(llm: Any) -> str:
    if llm.backend != "native":
        return f"{llm.backend} (transformers' own attention)"
    return str(llm.load_report.attention_backend or "unknown")


def _short(value: Any) -> str:
    """One line out of a load-report entry (a record or dict of the engine's own making)."""
    if isinstance(value, Mapping):
        parts = [f"{k}={v}" for k, v in value.items() if isinstance(v, (str, int, float, bool)) and k != "seconds"]
        parts += [f"{len(v)} {k}" for k, v in value.items() if isinstance(v, (list, dict)) and v]
        return ", ".join(parts)[:240]
    return str(value)


def _bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def as_dicts(opts: dict[str, Optimization]) -> dict[str, dict[str, Any]]:
    return {k: asdict(v) for k, v in opts.items()}
