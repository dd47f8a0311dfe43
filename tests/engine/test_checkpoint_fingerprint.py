"""The quantized-weights cache key must change whenever the weights do (issue 17, item 3)."""
import os

import torch
from safetensors.torch import save_file

from app.engine.loader import checkpoint_fingerprint


def _save(path, seed):
    g = torch.Generator().manual_seed(seed)
    save_file({"w": torch.randn(256, 256, generator=g), "b": torch.randn(256, generator=g)}, str(path))
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))  # normalised mtime, as `cp -p` or Docker
    return path


def test_same_file_same_key(tmp_path):
    f = _save(tmp_path / "model.safetensors", 0)
    assert checkpoint_fingerprint([f]) == checkpoint_fingerprint([f])


def test_two_finetunes_with_equal_size_and_mtime_differ(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _save(tmp_path / "a" / "model.safetensors", 0)
    b = _save(tmp_path / "b" / "model.safetensors", 1)
    assert a.stat().st_size == b.stat().st_size and a.stat().st_mtime_ns == b.stat().st_mtime_ns
    assert checkpoint_fingerprint([a]) != checkpoint_fingerprint([b])


def test_weights_replaced_in_place_with_same_size_and_mtime(tmp_path):
    f = _save(tmp_path / "model.safetensors", 0)
    before = checkpoint_fingerprint([f])
    _save(f, 1)  # same path, same size, same mtime, other weights
    assert checkpoint_fingerprint([f]) != before
