"""Rich tables whose every title, caption and cell is text, never markup.

Arm names, role templates, paths and model names come from users and models: a ``[engine]`` or
``[/b]`` in them must print as written, not vanish or crash the renderer (rich parses plain
``str`` cells as markup). Every table the library prints is built here.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text


def text_table(title: str, caption: str | None = None) -> Table:
    """A table whose title and caption are shown as written."""
    return Table(title=Text(title), caption=None if caption is None else Text(caption))


def add_text_row(table: Table, *cells: str) -> None:
    """Add a row; each cell is shown as written."""
    table.add_row(*(Text(cell) for cell in cells))
