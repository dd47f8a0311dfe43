"""python -m app.llm.benchmark_local end to end on the tiny preset, and its helpers."""
import json
import re

import pytest

from app.llm import benchmark_local
from benchmarks import bench_chunks, bench_measure
from app.llm.types import DocResult


@pytest.mark.slow
def test_benchmark_end_to_end_on_the_tiny_preset_writes_every_field(tmp_path, capsys):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = benchmark_local.main(["--random-weights", "tiny", "--ablation", "--chunks", "3", "--baseline-chunks", "2",
                               "--max-new-tokens", "3", "--batch-size", "4", "--json", str(out_json),
                               "--plot", str(out_png)])
    out = capsys.readouterr().out
    try:
        import matplotlib  # noqa: F401
        assert rc == 0 and out_png.is_file()
    except ImportError:
        assert rc == 2 and "matplotlib is not installed" in out
    assert re.search(r"^Original generator: 3 chunks in [\d.]+s \([\d.]+s/chunk\) "
                     r"\[extrapolated from 2 measured chunks\]$", out, re.M)
    assert re.search(r"^Speedup: [\d.]+x$", out, re.M)
    assert "Expected Speedups, measured" in out

    data = json.loads(out_json.read_text())
    for key in ("environment", "model", "model_info", "args", "max_new_tokens", "chunks", "baseline_chunks",
                "baseline_extrapolated", "chunk_ids", "original", "optimized", "original_total_seconds_extrapolated",
                "speedup", "lossless", "optimized_report", "ablation"):
        assert key in data, key
    for key in ("date", "device", "device_name", "python", "torch", "transformers"):
        assert data["environment"][key], key
    for run in ("original", "optimized"):
        for key in ("chunks", "seconds", "seconds_per_chunk", "completion_tokens", "tokens_per_second", "ttft_p50",
                    "ttft_p95", "peak_memory_mib", "memory_kind", "errors"):
            assert key in data[run], (run, key)
        assert data[run]["errors"] == 0 and data[run]["peak_memory_mib"] > 0
    assert data["original"]["chunks"] == 2 and data["optimized"]["chunks"] == 3
    assert data["baseline_extrapolated"] is True and data["model"] == "random-weights:tiny"
    # Greedy on the same fp32 checkpoint: the optimized generator is lossless.
    assert data["lossless"] == {"identical": 2, "compared": 2, "share": 1.0}
    assert set(data["optimized_report"]["optimizations"]) >= {
        "continuous_batching", "kv_cache_reuse", "static_cache", "quantization", "kv_cache_quantization",
        "compilation", "speculative_decoding", "flash_attention"}

    rows = data["ablation"]
    assert [r["configuration"] for r in rows][:2] == ["Baseline", "Engine, batch 1, no reuse (not in the guide)"]
    assert len(rows) == 8
    for r in rows:
        assert r["status"] in ("baseline", "measured", "unavailable", "always on")
        assert (r["speedup"] is None) == (r["status"] in ("unavailable", "always on"))
        if r["status"] in ("unavailable", "always on"):
            assert r["note"]  # says why instead of a number
        if r["status"] == "measured":
            assert r["identical_to_baseline"]["compared"] == 2 and r["identical_to_previous_row"]["compared"] >= 2
    by_name = {r["configuration"]: r for r in rows}
    assert by_name["+ torch.compile"]["status"] == "unavailable"  # compile targets CUDA; this is a CPU run
    assert by_name["+ Static cache"]["status"] == "always on"
    assert by_name["+ KV cache reuse"]["status"] == "measured"
    assert by_name["+ KV cache reuse"]["identical_to_baseline"]["share"] == 1.0


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        benchmark_local.parse_args(["--random-weights", "tiny", "--chunks", "0"])
    with pytest.raises(SystemExit):
        benchmark_local.parse_args(["--chunks", "3"])  # neither --model nor --random-weights
    assert "--model" in capsys.readouterr().err


def test_chunks_are_real_deterministic_and_nested():
    small, big = bench_chunks.load_chunks(5), bench_chunks.load_chunks(12)
    assert [c.id for c in small] == [c.id for c in big[:5]]
    assert len({c.path for c in big}) > 3  # spread over many files
    for c in big:
        assert c.kind in ("function", "method", "class") and c.code.strip()
        assert not c.code.startswith((" ", "\t"))  # methods are dedented
    with pytest.raises(ValueError, match="--source"):
        bench_chunks.load_chunks(3, "/nonexistent/dir")


def test_chunks_from_a_source_dir_lose_their_docstrings(tmp_path):
    (tmp_path / "m.py").write_text('def f(a, b):\n    """Add."""\n    x = a\n    y = b\n    z = x + y\n'
                                   '    w = z\n    return w\n')
    (c,) = bench_chunks.load_chunks(1, tmp_path)
    assert c.name == "f" and '"""' not in c.code and "return w" in c.code


def test_percentile_matches_the_sorted_list_definition():
    vals = [0.4, 0.1, 0.3, 0.2, 0.5]
    assert bench_measure.percentile(vals, 50) == pytest.approx(0.3)
    # Linear interpolation between the 4th and 5th smallest at rank 0.95 * (n - 1) = 3.8
    assert bench_measure.percentile(vals, 95) == pytest.approx(0.4 + 0.8 * (0.5 - 0.4))
    assert bench_measure.percentile([], 50) == 0.0


def test_identical_share_compares_token_ids_and_ignores_failures():
    a = [DocResult("1", "x", extra={"token_ids": [1, 2]}), DocResult("2", "y", extra={"token_ids": [3]}),
         DocResult("3", error="boom")]
    b = [DocResult("1", "x", extra={"token_ids": [1, 2]}), DocResult("2", "y", extra={"token_ids": [4]}),
         DocResult("3", error="boom")]
    assert bench_measure.identical_share(a, b) == {"identical": 1, "compared": 3, "share": 1 / 3}
