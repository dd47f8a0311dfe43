"""A docstring longer than the window is cut in the prompt, not split into parts."""
from __future__ import annotations

from app.docgen.planner import PlanConfig, make_plan

LONG = "\n".join(f"    Line {i} of a long explanation that goes on about the function." for i in range(300))
SOURCE = f'def f(a):\n    """Summary.\n\n{LONG}\n    """\n    return a + 1\n\n\ndef g(b):\n    """Short."""\n    return b\n'


def test_long_existing_doc_is_cut_in_the_prompt_only(tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    cfg = PlanConfig(max_seq_length=2048)
    plan = make_plan(tmp_path, cfg)
    units = {u.qualname: u for u in plan.units}
    f = units["f"]
    assert not f.parts and not any(u.kind == "part" for u in plan.units)
    assert f.code.count("\n") > 300  # the code itself is untouched
    assert "lines of the existing documentation left out of this prompt" in f.prompt_code
    assert f.prompt_code.rstrip().endswith('"""\n    return a + 1')  # the body and closing quotes stay
    assert f.prompt_code.startswith('def f(a):\n    """Summary.')
    assert len(f.prompt_code) / cfg.chars_per_token <= cfg.code_budget
    assert units["g"].prompt_code == ""  # short docs are left alone
