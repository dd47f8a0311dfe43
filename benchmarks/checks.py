"""Result checks shared by the GPU benchmark and the GPU tests: count what the systems really
generated, and measure how far the fast path (Triton + CUDA graphs) agrees with torch_ref.

Throughput is computed only from tokens found in the outputs: an engine step that raised turns
into per-request errors (LLM.step), and transformers' generate_batch returns partial results on
internal errors, so "requests x max_new_tokens" would count tokens nobody produced.
"""
from __future__ import annotations


def count_engine_outputs(outs, n_prompts: int, max_new: int) -> dict:
    """Engine RequestOutputs -> generated/expected tokens, error count and messages."""
    msgs = [f"request {o.request_id}: {o.error}" for o in outs if o.error or o.finish_reason in ("error", "abort")]
    short = [o for o in outs if not o.error and len(o.token_ids) != max_new]
    msgs += [f"request {o.request_id}: {len(o.token_ids)} tokens, expected {max_new} "
             f"(finish_reason {o.finish_reason})" for o in short]
    if len(outs) != n_prompts:
        msgs.append(f"{len(outs)} outputs for {n_prompts} prompts")
    return {"generated_tokens": sum(len(o.token_ids) for o in outs if not o.error),
            "expected_tokens": n_prompts * max_new, "errors": len(msgs), "error_messages": msgs[:20]}


def count_hf_outputs(results: dict, n_prompts: int, max_new: int) -> dict:
    """transformers generate_batch's {request_id: GenerationOutput} -> the same counts."""
    outs = list(results.values())
    msgs = [f"request {o.request_id}: {o.error}" for o in outs if getattr(o, "error", None)]
    msgs += [f"request {o.request_id}: {len(o.generated_tokens)} tokens, expected {max_new}"
             for o in outs if not getattr(o, "error", None) and len(o.generated_tokens) != max_new]
    if len(outs) != n_prompts:
        msgs.append(f"{len(outs)} results for {n_prompts} prompts (generate_batch drops failed requests)")
    return {"generated_tokens": sum(len(o.generated_tokens) for o in outs if not getattr(o, "error", None)),
            "expected_tokens": n_prompts * max_new, "errors": len(msgs), "error_messages": msgs[:20]}


def teacher_forced_requests(prompts: list[list[int]], fast: list[list[int]]) -> list[list[int]]:
    """One prompt per generated position: prompt + the fast path's tokens before it."""
    return [p + f[:i] for p, f in zip(prompts, fast) for i in range(len(f))]


def teacher_forced_agreement(ref_llm, prompts: list[list[int]], fast: list[list[int]]) -> dict:
    """Fraction of positions where the reference engine's greedy next token, given the fast path's
    own prefix, equals the fast path's token. Unlike comparing two free-running generations, one
    bf16 near-tie does not make every later position disagree."""
    from app.engine import SamplingParams

    reqs = teacher_forced_requests(prompts, fast)
    outs = ref_llm.generate(reqs, SamplingParams(max_tokens=1, ignore_eos=True))
    expected = [t for f in fast for t in f]
    errors = [o.error for o in outs if o.error]
    got = [o.token_ids[0] if o.token_ids else None for o in outs]
    agree = sum(a == b for a, b in zip(got, expected))
    first = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b][:10]
    return {"positions": len(expected), "agreeing": agree, "fraction": agree / max(1, len(expected)),
            "first_disagreements": first, "errors": len(errors), "error_messages": errors[:10]}


def common_prefix(a: list[int], b: list[int]) -> int:
    """Tokens two greedy outputs agree on before their first difference."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def free_running_agreement(fast: list[list[int]], ref: list[list[int]]) -> dict:
    """Identical sequences, and the common-prefix length of each pair (free-running greedy)."""
    return {"identical": sum(a == b for a, b in zip(fast, ref)), "sequences": len(fast),
            "common_prefix": [common_prefix(a, b) for a, b in zip(fast, ref)]}
