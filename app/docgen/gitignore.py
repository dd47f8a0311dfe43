"""A small .gitignore matcher (the subset of git's rules that real repositories use).

Supported: comments, blank lines, negation (`!`), directory-only patterns (`trailing/`),
anchored patterns (a `/` at the start or in the middle), `*`, `?`, `[...]` and `**`.
Each .gitignore applies to paths below its own folder; later rules override earlier ones,
and rules from deeper folders override shallower ones, as in git.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    base: str  # folder (posix, relative to the walk root, "" for the root) the rule lives in
    regex: re.Pattern
    negate: bool
    dir_only: bool


def _glob_to_regex(pattern: str, anchored: bool) -> re.Pattern:
    """Translate one gitignore glob to a regex over a posix path relative to the rule's base."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    prefix = "" if anchored else "(?:.*/)?"
    # A pattern matching a folder also matches everything inside it.
    return re.compile(f"^{prefix}{''.join(out)}(?:/.*)?$")


def parse_rules(text: str, base: str) -> list[Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        rules.append(Rule(base, _glob_to_regex(line, anchored), negate, dir_only))
    return rules


class GitIgnore:
    """Collects rules from .gitignore files as the walk descends, and answers `ignored(path)`."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def add_file(self, gitignore: Path, base: str) -> None:
        try:
            text = gitignore.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self.rules.extend(parse_rules(text, base))

    def add_patterns(self, patterns: list[str]) -> None:
        self.rules.extend(parse_rules("\n".join(patterns), ""))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """`rel` is the posix path relative to the walk root."""
        result = False
        for rule in self.rules:
            if rule.base:
                if not rel.startswith(rule.base + "/"):
                    continue
                sub = rel[len(rule.base) + 1 :]
            else:
                sub = rel
            m = rule.regex.match(sub)
            if not m:
                continue
            # A dir-only rule matches the folder itself, or anything below a matching folder.
            if rule.dir_only and not is_dir and not _matches_parent(rule, sub):
                continue
            result = not rule.negate
        return result


def _matches_parent(rule: Rule, sub: str) -> bool:
    parts = sub.split("/")
    for k in range(1, len(parts)):
        if rule.regex.match("/".join(parts[:k])):
            return True
    return False
