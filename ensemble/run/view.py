"""What a person sees of a run and a job: the live lines and overall line of a run (drawn by progress.py's
reporters), and terminal tables (rich) for `ensemble status`, `ensemble jobs` and the leaderboard."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pandas as pd

from .progress import MemberLine, Overview, job_overview, member_lines

if TYPE_CHECKING:
    from .scheduler import JobRun


def run_lines(run: "JobRun") -> list[MemberLine]:
    """A line per running member."""
    running = [(run.member(index), launched.slot.label) for index, launched in sorted(run.running.items())]
    return member_lines(running, run.progress, run.epochs, run.stalled)


def run_overview(run: "JobRun") -> Overview:
    """The overall line: the ETA counts the predictions still to come at the pace members measured, per slot."""
    slots = max(len(run.free) + len(run.running), 1)
    each = run.budget.predict_seconds() / slots
    return job_overview(run.job, run.wanted_members(), len(run.failed), run.progress, run.epochs,
                        time.monotonic() - run.started, run.epochs_at_start,
                        predicted_s=len(run.trained) * each, predict_each_s=each)


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
