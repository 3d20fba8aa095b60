"""Plain-text rendering of registry data for the CLI (tables and nested mappings)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned columns with an upper-case header; the last column is not padded.
    Widths are terminal cells, so wide characters (CJK, emoji) keep the columns aligned."""
    from rich.cells import cell_len

    table = [[c.upper() for c in columns]] + [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(cell_len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            cell if i == len(columns) - 1 else cell + " " * (widths[i] - cell_len(cell)) for i, cell in enumerate(line)
        ).rstrip()
        for line in table
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
