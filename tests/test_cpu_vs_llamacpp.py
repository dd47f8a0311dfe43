"""benchmarks/cpu_vs_llamacpp.py: the parts that need no llama.cpp (pre-tokenizer mapping, table,
finding llama.cpp, our side end to end), and, only where LLAMA_CPP_DIR is set, the real thing on a
tiny checkpoint. CI has no llama.cpp: those tests skip with the reason."""
from __future__ import annotations

import copy
import json
import os
import stat
import sys

import pytest

from benchmarks.llamacpp_convert import QWEN2_SPLIT_REGEX, mapped_pre_tokenizer, qwen2_pre_tokenizer
from benchmarks.llamacpp_server import LlamaCppMissing, find_llama_cpp, proc_memory
from benchmarks.llamacpp_table import format_table, summarize


@pytest.fixture(scope="module")
def tokenizer_json(tiny_checkpoint) -> dict:
    return json.loads((tiny_checkpoint() / "tokenizer.json").read_text())


def test_local_tokenizer_maps_to_qwen2(tiny_checkpoint, tokenizer_json):
    from benchmarks.random_checkpoint import _PRETOKENIZE_REGEX

    assert QWEN2_SPLIT_REGEX == _PRETOKENIZE_REGEX  # the test tokenizer is trained with Qwen2's split
    assert qwen2_pre_tokenizer(tokenizer_json) == "qwen2"
    assert mapped_pre_tokenizer(tiny_checkpoint()) == "qwen2"


@pytest.mark.parametrize("change", ["regex", "no_nfc", "byte_level_regex", "extra_step", "not_isolated"])
def test_other_pre_tokenizers_are_not_passed_off_as_qwen2(tokenizer_json, change):
    tj = copy.deepcopy(tokenizer_json)
    steps = tj["pre_tokenizer"]["pretokenizers"]
    if change == "regex":
        steps[0]["pattern"]["Regex"] = steps[0]["pattern"]["Regex"].replace(r"\p{N}|", r"\p{N}{1,3}|")
    elif change == "no_nfc":
        tj["normalizer"] = None
    elif change == "byte_level_regex":
        steps[1]["use_regex"] = True
    elif change == "extra_step":
        steps.append({"type": "Digits", "individual_digits": True})
    else:
        steps[0]["behavior"] = "Removed"
    assert qwen2_pre_tokenizer(tj) is None


def test_no_tokenizer_json_maps_to_nothing(tmp_path):
    assert mapped_pre_tokenizer(tmp_path) is None


def _m(pair, kind, side, rnd, seconds, tokens):
    return dict(pair=pair, kind=kind, side=side, round=rnd, seconds=seconds, tokens=tokens)


def test_table_ratios_are_per_round_then_median():
    ms = [_m("q4_0 / 4bit", "docgen", "ours", 0, 2.0, 100), _m("q4_0 / 4bit", "docgen", "llama.cpp", 0, 1.0, 100),
          _m("q4_0 / 4bit", "docgen", "ours", 1, 1.0, 100), _m("q4_0 / 4bit", "docgen", "llama.cpp", 1, 2.0, 100),
          _m("q4_0 / 4bit", "docgen", "ours", 2, 1.0, 100), _m("q4_0 / 4bit", "docgen", "llama.cpp", 2, 1.0, 100),
          _m("q4_0 / 4bit", "decode", "ours", 0, 4.0, 31), _m("q4_0 / 4bit", "decode", "llama.cpp", 0, 1.0, 31)]
    mem = {"q4_0 / 4bit": {"ours": {"peak_rss": 3 * 2**20}, "llama.cpp": {"peak_rss": 2**20}}}
    docgen, decode = summarize(ms, mem)
    # per-round ours/theirs rates: 0.5, 2.0, 1.0 -> median 1.0, range 0.5-2.0
    assert docgen.ratio == pytest.approx(1.0) and docgen.ratio_range == (0.5, 2.0)
    assert docgen.rate == {"ours": pytest.approx(100.0), "llama.cpp": pytest.approx(100.0)}
    assert decode.ratio == pytest.approx(0.25) and decode.rate["ours"] == pytest.approx(7.75)
    table = format_table([docgen, decode], "3x100")
    lines = table.splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "docgen workload 3x100" in lines[2] and "**1.00x** (0.50-2.00)" in lines[2]
    assert "| 3 | 1 |" in lines[2]  # peak RSS in MiB


def test_table_without_llama_cpp_says_not_run():
    (row,) = summarize([_m("f32 / fp32", "prompt", "ours", 0, 0.5, 250)], {})
    assert row.ratio is None and row.rate["llama.cpp"] is None
    line = format_table([row]).splitlines()[2]
    assert line.count("not run") == 4 and "| - |" in line


