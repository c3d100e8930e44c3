"""MkDocs hook: the configuration reference's field tables, read from the dataclasses.

A page line `<!-- config-fields: DQNConfig -->` becomes a table of that class's fields
(name, type, default, the text of its `_doc(...)`), so the site never repeats a default
by hand. mkdocstrings shows docstrings, not dataclass field metadata: hence this hook.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parent.parent / "src")
_MARKER = re.compile(r"^<!-- config-fields: (\w+) -->$", re.MULTILINE)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(class_name: str) -> str:
    if _SRC not in sys.path:
        sys.path.insert(0, _SRC)
    from dqnx.config import schema

    cls = getattr(schema, class_name)
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        rows.append(f"| `{field.name}` | `{_cell(kind)}` | `{_cell(repr(default))}` | {_cell(field.metadata.get('doc', ''))} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' hook signature)
    return _MARKER.sub(lambda match: _table(match.group(1)), markdown)
