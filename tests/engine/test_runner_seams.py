"""The seams between the engine and its runners: attention layers found by type, capabilities
returned by the runner's setup instead of written into the caller's config."""
from __future__ import annotations

import torch
from torch import nn

from app.engine.attention.backend import PagedAttention
from app.engine.config import EngineConfig
from app.engine.engine_parts import EngineParts, RunnerCapabilities
from app.engine.model_runner import ModelRunner


class _RenamedAttention(PagedAttention):
    """A subclass under another name (a model that specialises the layer) is still a KV layer."""


def test_runner_finds_attention_layers_by_type_not_name():
    model = nn.Sequential(_RenamedAttention(2, 1, 4, 0.5), nn.Linear(4, 4), PagedAttention(2, 1, 4, 0.5))
    runner = ModelRunner(model, torch.device("cpu"), torch.float32, block_size=4)
    assert runner.attn_layers == [model[0], model[2]]
    assert runner.kv_bytes_per_block(torch.float32) == 2 * 2 * 4 * 1 * 4 * 4  # K+V, 2 layers, 4 tokens


def test_capabilities_default_to_the_native_runners():
    parts = EngineParts(None, None, torch.device("cpu"), torch.float32, None, 16, 4)
    assert parts.capabilities.prefix_caching is True
    assert RunnerCapabilities(prefix_caching=False).prefix_caching is False


def test_fallback_setup_leaves_the_callers_config_alone(tiny_checkpoint):
    """build_engine_parts on a fallback architecture returns prefix_caching=False as a capability;
    the EngineConfig it was given is not rewritten."""
    import warnings

    from app.engine.setup import build_engine_parts

    cfg = EngineConfig(model=str(tiny_checkpoint("tiny-phi3")), block_size=4, max_model_len=32, device="cpu")
    before = repr(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = build_engine_parts(cfg)
    assert parts.backend == "transformers-fallback" and parts.capabilities.prefix_caching is False
    assert repr(cfg) == before and cfg.enable_prefix_caching is True


def test_both_runners_satisfy_the_runner_contract(tiny_checkpoint):
    import warnings

    from app.engine import LLM
    from app.engine.engine_parts import Runner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = LLM(str(tiny_checkpoint("tiny-llama")), block_size=4, max_model_len=32, device="cpu")
        fallback = LLM(str(tiny_checkpoint("tiny-phi3")), block_size=4, max_model_len=32, device="cpu")
    for llm in (native, fallback):
        assert isinstance(llm.runner, Runner), type(llm.runner)
        assert llm.runner.vocab_size == llm.hf_config.vocab_size
    assert native.runner.attn_layers and not fallback.runner.attn_layers


def test_fallback_quantization_uses_the_weights_cache(tiny_checkpoint, tmp_path):
    """The fallback passes the cache directory with its key (it used to pass a key and no
    directory, so quant_cache_dir was silently ignored): the second load reads the cache."""
    import warnings

    from app.engine import LLM, SamplingParams

    path = str(tiny_checkpoint("tiny-phi3"))
    outs, caches = [], []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            llm = LLM(path, block_size=4, max_model_len=32, device="cpu", quantization="8bit",
                      quant_cache_dir=str(tmp_path))
        q = llm.load_report.quantization
        assert q.quantized, "tiny-phi3 has nn.Linear layers to quantize"
        caches.append(q.cache)
        outs.append(llm.generate(["def f(x):"], SamplingParams(max_tokens=4, ignore_eos=True))[0].token_ids)
    assert caches == ["miss", "hit"] and list(tmp_path.iterdir())
    assert outs[0] == outs[1]
