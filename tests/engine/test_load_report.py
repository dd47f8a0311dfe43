"""LoadReport: typed fields for the keys that cross layers, and the dict view older callers use."""
from __future__ import annotations

import ast
import json
import pathlib

import pytest

from app.engine import LLM
from app.engine.load_report import LoadReport

APP = pathlib.Path(__file__).resolve().parents[2] / "app"


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
    assert r.compiled


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


def test_no_defensive_backend_lookups():
    """`llm.backend` is always set (LLM declares it); nothing in app/ guesses it with getattr."""
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value == "backend"):
                pytest.fail(f"{path.relative_to(APP)}:{node.lineno} uses getattr(..., 'backend', ...)")
