"""`docgen run --ray` on a machine without Ray: a clear message saying how to install it."""
from __future__ import annotations


def test_without_ray_the_flag_says_how_to_install(monkeypatch, tmp_path, capsys):
    import sys

    from app.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    (tmp_path / "m.py").write_text("def f(x):\n    return x\n")
    assert main(["run", str(tmp_path), "--ray", "--replicas", "2", "--model", str(tmp_path), "--plain"]) == 2
    assert "pip install '.[ray]'" in capsys.readouterr().err
