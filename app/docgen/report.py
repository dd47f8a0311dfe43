"""The final report of a run: what was documented, reused, skipped, flagged, and how fast."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app.docgen.checks import check_doc
from app.docgen.planner import Plan


@dataclass
class RunReport:
    files: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    parse_error_files: list[str] = field(default_factory=list)
    chunks: int = 0
    waves: int = 0
    generated: int = 0
    reused: int = 0
    retried: int = 0
    # check name -> {"retried": chunks retried for it, "fixed": retries after which it passed,
    #                "not_retried": failed but not retried (cut off with no room for a larger limit)}
    retry_by_check: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    flagged: dict[str, list[str]] = field(default_factory=dict)  # uid -> failure messages
    flagged_by_cause: dict[str, int] = field(default_factory=dict)
    empty: int = 0  # generations that came back blank: not documentation, counted apart (not flagged)
    completeness: float = 0.0  # share of chunks with a non-empty doc
    truthfulness: float | None = None  # share of named identifiers that exist (None: none named)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    wall_seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)  # lines about what was written where
    warnings: list[str] = field(default_factory=list)  # problems the user must look at (the run exits 1)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def build_report(plan: Plan, ex, wall_seconds: float) -> RunReport:
    """Checks are re-run over every final doc (cheap) so reused results are judged like new ones."""
    rep = RunReport(files=len(plan.files), skipped=dict(plan.walk.skipped), parse_error_files=plan.parse_error_files,
                    chunks=len(plan.units), waves=len(plan.schedule.waves), generated=ex.generated,
                    reused=ex.reused, retried=ex.retried, retry_by_check=ex.retry_stats.by_check(),
                    errors=dict(ex.errors), prompt_tokens=ex.prompt_tokens,
                    completion_tokens=ex.completion_tokens, generation_seconds=ex.generation_seconds,
                    wall_seconds=wall_seconds)
    named = found = 0
    causes: Counter = Counter()
    for unit in plan.units:
        doc = ex.docs.get(unit.uid)
        if doc is None:
            continue
        if not (doc.text or "").strip():
            rep.empty += 1
            continue
        chk = check_doc(unit, doc.text, doc.finish_reason, plan.known_identifiers)
        named += chk.named
        found += chk.found
        if chk.failures:
            rep.flagged[unit.uid] = [f"{f['cause']}: {f['message']}" for f in chk.failures]
            causes.update({f["cause"] for f in chk.failures})
    rep.flagged_by_cause = dict(causes)
    rep.completeness = sum(1 for u in plan.units if ex.docs.get(u.uid) and ex.docs[u.uid].text) / max(1, len(plan.units))
    rep.truthfulness = found / named if named else None
    return rep


def format_report(rep: RunReport, max_flagged: int = 15) -> str:
    lines = ["", "docgen report", "-------------"]
    lines.append(f"files documented: {rep.files}; chunks: {rep.chunks} in {rep.waves} waves")
    if rep.skipped:
        lines.append("skipped: " + "; ".join(f"{n} {reason}" for reason, n in sorted(rep.skipped.items())))
    if rep.parse_error_files:
        lines.append(f"parsed with errors (chunked best-effort): {', '.join(rep.parse_error_files[:10])}")
    lines.append(f"generated: {rep.generated} (retried {rep.retried}); reused from the store: {rep.reused}; "
                 f"errors: {len(rep.errors)}")
    if rep.retry_by_check:
        lines.append("retries by check: " + "; ".join(
            f"{c} {n['fixed']} fixed of {n['retried']} retried" + (f", {n['not_retried']} not retried (no room for "
                                                                     "a larger limit)" if n["not_retried"] else "")
            for c, n in rep.retry_by_check.items()))
    tps = rep.completion_tokens / rep.generation_seconds if rep.generation_seconds else 0.0
    lines.append(f"tokens: {rep.prompt_tokens} prompt, {rep.completion_tokens} generated ({tps:.1f} tok/s); "
                 f"time: {rep.wall_seconds:.1f}s total, {rep.generation_seconds:.1f}s generating")
    truth = "n/a (no identifiers named)" if rep.truthfulness is None else f"{rep.truthfulness:.1%}"
    empty = f" ({rep.empty} empty generations count as not documented)" if rep.empty else ""
    lines.append(f"completeness: {rep.completeness:.1%}{empty}; truthfulness (named identifiers that exist): {truth}")
    if rep.flagged:
        causes = ", ".join(f"{c} {n}" for c, n in sorted(rep.flagged_by_cause.items()))
        documented = round(rep.completeness * rep.chunks)
        lines.append(f"flagged by checks: {len(rep.flagged)} of the {documented} documented chunks ({causes})")
        for uid, msgs in list(rep.flagged.items())[:max_flagged]:
            lines.append(f"  {uid}: {msgs[0]}")
        if len(rep.flagged) > max_flagged:
            lines.append(f"  ... and {len(rep.flagged) - max_flagged} more")
    for uid, err in list(rep.errors.items())[:max_flagged]:
        lines.append(f"  error {uid}: {err}")
    lines.extend(rep.outputs)
    lines.extend(f"warning: {w}" for w in rep.warnings)
    return "\n".join(lines)
