"""Rendering of registry data for the CLI (tables and nested mappings): plain text, and
tables drawn by ``rich`` when standard output is a terminal."""

from __future__ import annotations

import io
import shutil
import sys
from typing import Any, Mapping, Sequence


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, styled: bool | None = None) -> str:
    """Every table the CLI prints. ``styled`` (default: standard output is a terminal): a
    ``rich`` table (bold header, box lines, long cells folded within the terminal width);
    otherwise plain text, what pipes, scripts and tests read: left-aligned columns with an
    upper-case header, the last column not padded. Widths are terminal cells, so wide
    characters (CJK, emoji) keep the columns aligned either way."""
    from rich.cells import cell_len

    header = [c.upper() for c in columns]
    body = [[_cell(row.get(c)) for c in columns] for row in rows]
    if styled is None:
        styled = sys.stdout.isatty()
    if styled:
        from rich.console import Console
        from rich.table import Table

        table = Table(*header, header_style="bold", show_edge=False)
        for line in body:
            table.add_row(*line)
        for column in table.columns:
            column.overflow = "fold"
        out = io.StringIO()
        Console(file=out, force_terminal=True, width=shutil.get_terminal_size().columns).print(table)
        return out.getvalue().rstrip("\n")
    table_lines = [header] + body
    widths = [max(cell_len(line[i]) for line in table_lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            cell if i == len(columns) - 1 else cell + " " * (widths[i] - cell_len(cell)) for i, cell in enumerate(line)
        ).rstrip()
        for line in table_lines
    )


def _nested(value: Any) -> bool:
    return isinstance(value, Mapping) or isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value)


def render_mapping(data: Any, indent: int = 0) -> str:
    """Nested mappings and lists as indented ``key: value`` lines."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            if _nested(value) and value:
                lines.append(f"{pad}{key}:")
                lines.append(render_mapping(value, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_cell(value) if not isinstance(value, Mapping) else ''}".rstrip())
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, Mapping) and not any(_nested(v) for v in item.values()):
                lines.append(f"{pad}- " + "  ".join(f"{k}: {_cell(v)}" for k, v in item.items()))
            elif isinstance(item, Mapping):
                lines.append(f"{pad}- " + render_mapping(item, indent + 1).lstrip())
            else:
                lines.append(f"{pad}- {_cell(item)}")
    else:
        lines.append(f"{pad}{_cell(data)}")
    return "\n".join(lines)
