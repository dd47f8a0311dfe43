"""LoRA adapters merged into the base weights at load: W' = W + scale * B @ A.

Reads PEFT adapter directories (adapter_config.json + adapter_model.safetensors) and applies them
while the checkpoint streams by, before any quantization, so a quantized model carries the merged
weights and the model code never knows an adapter was there. Several adapters are applied in the
order given (the deltas are summed in fp32 and cast back once).

PEFT names a tensor `base_model.model.<module>.lora_A.weight` (A: (r, in_features)) and
`...lora_B.weight` (B: (out_features, r)); the base weight is `<module>.weight` of shape
(out_features, in_features), or (in_features, out_features) for GPT-2-style Conv1D modules
(`fan_in_fan_out`). scale = alpha / r, or alpha / sqrt(r) with rsLoRA; `alpha_pattern` /
`rank_pattern` override alpha / r per module as in PEFT.

Unsupported PEFT features (DoRA, modules_to_save, embedding LoRA, LoRA bias, ...) raise a
ValueError instead of being half-applied.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.weight$")

# adapter_config.json fields whose non-empty value means a feature a plain merge cannot reproduce.
_UNSUPPORTED = {
    "use_dora": "DoRA (use_dora=True) rescales weight columns by a learned magnitude",
    "modules_to_save": "modules_to_save stores whole replacement modules",
    "lora_bias": "lora_bias=True adds a trained bias to lora_B",
    "trainable_token_indices": "trainable_token_indices trains embedding rows",
    "target_parameters": "target_parameters adapts raw parameters (e.g. MoE experts)",
    "layer_replication": "layer_replication duplicates layers",
    "alora_invocation_tokens": "activated LoRA applies only after invocation tokens",
    "use_qalora": "QA-LoRA pools inputs before the adapter",
    "use_bdlora": "BD-LoRA uses block-diagonal factors",
}


@dataclass
class LoraModule:
    """One adapted module of one adapter."""

    module: str  # e.g. "model.layers.0.self_attn.q_proj"
    A: torch.Tensor | None = None  # (r, in_features)
    B: torch.Tensor | None = None  # (out_features, r)
    scale: float = 0.0


@dataclass
class LoraAdapter:
    path: Path
    fan_in_fan_out: bool
    modules: dict[str, LoraModule] = field(default_factory=dict)  # base weight name -> module


def _fix(path: Path, msg: str) -> ValueError:
    return ValueError(f"LoRA adapter {path}: {msg}")


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rule: a pattern key matches a module name ending in it (after a dot or whole)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _check_config(path: Path, cfg: dict, hf_config) -> None:
    if cfg.get("peft_type", "LORA") != "LORA":
        raise _fix(path, f"peft_type is {cfg.get('peft_type')!r}; only LoRA adapters can be merged")
    for key, what in _UNSUPPORTED.items():
        if cfg.get(key):
            raise _fix(path, f"{what}, which this engine does not support; merge the adapter into the "
                             "base model with PEFT (`merge_and_unload()` + save_pretrained) and load that model")
    if cfg.get("bias", "none") != "none":
        raise _fix(path, f"bias={cfg['bias']!r} trains base-model biases, which a LoRA merge does not carry; "
                         "merge it with PEFT's merge_and_unload() and load the merged model")
    _check_base_model(path, cfg.get("base_model_name_or_path"), hf_config)


def _check_base_model(path: Path, base: str | None, hf_config) -> None:
    """When the adapter names a local base model directory, its architecture must match ours."""
    if not base or hf_config is None:
        return
    base_dir = Path(base).expanduser()
    if not (base_dir / "config.json").is_file():
        return  # a hub id or a path of another machine: shapes are checked while merging
    theirs = json.loads((base_dir / "config.json").read_text())
    ours = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(vars(hf_config))
    diff = [k for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                        "intermediate_size") if k in theirs and k in ours and theirs[k] != ours[k]]
    if diff:
        detail = ", ".join(f"{k}: adapter's base {theirs[k]!r} vs model {ours[k]!r}" for k in diff)
        raise _fix(path, f"was trained on {base}, a different architecture ({detail}); load it with the "
                         "base model it was trained on")


def load_adapter(path: str | Path, hf_config=None) -> LoraAdapter:
    """Read and validate one PEFT LoRA adapter directory (tensors kept in fp32 on the CPU)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"LoRA adapter {path} is not a directory; pass the folder PEFT's "
                         "save_pretrained() wrote (adapter_config.json + adapter_model.safetensors)")
    if not (path / ADAPTER_CONFIG).is_file():
        raise _fix(path, f"{ADAPTER_CONFIG} is missing; pass the folder PEFT's save_pretrained() wrote")
    if not (path / ADAPTER_WEIGHTS).is_file():
        hint = (" (only the pickled adapter_model.bin is there: re-save it with safe_serialization=True)"
                if (path / "adapter_model.bin").exists() else "")
        raise _fix(path, f"{ADAPTER_WEIGHTS} is missing{hint}")
    try:
        cfg = json.loads((path / ADAPTER_CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise _fix(path, f"{ADAPTER_CONFIG} is not valid JSON ({e})") from None
    _check_config(path, cfg, hf_config)
    from safetensors import safe_open

    tied = hf_config is not None and bool(getattr(hf_config, "tie_word_embeddings", False))
    adapter = LoraAdapter(path, bool(cfg.get("fan_in_fan_out", False)))
    alpha, rslora = float(cfg.get("lora_alpha", 8)), bool(cfg.get("use_rslora", False))
    with safe_open(str(path / ADAPTER_WEIGHTS), framework="pt") as fh:
        for key in fh.keys():
            name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
            if name.startswith("lm_head.") and tied:
                raise _tied_error(path)
            if "lora_embedding_" in name:
                raise _fix(path, f"{key} adapts an embedding, which this engine does not merge; merge "
                                 "it with PEFT's merge_and_unload() and load the merged model")
            m = _KEY.match(name)
            if m is None and name.endswith(".base_layer.weight"):
                raise _fix(path, f"{key} is a full replacement weight (PEFT save_embedding_layers), not a "
                                 "low-rank update; merge the adapter with PEFT's merge_and_unload() and load "
                                 "the merged model")
            if m is None:
                raise _fix(path, f"unexpected tensor {key!r} (not a lora_A / lora_B weight); only "
                                 "plain LoRA adapters are supported")
            mod = adapter.modules.setdefault(m["module"] + ".weight", LoraModule(m["module"]))
            setattr(mod, m["which"], fh.get_tensor(key).float())
    if not adapter.modules:
        raise _fix(path, f"{ADAPTER_WEIGHTS} holds no LoRA tensors")
    for mod in adapter.modules.values():
        if mod.A is None or mod.B is None:
            raise _fix(path, f"{mod.module} has only one of lora_A / lora_B; the file is incomplete")
        if mod.A.dim() != 2 or mod.B.dim() != 2 or mod.A.shape[0] != mod.B.shape[1]:
            raise _fix(path, f"{mod.module}: lora_A {tuple(mod.A.shape)} and lora_B {tuple(mod.B.shape)} "
                             "do not form a rank-r product B @ A")
        r = float(_pattern_value(cfg.get("rank_pattern"), mod.module, cfg.get("r", mod.A.shape[0])))
        a = float(_pattern_value(cfg.get("alpha_pattern"), mod.module, alpha))
        mod.scale = a / math.sqrt(r) if rslora else a / r
    return adapter


def load_adapters(paths: str | Path | Iterable[str | Path], hf_config=None) -> list[LoraAdapter]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [load_adapter(p, hf_config) for p in paths]


def _tied_error(path: Path) -> ValueError:
    return _fix(path, "adapts lm_head, whose weight this model shares with the embedding; merging would "
                      "change both. Merge it with PEFT's merge_and_unload() and load the merged model")


def merged_weight(name: str, weight: torch.Tensor, adapters: list[LoraAdapter]) -> torch.Tensor:
    """`weight` plus every adapter's delta for `name`, in fp32, cast back to weight's dtype."""
    hits = [(ad, ad.modules[name]) for ad in adapters if name in ad.modules]
    if not hits:
        return weight
    w = weight.float()
    for ad, mod in hits:
        delta = mod.scale * (mod.B.to(w.device) @ mod.A.to(w.device))  # (out, in)
        if ad.fan_in_fan_out:
            delta = delta.T  # Conv1D keeps (in, out)
        if delta.shape != w.shape:
            raise _fix(ad.path, f"{mod.module}: the adapter's update has shape {tuple(delta.shape)} but the "
                                f"base weight is {tuple(w.shape)}; the adapter was trained for another "
                                "base model: load it with the model it was trained on")
        w = w + delta
    return w.to(weight.dtype)


def _missing_error(adapters: list[LoraAdapter], seen: set[str]) -> ValueError | None:
    for ad in adapters:
        missing = sorted(n for n in ad.modules if n not in seen)
        if missing:
            return _fix(ad.path, f"targets {len(missing)} module(s) the checkpoint does not have "
                                 f"(e.g. {missing[:3]}); the adapter belongs to another base model: load it "
                                 "with the model it was trained on")
    return None


def merge_lora_weights(weights: Iterable[tuple[str, torch.Tensor]], lora_paths, hf_config=None
                       ) -> Iterator[tuple[str, torch.Tensor]]:
    """Wrap a (checkpoint name, tensor) stream: targeted weights come out merged.

    Adapters are read (and validated) before the first tensor is yielded; a target the checkpoint
    never produced raises when the stream ends.
    """
    adapters = load_adapters(lora_paths, hf_config)
    return _merge_stream(weights, adapters)


def _merge_stream(weights, adapters: list[LoraAdapter]) -> Iterator[tuple[str, torch.Tensor]]:
    seen: set[str] = set()
    for name, tensor in weights:
        seen.add(name)
        yield name, merged_weight(name, tensor, adapters)
    err = _missing_error(adapters, seen)
    if err:
        raise err


@torch.no_grad()
def merge_lora_into_module(model: torch.nn.Module, lora_paths, hf_config=None) -> int:
    """Merge adapters into an already built module in place (the transformers fallback backend,
    whose parameter names are the PEFT module names). Returns the number of weights changed."""
    adapters = load_adapters(lora_paths, hf_config)
    params = dict(model.named_parameters())
    err = _missing_error(adapters, set(params))
    if err:
        raise err
    targets = {n for ad in adapters for n in ad.modules}
    for name in sorted(targets):
        p = params[name]
        p.copy_(merged_weight(name, p.data, adapters))
    return len(targets)
