"""The GPU run's dress rehearsal: `scripts/gpu_check.sh --dry-run all` runs every step end to end on the
CPU (tiny shapes, Triton under the interpreter) and writes the files the GPU run writes, with real
token counts; plus the pieces that keep a GPU run honest (output counting, agreement, isolation)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.checks import count_engine_outputs, count_hf_outputs, teacher_forced_agreement
from benchmarks.isolate import run_isolated

REPO = Path(__file__).resolve().parents[1]
SYSTEM_KEYS = {"seconds", "generated_tokens", "expected_tokens", "errors", "error_messages", "status"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_dry")
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    p = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "all"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    return out, p


@pytest.mark.slow  # the whole GPU script on the CPU, Triton under the interpreter (about a minute)
def test_dry_run_writes_every_file_with_true_counts(dry_run):
    out, p = dry_run
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    for name in ("versions.txt", "steps.txt", "attention_kernels.json", "quant_kernels_cuda.json", "gpu_docgen.json",
                 "gpu_tests_attention.log", "gpu_tests_engine.log"):
        assert (out / name).exists(), name
    r = json.loads((out / "gpu_docgen.json").read_text())
    assert r["status"] == "ok" and r["checkpoint_deleted"]
    for system in ("engine", "transformers"):
        s = r[system]
        assert SYSTEM_KEYS <= s.keys(), (system, sorted(s))
        assert s["errors"] == 0 and s["error_messages"] == [], s
        assert s["generated_tokens"] == s["expected_tokens"] == r["chunks"] * r["max_new_tokens"]
        assert s["seconds"] > 0
    assert r["transformers"]["cold"]["generated_tokens"] == r["transformers"]["expected_tokens"]
    a = r["agreement"]
    assert a["fast_backend"] == "triton" and a["errors"] == 0
    assert a["positions"] > 0 and a["fraction"] == 1.0  # fp32 on the CPU: Triton (interpreted) = torch_ref
    ak = json.loads((out / "attention_kernels.json").read_text())
    assert ak["errors"] == 0 and set(ak["phases"]) == {"store", "decode", "prefill"} and ak["rows"]
    qk = json.loads((out / "quant_kernels_cuda.json").read_text())
    assert qk["errors"] == 0 and qk["ms_per_matmul"]
    assert "collected" in (out / "gpu_tests_engine.log").read_text()  # the dry run only collects the GPU tests


def _out(tokens, error=None, rid="r"):
    return SimpleNamespace(request_id=rid, token_ids=tokens, error=error, finish_reason="error" if error else "length")


def test_counts_come_from_the_outputs_not_the_request_count():
    ok = count_engine_outputs([_out([1, 2, 3]), _out([4, 5, 6])], 2, 3)
    assert (ok["generated_tokens"], ok["expected_tokens"], ok["errors"]) == (6, 6, 0)
    bad = count_engine_outputs([_out([1, 2, 3]), _out([], "RuntimeError: CUDA error")], 3, 3)
    assert bad["generated_tokens"] == 3 and bad["expected_tokens"] == 9 and bad["errors"] == 2
    assert any("CUDA error" in m for m in bad["error_messages"]) and any("2 outputs for 3" in m for m in bad["error_messages"])
    hf = {"a": SimpleNamespace(request_id="a", generated_tokens=[1, 2], error=None)}
    c = count_hf_outputs(hf, 2, 3)  # a partial result: one request missing, one short
    assert c["generated_tokens"] == 2 and c["errors"] == 2


def test_teacher_forced_agreement_detects_a_different_model(tiny_checkpoint):
    from app.engine import LLM, SamplingParams

    path = str(tiny_checkpoint("tiny"))
    prompts = [[5, 9, 11, 13, 200, 17], [7, 8, 300, 42]]
    fast = [o.token_ids for o in LLM(path).generate(prompts, SamplingParams(max_tokens=8, ignore_eos=True))]
    same = teacher_forced_agreement(LLM(path, attention_backend="torch_ref", enforce_eager=True), prompts, fast)
    assert same["positions"] == 16 and same["fraction"] == 1.0
    other = LLM(str(tiny_checkpoint("tiny", seed=1)), attention_backend="torch_ref")
    assert teacher_forced_agreement(other, prompts, fast)["fraction"] < 0.5  # random weights rarely agree


CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    from benchmarks.isolate import child_main
    phases, out = sys.argv[sys.argv.index("--phases") + 1].split(","), sys.argv[sys.argv.index("--phase-out") + 1]
    def run(name):
        if name == "poison":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if name == "crash":
            os._exit(9)
        return {{"value": name, "pid": os.getpid()}}
    sys.exit(child_main(phases, out, run))
""")


def test_isolation_survives_cuda_errors_and_crashes(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    seen = []
    res = run_isolated([sys.executable, str(script)], ["a", "poison", "b", "crash", "c"], 60,
                       on_phase=lambda n, r: seen.append(n))
    assert seen == ["a", "poison", "b", "crash", "c"]
    assert [res[n]["status"] for n in seen] == ["ok", "failed", "ok", "failed", "ok"]
    assert "illegal memory access" in res["poison"]["error"] and "ended with 9" in res["crash"]["error"]
    assert res["a"]["pid"] != res["b"]["pid"] != res["c"]["pid"]  # a fresh process after each failure
