"""The displays never go silent: the live panel renders, the plain printer sends heartbeats."""
import io
import time

from rich.console import Console

from app.docgen.progress import PlainProgress, RichProgress
from app.docgen.runner import RunOptions, run_docgen
from app.docgen.fake_generator import FakeDocGenerator
from tests.docgen.conftest import DEMO


def test_rich_live_display_renders_a_run(tmp_path):
    buf = io.StringIO()
    obs = RichProgress(Console(file=buf, force_terminal=True, width=120))
    try:
        out = run_docgen(RunOptions(path=DEMO, out=tmp_path / "d", store=tmp_path / "s.sqlite"),
                         lambda: FakeDocGenerator(), obs)
    finally:
        obs.finish()
    text = buf.getvalue()
    assert f"{out.report.chunks}/{out.report.chunks}" in text and "tok/s" in text and "flagged" in text


def test_plain_progress_heartbeat():
    lines = []
    obs = PlainProgress(print_fn=lines.append, heartbeat_s=0.05)
    try:
        obs.message("loading the model")
        time.sleep(0.3)
    finally:
        obs.finish()
    assert lines[0] == "[docgen] loading the model"
    assert any(line.startswith("  ... still loading the model") for line in lines[1:])


def test_plain_heartbeat_while_generating_shows_the_counts_not_the_last_event():
    lines = []
    obs = PlainProgress(print_fn=lines.append, heartbeat_s=0.05)
    try:
        obs.start(total=10, waves=2)
        obs.message("generating 3 ready chunks")
        obs.in_flight = 3
        obs.unit_done("u1", cached=False, flags=[])
        time.sleep(0.3)
    finally:
        obs.finish()
    beats = [line for line in lines if line.startswith("  ...")]
    assert beats and all("1/10 chunks" in b and "3 in flight" in b for b in beats)
    assert not any(b.startswith("  ... still generating") for b in beats)
