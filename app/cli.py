"""The `docgen` command (also `python -m app`): parse arguments, build configs, call down.

Model libraries are imported only inside `docgen run` (and not at all with the testing-only
`--generator fake`), so `docgen estimate`, `docgen check` and the tests never need torch.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-7B-Instruct"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="folder (or file) of source code")
    p.add_argument("--languages", action="append",
                   help="only these languages, comma separated: python,javascript,typescript,go,rust,java,c,cpp")
    p.add_argument("--exclude", action="append", default=[], help="glob of paths to skip (repeatable)")
    p.add_argument("--max-file-kb", type=int, default=1000, help="skip files larger than this (default 1000 kB)")
    p.add_argument("--store", help="results database (default PATH/.docgen/docgen.sqlite)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="docgen", description="Document a code repository with a local model.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate documentation")
    _add_common(run)
    run.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local folder (default {DEFAULT_MODEL})")
    run.add_argument("--out", help="Markdown output folder (default PATH/docs)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write docstrings into Python sources")
    mode.add_argument("--diff", action="store_true", help="print the docstring patch instead of writing it")
    run.add_argument("--force", action="store_true", help="with --write: also edit files with uncommitted changes")
    run.add_argument("--overwrite", action="store_true", help="with --write/--diff: replace existing docstrings")
    run.add_argument("--fast", action="store_true", help="skip dependency ordering: one wave, no callee context")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="reuse finished results from the store (default on)")
    run.add_argument("--retry", action=argparse.BooleanOptionalAction, default=True,
                     help="retry a chunk once when its doc fails the checks (default on)")
    run.add_argument("--batch-size", type=int, default=0,
                     help="at most this many chunks in flight at the generator (default 0: up to 1024; the "
                          "engine's scheduler batches them)")
    run.add_argument("--plain", action="store_true", help="plain log lines instead of the live display")
    opt = run.add_argument_group("optimized generator (unset flags keep the generator's defaults)")
    opt.add_argument("--quantization", help="weights: none, 4bit, 8bit, ...")
    opt.add_argument("--max-batch-size", type=int)
    opt.add_argument("--speculative", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--draft-model")
    opt.add_argument("--static-cache", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--kv-cache-quantization", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--flash-attention", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--max-seq-length", type=int, default=4096)
    opt.add_argument("--max-new-tokens", type=int, default=256)
    opt.add_argument("--temperature", type=float, default=0.0)
    # Testing only: a deterministic fake model, so the whole command runs without torch.
    run.add_argument("--generator", choices=["optimized", "fake"], default="optimized", help=argparse.SUPPRESS)
    run.add_argument("--fake-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    run.add_argument("--fake-log", help=argparse.SUPPRESS)
    run.add_argument("--commit-every", type=int, default=32, help=argparse.SUPPRESS)  # group commit size (tests)
    run.add_argument("--commit-seconds", type=float, default=1.0, help=argparse.SUPPRESS)

    est = sub.add_parser("estimate", help="count files, chunks and tokens, and estimate the time, before running")
    _add_common(est)
    est.add_argument("--model", default=DEFAULT_MODEL)
    est.add_argument("--max-seq-length", type=int, default=4096)
    est.add_argument("--max-new-tokens", type=int, default=256)

    chk = sub.add_parser("check", help="exit non-zero when public code lacks docs or docs are stale (for CI)")
    _add_common(chk)
    return parser


def _walk_config(args):
    from app.docgen.languages import parse_languages
    from app.docgen.walker import WalkConfig

    if args.max_file_kb <= 0:
        raise ValueError("--max-file-kb must be positive")
    return WalkConfig(exclude=args.exclude, languages=parse_languages(args.languages), max_bytes=args.max_file_kb * 1000)


def _store_path(args) -> Path:
    if args.store:
        return Path(args.store)
    p = Path(args.path).resolve()
    return (p if p.is_dir() else p.parent) / ".docgen" / "docgen.sqlite"


def _optimized_factory(args, log):
    model = args.model
    local = Path(model).expanduser()
    looks_local = local.exists() or model.startswith((".", "/", "~"))
    if looks_local and not local.is_dir():
        raise ValueError(f"--model {model} is not a folder; pass a local model folder or a hub id such as {DEFAULT_MODEL}")
    kwargs = {"max_seq_length": args.max_seq_length, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    for flag, name in [("quantization", "quantization"), ("max_batch_size", "max_batch_size"),
                       ("speculative", "enable_speculative_decoding"), ("draft_model", "draft_model_id"),
                       ("static_cache", "enable_static_cache"), ("kv_cache_quantization", "enable_kv_cache_quantization"),
                       ("compile", "enable_compilation"), ("flash_attention", "use_flash_attention")]:
        if getattr(args, flag) is not None:
            kwargs[name] = getattr(args, flag)

    def make():
        log(f"loading {model}: importing torch and reading weights (compiling, if enabled, happens on the first batch)")
        try:
            from app.llm.local_client_optimized import create_optimized_local_generator  # heavy: torch
        except ImportError as exc:
            raise ValueError(f"the optimized generator could not be imported ({exc}); check the installation "
                             "(bash scripts/setup.sh) or the torch/transformers versions") from exc
        try:
            return create_optimized_local_generator(str(local) if looks_local else model, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            if looks_local:
                raise
            raise ValueError(
                f"could not load model {model!r}: {exc}\n"
                f"This machine may be offline with the model not in the Hugging Face cache. On a machine with "
                f"network run `huggingface-cli download {model}` (then copy the cache, or set HF_HOME to it), "
                f"or pass a local folder: docgen run PATH --model /path/to/model") from exc

    from app.llm.types import GeneratorFactory

    # The model id is declared up front: a rerun finds its stored results without loading the model.
    return GeneratorFactory(str(local) if looks_local else model, make)


def cmd_run(args, console) -> int:
    from app.docgen.fake_generator import FakeDocGenerator
    from app.docgen.progress import PlainProgress, RichProgress
    from app.docgen.report import format_report
    from app.docgen.runner import RunOptions, run_docgen

    sampling = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
                "quantization": args.quantization or "default", "kv_cache_quantization": args.kv_cache_quantization}
    opts = RunOptions(path=Path(args.path), out=args.out, store=args.store, walk=_walk_config(args),
                      write_mode="write" if args.write else "diff" if args.diff else None, force=args.force,
                      overwrite=args.overwrite, fast=args.fast, resume=args.resume, retry=args.retry,
                      batch_size=args.batch_size, commit_every=args.commit_every,
                      commit_seconds=args.commit_seconds, max_seq_length=args.max_seq_length,
                      max_new_tokens=args.max_new_tokens, sampling=sampling)
    live = console.is_terminal and not args.plain
    observer = RichProgress(console) if live else PlainProgress(print_fn=lambda s: print(s, flush=True))
    try:
        if args.generator == "fake":
            from app.llm.types import GeneratorFactory

            make = GeneratorFactory("fake", lambda: FakeDocGenerator(delay=args.fake_delay, log_path=args.fake_log,
                                                                     max_seq_length=args.max_seq_length))
        else:
            make = _optimized_factory(args, observer.message)
        outcome = run_docgen(opts, make, observer)
    finally:
        observer.finish()
    print(format_report(outcome.report), flush=True)
    if outcome.docstrings is not None and args.diff:
        print(outcome.docstrings.diff or "(no docstring changes)")
    return 1 if outcome.report.errors else 0


def cmd_estimate(args) -> int:
    from app.docgen.audit import estimate
    from app.docgen.planner import PlanConfig, make_plan
    from app.docgen.store import Store

    plan = make_plan(args.path, PlanConfig(walk=_walk_config(args), max_seq_length=args.max_seq_length,
                                           max_new_tokens=args.max_new_tokens))
    store_path = _store_path(args)
    store = Store(store_path) if store_path.exists() else None
    device = "gpu" if shutil.which("nvidia-smi") else "cpu"
    est = estimate(plan, args.max_new_tokens, args.model, store, device)
    print(f"files: {est.files}  chunks: {est.chunks}  waves: {est.waves}")
    print(f"tokens: ~{est.prompt_tokens} prompt, up to {est.new_tokens} generated")
    print(f"estimated time: ~{est.seconds:.0f}s ({est.basis})")
    if plan.walk.skipped:
        print("skipped: " + "; ".join(f"{n} {r}" for r, n in sorted(plan.walk.skipped.items())))
    return 0


def cmd_check(args) -> int:
    from app.docgen.audit import check_docs
    from app.docgen.planner import PlanConfig, make_plan
    from app.docgen.store import Store

    plan = make_plan(args.path, PlanConfig(walk=_walk_config(args)))
    store_path = _store_path(args)
    store = Store(store_path) if store_path.exists() else None
    out = check_docs(plan, store)
    for uid in out.missing:
        print(f"missing docs: {uid}")
    for uid, why in out.stale:
        print(f"stale docs: {uid}: {why}")
    print(f"docgen check: {out.checked} public units, {len(out.missing)} without docs, {len(out.stale)} stale")
    return 0 if out.ok else 1


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args, Console(stderr=False))
        if args.command == "estimate":
            return cmd_estimate(args)
        return cmd_check(args)
    except ValueError as exc:
        print(f"docgen: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
