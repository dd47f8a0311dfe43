"""Real HF-format checkpoints with random weights, built locally (no hub, no network).

Tests, benchmarks and `--random-weights` need models that go through exactly the loading path a
user's downloaded model goes through (config.json + safetensors + tokenizer.json + chat template).
Speed depends on shape, not on values, so random weights are fine for measuring; for anything
where values matter use the trained models in ../shared/models (see shared/design/TESTING.md).

- `build_tokenizer`: a byte-level BPE trained in well under a second on a fixed slice of the
  Python standard library's sources, with ChatML special tokens and chat template.
- `PRESETS` / `preset_config`: named model shapes, from 2-layer test models to the real
  Qwen2.5-Coder-1.5B / 7B shapes.
- `build_model`: the random-weight model in memory; `build_checkpoint`: the same, saved to disk.
"""
from __future__ import annotations

import copy
import pathlib
import sysconfig
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2
PAD_TOKEN_ID, BOS_LIKE_ID, EOS_TOKEN_ID = 0, 1, 2

# ChatML. Unknown roles are rejected so that prompt code cannot silently rely on roles the
# template was not written for.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('ChatML template: unknown role ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The training corpus: the first files (sorted by name) of the standard library's top-level
# modules, up to this many bytes. Bounded so training takes well under a second.
TOKENIZER_CORPUS_BYTES = 1 << 20

_TOKENIZER_JSON_CACHE: dict[int, str] = {}  # vocab_size -> trained tokenizers.Tokenizer JSON


def _stdlib_corpus(max_bytes: int = TOKENIZER_CORPUS_BYTES) -> list[str]:
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        data = path.read_bytes()[: max_bytes - total]
        texts.append(data.decode("utf-8", errors="replace"))
        total += len(data)
        if total >= max_bytes:
            break
    if not texts:
        raise RuntimeError(f"no Python sources found under {stdlib} to train a test tokenizer on")
    return texts


# The pre-tokenizer split of Qwen2's tokenizer (a GPT-4 style regex with single digits).
# transformers loads a qwen2/qwen3 checkpoint's tokenizer through `Qwen2Tokenizer`, which
# rebuilds the pipeline with exactly this regex, NFC and byte-level pieces; training with the same
# pipeline makes every loading path (that one, or tokenizer.json as is) tokenize identically.
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _train_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable
        show_progress=False,
    )
    tok.train_from_iterator(_stdlib_corpus(), trainer)
    return tok.to_str()


