"""mapped_safetensors: zero-copy views equal what safetensors reads, releasing pages keeps values,
and the aligned writer's files are valid safetensors with every tensor 64-byte aligned."""
from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from app.engine.mapped_safetensors import ALIGN, MappedSafetensors, write_aligned


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(33, 17, generator=g), "b.bias": torch.randn(5, generator=g).bfloat16(),
            "c.q": torch.randint(-127, 128, (7, 9), generator=g, dtype=torch.int8),
            "d.u": torch.randint(0, 255, (3,), generator=g, dtype=torch.uint8), "e.empty": torch.empty(0, 4)}


def test_views_equal_safetensors_and_survive_release(tmp_path):
    ts = _tensors()
    save_file(ts, tmp_path / "m.safetensors", metadata={"k": "v"})
    f = MappedSafetensors(tmp_path / "m.safetensors")
    assert f.metadata == {"k": "v"} and set(f.keys()) == set(ts)
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as ref:
        for name in ts:
            t = f.tensor(name)
            assert t.dtype == ts[name].dtype and torch.equal(t, ref.get_tensor(name))
            f.release(name)
            f.release(name, 0, 8)
            assert torch.equal(t, ts[name])  # dropped pages fault back in from the file


def test_aligned_writer_round_trip(tmp_path):
    ts = _tensors()
    write_aligned(tmp_path / "x.safetensors", ts, {"identity": "i"})
    f = MappedSafetensors(tmp_path / "x.safetensors")
    assert f.keys() == list(ts)  # padding entries hidden, file order kept
    for name, t in ts.items():
        v = f.tensor(name)
        assert torch.equal(v, t)
        if v.numel():
            assert v.data_ptr() % ALIGN == 0
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as ref:  # still a valid safetensors file
        assert torch.equal(ref.get_tensor("c.q"), ts["c.q"]) and ref.metadata() == {"identity": "i"}


def test_truncated_file_is_a_clear_error(tmp_path):
    save_file(_tensors(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:-10])
    import pytest

    with pytest.raises(ValueError, match="truncated"):
        MappedSafetensors(tmp_path / "t.safetensors")
