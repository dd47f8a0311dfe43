"""`python -m app.llm.benchmark_local`: the guide's command for the original generator against the
optimized one. The benchmark itself is not runtime code and lives in the repository's
benchmarks/benchmark_local.py (with its helpers and the random-weight checkpoint builder); this
entry point puts the checkout's root on sys.path and runs it, so it needs a source checkout
(an editable install works from any directory).
"""
from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if not (_ROOT / "benchmarks" / "benchmark_local.py").is_file():
    raise SystemExit(f"python -m app.llm.benchmark_local runs benchmarks/benchmark_local.py from a source checkout, "
                     f"and {_ROOT} is not one (app was installed without the repository): clone the repository "
                     "and run it there, or install it with `pip install -e <checkout>`")
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from benchmarks.benchmark_local import main, parse_args  # noqa: E402

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
