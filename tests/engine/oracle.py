"""The transformers oracle: greedy continuations from HF `generate`, one prompt at a time, fp32."""
from __future__ import annotations

import functools
import random

import torch


@functools.lru_cache(maxsize=16)
def hf_model(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@functools.lru_cache(maxsize=512)
def _hf_greedy(path: str, prompt: tuple[int, ...], max_new: int) -> tuple[int, ...]:
    model = hf_model(path)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new, do_sample=False,
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    toks = out[0, len(prompt):].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    for i, t in enumerate(toks):  # HF pads after EOS; the engine stops at it
        if t in eos:
            return tuple(toks[: i + 1])
    return tuple(toks)


def hf_greedy(path, prompt, max_new: int) -> list[int]:
    return list(_hf_greedy(str(path), tuple(prompt), max_new))


def shared_prefix_prompts(n: int = 5, prefix_len: int = 21, seed: int = 0, vocab: int = 500) -> list[list[int]]:
    """Prompts of different lengths that share a common prefix (as docgen prompts share a system prompt)."""
    rng = random.Random(seed)
    prefix = [rng.randrange(3, vocab) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(3, vocab) for _ in range(3 + 4 * i)] for i in range(n)]


def run_staggered(llm, prompts, params) -> list:
    """Drive the step loop adding one new request per step while earlier ones run (continuous
    batching); returns the outputs in prompt order."""
    ids, results, k = {}, {}, 0
    while llm.has_unfinished() or k < len(prompts):
        if k < len(prompts):
            ids[llm.add_request(prompts[k], params)] = k
            k += 1
        for o in llm.step():
            results[ids[o.request_id]] = o
    return [results[i] for i in range(len(prompts))]
