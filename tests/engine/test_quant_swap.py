"""quantize_model_: the module swap on plain modules and a tiny HF Qwen2, reports, and the disk cache."""
import copy

import pytest
import torch
import torch.nn as nn

from app.engine.quant import (Int4Linear, Int8Linear, QuantConfig, QUANTIZED_TYPES, quantize_model_,
                              weight_bytes)


class Block(nn.Module):
    """Engine-style names: fused qkv (with bias) and gate_up projections."""

    def __init__(self, h=64, f=128):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.qkv_proj = nn.Linear(h, 3 * h)
        self.self_attn.o_proj = nn.Linear(h, h, bias=False)
        self.mlp = nn.Module()
        self.mlp.gate_up_proj = nn.Linear(h, 2 * f, bias=False)
        self.mlp.down_proj = nn.Linear(f, h, bias=False)

    def forward(self, x):
        x = x + self.self_attn.o_proj(self.self_attn.qkv_proj(x)[..., :64])
        g, u = self.mlp.gate_up_proj(x).chunk(2, -1)
        return x + self.mlp.down_proj(torch.nn.functional.silu(g) * u)


class Tiny(nn.Module):
    def __init__(self, tied=True, vocab=96, h=64):
        super().__init__()
        self.embed = nn.Embedding(vocab, h)
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([Block(h), Block(h)])
        self.lm_head = nn.Linear(h, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        x = self.embed(ids)
        for b in self.model.layers:
            x = b(x)
        return self.lm_head(x)


def _dequantized_copy(qmodel: nn.Module, like: nn.Module) -> nn.Module:
    """The reference model: the original architecture with each quantized weight dequantized."""
    ref = copy.deepcopy(like)
    for name, mod in qmodel.named_modules():
        if isinstance(mod, QUANTIZED_TYPES):
            with torch.no_grad():
                ref.get_submodule(name).weight.copy_(mod.dequantize_weight(torch.float32))
    return ref


@pytest.mark.parametrize("fmt", ["4bit", "8bit"])
@pytest.mark.parametrize("dense_min_m", [None, 1])
def test_swap_plain_module_matches_dequantized_reference(fmt, dense_min_m):
    torch.manual_seed(0)
    base = Tiny(tied=True)
    model = copy.deepcopy(base)
    rep = quantize_model_(model, QuantConfig(format=fmt, group_size=64, dense_min_m=dense_min_m,
                                             cpu_compute_dtype="float32", tied_embedding="dense"))
    assert len(rep["quantized"]) == 8  # 4 projections x 2 layers
    assert "lm_head" in rep["skipped"] and "tied" in rep["skipped"]["lm_head"]
    assert type(model.lm_head) is nn.Linear
    kinds = {type(m) for m in model.modules()}
    assert (Int4Linear if fmt == "4bit" else Int8Linear) in kinds
    assert rep["bytes_after"] < rep["bytes_before"] == weight_bytes(base)
    ids = torch.randint(0, 96, (2, 9))
    ref = _dequantized_copy(model, base)
    torch.testing.assert_close(model(ids), ref(ids), atol=2e-4, rtol=2e-4)


def test_bytes_and_skip_patterns():
    torch.manual_seed(0)
    model = Tiny(tied=False)
    before = weight_bytes(model)
    rep = quantize_model_(model, QuantConfig(format="4bit", group_size=64, skip=("lm_head", "down_proj"),
                                             dense_min_m=None, lm_head="dense"))  # (CPU default: head in 8 bits)
    assert rep["skipped"]["lm_head"].startswith("matches skip pattern")
    assert "model.layers.0.mlp.down_proj" in rep["skipped"]
    assert len(rep["quantized"]) == 6
    # qkv 64x192, o 64x64, gate_up 64x256: 0.5 byte per weight + bf16 scale and zero per 64 weights
    # (+ the fp32 qkv bias, kept); the CPU layout is unpacked in place, so no second copy (dense off)
    n_w = 2 * (64 * 192 + 64 * 64 + 64 * 256)
    dense_bytes = n_w * 4
    quant_bytes = n_w // 2 + (n_w // 64) * 2 * 2
    assert rep["bytes_after"] == before - dense_bytes + quant_bytes
    assert rep["group_sizes"]["model.layers.0.self_attn.qkv_proj"] == 64


def test_group_fallback_and_skip_note():
    model = nn.Sequential(nn.Linear(96, 32), nn.Linear(40, 32))
    rep = quantize_model_(model, QuantConfig(format="4bit", group_size=128, skip=()))
    assert rep["group_sizes"] == {"0": 32}
    assert "1" in rep["skipped"] and "group size" in rep["skipped"]["1"]


def test_format_none_is_a_no_op():
    model = Tiny()
    rep = quantize_model_(model, QuantConfig())
    assert rep["quantized"] == [] and rep["bytes_after"] == rep["bytes_before"]


@pytest.fixture(scope="session")
def hf_tiny():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=True)
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(cfg).eval()


