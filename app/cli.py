"""The `docgen` command (also `python -m app`): parse arguments (app/cli_args.py), build configs,
call down.

Model libraries are imported only inside `docgen run` (and not at all with the testing-only
`--generator fake`), so `docgen estimate`, `docgen check` and the tests never need torch.
"""
from __future__ import annotations

import sys
from pathlib import Path

from app.cli_args import build_parser
from app.cli_generators import openai_factory, optimized_factory, ray_factory


def _project_config(args):
    from app.docgen.configfile import load_project_config

    first = args.path if hasattr(args, "path") else args.paths[0]
    return load_project_config(Path(first))


def _walk_config(args, project=None):
    from app.docgen.languages import parse_languages
    from app.docgen.walker import WalkConfig

    if args.max_file_kb <= 0:
        raise ValueError("--max-file-kb must be positive")
    languages = args.languages or ([",".join(project.languages)] if project and project.languages else None)
    return WalkConfig(exclude=(project.exclude if project else []) + args.exclude,
                      include=project.include if project else [],
                      languages=parse_languages(languages), max_bytes=args.max_file_kb * 1000)


def _resolve_model(args, project) -> str:
    """Fill in --model (flag, then config file, then the hardware's default) and, for the CPU default,
    8-bit weights; returns the line that names the model."""
    from app.docgen.hardware import default_model, detect_hardware

    args.hardware = detect_hardware()
    if args.model:
        return f"model: {args.model} (--model)"
    if project.model:
        args.model = project.model
        return f"model: {args.model} (from {project.source.name})"
    hw = args.hardware
    choice = default_model(hw)
    args.model = choice.model
    if args.quantization is None and choice.quantization:
        args.quantization = choice.quantization
    return f"model: {args.model} ({choice.why}; --model to change)"


def _sampling(args) -> dict:
    """Settings that change the output, so they are part of every stored result's key."""
    return {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
            "quantization": args.quantization or "default",
            "kv_cache_quantization": getattr(args, "kv_cache_quantization", None),
            # only when given, so the keys of results stored before the flag existed still match
            **({"quant_lm_head": args.quant_lm_head} if getattr(args, "quant_lm_head", None) else {})}


def _store_path(args) -> Path:
    if args.store:
        return Path(args.store)
    from app.docgen.walker import file_base

    p = Path(args.path).resolve()
    return (p if p.is_dir() else file_base(p)) / ".docgen" / "docgen.sqlite"


