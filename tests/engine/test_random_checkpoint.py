"""Random-weight checkpoints: every tiny preset builds, loads back through transformers and generates."""
import json

import pytest
import torch

from benchmarks import random_checkpoint as rc

TINY_PRESETS = ["tiny", "tiny-untied", "tiny-llama", "tiny-llama3", "tiny-mistral", "tiny-qwen3"]
EXPECTED_TYPE = {
    "tiny": "qwen2", "tiny-untied": "qwen2", "tiny-llama": "llama", "tiny-llama3": "llama",
    "tiny-mistral": "mistral", "tiny-qwen3": "qwen3",
}


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_tiny_preset_loads_and_generates(tiny_checkpoint, preset):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_checkpoint(preset)
    assert (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == EXPECTED_TYPE[preset]
    assert model.config.tie_word_embeddings == rc.PRESETS[preset].kwargs["tie_word_embeddings"]
    # Whatever class transformers picks for this model type, it tokenizes like the trained one.
    text = "def add(a, b):\n    return a + b  # ünïcode 123\n"
    assert tok(text).input_ids == rc.build_tokenizer(None, 512)(text).input_ids
    ids = tok(text, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    new = out[0, ids.input_ids.shape[1]:]
    assert 1 <= len(new) <= 6
    assert all(0 <= t < model.config.vocab_size for t in new.tolist())
    # Weights round-trip: the saved model equals a freshly built one with the same seed.
    fresh, loaded = rc.build_model(preset).state_dict(), model.state_dict()
    assert fresh.keys() == loaded.keys()
    for name in fresh:
        assert torch.equal(fresh[name], loaded[name]), name


def test_preset_shapes_match_the_real_models():
    c7 = rc.preset_config("qwen2.5-coder-7b")
    assert (c7.hidden_size, c7.num_hidden_layers, c7.num_attention_heads, c7.num_key_value_heads) == (3584, 28, 28, 4)
    assert (c7.intermediate_size, c7.vocab_size, c7.tie_word_embeddings) == (18944, 152064, False)
    assert c7.rope_parameters["rope_theta"] == 1e6 and c7.max_position_embeddings == 32768
    c15 = rc.preset_config("qwen2.5-coder-1.5b")
    assert (c15.hidden_size, c15.num_hidden_layers, c15.num_attention_heads, c15.num_key_value_heads) == (1536, 28, 12, 2)
    assert (c15.intermediate_size, c15.vocab_size, c15.tie_word_embeddings) == (8960, 151936, True)
    # Parameter counts on the meta device (nothing allocated).
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        counts = {p: sum(t.numel() for t in AutoModelForCausalLM.from_config(rc.preset_config(p)).parameters())
                  for p in ["cpu-31m", "qwen2.5-coder-1.5b", "qwen2.5-coder-7b"]}
    assert 30e6 < counts["cpu-31m"] < 32e6
    assert 1.50e9 < counts["qwen2.5-coder-1.5b"] < 1.56e9
    assert 7.5e9 < counts["qwen2.5-coder-7b"] < 7.7e9


def test_qwen3_and_llama3_specifics():
    q3 = rc.preset_config("tiny-qwen3")
    assert q3.head_dim == 32 and q3.head_dim * q3.num_attention_heads != q3.hidden_size
    l3 = rc.preset_config("tiny-llama3")
    assert l3.rope_parameters["rope_type"] == "llama3" and l3.rope_parameters["factor"] == 8.0
    assert rc.preset_config("tiny-mistral").sliding_window is None


def test_biases_and_norms_are_not_constant():
    model = rc.build_model("tiny-qwen3")
    params = dict(model.named_parameters())
    assert params["model.layers.0.self_attn.q_norm.weight"].std() > 0.01
    qwen2 = dict(rc.build_model("tiny").named_parameters())
    assert qwen2["model.layers.0.self_attn.q_proj.bias"].abs().max() > 0


def test_llama3_rope_scaling_changes_greedy_output():
    """The preset is only useful for testing if its rope scaling changes what the model says."""
    tok = rc.build_tokenizer(None, 512)
    ids = torch.tensor([tok("import os\nimport sys\n\ndef main(argv):\n    for a in argv:\n" * 4).input_ids])
    scaled = rc.build_model("tiny-llama3")
    plain = rc.build_model("tiny-llama3", overrides={"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}})
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert scaled.generate(ids, **kw).tolist() != plain.generate(ids, **kw).tolist()


def test_sharded_checkpoint_has_several_shards_and_an_index(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    path = tiny_checkpoint("tiny", max_shard_size="40KB")
    shards = sorted(path.glob("model-*.safetensors"))
    assert len(shards) >= 2
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    sharded = AutoModelForCausalLM.from_pretrained(path).state_dict()
    single = AutoModelForCausalLM.from_pretrained(tiny_checkpoint("tiny")).state_dict()
    assert sharded.keys() == single.keys()
    for name in sharded:
        assert torch.equal(sharded[name], single[name]), name


def test_overrides_and_bad_input(tiny_checkpoint):
    cfg = rc.preset_config("tiny", {"num_hidden_layers": 1})
    assert cfg.num_hidden_layers == 1
    with pytest.raises(ValueError, match="unknown preset"):
        rc.preset_config("huge")
    with pytest.raises(ValueError, match="unknown config fields"):
        rc.preset_config("tiny", {"num_hidden_layerz": 1})
    path = tiny_checkpoint("tiny", overrides={"num_hidden_layers": 1}, seed=3)
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 1


def test_tokenizer_is_deterministic_and_round_trips(tmp_path):
    rc._TOKENIZER_JSON_CACHE.pop(300, None)
    first = rc.build_tokenizer(None, 300).backend_tokenizer.to_str()
    rc._TOKENIZER_JSON_CACHE.pop(300, None)
    assert rc.build_tokenizer(None, 300).backend_tokenizer.to_str() == first

    from transformers import AutoTokenizer

    rc.build_tokenizer(tmp_path, 512)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = "naïve café — 日本語のテキスト 🙂 Ω≈ç√ and\ttabs\n"
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    # Byte-level: characters outside the training corpus still encode (as several byte tokens).
    assert tok.decode(tok("🧬").input_ids) == "🧬"
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert (tok.eos_token_id, tok.pad_token_id) == (2, 0)
    assert len(tok) == 512


def test_chat_template_renders_chatml(tiny_checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint("tiny"))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[0] == 1 and ids.count(2) == 2
    with pytest.raises(Exception, match="unknown role"):
        tok.apply_chat_template([{"role": "code", "content": "x"}], tokenize=False)
