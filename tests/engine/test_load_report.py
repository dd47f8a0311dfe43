"""LoadReport: typed fields for the keys that cross layers, and the dict view older callers use."""
from __future__ import annotations

import ast
import json
import pathlib

import pytest

from app.engine import LLM
from app.engine.load_report import CompileReport, LoadReport, QuantReport

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = ROOT / "app"


def test_unset_fields_are_not_keys():
    r = LoadReport(model_path="/m", device="cpu", dtype="float32")
    assert "quantization" not in r and r.get("quantization") is None
    with pytest.raises(KeyError):
        r["compile"]
    assert dict(r) == {"model_path": "/m", "device": "cpu", "dtype": "float32", "backend": "native"}


def test_dict_writes_land_in_fields_or_extra():
    r = LoadReport()
    r["kv_blocks"] = 7
    r.update(kv_cache_dtype="float8_e4m3fn", architecture="Phi3ForCausalLM")
    r.setdefault("disabled_features", {})["compilation"] = "no triton"
    r.setdefault("disabled_features", {})["draft_model"] = "too big"  # the same dict, not a new one
    assert r.kv_blocks == 7 and r["kv_blocks"] == 7
    assert r.kv_fp8 and r.extra == {"architecture": "Phi3ForCausalLM"} and r["architecture"] == "Phi3ForCausalLM"
    assert r.disabled_features == {"compilation": "no triton", "draft_model": "too big"}
    del r["kv_blocks"]
    assert "kv_blocks" not in r and r.kv_blocks is None
    assert not r.compiled
    r["compile"] = {"active": True}
    assert r.compiled and isinstance(r.compile, CompileReport)
    r.update(quantization={"format": "8bit", "quantized": ["a"], "cache": None, "method": "gptq"})
    assert isinstance(r.quantization, QuantReport) and r.quantization.format == "8bit"
    assert r.quantization.extra == {"method": "gptq"} and r.quantization["method"] == "gptq"


def test_nested_reports_keep_their_json_shape():
    """The dicts the quantizer and compile step wrote are what as_dict() writes back (the reports
    and benchmarks' JSON): None-valued keys kept, the optional `streamed`/`prequantized` absent."""
    q = {"format": "4bit", "quantized": ["l0"], "skipped": {"lm_head": "tied"}, "group_sizes": {"l0": 32},
         "cache": None, "cache_path": None, "tied_embedding": None, "lm_head": None, "bytes_before": 10, "bytes_after": 4,
         "seconds": 0.5}
    assert QuantReport.from_dict(q).as_dict() == q
    assert QuantReport.from_dict({**q, "streamed": True}).as_dict() == {**q, "streamed": True}
    pre = {**q, "prequantized": True, "method": "awq", "sym": False}
    assert QuantReport.from_dict(pre).as_dict() == pre
    c = {"active": False, "seconds": 1.5, "modules": 0, "error": "no triton"}
    assert CompileReport.from_dict(c).as_dict() == c
    r = LoadReport(kv_blocks=3, quantization=q, compile=c)
    assert json.loads(json.dumps(r.as_dict())) == {"backend": "native", "kv_blocks": 3, "quantization": q,
                                                   "compile": c}


def test_start_writes_the_common_header():
    import torch

    r = LoadReport.start("/m", torch.device("cpu"), torch.bfloat16, "transformers-fallback", architecture="X")
    assert dict(r) == {"model_path": "/m", "device": "cpu", "dtype": "bfloat16",
                       "backend": "transformers-fallback", "architecture": "X"}


def test_backend_is_validated():
    with pytest.raises(ValueError, match="backend must be one of"):
        LoadReport(backend="tensorrt")


def test_engine_reports_are_typed(tiny_checkpoint):
    llm = LLM(str(tiny_checkpoint("tiny")), max_num_seqs=2, max_model_len=32, block_size=4, device="cpu")
    r = llm.load_report
    assert isinstance(r, LoadReport) and r.backend == llm.backend == "native"
    assert r.kv_blocks == llm.num_kv_blocks and r.kv_tokens == r.kv_blocks * 4 and r.max_model_len == llm.max_model_len
    assert r.async_scheduling is not None and r["async_scheduling"] is r.async_scheduling
    assert json.loads(json.dumps(r.as_dict()))["kv_blocks"] == r.kv_blocks


def test_engine_quant_and_compile_reports_are_typed(tiny_checkpoint, monkeypatch):
    from app.engine import compile as compile_mod

    def broken(*a, **k):
        raise RuntimeError("no compiler in this test")

    monkeypatch.setattr(compile_mod.torch, "compile", broken)  # the eager fallback, fast on a CPU
    with pytest.warns(UserWarning, match="torch.compile failed"):
        llm = LLM(str(tiny_checkpoint("tiny")), max_num_seqs=2, max_model_len=32, block_size=4, device="cpu",
                  quantization="8bit", quant_cache_dir="", enable_compilation=True)
    q, c = llm.load_report.quantization, llm.load_report.compile
    assert isinstance(q, QuantReport) and q.format == "8bit" and q.quantized and q.cache is None
    assert isinstance(c, CompileReport) and not c.active and "no compiler in this test" in c.error
    assert not llm.load_report.compiled


def _report_key_reads(tree):
    """`x.load_report["k"]`, `load_report.get("k")` and `report.quantization["k"]`-style reads."""
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            target = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target = node.func.value
        names = []
        while isinstance(target, ast.Attribute):
            names.append(target.attr)
            target = target.value
        if isinstance(target, ast.Name):
            names.append(target.id)
        if names and names[0] in ("load_report", "quantization", "compile") and "load_report" in names:
            yield node.lineno


def test_no_string_key_reads_of_the_load_report():
    """Code in app/, benchmarks/ and scripts/ reads the typed fields, never the report's keys."""
    bad = []
    for path in [*APP.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        bad += [f"{path.relative_to(ROOT)}:{n}" for n in _report_key_reads(ast.parse(path.read_text()))]
    assert not bad, bad
    assert list(_report_key_reads(ast.parse('x = llm.load_report["kv_blocks"]')))  # the check can fail
    assert list(_report_key_reads(ast.parse('x = llm.load_report.quantization["cache"]')))


def test_no_defensive_backend_lookups():
    """`llm.backend` is always set (LLM declares it); nothing in app/ guesses it with getattr."""
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value == "backend"):
                pytest.fail(f"{path.relative_to(APP)}:{node.lineno} uses getattr(..., 'backend', ...)")
