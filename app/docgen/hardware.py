"""What this machine can run, and what a model is, without importing torch.

The default model follows the hardware (a 7B on a GPU with the memory for it, a 1.5B at 8 bits
otherwise), and `docgen estimate` sizes its time range from a model's parameter count, read
from its config.json (a local folder or the Hugging Face cache; nothing is downloaded).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GPU_MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"
CPU_MODEL = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
GPU_MIN_GIB = 12.0  # a 7B at 4 bits plus its KV cache; below this the small model is the default
DEFAULT_WINDOW = 4096  # tokens, when the model's own window is not known or is larger


@dataclass
class Hardware:
    device: str  # "gpu" | "cpu"
    gpu_name: str = ""
    gpu_memory_gib: float = 0.0
    cpu_cores: int = 1

    def describe(self) -> str:
        if self.device == "gpu":
            return f"GPU {self.gpu_name} ({self.gpu_memory_gib:.0f} GiB)"
        return f"CPU ({self.cpu_cores} cores, no GPU found)"


def detect_hardware() -> Hardware:
    """The first NVIDIA GPU by nvidia-smi (no torch import), else the CPU."""
    cores = os.cpu_count() or 1
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            name, mib = [s.strip() for s in out.strip().splitlines()[0].rsplit(",", 1)]
            return Hardware("gpu", name, float(mib) / 1024, cores)
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    return Hardware("cpu", cpu_cores=cores)


@dataclass
class ModelChoice:
    model: str
    quantization: str | None  # None: the generator's default
    why: str


def default_model(hw: Hardware) -> ModelChoice:
    if hw.device == "gpu" and hw.gpu_memory_gib >= GPU_MIN_GIB:
        return ModelChoice(GPU_MODEL, None, f"default for {hw.describe()}")
    where = hw.describe() if hw.device == "cpu" else f"{hw.describe()}, under {GPU_MIN_GIB:.0f} GiB"
    return ModelChoice(CPU_MODEL, "8bit", f"default for {where}, 8-bit")


def model_config(model: str) -> dict | None:
    """config.json of a local model folder, or of a hub id already in the Hugging Face cache."""
    local = Path(model).expanduser()
    path = local / "config.json" if local.is_dir() else None
    if path is None and "/" in model and not local.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "config.json")
            path = Path(found) if isinstance(found, str) else None
        except Exception:  # noqa: BLE001 - no hub library or a bad id: the size is just unknown
            path = None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def parameter_count(cfg: dict) -> int | None:
    """Parameters of a decoder-only transformer from its config (embeddings, attention, MLP)."""
    cfg = cfg.get("text_config", cfg)
    try:
        h, layers, vocab = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    inter = int(cfg.get("intermediate_size") or 4 * h)
    heads = int(cfg.get("num_attention_heads") or 1)
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * inter
    experts = int(cfg.get("num_experts_per_tok") or 1)  # active experts per token for MoE models
    emb = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return layers * (attn + mlp * experts) + emb


def context_window(cfg: dict | None, requested: int | None) -> int:
    """The window docgen plans with: the one asked for, else the model's own (up to 4096)."""
    if requested:
        return requested
    cfg = (cfg or {}).get("text_config", cfg or {})
    limits = [DEFAULT_WINDOW, cfg.get("max_position_embeddings")]
    if cfg.get("use_sliding_window") and cfg.get("sliding_window"):
        limits.append(cfg["sliding_window"])
    return min(int(x) for x in limits if x)


# Sizes of the defaults when their config is not cached here (so estimates still have a size).
KNOWN_SIZES = {GPU_MODEL: 7.6e9, CPU_MODEL: 1.5e9}


def model_size(model: str) -> tuple[int | None, str]:
    """(parameters, where the number came from)."""
    cfg = model_config(model)
    n = parameter_count(cfg) if cfg else None
    if n:
        return n, "config.json"
    if model in KNOWN_SIZES:
        return int(KNOWN_SIZES[model]), "docgen's table of default models"
    return None, "unknown (no config.json found locally)"
