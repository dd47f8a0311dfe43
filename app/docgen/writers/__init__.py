"""Writers turn stored docs into output: Markdown pages, and Python docstrings in place."""
