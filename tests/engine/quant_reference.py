"""References for quantized engines: a dense engine holding the quantized engine's dequantized
weights, teacher-forced next-token agreement through the public API, and fp32 CPU kernels.

The quantized engine's layers compute `x @ dequantize(q).T` with packed kernels; a dense engine of
the same checkpoint whose Linear weights are overwritten with `dequantize_weight()` computes the
same function with plain matmuls. With the CPU kernels in float32 the two agree token for token;
with the default bfloat16 kernel activations they agree on nearly every teacher-forced position.
"""
from __future__ import annotations

import functools

import torch

from app.engine import LLM, SamplingParams


def fp32_kernels(monkeypatch) -> None:
    """Quantized layers built from now on feed float32 activations to the CPU int4/int8 kernels
    (QuantConfig.cpu_compute_dtype="float32": exact, slower) instead of bfloat16."""
    import app.engine.quant as quant
    import app.engine.setup as setup

    monkeypatch.setattr(quant, "QuantConfig", functools.partial(quant.QuantConfig, cpu_compute_dtype="float32"))
    # and the KV pool in the model dtype, as the dense twin's (a quantized engine on a CPU with native
    # bf16 keeps it in bf16 by default, which would make the comparison inexact)
    monkeypatch.setattr(setup, "cpu_kv_dtype", lambda model_dtype, quantized: model_dtype)


def dequantized_twin(path, quantized: LLM, **kw) -> LLM:
    """A dense (unquantized) engine of `path` whose every quantized Linear holds the quantized
    engine's dequantized weight (float32); the other weights are the checkpoint's own."""
    dense = LLM(str(path), **kw)
    rep = quantized.load_report.quantization
    names = list(rep.quantized)
    assert names, "nothing was quantized: the comparison would be vacuous"
    tied = rep.tied_embedding
    if tied:  # one int8 matrix for the embedding and the LM head: the dense twin's tied weight gets it
        names.append(tied["head"])
        dense_head = dense.runner.model.get_submodule(tied["head"]).weight
        assert dense_head is dense.runner.model.get_submodule(tied["embedding"]).weight, "the twin is not tied"
    for name in names:
        w = quantized.runner.model.get_submodule(name).dequantize_weight(torch.float32)
        target = dense.runner.model.get_submodule(name).weight
        assert target.shape == w.shape, (name, target.shape, w.shape)
        target.data.copy_(w.to(target.dtype))
    return dense


def teacher_forced_agreement(reference: LLM, prompts: list[list[int]], outputs: list[list[int]]) -> float:
    """Share of the generated tokens that `reference` also predicts greedily from the same prefix
    (prompt + the tokens generated before it): no early flip makes every later position disagree."""
    prefixes = [p + o[:t] for p, o in zip(prompts, outputs) for t in range(len(o))]
    want = [t for o in outputs for t in o]
    got = [o.token_ids[0] for o in reference.generate(prefixes, SamplingParams(max_tokens=1, ignore_eos=True))]
    return sum(a == b for a, b in zip(got, want)) / len(want)
