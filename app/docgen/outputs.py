"""Where a run writes, checked before any model is loaded, and the Markdown phase after it.

Before: `--out` must be a folder (or not exist); default locations (`PATH/docs`, `PATH/.docgen`)
must not lead out of PATH through a link (a location the user named is taken as named); the
output folder must hold nothing docgen did not write (the store keeps the list), so docgen never
mixes its pages into a Sphinx `docs/` or a source package; the store folder gets a `.gitignore`
of `*` (as pytest's cache does) so the store never shows in `git status`.
After: pages written (see writers/markdown.py), and sources that the store knew with content but
that are empty now are reported as warnings (a truncated file must not vanish silently).
"""
from __future__ import annotations

import os
from pathlib import Path

from app.docgen import safe_write
from app.docgen.store import Store
from app.docgen.writers.markdown import MarkdownResult, write_markdown

GITIGNORE = "# Created by docgen: its results store, not for version control.\n*\n"
SHRUNK_RATIO = 0.5  # a file under half its last size is worth a note


def base_of(opts) -> Path:
    from app.docgen.walker import file_base

    return opts.path if opts.path.is_dir() else file_base(opts.path)


def out_key(opts) -> str:
    """The output folder as the store records it: relative to the store's folder."""
    return os.path.relpath(opts.out, opts.store.parent)


def check_locations(opts) -> None:
    """Everything about the output and store locations that can be checked without the store."""
    base = base_of(opts)
    out, store = Path(opts.out), Path(opts.store)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for the Markdown pages (it is created if missing)")
    if store.is_dir():
        raise ValueError(f"--store {store} is a folder; pass the database file, e.g. {store / 'docgen.sqlite'}")
    if store.parent.exists() and not store.parent.is_dir():
        raise ValueError(f"the store's folder {store.parent} is a file; pass another --store")
    if not getattr(opts, "out_named", True):
        safe_write.check_location(out, base, "Markdown folder", "--out")
    if not getattr(opts, "store_named", True):
        safe_write.check_location(store.parent, base, "store folder", "--store")
    if os.path.realpath(out) == os.path.realpath(base):
        raise ValueError(f"--out {out} is the folder being documented; pass a folder for docgen's pages alone")


def prepare_store_dir(opts) -> None:
    """Create the store's folder; give it a `.gitignore` if docgen created it or it is `.docgen`."""
    folder = Path(opts.store).parent
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if (created or folder.name == ".docgen") and not os.path.lexists(folder / ".gitignore"):
        safe_write.write_text(folder, ".gitignore", GITIGNORE)


def check_out_folder(opts) -> None:
    """Refuse an output folder holding files docgen did not write (per the store's ledger)."""
    out = Path(opts.out)
    if not out.exists():
        return
    store = Store(opts.store)
    try:
        known = store.pages(out_key(opts))
    finally:
        store.close()
    foreign = foreign_entries(out, set(known))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(
            f"the Markdown folder {out} holds files docgen did not write ({shown}); docgen writes only into an "
            f"empty or new folder, or one it wrote itself. Pass --out with another folder (e.g. {_suggest(out)}); "
            "if these are pages of an earlier docgen run whose store was deleted, remove them first")


def _suggest(out: Path) -> Path:
    return next((p for p in (out / "docgen", out.with_name(out.name + "-docgen")) if not os.path.lexists(p)),
                out.with_name(out.name + "-docgen-2"))


def foreign_entries(out: Path, known: set[str]) -> list[str]:
    """Entries of `out` (relative, posix) not in `known`, any link, and anything not a plain file."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(out):  # does not descend into linked folders
        d = Path(dirpath)
        rel_dir = d.relative_to(out).as_posix()
        for name in sorted(dirnames):
            if (d / name).is_symlink():
                found.append(_join(rel_dir, name) + "/ (a link)")
        for name in sorted(filenames):
            rel, full = _join(rel_dir, name), d / name
            if name.startswith(".") and name.endswith(safe_write.TMP_SUFFIX):
                continue  # a temporary file of a killed docgen write; the next write of its page removes it
            if full.is_symlink():
                found.append(rel + " (a link)")
            elif rel not in known:
                found.append(rel)
            elif full.stat().st_nlink > 1:
                found.append(rel + " (hard-linked)")
    return found


def _join(rel_dir: str, name: str) -> str:
    return name if rel_dir in ("", ".") else f"{rel_dir}/{name}"


def write_pages(opts, plan, docs: dict, report) -> MarkdownResult:
    """The Markdown phase, with its lines and warnings added to the report."""
    base = base_of(opts)
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # checked by check_locations before the run
    store = Store(opts.store)
    try:
        res = write_markdown(plan, docs, report.flagged, opts.out, store, out_key(opts), base)
    finally:
        store.close()
    report.outputs.append(f"Markdown: {max(0, len(res.written) - 1)} pages and an index under {opts.out}"
                          + (f"; {len(res.removed)} pages of deleted sources removed" if res.removed else ""))
    for page in res.kept_edited:
        report.warnings.append(f"{Path(opts.out) / page} was edited since docgen wrote it; left as it is "
                               "(delete it to let docgen rewrite it)")
    report.warnings.extend(f"not written: {why}" for why in res.refused)
    return res


def review_sources(opts, plan, report) -> None:
    """Say that the output folder was not scanned; report sources the store knew with content that
    are empty (or far smaller) now, then record this run's sizes. An emptied file keeps its page;
    the warning is given once."""
    base = base_of(opts)
    if opts.path.is_dir() and Path(opts.out).resolve().is_relative_to(base):
        rel = Path(opts.out).resolve().relative_to(base).as_posix()
        report.outputs.append(f"not scanned: {rel}/ (docgen's Markdown output folder)")
    store = Store(opts.store)
    try:
        before = store.file_sizes()
        sizes = {f.rel: f.size for f in plan.walk.files}
        for rel, reason in plan.walk.skipped_files:
            if reason == "empty file" and before.get(rel, 0) > 0:
                report.warnings.append(
                    f"{rel} is empty now but had {before[rel]} bytes at the last run; if that was not intended, "
                    f"restore it (e.g. git checkout -- {rel}). Its page is kept")
                sizes[rel] = 0
        for rel, size in sizes.items():
            if size and before.get(rel, 0) >= 200 and size < SHRUNK_RATIO * before[rel]:
                report.outputs.append(f"note: {rel} is {size} bytes, {before[rel]} at the last run (if it was "
                                      "truncated, restore it from version control)")
        store.record_files(sizes)
    finally:
        store.close()
