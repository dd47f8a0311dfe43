"""Python imports and module names, so Python calls resolve precisely across files."""
from __future__ import annotations

import ast


def module_names(rel: str) -> list[str]:
    """Every dotted name a repository file may be imported as: pkg/sub/mod.py -> pkg.sub.mod, sub.mod, mod."""
    parts = rel[:-3].split("/") if rel.endswith(".py") else rel.rsplit(".", 1)[0].split("/")
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return [".".join(parts[i:]) for i in range(len(parts)) if parts[i:]]


def package_of(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return parts


def imports(rel: str, text: str) -> dict[str, tuple[str, str]] | None:
    """Local alias -> (module, name or ""); None when the file does not parse (no precision then)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    out: dict[str, tuple[str, str]] = {}
    pkg = package_of(rel)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = (a.name, "")
                else:
                    out[a.name.split(".")[0]] = (a.name.split(".")[0], "")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level - 1 <= len(pkg) else []
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                if a.name != "*":
                    out[a.asname or a.name] = (module, a.name)
    return out
