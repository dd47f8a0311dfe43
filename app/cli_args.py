"""The `docgen` command's arguments: subcommands, flags and their help (argparse). app/cli.py
runs the commands; app/cli_support.py maps the guide's parameter names to these flags."""
from __future__ import annotations

import argparse

MODEL_HELP = ("hub id or local folder (default: chosen by hardware: Qwen2.5-Coder-7B-Instruct on a GPU with 12 GiB "
              "or more, else Qwen2.5-Coder-1.5B-Instruct at 8 bits; or `model` in .docgen.toml / [tool.docgen])")
SEQ_HELP = "context window in tokens (default: the model's own, up to 4096)"
CHECK_EPILOG = """public API: Python names without a leading _ (and in __all__ when a module has one), Go
capitalised names, Rust pub items, Java public/protected members, C/C++ non-static functions and
public members, JavaScript/TypeScript exports. Only docs in the source count unless --include-generated.

exit codes: 0 every public unit documented and no doc stale; 1 some missing or stale;
2 bad arguments (a path that does not exist, an unknown language)."""

LM_HEAD_CHOICES = ("auto", "8bit", "dense")
LM_HEAD_HELP = ("with --quantization 4bit/8bit: the LM head (and the embedding tied to it) in per-row 8 bits or "
                "dense; auto (default) = 8 bits on the CPU (a quarter of the fp32 memory, faster per token), "
                "dense on a GPU")
THREADS_HELP = ("CPU engine: torch threads for this process (default: one per core); fewer than the cores helps "
                "when other work keeps them busy")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return n


def _add_common(p: argparse.ArgumentParser, many: bool = False) -> None:
    if many:
        p.add_argument("paths", nargs="+", metavar="path", help="folders or files of source code (several allowed)")
    else:
        p.add_argument("path", help="folder (or file) of source code")
    p.add_argument("--languages", action="append",
                   help="only these languages, comma separated: python,javascript,typescript,go,rust,java,c,cpp")
    p.add_argument("--exclude", action="append", default=[],
                   help="glob of paths to skip, relative to PATH (repeatable; adds to `exclude` in the config file)")
    p.add_argument("--max-file-kb", type=int, default=1000, help="skip files larger than this (default 1000 kB)")
    p.add_argument("--store", help="results database (default PATH/.docgen/docgen.sqlite)")


def _global_flags(p: argparse.ArgumentParser, default) -> None:
    """Accepted before or after the subcommand (`docgen -q run .` and `docgen run . -q`)."""
    p.add_argument("-q", "--quiet", action="store_true", default=default, help="print only errors")
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="print more detail")
    p.add_argument("--debug", action="store_true", default=default,
                   help="print tracebacks and where warnings come from (for bug reports)")


