"""What the `docgen` command needs around its subcommands: messages in flag names, warnings
without Python file locations, --quiet/--verbose/--debug, and clean endings on Ctrl-C and on a
closed pipe. Kept out of cli.py so the argument table there stays readable."""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings

# The generator's parameter names, as the flags a user types.
_FLAG_OF = {
    "use_flash_attention": "flash-attention", "enable_compilation": "compile",
    "enable_speculative_decoding": "speculative", "enable_static_cache": "static-cache",
    "enable_kv_cache_quantization": "kv-cache-quantization", "draft_model_id": "draft-model",
    "max_seq_length": "max-seq-length", "quantization": "quantization", "max_batch_size": "max-batch-size",
    "max_new_tokens": "max-new-tokens",
}
_ASSIGN = re.compile(r"\b(" + "|".join(_FLAG_OF) + r")=(True|False|None|'[^']*'|\"[^\"]*\"|[\w.]+)")
# Bare names only when they are unmistakably parameter names (snake_case), not English words.
_BARE = re.compile(r"(?<![-\w])(" + "|".join(n for n in _FLAG_OF if "_" in n) + r")\b")


def in_flag_names(message: str) -> str:
    """`use_flash_attention=False` -> `--no-flash-attention`, `max_seq_length=4096` -> `--max-seq-length 4096`."""
    def assign(m: re.Match) -> str:
        flag, value = _FLAG_OF[m.group(1)], m.group(2).strip("'\"")
        if value == "True":
            return f"--{flag}"
        if value in ("False", "None"):
            return f"--no-{flag}" if flag not in ("quantization", "draft-model") else f"--{flag} none"
        return f"--{flag} {value}"
    message = _ASSIGN.sub(assign, message)
    return _BARE.sub(lambda m: f"--{_FLAG_OF[m.group(1)]}", message)


class Verbosity:
    QUIET, NORMAL, VERBOSE, DEBUG = 0, 1, 2, 3

    def __init__(self, quiet: bool = False, verbose: bool = False, debug: bool = False) -> None:
        self.level = self.DEBUG if debug else self.VERBOSE if verbose else self.QUIET if quiet else self.NORMAL


def install_warning_format(verbosity: Verbosity, hide: tuple[str, ...] = ()) -> None:
    """Warnings as `docgen: warning: ...` in flag names, without a file:line (that is for --debug).
    `hide`: message patterns that would repeat what docgen already decided (see cli.cmd_run)."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if any(re.search(p, text) for p in hide) and verbosity.level < Verbosity.DEBUG:
            return
        where = f" ({filename}:{lineno})" if verbosity.level >= Verbosity.DEBUG else ""
        print(f"docgen: warning: {in_flag_names(text)}{where}", file=sys.stderr, flush=True)

    warnings.showwarning = show
    if verbosity.level == Verbosity.QUIET:
        warnings.simplefilter("ignore")
    level = {Verbosity.QUIET: logging.ERROR, Verbosity.NORMAL: logging.WARNING,
             Verbosity.VERBOSE: logging.INFO, Verbosity.DEBUG: logging.DEBUG}[verbosity.level]
    logging.basicConfig(level=level, format="docgen: %(levelname)s: %(message)s", stream=sys.stderr)


def silence_broken_pipe() -> None:
    """After stdout's reader went away (`docgen run . --diff | head`): point stdout at /dev/null so
    the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def saved_results(store_path, run_started: float) -> int:
    """Results the store committed since `run_started` (what an interrupted run keeps)."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT COUNT(*) FROM results WHERE created >= ?", (run_started,)).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("docgen-engine")
    except PackageNotFoundError:
        return "0.1.0 (not installed; run from a source tree)"
