"""Shared pytest setup.

TRITON_INTERPRET must be set before triton is first imported anywhere, so that Triton kernels
run on the CPU under the interpreter when no GPU is present.
"""
import os

try:
    import torch

    _has_cuda = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Keep caches the engine writes (quantized weights) out of the user's home during tests.
import tempfile

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="docgen-test-cache-")

# Session-scoped checkpoint fixtures (tiny_checkpoint, shared_models_dir) for every test package.
pytest_plugins = ["tests.fixtures"]
