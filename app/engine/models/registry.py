"""Maps HF `architectures` names onto native model classes."""
from __future__ import annotations

from .decoder import DecoderForCausalLM

# HF architecture -> family switch of the shared decoder
NATIVE_ARCHITECTURES = {
    "Qwen2ForCausalLM": "qwen2",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen3ForCausalLM": "qwen3",
}


def native_family(architecture: str) -> str | None:
    return NATIVE_ARCHITECTURES.get(architecture)


def has_native_implementation(hf_config) -> bool:
    """Whether any of the config's `architectures` has a native model (else: transformers fallback)."""
    return any(native_family(a) for a in (getattr(hf_config, "architectures", None) or []))


def build_native_model(hf_config, max_positions: int):
    archs = list(getattr(hf_config, "architectures", None) or [])
    for arch in archs:
        family = native_family(arch)
        if family:
            return DecoderForCausalLM(hf_config, family, max_positions)
    raise ValueError(
        f"architecture {archs or '(none in config.json)'} has no native implementation; supported: "
        f"{', '.join(sorted(NATIVE_ARCHITECTURES))}"
    )
