"""`docgen run --quant-lm-head / --cpu-threads`: parsed, checked, passed to the optimized generator
(and from it to EngineConfig), and --quant-lm-head is part of the stored results' key."""
from __future__ import annotations

import pytest

from app.cli import _sampling
from app.cli_args import build_parser
from app.cli_generators import generator_kwargs


def _run_args(*flags):
    args = build_parser().parse_args(["run", ".", *flags])
    args.window = 512  # what cmd_run fills in from the model's config
    return args


def test_flags_reach_the_generator_kwargs():
    _, kw = generator_kwargs(_run_args("--quant-lm-head", "dense", "--cpu-threads", "3"))
    assert kw["quant_lm_head"] == "dense" and kw["cpu_threads"] == 3
    _, kw = generator_kwargs(_run_args())
    assert "quant_lm_head" not in kw and "cpu_threads" not in kw  # unset: the engine's defaults


@pytest.mark.parametrize("flags, words", [(["--cpu-threads", "0"], "positive whole number"),
                                          (["--cpu-threads", "two"], "positive whole number"),
                                          (["--quant-lm-head", "4bit"], "invalid choice")])
def test_bad_values_are_refused_with_a_message(flags, words, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", ".", *flags])
    assert exc.value.code == 2 and words in capsys.readouterr().err


def test_help_describes_both_flags(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--quant-lm-head {auto,8bit,dense}" in out and "--cpu-threads N" in out
    assert "LM head" in out and "threads" in out


def test_quant_lm_head_keys_stored_results_only_when_given():
    plain = _sampling(_run_args())
    assert "quant_lm_head" not in plain  # results stored before the flag existed still match
    assert _sampling(_run_args("--quant-lm-head", "dense")) == {**plain, "quant_lm_head": "dense"}
    est = build_parser().parse_args(["estimate", ".", "--quant-lm-head", "dense"])
    assert _sampling(est)["quant_lm_head"] == "dense"  # estimate looks up the same keys as run
    assert "cpu_threads" not in _sampling(_run_args("--cpu-threads", "1"))  # does not change the text


def test_generator_builds_its_engine_with_them(tiny_checkpoint):
    import torch

    from app.llm.local_client_optimized import create_optimized_local_generator

    threads = torch.get_num_threads()
    tied = {}
    try:
        for head in ("dense", "8bit"):
            _, kw = generator_kwargs(_run_args("--quant-lm-head", head, "--cpu-threads", "1", "--quantization", "8bit",
                                               "--no-flash-attention"))
            with create_optimized_local_generator(str(tiny_checkpoint("tiny")), device="cpu", quant_cache_dir="",
                                                  **kw) as gen:
                # the engine's own thread: OpenMP's thread count is per calling thread
                cfg, n = gen._engine.call(lambda llm: (llm.config, torch.get_num_threads()))
                assert (cfg.quant_lm_head, cfg.cpu_threads, n) == (head, 1, 1)
                tied[head] = gen.report()["engine"]["load_report"]["quantization"]["tied_embedding"]
    finally:
        torch.set_num_threads(threads)  # in case the engine was built on this thread
    assert tied["dense"] is None and tied["8bit"]["format"] == "8bit"  # the tiny model's head is tied