def cmd_run(args, console, verbosity) -> int:
    import time

    from app.cli_support import Verbosity, saved_results
    from app.docgen.fake_generator import FakeDocGenerator
    from app.docgen.hardware import context_window, model_config
    from app.docgen.progress import Observer, PlainProgress, RichProgress
    from app.docgen.report import format_report
    from app.docgen.runner import RunOptions, run_docgen

    project = _project_config(args)
    # With --diff, stdout carries only the patch: everything else goes to stderr.
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.diff else (lambda s: print(s, flush=True))
    quiet = verbosity.level == Verbosity.QUIET
    if args.generator == "fake":
        args.model = args.model or "fake"
        model_line = "model: fake (testing generator)"
    elif args.backend == "openai":  # the server has the model: its name and window come from /v1/models
        model_line = f"model: {args.model or 'the first the server lists'} at {', '.join(args.base_url) or '?'}"
    else:
        model_line = _resolve_model(args, project)
    local = args.generator != "fake" and args.backend != "openai"
    args.window = context_window(model_config(args.model), args.max_seq_length) if local \
        else (args.max_seq_length or 4096)
    if not quiet:
        say(f"docgen: {model_line}")
    opts = RunOptions(path=Path(args.path), out=args.out or project.out, store=args.store,
                      walk=_walk_config(args, project),
                      write_mode="write" if args.write else "diff" if args.diff else None, force=args.force,
                      overwrite=args.overwrite, fast=args.fast, resume=args.resume, retry=args.retry,
                      batch_size=args.batch_size, commit_every=args.commit_every,
                      commit_seconds=args.commit_seconds, max_seq_length=args.window,
                      max_new_tokens=args.max_new_tokens, sampling=_sampling(args))
    live = console.is_terminal and not args.plain and not quiet
    observer = Observer() if quiet else RichProgress(console) if live else PlainProgress(print_fn=say)
    started = time.time()
    try:
        if args.base_url and args.backend != "openai":
            raise ValueError("--base-url is for --backend openai; add --backend openai")
        if args.generator == "fake":
            from app.llm.types import GeneratorFactory

            make = GeneratorFactory("fake", lambda: FakeDocGenerator(delay=args.fake_delay, log_path=args.fake_log, gate_path=args.fake_gate,
                                                                     max_seq_length=args.window))
        elif args.ray:
            if args.backend == "openai":
                raise ValueError("--ray runs engine replicas; it does not combine with --backend openai")
            make = ray_factory(args, observer.message)
        elif args.backend == "openai":
            make = openai_factory(args, observer.message)
        else:
            make = optimized_factory(args, observer.message)
        outcome = run_docgen(opts, make, observer)
    except KeyboardInterrupt:
        observer.finish()
        n = saved_results(opts.store, started)
        print(f"\ndocgen: interrupted; saved {n} results; rerun to resume", file=sys.stderr, flush=True)
        return 130
    finally:
        observer.finish()
    rep = outcome.report
    if not quiet or rep.errors:
        text = format_report(rep, max_flagged=10**9 if verbosity.level >= Verbosity.VERBOSE else 15)
        (say if not quiet else (lambda s: print(s, file=sys.stderr)))(text)
    if local and rep.generated:
        _record_speed(args.model, rep)
    if outcome.docstrings is not None and args.diff:
        if outcome.docstrings.diff:
            sys.stdout.write(outcome.docstrings.diff)
            sys.stdout.flush()
        elif not quiet:
            say("(no docstring changes)")
    refused = outcome.docstrings is not None and outcome.docstrings.failed  # listed in the report's outputs
    return 1 if rep.errors or rep.warnings or refused else 0


def _record_speed(model: str, rep) -> None:
    from app.docgen.hardware import detect_hardware, model_size
    from app.docgen.timing import record_rate

    record_rate(detect_hardware(), model, model_size(model)[0], rep.generated, rep.generation_seconds,
                rep.completion_tokens)


def cmd_estimate(args, verbosity) -> int:
    from app.cli_support import Verbosity
    from app.docgen.audit import estimate
    from app.docgen.hardware import detect_hardware
    from app.docgen.runner import prompt_version
    from app.docgen.timing import format_seconds
    from app.engine.names import model_key  # torch-free: the id stored results are keyed by

    project = _project_config(args)
    quiet = verbosity.level == Verbosity.QUIET
    model_line = _resolve_model(args, project)
    if not quiet:
        print(f"docgen: {model_line}")
    walk = _walk_config(args, project)
    root = Path(args.path).resolve()
    base = root if root.is_dir() else root.parent
    out = Path(args.out).resolve() if args.out else project.out or base / "docs"
    walk.extra_skip_dirs.append(str(out))  # as run skips its output folder
    hw = detect_hardware()
    est = estimate(args.path, walk, args.model, model_key(args.model), args.max_seq_length, args.max_new_tokens,
                   _store_path(args), prompt_version(), _sampling(args), hw, fast=args.fast)
    st = est.status
    size = f"{est.params / 1e9:.2g}B parameters ({est.params_source})" if est.params else f"size {est.params_source}"
    print(f"files: {est.files}  chunks: {est.chunks}  waves: {est.waves}  (window {est.window} tokens; "
          f"chunk sizes {est.counted_with})")
    maybe = (f"; {st.uncertain} more unless the summaries they use come out unchanged" if st.uncertain else "")
    print(f"in the store already: {st.cached + st.uncertain} of {est.chunks}; to generate: {st.to_generate}{maybe}"
          + (f" (+{st.twins} identical, generated once)" if st.twins else ""))
    if st.to_generate:
        print(f"tokens: ~{est.prompt_tokens} prompt, up to {est.new_tokens} generated")
    if est.time is None:
        print(f"time: unknown ({size}; no measurement on this machine; a first run measures it)")
    elif st.at_most == 0:
        print("time: nothing to generate (the results are all stored; the model is not needed)")
    else:
        print(f"estimated time: {format_seconds(est.time.low)} to {format_seconds(est.time.high)} generating, "
              f"plus loading the model ({est.time.basis}; model: {size})")
    if est.plan.walk.skipped:
        print("skipped: " + "; ".join(f"{n} {r}" for r, n in sorted(est.plan.walk.skipped.items())))
        if verbosity.level >= Verbosity.VERBOSE:
            for rel, why in est.plan.walk.skipped_files:
                print(f"  skipped {rel}: {why}")
    return 0


