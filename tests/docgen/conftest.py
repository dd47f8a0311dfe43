import subprocess
from pathlib import Path

import pytest

from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.progress import Observer
from app.docgen.runner import RunOptions, run_docgen
from app.llm.types import GeneratorFactory

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo_project"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    return root


def git_init(root: Path) -> None:
    def git(*args):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")


class CountingFactory(GeneratorFactory):
    """A factory that declares its model id (so cached reruns need no load) and counts its calls."""

    def __init__(self, gen) -> None:
        super().__init__(gen.model_id, lambda: gen)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return super().__call__()


def run_fake(path: Path, gen: FakeDocGenerator | None = None, factory=None, **kw):
    gen = gen or FakeDocGenerator()
    opts = RunOptions(path=path, **kw)
    return run_docgen(opts, factory or CountingFactory(gen), Observer()), gen


@pytest.fixture
def fake_run():
    return run_fake
