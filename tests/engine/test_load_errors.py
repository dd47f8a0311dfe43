"""Typed load errors: a failing optional feature is named (UnsupportedFeature.feature), turned off
in place when the caller allows it and the weights are intact, and never costs a second weight
load unless the failure spoiled the weights (then the generator reloads once for that feature)."""
import warnings

import pytest
import torch

import app.engine.quant as quant
import app.engine.setup as setup
from app.engine import LLM
from app.engine.errors import UnsupportedFeature

KW = dict(device="cpu", max_num_seqs=2, max_model_len=256, attention_backend="torch_ref")


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return str(tiny_checkpoint("tiny", overrides={"max_position_embeddings": 2048}))  # room for the doc prompt


@pytest.fixture
def loads(monkeypatch):
    """Counts how often checkpoint weights are read."""
    n = []
    for name in ("build_model", "build_streamed_quantized_model"):  # dense / quantize-while-reading
        real = getattr(setup, name)
        monkeypatch.setattr(setup, name, lambda *a, _real=real, **k: (n.append(1), _real(*a, **k))[1])
    return n


def test_unusable_draft_model_is_named_or_replaced_in_place(ckpt, loads):
    with pytest.raises(UnsupportedFeature) as err:
        LLM(ckpt, speculative_method="draft", speculative_draft_model="/nonexistent/draft", **KW)
    assert err.value.feature == "draft_model" and "nonexistent" in err.value.reason
    loads.clear()
    llm = LLM(ckpt, speculative_method="draft", speculative_draft_model="/nonexistent/draft",
              optional_features=("draft_model",), **KW)
    assert loads == [1]  # the target's weights were read once
    assert llm.config.speculative.method == "ngram" and llm.spec is not None
    assert "draft_model" in llm.load_report.disabled_features


def test_fp8_kv_pool_failure_keeps_the_weights(ckpt, loads, monkeypatch):
    from app.engine.model_runner import ModelRunner

    real = ModelRunner.allocate_kv_cache

    def no_fp8(self, num_blocks, spec):
        from app.engine.kv_cache_spec import as_kv_spec

        if as_kv_spec(spec).dtype == torch.float8_e4m3fn:
            raise TypeError("float8 storage is not supported here")
        return real(self, num_blocks, spec)

    monkeypatch.setattr(ModelRunner, "allocate_kv_cache", no_fp8)
    with pytest.raises(UnsupportedFeature) as err:
        LLM(ckpt, kv_cache_dtype="fp8", **KW)
    assert err.value.feature == "kv_cache_quantization"
    loads.clear()
    llm = LLM(ckpt, kv_cache_dtype="fp8", optional_features=("kv_cache_quantization",), **KW)
    assert loads == [1] and llm.load_report.kv_cache_dtype == "float32"
    assert "float8 storage" in llm.load_report.disabled_features["kv_cache_quantization"]
    assert llm.generate([[5, 6, 7]])[0].token_ids


def test_streamed_quantization_failure_costs_one_reload(ckpt, loads, monkeypatch):
    """Quantizing while reading leaves no usable model when it fails: it is named even when optional,
    and the generator turns quantization off and loads again, once."""
    import app.engine.quant.stream as stream
    from app.llm.local_client_optimized import create_optimized_local_generator

    def broken(*a, **k):
        raise RuntimeError("int8 kernel exploded")

    monkeypatch.setattr(stream, "load_streaming", broken)
    with pytest.raises(UnsupportedFeature) as err:
        LLM(ckpt, quantization="8bit", optional_features=("quantization",), **KW)
    assert err.value.feature == "quantization" and "exploded" in err.value.reason
    loads.clear()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        g = create_optimized_local_generator(ckpt, quantization="8bit", use_flash_attention=False, device="cpu",
                                             max_new_tokens=3, max_seq_length=2048)
    try:
        assert (g.reloads, len(loads)) == (1, 2)
        assert g.report()["optimizations"]["quantization"]["active"] is False
        assert g.generate_batch(["def f():\n    return 1\n"])[0].ok
    finally:
        g.close()


@pytest.mark.parametrize("spoiled", [False, True])
def test_quantization_failure_in_place_or_one_reload(ckpt, loads, monkeypatch, spoiled):
    """Before any layer was swapped the engine goes on unquantized; after, the weights are mixed, so
    it raises and the generator turns quantization off and loads again, once."""
    from app.llm.local_client_optimized import create_optimized_local_generator

    def broken(*a, **k):
        raise RuntimeError("int8 kernel exploded")

    monkeypatch.setattr(quant, "quantize_model_", broken)
    monkeypatch.setattr(setup, "_any_quantized", lambda model: spoiled)
    monkeypatch.setattr(setup, "_streams_quantization", lambda cfg, prequant: False)  # the in-place swap (LoRA)
    with pytest.raises(UnsupportedFeature) as err:
        LLM(ckpt, quantization="8bit", optional_features=("quantization",) if spoiled else (), **KW)
    assert err.value.feature == "quantization"
    loads.clear()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        g = create_optimized_local_generator(ckpt, quantization="8bit", use_flash_attention=False, device="cpu",
                                             max_new_tokens=3, max_seq_length=2048)
    try:
        assert (g.reloads, len(loads)) == ((1, 2) if spoiled else (0, 1))
        msgs = [str(w.message) for w in rec if "quantization='8bit'" in str(w.message)]
        assert len(msgs) == 1 and "int8 kernel exploded" in msgs[0]
        q = g.report()["optimizations"]["quantization"]
        assert q["active"] is False and "int8 kernel exploded" in q["detail"]
        assert g.generate_batch(["def f():\n    return 1\n"])[0].ok
    finally:
        g.close()


def test_unknown_optional_feature_is_refused(ckpt):
    with pytest.raises(ValueError, match="optional_features"):
        LLM(ckpt, optional_features=("warp_drive",), **KW)
