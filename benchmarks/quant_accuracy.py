"""Accuracy of quantized weights against the unquantized model, measured (never assumed).

    .venv/bin/python benchmarks/quant_accuracy.py [--model ../shared/models/docstring-13m]
        [--source-dir DIR] [--n-prompts 16] [--new-tokens 32] [--device cpu] [--threads 1] [--json out.json]

For each configuration (a plain round-to-nearest fake-quant in float32 as the baseline, 8bit, 4bit
with/without HQQ, with the tied embedding / LM head in 8 bits (the CPU default) or dense, 4bit with
fp32 kernel activations, fp8 weights) on the same prompts it reports:
- greedy agreement (teacher-forced): the fraction of positions of the reference model's greedy
  continuation where the quantized model's argmax is the same token;
- greedy prefix: the mean fraction of new tokens the quantized model's own greedy generation
  shares with the reference before the first difference;
- mean KL(reference || quantized) of the next-token distributions over those positions;
- perplexity of held-out text under teacher forcing: the real docstrings of functions taken from
  `--source-dir` (default: the installed `rich` package), given their code in the model's chat format.

Runs through transformers (the engine's LLM class is not needed): the model's nn.Linear modules
are swapped by quantize_model_, exactly as the engine does at load. fp8 weights need a CUDA GPU
with compute capability >= 8.9; on CPU the same Fp8Linear layers run through torch's CPU
_scaled_mm where this torch has it (labelled "simulated on CPU": same numerics, not the GPU path).
FP8 KV cache accuracy needs the engine's attention backends and is not measured here.
On tiny random-weight models these numbers are only a smoke test; use a trained checkpoint.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.engine.quant import Fp8Linear, QuantConfig, quantize_model_, supported_formats  # noqa: E402
from app.engine.quant.chain import keep_kernel_dtype_  # noqa: E402
from app.engine.quant.vnni import use_vnni_  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "docstring-13m"


def code_doc_pairs(source_dir: Path, n: int, max_chars: int = 1500) -> list[tuple[str, str]]:
    """(function source without its docstring, docstring) pairs, in a stable file order."""
    pairs = []
    for path in sorted(source_dir.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc or len(doc) < 20:
                continue
            body0 = node.body[0]
            src = ast.get_source_segment(text, node)
            dsrc = ast.get_source_segment(text, body0)
            if not src or not dsrc or len(src) > max_chars:
                continue
            lines = src.splitlines()
            start, end = body0.lineno - node.lineno, body0.end_lineno - node.lineno
            code = "\n".join(lines[:start] + lines[end + 1 :])
            pairs.append((code, doc))
            if len(pairs) >= n:
                return pairs
    return pairs


def encode(tok, code: str, doc: str | None, device) -> tuple[torch.Tensor, int]:
    prompt = tok.apply_chat_template([{"role": "code", "content": code}], add_generation_prompt=True,
                                     tokenize=False)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    n_prompt = len(ids)
    if doc is not None:
        ids = ids + tok(doc + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return torch.tensor([ids], device=device), n_prompt


@torch.no_grad()
def greedy(model, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1] :]


def fp8_swap_cpu(model: nn.Module) -> dict:
    """fp8 layers on CPU for measuring numerics only (quantize_model_ refuses fp8 off-GPU)."""
    names = []
    for name, mod in list(model.named_modules()):
        if type(mod) is nn.Linear and not name.endswith("lm_head"):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, Fp8Linear.from_linear(mod))
            names.append(name)
    return {"quantized": names}


@torch.no_grad()
def rtn_fake_quant_(model: nn.Module, bits: int, group_size: int | None) -> dict:
    """The plain round-to-nearest baseline, all in float32: each nn.Linear weight but the LM head is
    quantized and dequantized back in place. 8 bits: symmetric per output channel, scale
    max|w| / 127. 4 bits: asymmetric per group of `group_size` along K over the range [min, max]
    widened to include 0, scale (max - min) / 15, integer zero point round(-min / scale), levels
    clamped to 0..15. No rounding of scales to
    bf16, no bf16 activations: what "at least plain RTN" is measured against."""
    names = []
    for name, mod in model.named_modules():
        if type(mod) is not nn.Linear or name.endswith("lm_head"):
            continue
        w = mod.weight.float()
        if bits == 8:
            s = (w.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-8)
            dq = torch.clamp(torch.round(w / s), -127, 127) * s
        else:
            n, k = w.shape
            wg = w.reshape(n, k // group_size, group_size)
            lo, hi = wg.amin(-1, keepdim=True).clamp(max=0), wg.amax(-1, keepdim=True).clamp(min=0)
            s = ((hi - lo) / 15).clamp(min=1e-8)
            z = torch.round(-lo / s)
            dq = ((torch.clamp(torch.round(wg / s) + z, 0, 15) - z) * s).reshape(n, k)
        mod.weight.copy_(dq.to(mod.weight.dtype))
        names.append(name)
    return {"quantized": names}


def configurations(device) -> list[tuple[str, object]]:
    out = [
        ("RTN fake-quant fp32 8bit", ("rtn", 8, None)),
        ("8bit", QuantConfig(format="8bit")),
        ("8bit, tied embedding dense", QuantConfig(format="8bit", tied_embedding="dense")),
        ("RTN fake-quant fp32 4bit g128", ("rtn", 4, 128)),
        ("4bit g128", QuantConfig(format="4bit", group_size=128)),
        ("4bit g128, tied embedding dense", QuantConfig(format="4bit", group_size=128, tied_embedding="dense")),
        # what the engine runs on the CPU: bf16 kernel outputs kept between layers (quant/chain.py)
        ("8bit, kept bf16 (engine CPU)", ("keep", QuantConfig(format="8bit"))),
        ("4bit g128, kept bf16 (engine CPU)", ("keep", QuantConfig(format="4bit", group_size=128))),
        # ... plus the VNNI kernels at M <= 4 (quant/vnni.py; int8 activations): the engine's CPU
        # default where they build. Only decode-sized calls use them: see --decode.
        ("8bit, kept bf16 + VNNI (engine CPU)", ("vnni", QuantConfig(format="8bit"))),
        ("4bit g128, kept bf16 + VNNI (engine CPU)", ("vnni", QuantConfig(format="4bit", group_size=128))),
        ("4bit g128 hqq", QuantConfig(format="4bit", group_size=128, hqq=True)),
        ("4bit g64", QuantConfig(format="4bit", group_size=64)),
    ]
    if torch.device(device).type == "cpu":
        # weight error alone: fp32 activations through the dense path (the fp32 packed kernel is very slow)
        out.append(("4bit g128, fp32 act", QuantConfig(format="4bit", cpu_compute_dtype="float32", dense_min_m=1)))
    if supported_formats(device)["fp8"] is None:
        out.append(("fp8 weights", QuantConfig(format="fp8")))
    elif torch.device(device).type == "cpu":
        out.append(("fp8 weights (simulated on CPU)", "fp8-cpu"))
    return out


@torch.no_grad()
def decode_logits(model, prompt: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits as a decoding engine computes them: the prompt in one forward, then the
    continuation one token per forward through the KV cache (M = 1: the batch-1 decode kernels).
    -> (len(cont), vocab): the prediction for each continuation token."""
    out = model(prompt, use_cache=True)
    rows, past = [out.logits[0, -1]], out.past_key_values
    for t in cont[:-1]:
        out = model(t.view(1, 1), past_key_values=past, use_cache=True)
        rows.append(out.logits[0, -1])
        past = out.past_key_values
    return torch.stack(rows).float()


