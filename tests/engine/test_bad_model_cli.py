"""`docgen run --model BAD`: one clear message, exit code 2, no traceback (unless --debug).

In-process `main()` calls on copies of the tiny fixture with config.json edited or the weights
cut short; each fails before the model is built, in well under a second.
"""
import logging

import pytest

from app.cli import main
from app.engine.model_check import ModelLoadError
from tests.engine.test_model_check import bad_copy, set_fields


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "geo.py").write_text("def area(r):\n    return 3.14159 * r * r\n")
    return root


@pytest.fixture
def no_allocation(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was allocated before the checkpoint was rejected")
    monkeypatch.setattr("app.engine.setup.build_model", refuse)
    monkeypatch.setattr("app.engine.fallback_setup.build_fallback_model", refuse)


def run_cli(src, model, capsys, caplog, *extra):
    caplog.set_level(logging.WARNING)
    capsys.readouterr()  # drop what building the fixture checkpoint printed
    rc = main(["run", str(src), "--model", str(model), "--plain", "--quantization", "none", "--no-flash-attention",
               *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err + caplog.text
    messages = [line for line in err.splitlines() if line.startswith("docgen: ")]
    assert len(messages) == 1, err  # one message
    return rc, err


CASES = [
    (dict(config=set_fields(hidden_size=10**9)), "`hidden_size` is 1000000000, beyond any real model"),
    (dict(config=set_fields(num_attention_heads=0)), "`num_attention_heads` is 0; it must be a positive integer"),
    (dict(config=set_fields(num_hidden_layers=10**5)), "`num_hidden_layers` is 100000"),
    (dict(config=set_fields(max_position_embeddings=10**9)), "`max_position_embeddings` is 1000000000"),
    (dict(config=lambda cfg: "{ not json"), "is not a readable JSON file"),
    (dict(weights=lambda b: b[: len(b) - 100]), "is truncated"),
    (dict(weights=lambda b: b"garbage"), "too short for a safetensors header"),
]


@pytest.mark.parametrize("damage,message", CASES)
def test_bad_model_exit_code_2_and_one_message(tmp_path, tiny_checkpoint, src, capsys, caplog, no_allocation,
                                               damage, message):
    model = bad_copy(tmp_path, tiny_checkpoint, **damage)
    rc, err = run_cli(src, model, capsys, caplog)
    assert rc == 2
    assert message in err
    assert "was allocated" not in err


def test_model_too_big_for_memory(tiny_checkpoint, src, capsys, caplog, no_allocation, monkeypatch):
    monkeypatch.setattr("app.engine.model_memory.available_bytes", lambda device: 1 << 10)
    rc, err = run_cli(src, tiny_checkpoint("tiny"), capsys, caplog)
    assert rc == 2 and "GiB is available" in err and "smaller model" in err


def test_any_other_load_failure_is_one_message_and_debug_shows_the_traceback(tiny_checkpoint, src, capsys, caplog,
                                                                             monkeypatch):
    def broken(*a, **k):
        raise KeyError("model.layers.0.mlp.gate_proj.weight")
    monkeypatch.setattr("app.engine.setup.build_model", broken)
    rc, err = run_cli(src, tiny_checkpoint("tiny"), capsys, caplog)
    assert rc == 2
    assert f"could not load model {tiny_checkpoint('tiny')}: KeyError" in err and "gate_proj" in err
    with pytest.raises(ModelLoadError) as exc:
        main(["run", str(src), "--model", str(tiny_checkpoint("tiny")), "--plain", "--quantization", "none",
              "--no-flash-attention", "--debug"])
    assert isinstance(exc.value.__cause__, KeyError)  # the original error and its traceback are kept


def test_missing_weights_and_missing_model(tmp_path, tiny_checkpoint, src, capsys, caplog):
    model = bad_copy(tmp_path, tiny_checkpoint)
    (model / "model.safetensors").unlink()
    rc, err = run_cli(src, model, capsys, caplog)
    assert rc == 2 and "contains no weights" in err
    (model / "config.json").unlink()
    rc, err = run_cli(src, model, capsys, caplog)
    assert rc == 2 and "has no config.json" in err
