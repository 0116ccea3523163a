"""A rendered table: its Markdown, its raw values for CSV, and the figures drawn beside them.

``Table.write(out_dir)`` saves ``<name>.md``, ``<name>.csv`` and the table's figures (``<name>.png``,
and any others its ``plot`` draws) in ``out_dir``.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
from typing import Any, Callable, Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table; ``|`` inside a cell is escaped."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [line(r) for r in rows]
    return "\n".join(lines)


def csv_cell(value: Any) -> str:
    """Raw values for CSV: full float precision, ``nan``/``inf`` spelled out, ``None`` empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


# A table's figures: ``plot(out_dir)`` draws them there and returns the PNG files it wrote.
Plot = Callable[[pathlib.Path], Sequence[pathlib.Path]]


@dataclasses.dataclass
class Table:
    """A rendered table: the Markdown shown to the user, the raw values for CSV, and its figures.

    A table module's ``render(records)`` makes the text; its ``plot(records, out_dir)`` draws the
    figures, attached with ``with_plot`` (``functools.partial(plot, records)``). ``write(out_dir)``
    saves ``<name>.md``, ``<name>.csv`` and the figures there.
    """

    name: str
    markdown: str
    csv_columns: list[str]
    csv_rows: list[dict[str, Any]]
    plot: Plot | None = None

    def with_plot(self, plot: Plot) -> "Table":
        """The same table with its figures."""
        return dataclasses.replace(self, plot=plot)

    def write(self, out_dir: pathlib.Path) -> list[pathlib.Path]:
        """Save ``<name>.md``, ``<name>.csv`` and the figures in ``out_dir``; the files written."""
        out_dir.mkdir(parents=True, exist_ok=True)
        md, csv_path = out_dir / f"{self.name}.md", out_dir / f"{self.name}.csv"
        md.write_text(self.markdown + "\n")
        with csv_path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.csv_columns)
            for row in self.csv_rows:
                writer.writerow([csv_cell(row.get(c)) for c in self.csv_columns])
        figures = list(self.plot(out_dir)) if self.plot is not None else []
        return [md, csv_path, *figures]