@pytest.mark.parametrize("fmt", ["4bit", "8bit"])
def test_hf_qwen2_swap(hf_tiny, fmt):
    model = copy.deepcopy(hf_tiny)
    rep = quantize_model_(model, QuantConfig(format=fmt, group_size=32, cpu_compute_dtype="float32",
                                             tied_embedding="dense"))
    assert len(rep["quantized"]) == 2 * 7  # q, k, v, o, gate, up, down
    assert "lm_head" in rep["skipped"]
    ref = _dequantized_copy(model, hf_tiny)
    ids = torch.randint(0, 128, (1, 12))
    with torch.no_grad():
        lq, lr, l0 = model(ids).logits, ref(ids).logits, hf_tiny(ids).logits
    torch.testing.assert_close(lq, lr, atol=1e-4, rtol=1e-4)
    assert (lq - l0).norm() < 0.5 * l0.norm()  # a sanity bound only: random weights say nothing about quality


def test_disk_cache_hit_miss_and_invalidation(tmp_path):
    torch.manual_seed(0)
    base = Tiny(tied=False)
    cfg = QuantConfig(format="4bit", group_size=64, hqq=True, hqq_iters=3)
    a = copy.deepcopy(base)
    ra = quantize_model_(a, cfg, cache_dir=tmp_path, cache_key="ckpt-1")
    assert ra["cache"] == "miss" and (tmp_path / ra["cache_path"].rsplit("/", 1)[1]).is_file()

    # Same key: the cached tensors are used even though these weights were changed on purpose
    # (proof the cache is read, not recomputed; the caller's fingerprint must change with the weights).
    changed = copy.deepcopy(base)
    with torch.no_grad():
        changed.model.layers[0].mlp.down_proj.weight.mul_(3)
    b = copy.deepcopy(changed)
    rb = quantize_model_(b, cfg, cache_dir=tmp_path, cache_key="ckpt-1")
    assert rb["cache"] == "hit" and rb["quantized"] == ra["quantized"]
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(ta, tb), na

    # A new fingerprint misses and quantizes the new weights.
    c = copy.deepcopy(changed)
    rc = quantize_model_(c, cfg, cache_dir=tmp_path, cache_key="ckpt-2")
    assert rc["cache"] == "miss" and rc["cache_path"] != ra["cache_path"]
    da = a.model.layers[0].mlp.down_proj.dequantize_weight()
    dc = c.model.layers[0].mlp.down_proj.dequantize_weight()
    w3 = changed.model.layers[0].mlp.down_proj.weight.detach()
    assert (dc - w3).norm() < 0.2 * w3.norm() and (da - w3).norm() > 0.5 * w3.norm()  # requantized

    # Other settings (here the group size) are part of the key too; a corrupt file is a miss.
    rd = quantize_model_(copy.deepcopy(base), QuantConfig(format="4bit", group_size=32), cache_dir=tmp_path,
                         cache_key="ckpt-1")
    assert rd["cache"] == "miss"
    with open(ra["cache_path"], "wb") as f:
        f.write(b"garbage")
    assert quantize_model_(copy.deepcopy(base), cfg, cache_dir=tmp_path, cache_key="ckpt-1")["cache"] == "miss"
    assert quantize_model_(copy.deepcopy(base), cfg, cache_dir=tmp_path, cache_key="ckpt-1")["cache"] == "hit"


def test_cache_dir_without_key_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="cache_key"):
        quantize_model_(Tiny(), QuantConfig(format="8bit"), cache_dir=tmp_path)


def test_disk_cache_8bit_round_trip(tmp_path):
    torch.manual_seed(1)
    base = Tiny(tied=True)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    cfg = QuantConfig(format="8bit")
    assert quantize_model_(a, cfg, cache_dir=tmp_path, cache_key="k")["cache"] == "miss"
    assert quantize_model_(b, cfg, cache_dir=tmp_path, cache_key="k")["cache"] == "hit"
    ids = torch.randint(0, 96, (1, 5))
    torch.testing.assert_close(a(ids), b(ids), atol=0, rtol=0)


def test_disk_cache_4bit_round_trip_and_version_in_the_key(tmp_path, monkeypatch):
    """Default 4-bit (the grid search): a hit gives the same tensors; a file written by an older
    QUANT_CACHE_VERSION (older quantization math) is never read."""
    from app.engine.quant import config as qconfig

    torch.manual_seed(2)
    base = Tiny(tied=False)
    cfg = QuantConfig(format="4bit", group_size=32)
    monkeypatch.setattr(qconfig, "QUANT_CACHE_VERSION", qconfig.QUANT_CACHE_VERSION - 1)
    old = quantize_model_(copy.deepcopy(base), cfg, cache_dir=tmp_path, cache_key="k")
    monkeypatch.undo()
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    ra = quantize_model_(a, cfg, cache_dir=tmp_path, cache_key="k")
    assert old["cache"] == "miss" and ra["cache"] == "miss" and ra["cache_path"] != old["cache_path"]
    assert quantize_model_(b, cfg, cache_dir=tmp_path, cache_key="k")["cache"] == "hit"
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(ta, tb), na
