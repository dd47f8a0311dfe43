"""LoRA adapters merged at load == transformers + PEFT with the adapter loaded, greedy, token for
token, on the native and the fallback backend; several adapters in order; bad adapters raise."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.lora import load_adapter, merge_lora_weights

from .oracle import hf_greedy, shared_prefix_prompts

MAX_NEW = 8
PROMPTS = shared_prefix_prompts(n=3, prefix_len=9, seed=11)


def make_adapter(base, out, target_modules, seed, **lora_kw):
    """A PEFT adapter on `base` with random non-zero B (PEFT starts B at zero: a no-op adapter)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2 Conv1D: "setting fan_in_fan_out to True"
        peft_model = get_peft_model(model, LoraConfig(target_modules=target_modules, **lora_kw))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    peft_model.save_pretrained(str(out))
    return out


def peft_greedy(base, adapters, prompt, max_new=MAX_NEW) -> list[int]:
    """transformers + PEFT: earlier adapters merged by PEFT, the last one applied unmerged."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    for i, a in enumerate(adapters):
        model = PeftModel.from_pretrained(model, str(a))
        if i < len(adapters) - 1:
            model = model.merge_and_unload()
    model.eval()
    with torch.no_grad():
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                             do_sample=False)
    toks = out[0, len(prompt):].tolist()
    return toks[: toks.index(2) + 1] if 2 in toks else toks  # EOS id 2 (random_checkpoint)


@pytest.fixture(scope="module")
def adapters(tiny_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    llama, phi3, gpt2 = tiny_checkpoint("tiny-llama"), tiny_checkpoint("tiny-phi3"), tiny_checkpoint("tiny-gpt2")
    all_llama = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return {
        "llama": llama, "phi3": phi3, "gpt2": gpt2,
        # rsLoRA + a per-module alpha: the scale rule matters.
        "llama_a": make_adapter(llama, d / "llama_a", all_llama, 0, r=4, lora_alpha=16, use_rslora=True,
                                alpha_pattern={"v_proj": 4}),
        "llama_b": make_adapter(llama, d / "llama_b", ["q_proj", "v_proj"], 1, r=2, lora_alpha=4),
        "phi3_a": make_adapter(phi3, d / "phi3_a", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], 2,
                               r=4, lora_alpha=8),
        "gpt2_a": make_adapter(gpt2, d / "gpt2_a", ["c_attn", "c_proj", "c_fc"], 3, r=4, lora_alpha=8),
        "dir": d,
    }


def engine_greedy(base, lora_path) -> list[list[int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback backend's load warning
        llm = LLM(str(base), block_size=4, lora_path=lora_path)
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=MAX_NEW))
    assert all(o.error is None for o in outs)
    return [o.token_ids for o in outs]


def test_native_lora_matches_peft(adapters):
    base, a = adapters["llama"], adapters["llama_a"]
    got = engine_greedy(base, str(a))
    assert got == [peft_greedy(base, [a], p) for p in PROMPTS]
    assert got != [hf_greedy(base, p, MAX_NEW) for p in PROMPTS]  # the adapter changed the output


@pytest.mark.slow
def test_two_adapters_merge_in_order(adapters):
    base, a, b = adapters["llama"], adapters["llama_a"], adapters["llama_b"]
    got = engine_greedy(base, [str(a), str(b)])
    assert got == [peft_greedy(base, [a, b], p) for p in PROMPTS]
    assert got != engine_greedy(base, str(a))


@pytest.mark.slow
@pytest.mark.parametrize("base,adapter", [("phi3", "phi3_a"), ("gpt2", "gpt2_a")])
def test_fallback_lora_matches_peft(adapters, base, adapter):
    """Phi-3's fused qkv/gate_up modules, GPT-2's Conv1D (fan_in_fan_out) weights."""
    base, a = adapters[base], adapters[adapter]
    got = engine_greedy(base, str(a))
    assert got == [peft_greedy(base, [a], p) for p in PROMPTS]
    assert got != [hf_greedy(base, p, MAX_NEW) for p in PROMPTS]


def _copy_with(src, dst, **config_changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg.update(config_changes)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_bad_adapters_raise_clear_errors(adapters, tiny_checkpoint):
    from transformers import AutoConfig

    d, a = adapters["dir"], adapters["llama_a"]
    llama_cfg = AutoConfig.from_pretrained(str(adapters["llama"]))
    with pytest.raises(ValueError, match="not a directory"):
        load_adapter(d / "nowhere")
    no_weights = d / "no_weights"
    no_weights.mkdir()
    shutil.copy(a / "adapter_config.json", no_weights)
    with pytest.raises(ValueError, match="adapter_model.safetensors is missing"):
        load_adapter(no_weights)
    with pytest.raises(ValueError, match="DoRA"):
        load_adapter(_copy_with(a, d / "dora", use_dora=True))
    with pytest.raises(ValueError, match="modules_to_save"):
        load_adapter(_copy_with(a, d / "mts", modules_to_save=["lm_head"]))
    # Trained on tiny-llama (a local path in adapter_config.json), loaded on Qwen3.
    qwen3 = tiny_checkpoint("tiny-qwen3")
    with pytest.raises(ValueError, match="different architecture"):
        LLM(str(qwen3), lora_path=str(a))
    # Without the base path, the shapes give it away (Qwen3 head_dim 32: q_proj is (128, 64)).
    anon = _copy_with(a, d / "anon", base_model_name_or_path=None)
    with pytest.raises(ValueError, match="trained for another base model"):
        LLM(str(qwen3), lora_path=str(anon))
    # On Phi-3 (fallback backend) the targeted q_proj / gate_proj modules do not exist.
    with pytest.raises(ValueError, match="does not have"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LLM(str(adapters["phi3"]), lora_path=str(anon))
    # A target module missing from the checkpoint stream (native path).
    weights = [("model.layers.0.self_attn.k_proj.weight", torch.zeros(32, 64))]
    with pytest.raises(ValueError, match="does not have"):
        list(merge_lora_weights(iter(weights), [str(anon)], llama_cfg))


def test_lm_head_lora_on_a_tied_model_is_refused(tiny_checkpoint, tmp_path):
    base = tiny_checkpoint("tiny")  # Qwen2, tied embeddings
    a = make_adapter(base, tmp_path / "head", ["lm_head"], 4, r=2)
    with pytest.raises(ValueError, match="shares with the embedding"):
        LLM(str(base), lora_path=str(a))
