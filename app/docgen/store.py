"""The run's single source of truth: SQLite (standard library) in WAL mode.

`results` holds one row per finished chunk, keyed by a content hash of everything that decides
the output (normalized code, context, prompt version, model id, sampling settings). Each result
is committed in small groups as results stream in (app/docgen/commit.py), so a killed run loses
at most the last group and a rerun skips every key already present. `units` maps each unit of the tree to the key documenting
it (for `docgen check`); `generations` logs every model call, so "done once" can be verified.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.docgen.safe_write import refuse_link

SCHEMA = """
CREATE TABLE IF NOT EXISTS results(
    key TEXT PRIMARY KEY, text TEXT NOT NULL, summary TEXT NOT NULL, flags TEXT NOT NULL,
    model_id TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT,
    attempts INTEGER, run_id TEXT, created REAL);
CREATE TABLE IF NOT EXISTS units(
    uid TEXT PRIMARY KEY, path TEXT, qualname TEXT, key TEXT, code_hash TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS generations(
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, uid TEXT, run_id TEXT, attempt INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS runs(
    run_id TEXT PRIMARY KEY, started REAL, finished REAL, model_id TEXT, stats TEXT);
CREATE TABLE IF NOT EXISTS pages(
    out TEXT, page TEXT, source TEXT, language TEXT, documented INTEGER, total INTEGER, flagged INTEGER,
    sha TEXT, updated REAL, PRIMARY KEY (out, page));
CREATE TABLE IF NOT EXISTS files(
    path TEXT PRIMARY KEY, size INTEGER, updated REAL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_code(code: str) -> str:
    """Line endings and trailing spaces do not change what the code means."""
    return "\n".join(line.rstrip() for line in code.replace("\r\n", "\n").split("\n")).strip("\n")


def code_hash(code: str) -> str:
    return hashlib.sha256(normalize_code(code).encode("utf-8")).hexdigest()[:32]


def result_key(code: str, context: str, prompt_version: str, model_id: str, sampling: dict) -> str:
    payload = json.dumps(
        {"code": normalize_code(code), "context": context, "prompt_version": prompt_version,
         "model_id": model_id, "sampling": sampling},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def storable(text: str) -> str:
    """Text SQLite can hold as UTF-8: a lone surrogate (a model can emit one) becomes U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def first_sentence(text: str, limit: int = 160) -> str:
    """The one-line summary a caller's prompt sees."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    for stop in (". ", "! ", "? "):
        if stop in line:
            line = line[: line.index(stop) + 1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class StoredResult:
    key: str
    text: str
    summary: str
    flags: list[dict] = field(default_factory=list)
    model_id: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    attempts: int = 1


@dataclass
class PageRow:
    page: str  # posix, relative to the output folder
    source: str  # the source file it documents, relative to the scanned folder
    language: str
    documented: int
    total: int
    flagged: int
    sha: str  # sha256 of the bytes written, to tell a page edited since


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for f in [self.path] + [self.path.with_name(self.path.name + s) for s in ("-wal", "-shm", "-journal")]:
            refuse_link(f)  # SQLite would open (and write) through them
        self.db = sqlite3.connect(str(self.path), timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose a commit).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> StoredResult | None:
        row = self.db.execute(
            "SELECT key, text, summary, flags, model_id, prompt_tokens, completion_tokens, finish_reason, attempts"
            " FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return StoredResult(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7], row[8])

    def put_many(self, items: list[tuple[StoredResult, str, str, str, str]], run_id: str, replace: bool,
                 links: list[tuple[str, str, str, str, str]] = ()) -> None:
        """Commit a group atomically: (result, uid, path, qualname, code hash) per generated chunk, and
        (uid, path, qualname, key, code hash) per unit that reused a result.

        Without `replace`, a key another run stored meanwhile (two runs on one store) keeps the first
        result: same key, same inputs, so either is right, and the group is never lost to a conflict."""
        now = time.time()
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self.db:
            for res, uid, path, qualname, chash in items:
                self.db.execute(
                    f"{verb} INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (res.key, res.text, res.summary, json.dumps(res.flags), res.model_id, res.prompt_tokens,
                     res.completion_tokens, res.finish_reason, res.attempts, run_id, now))
                for attempt in range(1, res.attempts + 1):
                    self.db.execute("INSERT INTO generations(key, uid, run_id, attempt, created) VALUES (?,?,?,?,?)",
                                    (res.key, uid, run_id, attempt, now))
                self._link(uid, path, qualname, res.key, chash, now)
            for uid, path, qualname, key, chash in links:
                self._link(uid, path, qualname, key, chash, now)

    def link_unit(self, uid: str, path: str, qualname: str, key: str, chash: str) -> None:
        with self.db:
            self._link(uid, path, qualname, key, chash, time.time())

    def _link(self, uid, path, qualname, key, chash, now) -> None:
        self.db.execute("INSERT OR REPLACE INTO units VALUES (?,?,?,?,?,?)", (uid, path, qualname, key, chash, now))

    def unit_row(self, uid: str) -> tuple[str, str] | None:
        """(key, code hash) last recorded for a unit."""
        row = self.db.execute("SELECT key, code_hash FROM units WHERE uid = ?", (uid,)).fetchone()
        return (row[0], row[1]) if row else None

    def start_run(self, run_id: str, model_id: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?)", (run_id, time.time(), None, model_id, "{}"))

    def finish_run(self, run_id: str, stats: dict) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET finished = ?, stats = ? WHERE run_id = ?",
                            (time.time(), json.dumps(stats), run_id))

    def last_throughput(self, model_id: str) -> float | None:
        """Seconds per generated chunk in the latest finished run of this model that generated anything."""
        rows = self.db.execute(
            "SELECT stats FROM runs WHERE model_id = ? AND finished IS NOT NULL ORDER BY finished DESC", (model_id,))
        for (stats,) in rows:
            s = json.loads(stats or "{}")
            if s.get("generated", 0) > 0 and s.get("generation_seconds", 0) > 0:
                return s["generation_seconds"] / s["generated"]
        return None

    # Markdown pages docgen wrote, per output folder (`out` as the path relative to the store's folder,
    # so moving the project with its store keeps them known): only these are overwritten or removed.
    def pages(self, out: str) -> dict[str, PageRow]:
        rows = self.db.execute("SELECT page, source, language, documented, total, flagged, sha FROM pages"
                               " WHERE out = ?", (out,))
        return {r[0]: PageRow(*r) for r in rows}

    def put_page(self, out: str, row: PageRow) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO pages VALUES (?,?,?,?,?,?,?,?,?)",
                            (out, row.page, row.source, row.language, row.documented, row.total, row.flagged,
                             row.sha, time.time()))

    def drop_page(self, out: str, page: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM pages WHERE out = ? AND page = ?", (out, page))

    def unit_paths(self) -> set[str]:
        """Source files this store documented (to recognise pages of a docgen without a page ledger)."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT path FROM units")}

    # Source sizes at the last run, so a file that became empty (or much smaller) is reported.
    def file_sizes(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT path, size FROM files").fetchall())

    def record_files(self, sizes: dict[str, int]) -> None:
        now = time.time()
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?)", [(p, n, now) for p, n in sizes.items()])

    def get_meta(self, key: str) -> dict | None:
        """A small JSON record the pipeline keeps between runs (e.g. the plan's sizing profile)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_meta(self, key: str, value: dict) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, json.dumps(value, sort_keys=True)))

    def count(self, table: str) -> int:
        assert table in ("results", "units", "generations", "runs", "pages", "files", "meta")
        return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