def cmd_check(args) -> int:
    import json

    from app.docgen.doccheck import CheckOutcome, check_plan, project_root
    from app.docgen.planner import PlanConfig, make_plan
    from app.docgen.store import Store

    out = CheckOutcome()
    project = _project_config(args)
    for raw in args.paths:
        path = Path(raw)
        if not path.exists():
            raise ValueError(f"{raw} does not exist; pass folders or files of source code")
        root = project_root(path)
        base = path.resolve() if path.is_dir() else path.resolve().parent
        prefix = base.relative_to(root).as_posix() + "/" if base != root else ""
        store_path = Path(args.store) if args.store else root / ".docgen" / "docgen.sqlite"
        store = Store(store_path) if args.include_generated and store_path.exists() else None
        try:
            check_plan(make_plan(path, PlanConfig(walk=_walk_config(args, project))), prefix, out, store,
                       args.include_tests)
        finally:
            if store is not None:
                store.close()
    if args.json:
        print(json.dumps(out.as_dict(args.include_generated), indent=2))
        return 0 if out.ok else 1
    for f in out.missing:
        print(f"missing docs: {f.path}:{f.line}: {f.kind} {f.name}")
    for f in out.stale:
        print(f"stale docs: {f.path}:{f.line}: {f.kind} {f.name}: {f.why}")
    for f in out.generated_only:
        print(f"documented only in docgen's store (not in the source): {f.path}:{f.line}: {f.name}")
    tests = f", {out.test_files_skipped} test files left out (--include-tests)" if out.test_files_skipped else ""
    print(f"docgen check: {out.checked} public units, {len(out.missing)} without docs, {len(out.stale)} stale{tests}")
    return 0 if out.ok else 1


def cmd_serve(args) -> int:
    from app.serve.__main__ import config_from_args
    from app.serve.server import serve_forever

    cfg = config_from_args(args)  # refuses a non-loopback address without --api-key, before loading
    print(f"docgen serve: loading {cfg.model}; then serving {cfg.name!r} at http://{cfg.host}:{cfg.port}/v1",
          file=sys.stderr, flush=True)
    serve_forever(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from app.cli_support import Verbosity, install_warning_format, silence_broken_pipe

    args = build_parser().parse_args(argv)
    verbosity = Verbosity(args.quiet, args.verbose, args.debug)
    # An unset --max-seq-length already means "the model's window": no warning that it was capped.
    hide = (r"^max_seq_length=\d+ exceeds",) if getattr(args, "max_seq_length", 0) is None else ()
    install_warning_format(verbosity, hide)
    try:
        if args.command == "run":
            return cmd_run(args, Console(stderr=bool(args.diff)), verbosity)
        if args.command == "estimate":
            return cmd_estimate(args, verbosity)
        if args.command == "serve":
            return cmd_serve(args)
        return cmd_check(args)
    except ValueError as exc:
        if args.debug:
            raise
        print(f"docgen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndocgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`| head`): nothing more to say
        silence_broken_pipe()
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
