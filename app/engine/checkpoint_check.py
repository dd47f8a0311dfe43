"""Whole-checkpoint checks before anything is allocated: the loaded config against the weight
files, and whether weights + rotary table + KV cache fit the device (errors: model_check)."""
from __future__ import annotations

from pathlib import Path

from .loader import weight_files
from .model_check import ModelLoadError, text_config, validate_config
from .model_memory import check_fits, config_params, estimate_memory
from .safetensors_check import summarize_weights


def check_checkpoint(path: Path, hf_config, allow_pickle: bool = False):
    """The loaded config's sizes, the weight files' headers, and that both describe one model.
    Returns the weights summary (None for pickled .bin checkpoints, whose headers are not read)."""
    validate_config(hf_config, f"{Path(path) / 'config.json'}")
    stored = summarize_weights(weight_files(Path(path), allow_pickle))
    n_config = config_params(hf_config)
    prequantized = getattr(hf_config, "quantization_config", None) is not None
    # Twice the stored count: the estimate is rough (GPT-2's MLP has two matrices, not three).
    if stored is not None and not prequantized and n_config > 2 * stored.numel:
        c = text_config(hf_config)
        raise ModelLoadError(
            f"{Path(path) / 'config.json'} describes about {n_config / 1e6:.1f}M parameters (hidden_size="
            f"{c.hidden_size}, num_hidden_layers={c.num_hidden_layers}, vocab_size={c.vocab_size}) but the "
            f"weight files hold {stored.numel / 1e6:.1f}M: config.json does not belong to these weights")
    return stored


def check_model(cfg, path: Path, hf_config, device, dtype) -> dict:
    """Everything that can be known before the engine allocates: config, weight files, and whether
    weights + rotary table + KV cache fit the device. Returns the estimate in GiB."""
    stored = check_checkpoint(path, hf_config, cfg.allow_pickle)
    est = estimate_memory(cfg, hf_config, device, dtype, stored)
    check_fits(est, device, path)
    return est.as_report()
