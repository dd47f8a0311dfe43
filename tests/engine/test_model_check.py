"""Models checked before allocation (app/engine/model_check.py, model_memory.py, safetensors_check.py).

Bad checkpoints are copies of the tiny fixture with config.json edited or a weight file cut
short; each check must fail in well under a second, before the model or KV pool exists.
"""
import json
import shutil

import pytest
import torch

from app.engine import LLM
from app.engine.model_check import LIMITS, ModelLoadError, check_config_file, validate_fields
from app.engine.model_memory import config_params
from app.engine.safetensors_check import check_safetensors


def bad_copy(tmp_path, tiny_checkpoint, config=None, weights=None):
    """A copy of the tiny checkpoint; `config(dict)` edits config.json (or returns text to write);
    `weights(bytes)` returns the new model.safetensors content."""
    dst = tmp_path / "model"
    shutil.copytree(tiny_checkpoint("tiny"), dst)
    if config is not None:
        cfg = json.loads((dst / "config.json").read_text())
        new = config(cfg)
        (dst / "config.json").write_text(new if isinstance(new, str) else json.dumps(cfg))
    if weights is not None:
        st = dst / "model.safetensors"
        st.write_bytes(weights(st.read_bytes()))
    return dst


def set_fields(**kw):
    def edit(cfg):
        cfg.update(kw)
    return edit


@pytest.fixture
def no_allocation(monkeypatch):
    """Fails the test if the engine gets as far as building the model."""
    def refuse(*a, **k):
        raise AssertionError("the model was allocated before the checkpoint was rejected")
    monkeypatch.setattr("app.engine.setup.build_model", refuse)
    monkeypatch.setattr("app.engine.fallback_setup.build_fallback_model", refuse)


CONFIG_CASES = [
    (set_fields(hidden_size=10**9), "`hidden_size` is 1000000000, beyond any real model"),
    (set_fields(num_attention_heads=0), "`num_attention_heads` is 0; it must be a positive integer"),
    (set_fields(num_hidden_layers=10**5), "`num_hidden_layers` is 100000, beyond any real model"),
    (set_fields(max_position_embeddings=10**9), "`max_position_embeddings` is 1000000000"),
    (set_fields(vocab_size=-3), "`vocab_size` is -3"),
    (set_fields(num_attention_heads=3, num_key_value_heads=1), r"num_attention_heads \(3\) must divide hidden_size \(64\)"),
    (set_fields(num_key_value_heads=3), r"num_key_value_heads \(3\) must divide num_attention_heads \(4\)"),
    (set_fields(hidden_size=64.5), "`hidden_size` is 64.5"),
    (set_fields(hidden_size=4096, intermediate_size=8192), "config.json does not belong to these weights"),
    (lambda cfg: '{"hidden_size": 64, ', "is not a readable JSON file"),
    (lambda cfg: "[1, 2]", "not an object of model settings"),
    (lambda cfg: json.dumps({"text_config": {"num_attention_heads": 0}}), r"\(text_config\): `num_attention_heads`"),
]


@pytest.mark.parametrize("edit,message", CONFIG_CASES)
def test_bad_config_fails_before_allocating(tmp_path, tiny_checkpoint, no_allocation, edit, message):
    path = bad_copy(tmp_path, tiny_checkpoint, config=edit)
    with pytest.raises(ModelLoadError, match=message):
        LLM(str(path), device="cpu")


def test_missing_required_field_is_named():
    with pytest.raises(ModelLoadError, match="`vocab_size` is missing"):
        validate_fields(lambda k: {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}.get(k),
                        "cfg", required=True)
    validate_fields(lambda k: {"hidden_size": 64}.get(k), "cfg", required=False)  # raw files: only what is there
    # An explicit head_dim lifts the divisibility rule (real models exist with heads * head_dim != hidden).
    validate_fields(lambda k: {"hidden_size": 96, "num_attention_heads": 5, "head_dim": 32, "num_hidden_layers": 1,
                               "vocab_size": 9}.get(k), "cfg", required=True)
    assert LIMITS.max_position_embeddings >= 10_485_760  # a real 10M-context model still loads


WEIGHT_CASES = [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:5], "too short for a safetensors header"),
    (lambda b: b"\xff" * 64, "header length"),
    (lambda b: (20).to_bytes(8, "little") + b"{not json at all}   " + b[28:], "not valid JSON"),
]


@pytest.mark.parametrize("cut,message", WEIGHT_CASES)
def test_corrupt_safetensors_fail_before_allocating(tmp_path, tiny_checkpoint, no_allocation, cut, message):
    path = bad_copy(tmp_path, tiny_checkpoint, weights=cut)
    with pytest.raises(ModelLoadError, match=message) as err:
        LLM(str(path), device="cpu")
    assert "download or copy the model again" in str(err.value)


def test_intact_weights_pass_and_are_counted(tiny_checkpoint):
    from transformers import AutoConfig, AutoModelForCausalLM

    path = tiny_checkpoint("tiny")
    summary = check_safetensors(path / "model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(path)
    assert summary.numel == sum(p.numel() for p in model.state_dict().values() if p is not None) - sum(
        p.numel() for n, p in model.state_dict().items() if n == "lm_head.weight")  # tied: stored once
    check_config_file(path)
    n = config_params(AutoConfig.from_pretrained(path))
    assert 0.5 * summary.numel < n < 2 * summary.numel


def test_kv_cache_memory_gb_beyond_the_machine_is_a_clear_error(tiny_checkpoint, no_allocation):
    with pytest.raises(ModelLoadError, match="lower kv_cache_memory_gb") as err:
        LLM(str(tiny_checkpoint("tiny")), device="cpu", kv_cache_memory_gb=1e6)
    assert "KV cache 1000000.00 GiB" in str(err.value) and "available" in str(err.value)


def test_weights_beyond_free_memory(tiny_checkpoint, no_allocation, monkeypatch):
    monkeypatch.setattr("app.engine.model_memory.available_bytes", lambda device: 1 << 10)
    with pytest.raises(ModelLoadError, match=r"needs about .* GiB on cpu \(weights .* but only 0.00 GiB"):
        LLM(str(tiny_checkpoint("tiny")), device="cpu")


def test_a_good_model_still_loads(tiny_checkpoint):
    llm = LLM(str(tiny_checkpoint("tiny")), device="cpu", max_num_seqs=2, max_model_len=64)
    assert llm.num_kv_blocks > 0
    assert torch.is_tensor(llm.runner.kv_caches[0][0])