def build_parser() -> argparse.ArgumentParser:
    from app.cli_support import package_version

    parser = argparse.ArgumentParser(prog="docgen", description="Document a code repository with a local model.",
                                     epilog="Settings: .docgen.toml or [tool.docgen] in pyproject.toml "
                                            "(include, exclude, out, model, languages); flags win.")
    parser.add_argument("--version", action="version", version=f"docgen {package_version()}")
    _global_flags(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate documentation", parents=[common])
    _add_common(run)
    run.add_argument("--model", help=MODEL_HELP + "; with --backend openai: the served model's name "
                                          "(default: the first the server lists)")
    run.add_argument("--out", help="Markdown output folder (default PATH/docs)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write docstrings into Python sources")
    mode.add_argument("--diff", action="store_true",
                      help="print the docstring patch to stdout instead of writing it (progress and report go to stderr)")
    run.add_argument("--force", action="store_true", help="with --write: also edit files with uncommitted changes")
    run.add_argument("--overwrite", action="store_true", help="with --write/--diff: replace existing docstrings")
    run.add_argument("--fast", action="store_true", help="skip dependency ordering: one wave, no callee context")
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="reuse finished results from the store (default on)")
    run.add_argument("--retry", action=argparse.BooleanOptionalAction, default=True,
                     help="retry a chunk once when its doc fails the checks; a doc cut off at the token limit "
                          "gets twice the limit, or no retry when that cannot fit the window (default on)")
    run.add_argument("--batch-size", type=int, default=0,
                     help="at most this many chunks in flight at the generator (default 0: up to 1024; the "
                          "engine's scheduler batches them)")
    run.add_argument("--plain", action="store_true", help="plain log lines instead of the live display")
    remote = run.add_argument_group("OpenAI-compatible servers (--backend openai)")
    remote.add_argument("--backend", choices=["local", "openai"], default="local",
                        help="local: this process's engine (default); openai: one or more HTTP servers")
    remote.add_argument("--base-url", action="append", default=[],
                        help="server base URL ending in /v1 (repeat for several servers; least-loaded first)")
    remote.add_argument("--api-key-env", help="environment variable holding the servers' API key")
    remote.add_argument("--max-concurrency", type=int, default=16, help="requests in flight per server (default 16)")
    remote.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request (default 600)")
    remote.add_argument("--max-retries", type=int, default=8,
                        help="retries per chunk on connection errors, timeouts, 429 and 5xx (default 8)")
    scale = run.add_argument_group("Ray (pip install '.[ray]')")
    scale.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="run --replicas engine replicas as Ray actors: on a new local cluster, or the one at ADDRESS")
    scale.add_argument("--replicas", type=int, default=1, help="with --ray: engine replicas (one GPU each, if any)")
    opt = run.add_argument_group("optimized generator (unset flags keep the generator's defaults)")
    opt.add_argument("--quantization", help="weights: none, 4bit, 8bit, ...")
    opt.add_argument("--max-batch-size", type=int)
    opt.add_argument("--speculative", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--draft-model")
    opt.add_argument("--static-cache", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--kv-cache-quantization", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--flash-attention", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--quant-lm-head", choices=LM_HEAD_CHOICES, help=LM_HEAD_HELP)
    opt.add_argument("--cpu-threads", type=_positive_int, metavar="N", help=THREADS_HELP)
    opt.add_argument("--max-seq-length", type=int, default=None, help=SEQ_HELP)
    opt.add_argument("--max-new-tokens", type=int, default=256)
    opt.add_argument("--temperature", type=float, default=0.0)
    # Testing only: a deterministic fake model, so the whole command runs without torch.
    run.add_argument("--generator", choices=["optimized", "fake"], default="optimized", help=argparse.SUPPRESS)
    run.add_argument("--fake-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    run.add_argument("--fake-gate", help=argparse.SUPPRESS)  # the fake generator waits for this file (tests)
    run.add_argument("--fake-log", help=argparse.SUPPRESS)
    run.add_argument("--commit-every", type=int, default=32, help=argparse.SUPPRESS)  # group commit size (tests)
    run.add_argument("--commit-seconds", type=float, default=1.0, help=argparse.SUPPRESS)

    est = sub.add_parser("estimate", parents=[common],
                         help="the chunks `run` would make, what the store holds, and a time range, before running")
    _add_common(est)
    est.add_argument("--model", help=MODEL_HELP)
    est.add_argument("--max-seq-length", type=int, default=None, help=SEQ_HELP)
    est.add_argument("--max-new-tokens", type=int, default=256)
    est.add_argument("--quantization", help="as for run (part of what identifies stored results)")
    est.add_argument("--quant-lm-head", choices=LM_HEAD_CHOICES,
                     help="as for run (part of what identifies stored results)")
    est.add_argument("--temperature", type=float, default=0.0)
    est.add_argument("--fast", action="store_true", help="as for run: one wave, no callee context")
    est.add_argument("--out", help="the output folder run would use (left out of the scan, as run does)")

    srv = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API (needs the `serve` extra)")
    from app.serve.__main__ import add_serve_args

    add_serve_args(srv)

    chk = sub.add_parser("check", help="exit non-zero when public code lacks docs or docs are stale (for CI)",
                         epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
    _add_common(chk, many=True)
    chk.add_argument("--include-tests", action="store_true", help="also check test files (left out by default)")
    chk.add_argument("--include-generated", action="store_true",
                     help="count docs docgen stored (not written into the source) as documentation, reported apart")
    chk.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser
