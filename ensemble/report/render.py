"""The leaderboard as text: a terminal table, Markdown and a self-contained HTML page."""
from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

import pandas as pd

from ..run.view import render_frame
from .rank import SHOWN_COLUMNS

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    pass


REPORT_FORMATS = ("table", "md", "csv", "html")


def accuracy_cell(accuracy, rows) -> str:
    """An accuracy with what it can resolve: '0.9850 (15 err, ±0.38)', its errors and its standard error in
    points on the rows it was scored on; the bare accuracy where the rows are not known."""
    if pd.isna(accuracy):
        return ""
    if pd.isna(rows) or not rows:
        return f"{accuracy:.4f}"
    errors = round((1 - accuracy) * rows)
    return f"{accuracy:.4f} ({errors} err, ±{100 * (accuracy * (1 - accuracy) / rows) ** 0.5:.2f})"


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.copy()
    rows = shown["val_rows"] if "val_rows" in shown else pd.Series([None] * len(shown), dtype=object)
    shown["val_accuracy"] = [accuracy_cell(a, n) for a, n in zip(shown["val_accuracy"], rows)]
    for column, digits in (("val_acc_tta", 4), ("test_accuracy", 4), ("val_logloss", 4), ("fit_s", 1),
                           ("predict_ms_per_1k", 1)):
        shown[column] = shown[column].map(lambda v, d=digits: "" if pd.isna(v) else f"{v:.{d}f}")
    for column in ("params", "seed", "epochs"):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    return shown


def render_table(frame: pd.DataFrame, title: str = "") -> str:
    return render_frame(display_frame(frame)[SHOWN_COLUMNS], title, text_columns=("model", "kind", "note"))


def render_markdown(frame: pd.DataFrame) -> str:
    return display_frame(frame)[SHOWN_COLUMNS].to_markdown(index=False, disable_numparse=True,
                                            colalign=["right", "left", "left"] + ["right"] * 9 + ["left"])


def render_html(job: str, frame: pd.DataFrame, figures: dict[str, tuple[str, bytes]], notes: list[str]) -> str:
    images = "\n".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, png in figures.values())
    notes_html = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    # headers with spaces wrap (val_accuracy over two lines), and the note column wraps within its width: the
    # table's 13 columns stay within a 1300-pixel window instead of scrolling sideways
    shown = display_frame(frame)[SHOWN_COLUMNS].rename(columns=lambda name: name.replace("_", " "))
    table = shown.to_html(index=False, border=0, classes="board")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ensemble leaderboard: {html.escape(job)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table.board {{ border-collapse: collapse; font-size: .9rem; max-width: 1240px; }}
table.board th, table.board td {{ padding: .3rem .5rem; }} table.board th {{ max-width: 6rem; }}
table.board td:last-child {{ text-align: left; max-width: 16rem; }}
table.board td {{ text-align: right; font-variant-numeric: tabular-nums; }}
table.board td:nth-child(2), table.board td:nth-child(3) {{ text-align: left; }}
table.board tr:nth-child(even) {{ background: #f3f5f8; }} table.board th {{ border-bottom: 2px solid #999; }}
figure {{ display: inline-block; margin: 1rem; vertical-align: top; }} figcaption {{ text-align: center; }}
</style></head><body>
<h1>Leaderboard: job {html.escape(job)}</h1>
{table}
<ul>{notes_html}</ul>
{images}
</body></html>
"""
