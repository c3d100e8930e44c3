"""Griffe extension for the API reference: doctest examples shown as Python code.

dqnx's docstrings are plain prose with doctests (they run in the default test tier), not
Google- or NumPy-style sections, so mkdocstrings would hand `>>> ...` lines to Markdown, which
reads them as nested block quotes. This wraps each run of doctest lines (the prompt lines and
the expected output after them, up to a blank line) in a ```pycon fence before rendering.
"""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    out, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            while index < len(lines) and lines[index].strip():
                out.append(lines[index])
                index += 1
            out.append(f"{indent}```")
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:  # noqa: ARG002 (griffe's hook signature)
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