def build_tokenizer(save_dir: str | pathlib.Path | None, vocab_size: int = 512):
    """Train (or reuse from this process's cache) a ChatML byte-level BPE tokenizer.

    At most `vocab_size` tokens; a large request stops where the corpus runs out of merges
    (about 19k tokens), which is fine for a model whose embedding has more rows than the
    tokenizer has ids (real Qwen checkpoints are like that too). Saved with `save_pretrained`
    into `save_dir` unless it is None. Same inputs, same tokenizer.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least 259 ids")
    if vocab_size not in _TOKENIZER_JSON_CACHE:
        _TOKENIZER_JSON_CACHE[vocab_size] = _train_tokenizer_json(vocab_size)
    backend = Tokenizer.from_str(_TOKENIZER_JSON_CACHE[vocab_size])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=1 << 30,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    if save_dir is not None:
        pathlib.Path(save_dir).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


@dataclass(frozen=True)
class Preset:
    """A named model shape: an HF config class name and its keyword arguments."""

    name: str
    config_class: str  # "Qwen2Config" | "LlamaConfig" | "MistralConfig" | "Qwen3Config"
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


# Shared by every preset: the locally trained tokenizer's special ids.
_IDS = dict(bos_token_id=None, eos_token_id=EOS_TOKEN_ID, pad_token_id=PAD_TOKEN_ID)

# 2 layers, hidden 64, 4 query / 2 KV heads (GQA), head_dim 16: small enough that a whole test
# session builds all of them in seconds. initializer_range 0.2 instead of HF's 0.02: with 0.02 the
# attention scores of so small a model are ~1e-5, attention is uniform and RoPE (or a bug in it)
# changes nothing, and tied models repeat one token forever. At 0.2 greedy output is varied,
# changing rope_theta changes it, and top-1/top-2 logit gaps are ~0.5, far above fp32 noise.
_TINY = dict(
    initializer_range=0.2,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=512,
    # Room for the documentation prompt: with the 512-token test tokenizer its system part alone
    # is about 400 tokens.
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    **_IDS,
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "tiny", "Qwen2Config",
            dict(_TINY, tie_word_embeddings=True, use_sliding_window=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            "Qwen2 (QKV bias), tied head",
        ),
        Preset(
            "tiny-untied", "Qwen2Config",
            dict(_TINY, tie_word_embeddings=False, use_sliding_window=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            "Qwen2 (QKV bias), untied head",
        ),
        Preset(
            "tiny-llama", "LlamaConfig",
            dict(_TINY, tie_word_embeddings=False, attention_bias=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            "Llama 2 style, untied head, no bias",
        ),
        # Llama 3 rope scaling. With head_dim 16 and theta 1e4 the rotary wavelengths are
        # 6.3, 20, 63, 199, ... positions: with original_max_position_embeddings 64 (low/high
        # frequency wavelength cut-offs 64 and 16) two dimension pairs are smoothed and the rest
        # divided by 8, so a wrong implementation shows up within prompts of a few dozen tokens.
        Preset(
            "tiny-llama3", "LlamaConfig",
            dict(_TINY, tie_word_embeddings=False, attention_bias=False,
                 rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 64}),
            "Llama 3 with llama3 rope scaling (factor 8, original context 64)",
        ),
        Preset(
            "tiny-mistral", "MistralConfig",
            dict(_TINY, tie_word_embeddings=False, sliding_window=None,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            "Mistral, no sliding window, untied head",
        ),
        # head_dim 32 is explicit and differs from hidden/heads = 16, as in real Qwen3 models.
        Preset(
            "tiny-qwen3", "Qwen3Config",
            dict(_TINY, head_dim=32, tie_word_embeddings=True, attention_bias=False,
                 use_sliding_window=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            "Qwen3: QK-norm, explicit head_dim 32, tied head",
        ),
        # The CPU benchmark shape of shared/design/REFERENCE.md (about 31M parameters, untied).
        Preset(
            "cpu-31m", "Qwen2Config",
            dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                 intermediate_size=1408, vocab_size=8000, max_position_embeddings=4096,
                 tie_word_embeddings=False, use_sliding_window=False, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **_IDS),
            "Qwen2, 31M parameters: the CPU benchmark shape",
        ),
        # Values of Qwen/Qwen2.5-Coder-1.5B(-Instruct)'s config.json (special ids aside: the
        # local tokenizer has its own).
        Preset(
            "qwen2.5-coder-1.5b", "Qwen2Config",
            dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, max_position_embeddings=32768,
                 tie_word_embeddings=True, use_sliding_window=False, max_window_layers=28,
                 rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                 **_IDS),
            "Qwen2.5-Coder-1.5B shape (1.54B parameters, tied head)",
        ),
        Preset(
            "qwen2.5-coder-7b", "Qwen2Config",
            dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                 intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768,
                 tie_word_embeddings=False, use_sliding_window=False, max_window_layers=28,
                 rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                 **_IDS),
            "Qwen2.5-Coder-7B shape (7.6B parameters, untied head)",
        ),
    ]
}


def _get_preset(preset: str) -> Preset:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[preset]


def preset_config(preset: str = "tiny", overrides: Mapping[str, Any] | None = None):
    """The HF config object of a preset with `overrides` merged in (no weights are built)."""
    import transformers

    spec = _get_preset(preset)
    cls = getattr(transformers, spec.config_class)
    kwargs = copy.deepcopy(dict(spec.kwargs))
    if overrides:
        # HF configs swallow unknown keyword arguments; a typo would silently do nothing.
        known = set(cls().to_dict()) | set(kwargs)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown config fields {unknown} for {spec.config_class}; "
                f"pass fields that {spec.config_class} has (e.g. num_hidden_layers, vocab_size)"
            )
        kwargs.update(copy.deepcopy(dict(overrides)))
    config = cls(**kwargs)
    config.architectures = [spec.config_class.replace("Config", "ForCausalLM")]
    return config


def build_model(
    preset: str = "tiny",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
):
    """A random-weight `AutoModelForCausalLM` of the preset's shape, built directly on `device`."""
    from transformers import AutoModelForCausalLM

    config = preset_config(preset, overrides)
    config.dtype = dtype
    torch.manual_seed(seed)
    # Build on the target device so a 7B shape never materialises in host memory first.
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    _randomize_constant_parameters(model, std=config.initializer_range)
    return model.eval()