@torch.no_grad()
def evaluate(model, ref_model, samples, new_tokens, decode: bool = False) -> dict:
    agree = total = 0
    prefix_frac, kls, nll, n_nll = [], [], 0.0, 0
    for s in samples:
        # teacher-forced on the reference continuation (decode: token by token, as in generation)
        seq = torch.cat([s["prompt"], s["ref_cont"][None]], dim=1)
        lq = decode_logits(model, s["prompt"], s["ref_cont"]) if decode else \
            model(seq).logits[0, s["n_prompt"] - 1 : -1].float()  # (new_tokens, vocab)
        lr = s["ref_logits"]
        agree += int((lq.argmax(-1) == s["ref_cont"]).sum())
        total += lq.shape[0]
        kls.append(F.kl_div(lq.log_softmax(-1), lr.log_softmax(-1), log_target=True, reduction="batchmean").item())
        own = greedy(model, s["prompt"], new_tokens)
        diff = (own != s["ref_cont"]).nonzero()
        prefix_frac.append((int(diff[0]) if len(diff) else new_tokens) / new_tokens)
        # held-out perplexity of the real docstring
        logits = model(s["doc_ids"]).logits[0, s["doc_start"] - 1 : -1].float()
        nll += F.cross_entropy(logits, s["doc_ids"][0, s["doc_start"] :], reduction="sum").item()
        n_nll += logits.shape[0]
    return {"greedy_agreement": agree / total, "greedy_prefix": sum(prefix_frac) / len(prefix_frac),
            "mean_kl": sum(kls) / len(kls), "perplexity": math.exp(nll / n_nll)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="a local HF checkpoint folder")
    ap.add_argument("--source-dir", default=None, help="Python sources for prompts and held-out docstrings")
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="model dtype (default float32 on CPU, bfloat16 on CUDA)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads; 1 is much steadier on a shared 2-core machine")
    ap.add_argument("--decode", action="store_true",
                    help="teacher-forced agreement/KL token by token through the KV cache (M = 1 calls: "
                         "the batch-1 decode kernels) instead of one forward over the whole sequence")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help="comma-separated substrings: run only configurations whose label has one")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype) if a.dtype else (torch.float32 if device.type == "cpu" else torch.bfloat16)
    if not Path(a.model).is_dir():
        raise SystemExit(f"--model {a.model} is not a folder; pass a local checkpoint")
    if a.source_dir is None:
        import rich

        a.source_dir = str(Path(rich.__file__).parent)
    tok = AutoTokenizer.from_pretrained(a.model)
    ref = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(device).eval()
    pairs = code_doc_pairs(Path(a.source_dir), a.n_prompts)
    samples = []
    with torch.no_grad():
        for code, doc in pairs:
            prompt, n_prompt = encode(tok, code, None, device)
            cont = greedy(ref, prompt, a.new_tokens)
            seq = torch.cat([prompt, cont[None]], dim=1)
            doc_ids, doc_start = encode(tok, code, doc, device)
            samples.append({"prompt": prompt, "n_prompt": n_prompt, "ref_cont": cont, "doc_ids": doc_ids,
                            "doc_start": doc_start, "ref_logits": ref(seq).logits[0, n_prompt - 1 : -1].float()})
    rows = {"reference (unquantized)": evaluate(ref, ref, samples, a.new_tokens, a.decode)}
    rows["reference (unquantized)"]["weight_mb"] = None
    for label, cfg in configurations(device):
        if a.only and not any(o in label for o in a.only.split(",")):
            continue
        model = copy.deepcopy(ref)
        t0 = time.perf_counter()
        if cfg == "fp8-cpu":
            rep = fp8_swap_cpu(model)
        elif isinstance(cfg, tuple) and cfg[0] in ("keep", "vnni"):
            rep = quantize_model_(model, cfg[1])
            keep_kernel_dtype_(model)
            if cfg[0] == "vnni":
                rep["vnni"] = use_vnni_(model, "vnni" if device.type == "cpu" else "torch")
        elif isinstance(cfg, tuple):
            rep = rtn_fake_quant_(model, cfg[1], cfg[2])
        else:
            rep = quantize_model_(model, cfg)
        secs = time.perf_counter() - t0
        rows[label] = evaluate(model, ref, samples, a.new_tokens, a.decode)
        rows[label].update(quantized_layers=len(rep["quantized"]), quantize_s=secs,
                           weight_mb=rep.get("bytes_after", 0) / 2**20 if "bytes_after" in rep else None)
    print(f"checkpoint {a.model}, device {device}, dtype {dtype}, torch {torch.__version__}; "
          f"{len(samples)} prompts from {a.source_dir}, {a.new_tokens} greedy tokens each")
    print(f"{'configuration':34}{'agree':>8}{'prefix':>8}{'KL':>10}{'ppl':>9}{'MiB':>8}")
    for label, r in rows.items():
        mb = f"{r['weight_mb']:.1f}" if r.get("weight_mb") else "-"
        print(f"{label:34}{r['greedy_agreement']:8.3f}{r['greedy_prefix']:8.3f}{r['mean_kl']:10.5f}"
              f"{r['perplexity']:9.3f}{mb:>8}")
    print("FP8 KV cache: not measured here (needs the engine's attention backends).")
    if a.json:
        Path(a.json).write_text(json.dumps({"checkpoint": a.model, "device": str(device), "dtype": str(dtype),
                                            "torch": torch.__version__, "n_prompts": len(samples),
                                            "new_tokens": a.new_tokens, "rows": rows, "decode": a.decode,
                                            "date": time.strftime("%Y-%m-%d")}, indent=2))


if __name__ == "__main__":
    main()
