"""The epoch-end commit: training state first, then best.keras, the cycle's snapshot and history.csv."""
from __future__ import annotations

import os
from pathlib import Path

import keras

from ...job.layout import MemberFolder
from ...job.outputs import keras_file_problem
from ...job.spec import JobSpec
from ...nets.schedules import cycle_end_epochs
from ...store import atomic
from ..checkpoints import (TrainingState, commit_state, history_csv, history_row, prune_states, random_states,
                           states_to_keep)
from ..model import MONITOR
from .plateau import ResumableReduceLROnPlateau


def save_model_file(model, path: Path) -> Path:
    """model.save through a temp file and a rename: a kill or a full disk mid-save never leaves a torn model."""
    temp = path.with_name(".saving-" + path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(temp)
        if problem := keras_file_problem(temp):  # a save the disk cut short is never renamed into place
            raise OSError(problem)
        os.replace(temp, path)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if atomic.is_no_space(error) or (not isinstance(error, KeyboardInterrupt) and atomic.low_on_space(path)):
            raise atomic.NoSpace(path) from None
        raise
    return path


class EpochCommit(keras.callbacks.Callback):
    """The end of every epoch, in an order that a kill at any point survives: the training state is
    committed first (checkpoints), then best.keras, the cycle's snapshot and history.csv are published from
    the same weights. A resume starts from the committed state and republishes, so it is exact."""

    STEPS = ("begin", "weights", "state", "best", "snapshot", "history")

    def __init__(self, folder: MemberFolder, spec: JobSpec, restored: TrainingState | None,
                 plateau: ResumableReduceLROnPlateau | None = None):
        super().__init__()
        self.folder, self.backup = folder, folder.backup
        self.keep_last = spec.keep == "last"
        self.snapshot_ends = cycle_end_epochs(spec.epochs, spec.snapshots) if spec.snapshots > 1 else []
        self.state = restored or TrainingState(0, (), 0)
        self.plateau = plateau

    def after_step(self, step: str, epoch: int) -> None:
        """Nothing: the seam where tests stop a member at each step of the sequence."""

    def improves(self, row: dict) -> bool:
        if self.keep_last or self.state.best_epoch == 0:
            return True
        best = self.state.history[self.state.best_epoch - 1].get(MONITOR)
        return row.get(MONITOR) is not None and (best is None or row[MONITOR] > best)

    def on_epoch_end(self, epoch, logs=None):
        self.after_step("begin", epoch)
        row = history_row(epoch, logs or {})
        previous = self.state
        improved = self.improves(row)
        state = TrainingState(epoch + 1, previous.history + (row,), epoch + 1 if improved else previous.best_epoch,
                              self.plateau.counters() if self.plateau else None, random_states(self.model))
        commit_state(self.model, self.backup, state, after_weights=lambda: self.after_step("weights", epoch))
        self.state = state
        self.after_step("state", epoch)
        prune_states(self.backup, states_to_keep(state, previous.epoch))
        if improved:
            save_model_file(self.model, self.folder.best)
        self.after_step("best", epoch)
        if epoch + 1 in self.snapshot_ends:
            cycle = self.snapshot_ends.index(epoch + 1) + 1
            save_model_file(self.model, self.folder.snapshot_model(cycle))
        self.after_step("snapshot", epoch)
        atomic.write_text(self.folder.history, history_csv(state.history))
        self.after_step("history", epoch)
