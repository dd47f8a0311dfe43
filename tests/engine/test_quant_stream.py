"""Quantize-while-reading (quant/stream.py): same tensors as load-then-quantize, a cache start maps
the file instead of copying it, and the load's peak memory stays near the quantized model's size."""
from __future__ import annotations

import os

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.config import EngineConfig
from app.engine.loader import load_hf_config
from app.engine.quant import QuantConfig, quantize_model_
from app.engine.quant import stream as stream_mod
from app.engine.quant.embedding import Int8Embedding
from app.engine.setup import build_model, build_streamed_quantized_model

from .oracle import shared_prefix_prompts

CPU = torch.device("cpu")


def _both(path, fmt):
    hf = load_hf_config(path)
    dense, _ = build_model(EngineConfig(model=str(path), device="cpu"), path, hf, CPU, torch.float32, 2048)
    quantize_model_(dense, QuantConfig(format=fmt))
    cfg = EngineConfig(model=str(path), device="cpu", quantization=fmt, quant_cache_dir="")
    streamed, _, rep = build_streamed_quantized_model(cfg, path, hf, CPU, torch.float32, 2048)
    return dense, streamed, rep


@pytest.mark.parametrize("fmt", ["4bit", "8bit"])
def test_streamed_load_equals_load_then_quantize(tiny_checkpoint, fmt, monkeypatch):
    # tiny blocks, so every layer is quantized in several row blocks (and parts of fused layers)
    monkeypatch.setattr(stream_mod, "QUANT_CHUNK_BYTES", 4 * 64 * 5)
    dense, streamed, rep = _both(tiny_checkpoint("tiny"), fmt)
    assert rep["streamed"] and rep["tied_embedding"]["format"] == "8bit"
    assert isinstance(streamed.model.embed_tokens, Int8Embedding)
    a, b = dense.state_dict(), streamed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_tied_embedding_shares_one_int8_copy(tiny_checkpoint):
    _, m, rep = _both(tiny_checkpoint("tiny"), "8bit")
    emb, head = m.model.embed_tokens, m.lm_head
    assert emb.qweight.data_ptr() == head.qweight.data_ptr() and emb.qweight.dtype == torch.int8
    ids = torch.tensor([3, 7, 200, 3])
    torch.testing.assert_close(emb(ids), emb.reference_forward(ids), rtol=0, atol=0)
    x = torch.randn(2, head.in_features)
    # bf16 activations into the int8 kernel: within bf16 rounding of the float32 reference
    torch.testing.assert_close(head(x), head.reference_forward(x), rtol=2e-2, atol=2e-2)
    # one int8 copy (V, H) plus a bf16 scale per row replaces the float32 (V, H) matrix
    path = tiny_checkpoint("tiny")
    hf = load_hf_config(path)
    dense, _ = build_model(EngineConfig(model=str(path), device="cpu"), path, hf, CPU, torch.float32, 2048)
    rep_dense = quantize_model_(dense, QuantConfig(format="8bit", tied_embedding="dense"))
    v, h = head.out_features, head.in_features
    assert rep["bytes_after"] == rep_dense["bytes_after"] - v * h * 4 + v * h + v * 2


def _mapping_of(ptr: int) -> str:
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return parts[5] if len(parts) > 5 else ""
    return ""


@pytest.mark.parametrize("fmt", ["4bit", "8bit"])
def test_cache_start_maps_the_file_and_generates_the_same(tiny_checkpoint, tmp_path, fmt):
    path = str(tiny_checkpoint("tiny"))
    first = LLM(path, quantization=fmt, quant_cache_dir=str(tmp_path), block_size=4)
    again = LLM(path, quantization=fmt, quant_cache_dir=str(tmp_path), block_size=4)
    rq = again.load_report.quantization
    assert first.load_report.quantization.cache == "miss" and rq.cache == "hit"
    layer = again.runner.model.model.layers[0].mlp.down_proj
    buf = layer.packed if fmt == "4bit" else layer.qweight
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("no /proc/self/maps on this OS")
    assert _mapping_of(buf.data_ptr()) == rq.cache_path  # a view of the cache file, not a copy
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    prompts = shared_prefix_prompts(n=2)
    assert [o.token_ids for o in first.generate(prompts, params)] == \
        [o.token_ids for o in again.generate(prompts, params)]


@pytest.fixture(scope="module")
def mid_checkpoint(tiny_checkpoint):
    """~210 MB of float32 weights: big enough that the process's noise is small next to the model."""
    return tiny_checkpoint("tiny", overrides=dict(hidden_size=1024, intermediate_size=2048, num_hidden_layers=6,
                                                  num_attention_heads=8, num_key_value_heads=2))


@pytest.mark.parametrize("fmt", ["8bit", "4bit"])
def test_load_peak_memory_bounded_by_the_quantized_model(mid_checkpoint, tmp_path, fmt):
    """Issue 14: peak RSS while loading <= 1.3x the final model (from the load report), from the
    checkpoint and from the cache. The old load-then-quantize path peaked above 4x here."""
    runs = [LLM(str(mid_checkpoint), quantization=fmt, quant_cache_dir=str(tmp_path), max_model_len=64,
                max_num_seqs=2) for _ in range(2)]
    for llm, cache in zip(runs, ("miss", "hit")):
        load = llm.load_report.load
        assert llm.load_report.quantization.cache == cache
        if not load["peak_is_of_load"]:
            pytest.skip("this OS cannot reset the peak-RSS mark (/proc/self/clear_refs)")
        assert load["peak_growth_over_model"] <= 1.3, load
