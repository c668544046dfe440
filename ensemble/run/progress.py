"""What a person sees while a job trains.

On a terminal: a rich live view redrawn in place, one row per running member (device, epoch e/E, a batch
bar, latest val accuracy) and an overall row (done/total, elapsed, ETA). Anywhere else (a pipe, a CI log,
nohup): plain timestamped lines, one per event and per finished epoch. Both take the same snapshots
from the runner, which is the only one that reads progress files.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..job.ledger import MemberState
from ..job.progress import NO_PROGRESS, Progress
from ..store.session import in_notebook

PLAIN_OVERALL_EVERY_S = 60.0


@dataclass(frozen=True)
class MemberLine:
    name: str
    device: str
    epoch: int           # finished epochs
    epochs: int
    batch: int           # batches done in the current epoch
    batches: int | None  # batches per epoch, once the member knows
    val_accuracy: float | None
    attempt: int
    phase: str = "training"
    stalled: str | None = None  # what the runner saw of a member whose progress stopped


@dataclass(frozen=True)
class Overview:
    job: str
    done: int
    total: int
    failed: int
    epochs_done: float
    epochs_total: int
    elapsed_s: float
    eta_s: float | None


def estimate_eta(epochs_at_start: float, epochs_now: float, epochs_total: float, elapsed_s: float,
                 predicting_done_s: float = 0.0, predicting_left_s: float = 0.0) -> float | None:
    """Seconds left: the epochs left at this run's training pace (epochs already done when it began do not
    count as pace, nor the time finished members spent predicting), plus the predictions still to come
    (each member predicts validation and test after its last epoch: 17-45 s on Kaggle's 28000 test rows)."""
    gained = epochs_now - epochs_at_start
    training_s = elapsed_s - predicting_done_s
    if gained <= 0 or training_s <= 0:
        return None
    return max(0.0, (epochs_total - epochs_now) * training_s / gained) + predicting_left_s


def epochs_done(members, progress: dict[int, Progress], epochs: int) -> float:
    """Epochs finished by the members (ledger.MemberEntry), with the running ones' current epoch counted
    by the share of its batches done (from their progress files)."""
    total = 0.0
    for member in members:
        own = member.epochs or epochs  # a --time-limit member's own length
        if member.state is MemberState.DONE:
            total += own
        else:
            batch_share = progress.get(member.index, NO_PROGRESS).batch_share
            total += min(own, member.epoch or 0) + batch_share
    return total


def member_lines(running, progress: dict[int, Progress], epochs: int,
                 stalled: dict[int, str] | None = None) -> list[MemberLine]:
    """A line per running member: running is [(MemberEntry, the slot's label)]; stalled: index -> what the
    runner saw of those whose progress stopped."""
    lines = []
    for member, slot_label in running:
        live = progress.get(member.index, NO_PROGRESS)
        lines.append(MemberLine(name=member.name, device=member.slot or member.device or slot_label,
                                epoch=member.epoch or 0, epochs=member.epochs or epochs, batch=live.batch, batches=live.batches,
                                val_accuracy=member.val_accuracy, attempt=member.attempts, phase=live.phase,
                                stalled=(stalled or {}).get(member.index)))
    return lines


def job_overview(job: str, members, failed: int, progress: dict[int, Progress], epochs: int, elapsed_s: float,
                 epochs_at_start: float, predicted_s: float, predict_each_s: float) -> Overview:
    """The overall line: members done of those the run answers for, epochs, elapsed time and ETA (the
    predictions still to come at predict_each_s per waiting member, per slot)."""
    done = sum(member.state is MemberState.DONE for member in members)
    epochs_now = epochs_done(members, progress, epochs)
    waiting = len(members) - done - failed
    planned = sum(member.epochs or epochs for member in members)
    return Overview(job, done, len(members), failed, epochs_now, planned, elapsed_s,
                    estimate_eta(epochs_at_start, epochs_now, planned, elapsed_s, predicted_s,
                                 waiting * predict_each_s))


def format_clock(seconds: float | None) -> str:
    """mm:ss or h:mm:ss, as a clock shows a duration (the live view); budget.format_duration writes 1h02m03s."""
    if seconds is None or math.isnan(seconds):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def overall_text(overview: Overview) -> str:
    failed = f", {overview.failed} failed" if overview.failed else ""
    return (f"{overview.done}/{overview.total} members done{failed}, "
            f"{overview.epochs_done:.1f}/{overview.epochs_total} epochs, "
            f"elapsed {format_clock(overview.elapsed_s)}, ETA {format_clock(overview.eta_s)}")


def val_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class PlainReporter:
    """Timestamped lines: events as they happen, each finished epoch, the overall line every minute."""

    def __init__(self, echo: Callable[[str], None] = print, clock: Callable[[], float] = time.time):
        self.echo, self.clock = echo, clock
        self._epochs_seen: dict[str, int] = {}
        self._overall_at = clock()

    def event(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.clock()))
        for line in text.splitlines():
            self.echo(f"[{stamp}] {line}")

    def update(self, lines: list[MemberLine], overview: Overview) -> None:
        for line in lines:
            seen = self._epochs_seen.setdefault(line.name, line.epoch)
            if line.epoch > seen:
                self._epochs_seen[line.name] = line.epoch
                self.event(f"{line.name} [{line.device}] epoch {line.epoch}/{line.epochs}  "
                           f"val_acc {val_text(line.val_accuracy)}")
        if self.clock() - self._overall_at >= PLAIN_OVERALL_EVERY_S:
            self.close(overview)

    def close(self, overview: Overview) -> None:
        self._overall_at = self.clock()
        self.event(overall_text(overview))


class LiveReporter:
    """rich's Live view, refreshed by the runner's own loop (no refresh thread: the runner forks members)."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.live = Live(console=self.console, auto_refresh=False, transient=False, redirect_stdout=False,
                         redirect_stderr=False)
        self.live.start()

    def event(self, text: str) -> None:
        self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", highlight=False, markup=False)

    def update(self, lines: list[MemberLine], overview: Overview) -> None:
        self.live.update(render_live(lines, overview), refresh=True)

    def close(self, overview: Overview) -> None:
        self.live.update(render_live([], overview), refresh=True)
        self.live.stop()


def render_live(lines: list[MemberLine], overview: Overview):
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column, justify in (("member", "left"), ("device", "left"), ("epoch", "right"), ("batches", "left"),
                            ("val acc", "right"), ("try", "right")):
        table.add_column(column, justify=justify)
    for line in lines:
        if line.stalled:
            bar = Text(f"stalled: {line.stalled}", style="bold red")
        elif line.batches:
            bar = ProgressBar(total=line.batches, completed=line.batch, width=24)
        else:
            bar = line.phase
        table.add_row(line.name, line.device, f"{line.epoch}/{line.epochs}", bar, val_text(line.val_accuracy),
                      str(line.attempt))
    overall = ProgressBar(total=max(overview.epochs_total, 1), completed=overview.epochs_done, width=40)
    summary = [Text(f"job {overview.job}  ", style="bold") + Text(overall_text(overview)), overall]
    return Group(table, Text(""), *summary) if lines else Group(*summary)


def make_reporter(echo: Callable[[str], None] = print, live: bool | None = None):
    """Live view on a terminal, plain lines elsewhere (live=None: decided by whether stdout is a TTY that is
    not a notebook cell's: `!ensemble train` runs under a pseudo-terminal whose output is saved as a log)."""
    if live is None:
        live = sys.stdout.isatty() and not in_notebook()
    return LiveReporter() if live else PlainReporter(echo)