def test_table_rejects_empty_measurements():
    with pytest.raises(ValueError, match="seconds > 0"):
        summarize([_m("f32 / fp32", "decode", "ours", 0, 0.0, 10)], {})
    with pytest.raises(ValueError, match="unknown side"):
        summarize([_m("f32 / fp32", "decode", "vllm", 0, 1.0, 10)], {})


def _exe(path):
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_find_llama_cpp_errors_say_what_to_do(tmp_path):
    with pytest.raises(LlamaCppMissing, match="LLAMA_CPP_DIR is not set.*BENCHMARKS.md"):
        find_llama_cpp({})
    with pytest.raises(LlamaCppMissing, match="no convert_hf_to_gguf.py"):
        find_llama_cpp({"LLAMA_CPP_DIR": str(tmp_path)})
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    (tmp_path / "gguf-py").mkdir()
    with pytest.raises(LlamaCppMissing, match="llama-server not found.*LLAMA_CPP_BIN"):
        find_llama_cpp({"LLAMA_CPP_DIR": str(tmp_path)})
    bin_dir = tmp_path / "elsewhere"
    bin_dir.mkdir()
    _exe(bin_dir / "llama-server")
    with pytest.raises(LlamaCppMissing, match="llama-quantize"):
        find_llama_cpp({"LLAMA_CPP_DIR": str(tmp_path), "LLAMA_CPP_BIN": str(bin_dir)})
    _exe(bin_dir / "llama-quantize")
    env = {"LLAMA_CPP_DIR": str(tmp_path), "LLAMA_CPP_BIN": str(bin_dir)}
    found = find_llama_cpp(env)
    assert found.server == bin_dir / "llama-server" and found.src == tmp_path and found.python == sys.executable
    with pytest.raises(LlamaCppMissing, match="LLAMA_CPP_PYTHON"):
        find_llama_cpp({**env, "LLAMA_CPP_PYTHON": str(tmp_path / "no-python")})


def test_benchmark_fails_before_any_work_without_llama_cpp(monkeypatch, tmp_path):
    from benchmarks import cpu_vs_llamacpp

    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    with pytest.raises(LlamaCppMissing):
        cpu_vs_llamacpp.main(["--preset", "tiny", "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()
    with pytest.raises(SystemExit, match="unknown"):
        cpu_vs_llamacpp.main(["--pairs", "q5_k", "--ours-only"])


def test_proc_memory_reads_this_process():
    mem = proc_memory(os.getpid())
    assert mem["peak_rss"] >= mem["rss"] > 10 * 2**20


def test_ours_only_runs_our_side_end_to_end(tiny_checkpoint, tmp_path):
    """Our engine in its child process on the real workload code, llama.cpp columns 'not run'."""
    from benchmarks import cpu_vs_llamacpp

    out = tmp_path / "r.json"
    res = cpu_vs_llamacpp.main(["--model", str(tiny_checkpoint()), "--ours-only", "--pairs", "q8_0",
                                "--requests", "2", "--max-new-tokens", "3", "--decode-tokens", "3",
                                "--rounds", "1", "--workdir", str(tmp_path / "w"), "--json", str(out)])
    kinds = {(m["kind"], m["side"]) for m in res["measurements"]}
    assert kinds == {("docgen", "ours"), ("decode", "ours"), ("prompt", "ours")}
    docgen = next(m for m in res["measurements"] if m["kind"] == "docgen")
    assert docgen["tokens"] == 6
    info = res["processes"]["q8_0 / 8bit"]["ours"]
    assert info["peak_rss"] >= info["rss"] > 0 and info["load_report"]["load"]["model_bytes"] > 0
    assert json.loads(out.read_text())["table"] == res["table"] and "not run" in res["table"]


needs_llama_cpp = pytest.mark.skipif(not os.environ.get("LLAMA_CPP_DIR"),
                                     reason="LLAMA_CPP_DIR is not set (llama.cpp is benchmark-only; see BENCHMARKS.md)")


@needs_llama_cpp
def test_side_by_side_on_tiny_checkpoint(tiny_checkpoint, tmp_path):
    """The converter accepts the local tokenizer (mapped to qwen2), llama-server runs the GGUF, and
    both sides compute the same model: the tiny preset's logit gaps are far above fp32 noise, so
    greedy batch-1 tokens must be equal at full precision."""
    from benchmarks import cpu_vs_llamacpp

    res = cpu_vs_llamacpp.main(["--model", str(tiny_checkpoint()), "--pairs", "f32,q4_0", "--requests", "2",
                                "--max-new-tokens", "4", "--decode-tokens", "8", "--rounds", "1",
                                "--workdir", str(tmp_path / "w")])
    sides = {(m["pair"], m["side"]) for m in res["measurements"]}
    assert ("q4_0 / 4bit", "llama.cpp") in sides and ("f32 / fp32", "ours") in sides
    assert res["processes"]["f32 / fp32"]["batch1_same_tokens"] == [8]
    assert res["processes"]["q4_0 / 4bit"]["llama.cpp"]["peak_rss"] > 0
