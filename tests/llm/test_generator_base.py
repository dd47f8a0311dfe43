"""The generators' shared base (app.llm.generator_base) and the guide factory's signature."""
from __future__ import annotations

import asyncio
import inspect

import pytest

import app.llm.local_client_optimized as opt
from app.llm.backends.openai_client import OpenAIDocGenerator
from app.llm.backends.ray_replicas import RayDocGenerator
from app.llm.generator_base import DocGeneratorBase, LocalGeneratorBase
from app.llm.local_client import LocalDocGenerator
from app.llm.types import DocResult, as_chunk


class _Tok:
    """Enough of a tokenizer for prompts.count_tokens: one token per character."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text)))}

    def encode(self, text, add_special_tokens=False):
        return list(range(len(text)))


class _Echo(LocalGeneratorBase):
    def __init__(self):
        self.tokenizer = _Tok()
        self.released = 0

    def _release(self):
        self.released += 1

    async def generate_batch_async(self, chunks):
        self._check_open()
        return [DocResult(chunk_id=as_chunk(c).id, text="doc") for c in chunks]


def test_close_is_once_and_generation_after_it_fails():
    g = _Echo()
    assert g.generate("def f(): pass").text == "doc"
    g.close()
    g.close()
    assert g.released == 1
    with pytest.raises(RuntimeError, match="_Echo is closed"):
        g.generate("def f(): pass")


def test_context_managers_close():
    with _Echo() as g:
        pass
    assert g.released == 1

    async def main():
        async with _Echo() as h:
            return h

    assert asyncio.run(main()).released == 1


def test_sync_wrapper_refuses_inside_a_running_loop():
    async def main():
        return _Echo().generate_batch(["x = 1"])

    with pytest.raises(RuntimeError, match="generate_batch_async"):
        asyncio.run(main())


def test_count_tokens_uses_the_tokenizer():
    assert _Echo().count_tokens("abcd") == 4


def test_every_generator_shares_the_base():
    """Lifetime and the sync wrapper written once for all four; tokenizer counting for the two that
    hold a tokenizer (the OpenAI backend counts through /tokenize or not at all, Ray remotely)."""
    shared = {"close", "__enter__", "__exit__", "__aenter__", "__aexit__", "_check_open"}
    for cls in (LocalDocGenerator, opt.OptimizedLocalDocGenerator):
        assert issubclass(cls, LocalGeneratorBase)
        assert not set(vars(cls)) & (shared | {"count_tokens", "count_prompt_tokens"}), cls
    for cls in (OpenAIDocGenerator, RayDocGenerator):
        assert issubclass(cls, DocGeneratorBase) and not issubclass(cls, LocalGeneratorBase)
        assert not set(vars(cls)) & (shared | {"generate_batch", "generate_batch_async"}), cls
    assert not hasattr(OpenAIDocGenerator, "count_tokens")  # docgen estimates unless /tokenize answers


def test_default_batch_runs_generate_async_concurrently():
    class _Slow(DocGeneratorBase):
        def __init__(self):
            self.running = self.most = 0

        def _release(self):
            pass

        async def generate_async(self, chunk):
            self.running += 1
            self.most = max(self.most, self.running)
            await asyncio.sleep(0.01)
            self.running -= 1
            return DocResult(chunk_id=as_chunk(chunk).id, text=as_chunk(chunk).code)

    g = _Slow()
    out = g.generate_batch(["a = 1", "b = 2", "c = 3"])
    assert [r.text for r in out] == ["a = 1", "b = 2", "c = 3"] and g.most == 3
    g.close()
    with pytest.raises(RuntimeError, match="closed"):
        g.generate_batch(["a = 1"])


GUIDE = dict(quantization="4bit", max_batch_size=8, enable_speculative_decoding=False, draft_model_id=None,
             enable_static_cache=True, enable_kv_cache_quantization=False, enable_compilation=False,
             use_flash_attention=True, max_seq_length=4096, max_new_tokens=256, temperature=0.0, device="auto",
             lora_id=None, lora_path=None, kv_cache_memory_gb=None)


def test_factory_has_the_guides_parameters():
    params = inspect.signature(opt.create_optimized_local_generator).parameters
    assert list(params)[:11] == ["model_id", *list(GUIDE)[:10]]  # the guide's positional order
    for name, default in GUIDE.items():
        assert params[name].default == default, name
    assert params == inspect.signature(opt.OptimizedLocalDocGenerator).parameters


def test_baseline_factory_has_the_constructors_parameters():
    from app.llm.local_client import create_local_generator

    params = inspect.signature(create_local_generator).parameters
    assert params == inspect.signature(LocalDocGenerator).parameters
    assert list(params)[:2] == ["model_id", "quantization"] and params["quantization"].default == "4bit"
    with pytest.raises(ValueError, match=r"unknown arguments \['max_batch_size'\].*create_optimized_local_generator"):
        create_local_generator("m", max_batch_size=8)  # refused before anything loads


def test_factory_forwards_everything(monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, *args, **kwargs):
            seen.update(args=args, kwargs=kwargs)

    monkeypatch.setattr(opt, "OptimizedLocalDocGenerator", Recorder)
    g = opt.create_optimized_local_generator("m", "8bit", 3, True, max_new_tokens=5, seed=7, block_size=32)
    assert isinstance(g, Recorder)
    assert seen == {"args": ("m", "8bit", 3, True), "kwargs": {"max_new_tokens": 5, "seed": 7, "block_size": 32}}
