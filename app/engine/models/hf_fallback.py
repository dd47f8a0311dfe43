"""The transformers fallback: any causal LM transformers can load, behind the engine's runner API.

Architectures without a native paged implementation (Phi-3, Gemma 2, StarCoder2, GPT-2, ...) run
through transformers' own modeling code. `HFCausalLM` wraps the loaded `AutoModelForCausalLM` and
exposes one operation: forward a run of new tokens of one sequence on that sequence's dense
transformers cache (a `DynamicCache`), returning the logits of its last rows. The runner
(app/engine/fallback_runner.py) owns the caches and the scheduling contract.

LoRA adapters are merged into the loaded model's parameters (PEFT names adapter tensors by module
name, which is exactly the transformers model's parameter name) before any quantization.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class FallbackSpec:
    """The few shape facts the engine reads from a model (`runner.model.spec`)."""

    vocab_size: int  # logits width
    num_layers: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def from_model(cls, hf_model) -> "FallbackSpec":
        cfg = hf_model.config.get_text_config(decoder=True) if hasattr(hf_model.config, "get_text_config") \
            else hf_model.config
        heads = int(cfg.num_attention_heads)
        kv = getattr(cfg, "num_key_value_heads", None)
        if getattr(cfg, "multi_query", False):  # GPTBigCode-style MQA
            kv = 1
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        out = hf_model.get_output_embeddings()
        vocab = out.weight.shape[0] if out is not None else cfg.vocab_size
        return cls(int(vocab), int(cfg.num_hidden_layers), int(kv or heads), int(head_dim))

    def kv_bytes_per_token(self, kv_dtype: torch.dtype) -> int:
        """Dense K+V bytes of one token over all layers; an upper bound for sliding-window layers."""
        elem = torch.empty(0, dtype=kv_dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * elem


class HFCausalLM(nn.Module):
    """A transformers causal LM run one sequence at a time on its own dense cache."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        self.spec = FallbackSpec.from_model(hf_model)
        params = inspect.signature(hf_model.forward).parameters
        # transformers 5.x renamed `past_key_values` to `cache` (the old name is deprecated).
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._has_logits_to_keep = "logits_to_keep" in params

    @property
    def architecture(self) -> str:
        return type(self.hf).__name__

    def new_cache(self):
        """An empty cache laid out as `generate` would make it (sliding-window layers included)."""
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.hf.config)
        except TypeError:  # older signatures without `config`
            return DynamicCache()

    @staticmethod
    def cache_len(cache) -> int:
        return int(cache.get_seq_length()) if cache is not None else 0

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, start: int, cache, num_rows: int) -> torch.Tensor:
        """input_ids: (L,) new tokens at positions start..start+L-1, appended to `cache` in place.
        Returns float32 logits (num_rows, vocab) of the last `num_rows` positions (num_rows may be 0)."""
        L = input_ids.shape[0]
        pos = torch.arange(start, start + L, device=input_ids.device).unsqueeze(0)  # (1, L)
        kw = {self._cache_kw: cache, "use_cache": True, "position_ids": pos}
        if self._has_logits_to_keep:
            kw["logits_to_keep"] = max(num_rows, 1)  # 0 would mean "all rows"
        out = self.hf(input_ids=input_ids.unsqueeze(0), **kw)
        return out.logits[0, out.logits.shape[1] - num_rows:].float()  # (num_rows, vocab)


    # ----- batched decode ------------------------------------------------------------------
    @staticmethod
    def batchable(cache) -> bool:
        """Plain full-attention layers only: their (1, H, L, D) tensors can be stacked and split.
        Sliding-window / static / quantized layers keep extra state and decode one by one."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        return bool(layers) and all(type(x) is DynamicLayer and x.is_initialized for x in layers)

    @torch.inference_mode()
    def decode_batch(self, input_ids: torch.Tensor, caches: list, lens: list[int]) -> torch.Tensor:
        """One decode token for each of B sequences in one forward.

        input_ids: (B,); caches[i] holds lens[i] tokens (all `batchable`). The caches are stacked
        left-padded to (B, H, Lmax, D) per layer with a 2-D attention mask hiding the pads, and
        after the forward each sequence's cache becomes its (1, H, lens[i] + 1, D) slice of the
        result. Returns float32 logits (B, vocab)."""
        from transformers import DynamicCache

        B, Lmax, dev = len(caches), max(lens), input_ids.device
        batched = DynamicCache()
        for j in range(len(caches[0].layers)):
            ks, vs = [], []
            for c, n in zip(caches, lens):
                k, v = c.layers[j].keys, c.layers[j].values  # (1, H, n, D)
                pad = (0, 0, Lmax - n, 0)  # left-pad the sequence dimension
                ks.append(torch.nn.functional.pad(k, pad))
                vs.append(torch.nn.functional.pad(v, pad))
            batched.update(torch.cat(ks), torch.cat(vs), j)  # (B, H, Lmax, D)
        mask = torch.zeros(B, Lmax + 1, dtype=torch.long, device=dev)
        for i, n in enumerate(lens):
            mask[i, Lmax - n:] = 1
        pos = torch.tensor(lens, device=dev).unsqueeze(1)  # (B, 1)
        kw = {self._cache_kw: batched, "use_cache": True, "position_ids": pos, "attention_mask": mask}
        if self._has_logits_to_keep:
            kw["logits_to_keep"] = 1
        out = self.hf(input_ids=input_ids.unsqueeze(1), **kw)
        for j, layer in enumerate(batched.layers):
            for i, (c, n) in enumerate(zip(caches, lens)):
                c.layers[j].keys = layer.keys[i:i + 1, :, Lmax - n:]  # (1, H, n + 1, D) view
                c.layers[j].values = layer.values[i:i + 1, :, Lmax - n:]
        return out.logits[:, -1].float()  # (B, vocab)


def load_hf_model(path, hf_config, device: torch.device, dtype: torch.dtype, *, trust_remote_code: bool,
                  use_safetensors: bool) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kw = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=use_safetensors)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), config=hf_config, **kw)
    except ValueError as e:
        raise ValueError(f"transformers cannot load {path} as a causal LM ({e}); the fallback backend runs "
                         "only models that AutoModelForCausalLM loads") from None
    return model.to(device).eval()


def build_fallback_model(cfg, path, hf_config, device: torch.device, dtype: torch.dtype) -> tuple[HFCausalLM, list]:
    """Load the transformers model, merge LoRA adapters into it, wrap it. -> (model, weight files)."""
    from ..loader import weight_files

    files = weight_files(path, cfg.allow_pickle)  # enforces the safetensors-only rule
    hf = load_hf_model(path, hf_config, device, dtype, trust_remote_code=cfg.trust_remote_code,
                       use_safetensors=files[0].suffix == ".safetensors")
    if cfg.lora_path:
        from ..lora import merge_lora_into_module

        n = merge_lora_into_module(hf, cfg.lora_path, hf_config)
        log.info("merged %d LoRA weight(s) from %s", n, cfg.lora_path)
    return HFCausalLM(hf), files
