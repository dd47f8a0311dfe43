"""Supported languages: file extensions and their tree-sitter grammars.

Grammars come from the official per-language packages (tree-sitter-python, ...), which ship
compiled grammars and need no network. They are loaded lazily and cached.
"""
from __future__ import annotations

import importlib
import re
from functools import lru_cache

# language -> (grammar module, function returning the language pointer)
GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
}

# Names a user may pass to --languages; "typescript" also selects .tsx files.
USER_LANGUAGES = ("python", "javascript", "typescript", "go", "rust", "java", "c", "cpp")
ALIASES = {"py": "python", "js": "javascript", "ts": "typescript", "c++": "cpp", "golang": "go", "rs": "rust"}


def language_for(path: str) -> str | None:
    dot = path.rfind(".")
    return EXTENSIONS.get(path[dot:].lower()) if dot >= 0 else None


_CPP_MARKERS = re.compile(r"^\s*(namespace\s+\w+\s*\{|class\s+\w[\w\s]*[:{]|template\s*<|public:|private:|protected:)"
                          r"|\bstd::|\bnoexcept\b", re.M)


def header_language(text: str) -> str:
    """A `.h` file is C unless its text is C++ (namespaces, classes, templates, std::): many C++
    projects (leveldb, ...) name their headers `.h`, and the C grammar cannot parse a class."""
    return "cpp" if _CPP_MARKERS.search(text) else "c"


def parse_languages(values: list[str] | None) -> set[str] | None:
    """Turn `--languages python,go rust` into a set of grammar names; None means all."""
    if not values:
        return None
    wanted: set[str] = set()
    for value in values:
        for name in value.replace(",", " ").split():
            name = ALIASES.get(name.lower(), name.lower())
            if name not in USER_LANGUAGES:
                raise ValueError(
                    f"unknown language {name!r}; choose from {', '.join(USER_LANGUAGES)} (comma separated)"
                )
            wanted.add(name)
            if name == "typescript":
                wanted.add("tsx")
    return wanted


@lru_cache(maxsize=None)
def get_language(name: str):
    import tree_sitter

    module_name, func = GRAMMARS[name]
    module = importlib.import_module(module_name)
    return tree_sitter.Language(getattr(module, func)())


def get_parser(name: str):
    import tree_sitter

    return tree_sitter.Parser(get_language(name))