@torch.no_grad()
def _randomize_constant_parameters(model: torch.nn.Module, std: float) -> None:
    """HF initialises biases to 0 and norm weights to 1; make them random too.

    Otherwise an engine that forgets the QKV bias or a norm's weight (e.g. Qwen3's QK-norm)
    would still match transformers token for token on these checkpoints.
    """
    for name, param in model.named_parameters():
        if name.endswith(".bias"):
            param.normal_(0.0, std)
        elif "norm" in name and name.endswith(".weight"):
            param.add_(torch.randn_like(param) * 0.1)  # around 1.0, as trained norms are


def build_checkpoint(
    out_dir: str | pathlib.Path,
    preset: str = "tiny",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    max_shard_size: int | str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write a complete HF-format checkpoint (safetensors, tokenizer, chat template) to `out_dir`.

    `max_shard_size` (bytes or a string such as "200KB") splits the weights into several
    shards plus `model.safetensors.index.json`. Returns `out_dir` as a Path.
    """
    from transformers import GenerationConfig

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(preset, seed=seed, dtype=dtype, device=device, overrides=overrides)
    save_kwargs: dict[str, Any] = {}
    if max_shard_size is not None:
        save_kwargs["max_shard_size"] = max_shard_size
    model.generation_config = GenerationConfig(
        eos_token_id=EOS_TOKEN_ID, pad_token_id=PAD_TOKEN_ID, do_sample=False
    )
    model.save_pretrained(str(out), **save_kwargs)
    build_tokenizer(out, vocab_size=min(model.config.vocab_size, 1 << 20))
    return out


# Tiny presets of architectures WITHOUT a native implementation: they exercise the transformers
# fallback backend (app/engine/fallback_setup.py). Same 2-layer / hidden-64 scale as _TINY.
_TINY_GQA = {k: _TINY[k] for k in ("initializer_range", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                     "num_key_value_heads", "intermediate_size", "vocab_size",
                                     "max_position_embeddings")}
for _preset in [
    Preset(
        "tiny-phi3", "Phi3Config",
        dict(_TINY_GQA, rms_norm_eps=1e-6, tie_word_embeddings=False, sliding_window=None,
             original_max_position_embeddings=2048,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
             **_IDS),
        "Phi-3 (fused qkv_proj / gate_up_proj in the checkpoint), fallback backend",
    ),
    # Sliding window 8 on every other layer, so prompts of a few dozen tokens cross it; logit
    # soft-capping on; head_dim 16 explicit (Gemma's default is 256). Untied: with a tied head the
    # sqrt(hidden)-scaled input embedding dominates and greedy output repeats the last token.
    Preset(
        "tiny-gemma2", "Gemma2Config",
        dict(_TINY_GQA, head_dim=16, query_pre_attn_scalar=16, sliding_window=8, rms_norm_eps=1e-6,
             tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
             **_IDS),
        "Gemma 2: alternating sliding-window (8) / full attention, soft-capping, untied, fallback backend",
    ),
    Preset(
        "tiny-starcoder2", "Starcoder2Config",
        dict(_TINY_GQA, norm_epsilon=1e-5, use_bias=True, sliding_window=None, tie_word_embeddings=True,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **_IDS),
        "StarCoder2: LayerNorm, biases, GELU MLP, fallback backend",
    ),
    # GPT-2: learned positions, Conv1D projections (weights stored (in, out)), tied head.
    Preset(
        "tiny-gpt2", "GPT2Config",
        dict(initializer_range=0.2, n_embd=64, n_layer=2, n_head=4, n_inner=128, vocab_size=512,
             n_positions=2048, tie_word_embeddings=True, **_IDS),
        "GPT-2 (Conv1D, learned positions), fallback backend",
    ),
]:
    PRESETS[_preset.name] = _preset
