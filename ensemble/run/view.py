"""Terminal tables (rich) for `ensemble status`, `ensemble jobs` and the leaderboard."""
from __future__ import annotations

import pandas as pd


def render_frame(frame: pd.DataFrame, title: str = "", text_columns: tuple[str, ...] = ()) -> str:
    """A frame as a rich table for the terminal: text_columns left-aligned, every other column right."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None, title_justify="left")
    for column in frame.columns:
        table.add_column(column, justify="left" if column in text_columns else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*map(str, row))
    console = Console(width=180, force_terminal=False)
    with console.capture() as captured:
        console.print(table)
    return captured.get()
