"""Pre-quantized AWQ / GPTQ 4-bit checkpoints loaded by the engine (issue 6, item 2).

Each case takes a tiny random checkpoint, rounds its projection weights to 4-bit levels
(int4_layouts.rtn_levels), and writes two checkpoints: the packed AWQ/GPTQ layout with a matching
`quantization_config`, and a dense one holding the exact dequantized weights (q - z) * s. Then:
(1) every fused Int4Linear dequantizes exactly to the expected weights (fp16 scales times small
integers are exact in float32, so torch.equal); (2) generation runs with the default kernels;
(3) in float32 the greedy tokens equal the dense engine's, both with dense_min_m=1 (dequantize +
F.linear) and with the packed int4 kernel for every M (dense_min_m=None).
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from app.engine import LLM, SamplingParams
from app.engine.quant import Int4Linear, QuantConfig
from app.engine.quant import prequantized as pq
from app.engine.quant.prequant_config import prequantized_spec

from .int4_layouts import awq_tensors, gptq_tensors, rtn_levels
from .oracle import shared_prefix_prompts

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj"),
         "o_proj": ("o_proj",), "down_proj": ("down_proj",)}
ENGINE = dict(device="cpu", dtype="float32", max_num_seqs=4, max_model_len=128, block_size=4, quant_cache_dir="")
# (preset, method, group_size, sym, checkpoint_format)
CASES = {
    "awq-qwen2": ("tiny", "awq", 32, False, "gemm"),
    "awq-qwen3": ("tiny-qwen3", "awq", 64, False, "gemm"),
    "gptq-sym-llama": ("tiny-llama", "gptq", 64, True, "gptq"),
    "gptq-asym-qwen2-v1": ("tiny", "gptq", 32, False, "gptq"),
    "gptq-asym-llama-v2-perchannel": ("tiny-llama", "gptq", -1, False, "gptq_v2"),
}


def _quant_config(method, group, sym, fmt) -> dict:
    if method == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    return {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False, "sym": sym,
            "checkpoint_format": fmt}


def _write(src, dst, tensors: dict, quantization_config: dict | None):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors*"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst / "model.safetensors"))
    if quantization_config is not None:
        cfg = json.loads((dst / "config.json").read_text())
        cfg["quantization_config"] = quantization_config
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _make_case(src, out, method, group, sym, fmt):
    """-> (packed checkpoint dir, dense checkpoint dir, {hf module name: expected dense weight (N, K)})."""
    with safe_open(str(src / "model.safetensors"), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    packed, dense, expected = {}, {}, {}
    for name, t in tensors.items():
        module, _, suffix = name.rpartition(".")
        if suffix != "weight" or module.rpartition(".")[2] not in PROJ:
            packed[name] = dense[name] = t
            continue
        q, z, s, w = rtn_levels(t, group, sym=sym, min_zero=1 if fmt == "gptq" else 0)
        layout = awq_tensors(q, z, s) if method == "awq" else gptq_tensors(q, z, s, group, fmt)
        packed.update({f"{module}.{k}": v for k, v in layout.items()})
        dense[name] = expected[module] = w
    qc = _quant_config(method, group, sym, fmt)
    return (_write(src, out / "packed", packed, qc), _write(src, out / "dense", dense, None), expected)


@pytest.fixture(scope="module")
def cases(tiny_checkpoint, tmp_path_factory):
    built = {}
    for key, (preset, *layout) in CASES.items():
        built[key] = _make_case(tiny_checkpoint(preset), tmp_path_factory.mktemp(key), *layout)
    return built


def _greedy(llm, prompts, n=8):
    return [o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=n, ignore_eos=True))]


def _check_modules(model, expected, biases, exact: bool):
    """Every projection is an Int4Linear whose weight dequantizes to the expected (N, K) weight."""
    for i in range(len(model.model.layers)):
        for ours, parts in FUSED.items():
            parent = "self_attn" if ours in ("qkv_proj", "o_proj") else "mlp"
            mod = model.get_submodule(f"model.layers.{i}.{parent}.{ours}")
            assert isinstance(mod, Int4Linear)
            want = torch.cat([expected[f"model.layers.{i}.{parent}.{p}"] for p in parts])
            got = mod.dequantize_weight(torch.float32)
            if exact:
                assert torch.equal(got, want)
            else:  # bf16 kernel parameters: scale and zero rounded to 8 bits, error <= 16 * s * 2^-9
                torch.testing.assert_close(got, want, atol=want.abs().max().item() * 2**-7, rtol=0)
            hf_bias = [biases.get(f"model.layers.{i}.{parent}.{p}.bias") for p in parts]
            if mod.bias is not None:
                assert torch.equal(mod.bias, torch.cat(hf_bias))
            else:
                assert all(b is None for b in hf_bias)


@pytest.mark.parametrize("case", list(CASES))
def test_prequantized_checkpoint_loads_exactly_and_matches_dense(cases, case, monkeypatch):
    packed, dense, expected = cases[case]
    preset, method, group, _, fmt = CASES[case]
    with safe_open(str(packed / "model.safetensors"), framework="pt") as fh:
        biases = {k: fh.get_tensor(k) for k in fh.keys() if k.endswith(".bias")}
    llm = LLM(str(packed), **ENGINE)  # default kernels: bf16 activations and parameters on the CPU
    rep = llm.load_report.quantization
    assert rep.prequantized and rep["method"] == method and rep["checkpoint_format"] == fmt
    assert rep["checkpoint_group_size"] == group and rep.bytes_after < rep.bytes_before
    n_layers = len(llm.runner.model.model.layers)
    assert len(rep.quantized) == 4 * n_layers
    assert list(rep.skipped) == ["lm_head"]  # never quantized in these layouts: kept dense
    assert ("tied" in rep.skipped["lm_head"]) == (preset != "tiny-llama")
    _check_modules(llm.runner.model, expected, biases, exact=False)
    prompts = shared_prefix_prompts(n=3)
    outs = _greedy(llm, prompts)
    assert all(len(t) == 8 for t in outs)  # (2) end to end with the default kernels
    del llm

    ref = _greedy(LLM(str(dense), **ENGINE), prompts)
    for dense_min_m in (1, None):  # (3) dequantize + F.linear, then the packed kernel at every M
        monkeypatch.setattr(pq, "KERNELS", QuantConfig(format="4bit", dense_min_m=dense_min_m,
                                                       cpu_compute_dtype="float32"))
        llm = LLM(str(packed), **ENGINE)
        if dense_min_m == 1:
            _check_modules(llm.runner.model, expected, biases, exact=True)  # (1) exact in float32
        assert _greedy(llm, prompts) == ref, dense_min_m


def test_quantization_4bit_accepted_and_no_dense_projection_allocated(cases, monkeypatch):
    built = []  # device of every nn.Linear weight at construction
    init = torch.nn.Linear.reset_parameters

    def spy(self):
        built.append(self.weight.device.type)
        init(self)

    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", spy)
    packed, _, _ = cases["awq-qwen2"]
    llm = LLM(str(packed), quantization="4bit", **ENGINE)
    assert llm.load_report.quantization.prequantized
    assert built and set(built) == {"meta"}  # built on meta, int4 layers made from the checkpoint


def _cfg(**qc):
    from types import SimpleNamespace

    return SimpleNamespace(quantization_config=qc, architectures=["Qwen2ForCausalLM"])


@pytest.mark.parametrize("qc, match", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quant_method 'bitsandbytes'"),
    ({"quant_method": "exl2", "bits": 4}, "quant_method 'exl2'"),
    ({"quant_method": "gptq", "bits": 8, "group_size": 128}, "bits=8"),
    ({"quant_method": "awq", "bits": 3, "group_size": 128}, "bits=3"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True}, "desc_act=True"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "marlin"}, "'marlin'"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}, "GEMM"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "marlin"}, "GEMM"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": False}, "zero_point=False"),
    ({"quant_method": "gptq", "bits": 4, "group_size": 48}, "multiple of 32"),
])
def test_unsupported_quantization_configs_raise_clearly(qc, match):
    with pytest.raises(ValueError, match=match) as e:
        prequantized_spec(_cfg(**qc))
    assert "quantization='4bit'" in str(e.value)  # says what to do


def test_engine_options_that_cannot_apply_to_packed_weights(cases):
    qc = _quant_config("gptq", 128, True, "gptq")
    for q in ("8bit", "fp8"):
        with pytest.raises(ValueError, match="already GPTQ 4-bit"):
            prequantized_spec(_cfg(**qc), quantization=q)
    with pytest.raises(ValueError, match="LoRA"):
        prequantized_spec(_cfg(**qc), lora_path=["/some/adapter"])
    with pytest.raises(ValueError, match="natively implemented"):
        prequantized_spec(_cfg(**qc), native=False)
    packed, _, _ = cases["gptq-sym-llama"]
    with pytest.raises(ValueError, match="already GPTQ 4-bit"):  # wired into the engine
        LLM(str(packed), quantization="8bit", **ENGINE)


def test_incomplete_or_mismatched_checkpoint_raises(cases, tmp_path):
    packed, _, _ = cases["awq-qwen2"]
    with safe_open(str(packed / "model.safetensors"), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    cfg = json.loads((packed / "config.json").read_text())
    broken = dict(tensors)
    del broken["model.layers.1.self_attn.k_proj.qzeros"]
    _write(packed, tmp_path / "missing", broken, cfg["quantization_config"])
    with pytest.raises(ValueError, match=r"k_proj.*found \['bias', 'qweight', 'scales'\]"):
        LLM(str(tmp_path / "missing"), **ENGINE)
    _write(packed, tmp_path / "group", tensors, dict(cfg["quantization_config"], group_size=64))
    with pytest.raises(ValueError, match="do not match group_size 64"):
        LLM(str(tmp_path / "group"), **ENGINE)
    mixed = {k: v for k, v in tensors.items() if not k.startswith("model.layers.0.self_attn.v_proj.")}
    mixed["model.layers.0.self_attn.v_proj.weight"] = torch.zeros(32, 64)
    mixed["model.layers.0.self_attn.v_proj.bias"] = torch.zeros(32)
    _write(packed, tmp_path / "mixed", mixed, cfg["quantization_config"])
    with pytest.raises(ValueError, match="mixes quantized and dense parts"):
        LLM(str(tmp_path / "mixed"), **ENGINE)


@pytest.mark.slow
def test_sharded_checkpoint_without_g_idx_and_a_dense_layer(cases, tmp_path, monkeypatch):
    """Two shards splitting q_proj from k/v_proj, no g_idx (optional in GPTQ), and one projection
    stored dense (as modules_to_not_convert leaves it): loads, and equals the dense engine."""
    packed, dense, expected = cases["gptq-sym-llama"]
    with safe_open(str(packed / "model.safetensors"), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if not k.endswith(".g_idx")}
    keep_dense = "model.layers.1.mlp.down_proj"
    for k in [k for k in tensors if k.startswith(keep_dense + ".")]:
        del tensors[k]
    tensors[keep_dense + ".weight"] = expected[keep_dense]
    out = tmp_path / "sharded"
    shutil.copytree(packed, out, ignore=shutil.ignore_patterns("*.safetensors*"))
    first = {k: v for k, v in tensors.items() if ".q_proj." in k or "embed" in k}
    second = {k: v for k, v in tensors.items() if k not in first}
    save_file(first, str(out / "model-00001-of-00002.safetensors"))
    save_file(second, str(out / "model-00002-of-00002.safetensors"))
    index = {k: "model-00001-of-00002.safetensors" for k in first}
    index.update({k: "model-00002-of-00002.safetensors" for k in second})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    monkeypatch.setattr(pq, "KERNELS", QuantConfig(format="4bit", dense_min_m=1, cpu_compute_dtype="float32"))
    llm = LLM(str(out), **ENGINE)
    rep = llm.load_report.quantization
    assert rep.skipped == {"lm_head": "stored unquantized in the checkpoint",
                           keep_dense: "stored unquantized in the checkpoint"}
    assert len(rep.quantized) == 4 * len(llm.runner.model.model.layers) - 1
    prompts = shared_prefix_prompts(n=2)
    assert _greedy(llm, prompts) == _greedy(LLM(str(dense), **ENGINE), prompts)
