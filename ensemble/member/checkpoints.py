"""A member's training state between epochs: committed once per epoch, restored from the newest that loads.

`backup/epoch-0005/` holds the weights (the model's and the optimizer's: step, moments, learning rate) and
state.json (every finished epoch's history row, the epoch whose weights best.keras holds, the plateau
counters, and the states of the model's random streams: Keras' weights files leave out its seed generators,
so without them a rebuilt member would draw epoch 0's augmentation and dropout again). It is written as
`backup/.incoming-epoch-0005/` and renamed: that rename is the commit point of the epoch. Only after it are
the files a user sees published from the same weights: best.keras, the cycle's snapshot, history.csv. A kill at any moment leaves the old state or the new one, and a restore republishes
what its state says, so no published file runs ahead of or behind the state training continues from.

A state that cannot be restored, for any reason, is moved to `set-aside/` beside `backup/` (kept for a look, never
tried again) and the next newest is tried; with none left the member restarts, saying so.
"""
from __future__ import annotations

import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ..job.layout import INCOMING_PREFIX, SET_ASIDE_DIR, MemberFolder, committed_epochs, state_dir
from ..store import atomic

WEIGHTS_FILE = "training.weights.h5"  # Keras wants the .weights.h5 suffix
STATE_FILE = "state.json"
SEED_STATE_NAME = "seed_generator_state"  # what Keras names a SeedGenerator's variable
STATES_KEPT = 2  # the newest and the one before it, plus the best epoch's (best.keras is rebuilt from it)


class StateError(Exception):
    """A committed state does not restore: the message says which file and why."""


@dataclass(frozen=True)
class PlateauState:
    """ReduceLROnPlateau's counters after an epoch (the rate itself lives in the optimizer's weights)."""

    best: float | None  # None: no epoch measured yet
    wait: int
    cooldown: int


@dataclass(frozen=True)
class TrainingState:
    epoch: int                   # epochs finished
    history: tuple[dict, ...]    # one row per finished epoch, as history.csv has them
    best_epoch: int              # the finished epoch (1-based) whose weights best.keras holds; 0: none yet
    plateau: PlateauState | None = None
    random: tuple[tuple[int, ...], ...] = ()  # each seed generator's state (random_states); (): an older state

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "history": list(self.history), "best_epoch": self.best_epoch,
                "plateau": None if self.plateau is None else vars(self.plateau),
                "random": [list(values) for values in self.random]}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingState":
        """Refuses anything but a consistent state: a StateError saying what is wrong."""
        try:
            epoch, history, best_epoch = int(values["epoch"]), tuple(values["history"]), int(values["best_epoch"])
            plateau = values.get("plateau")
            plateau = None if plateau is None else PlateauState(
                None if plateau["best"] is None else float(plateau["best"]), int(plateau["wait"]),
                int(plateau["cooldown"]))
            rows_in_order = [int(row["epoch"]) for row in history] == list(range(epoch))
            random = tuple(tuple(int(value) for value in stream) for stream in values.get("random", ()))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise StateError(f"not a training state ({type(error).__name__}: {error})") from None
        if not rows_in_order or not 0 <= best_epoch <= epoch:
            raise StateError(f"inconsistent: {len(history)} history rows for {epoch} epochs, best epoch {best_epoch}")
        return cls(epoch, history, best_epoch, plateau, random)


def history_row(epoch: int, logs: dict) -> dict:
    """What an epoch's logs become in history: plain floats (NaN and infinities kept out of JSON as None)."""
    row = {"epoch": epoch}
    for key, value in sorted(logs.items()):
        number = float(value)
        row[key] = number if math.isfinite(number) else None
    return row


def history_csv(history) -> str:
    """history.csv's text: `epoch` then the logged values, one row per epoch (the layout CSVLogger wrote)."""
    keys = sorted({key for row in history for key in row} - {"epoch"})
    lines = [",".join(["epoch", *keys])]
    for row in history:
        values = [str(int(row["epoch"]))] + ["" if row.get(key) is None else repr(float(row[key])) for key in keys]
        lines.append(",".join(values))
    return "\n".join(lines) + "\n"




def commit_state(model, backup: Path, state: TrainingState, after_weights=lambda: None) -> Path:
    """Write the state to an incoming folder, then rename it into place: the epoch's commit point."""
    final = state_dir(backup, state.epoch)
    incoming = backup / f"{INCOMING_PREFIX}{final.name}"
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        incoming.mkdir(parents=True)
        model.save_weights(str(incoming / WEIGHTS_FILE))
        check_weights_file(incoming / WEIGHTS_FILE)
        after_weights()
        atomic.write_json(incoming / STATE_FILE, state.to_dict())
        if final.exists():  # a rerun of an epoch whose state was set aside or overtaken
            shutil.rmtree(final)
        incoming.rename(final)
    except BaseException as error:
        shutil.rmtree(incoming, ignore_errors=True)
        if atomic.is_no_space(error) and not isinstance(error, atomic.NoSpace):
            raise atomic.NoSpace(final) from None
        raise
    return final


def check_weights_file(path: Path) -> None:
    """Read every array of a just-written weights file back: a write the disk cut short fails here, before
    the state is committed, rather than at the restore that needs it."""
    import h5py

    def read(name, item):
        if isinstance(item, h5py.Dataset):
            item[()]

    with h5py.File(path, "r") as weights:
        weights.visititems(read)


def prune_states(backup: Path, keep: set[int]) -> None:
    """Drop committed states other than those in `keep` (older epochs only: never one newer than kept)."""
    newest = max(keep)
    for epoch in committed_epochs(backup):
        if epoch not in keep and epoch < newest:
            shutil.rmtree(state_dir(backup, epoch), ignore_errors=True)


def states_to_keep(state: TrainingState, previous: int | None) -> set[int]:
    return {state.epoch, state.best_epoch, *([previous] if previous else [])} - {0}


def read_state(backup: Path, epoch: int) -> TrainingState:
    path = state_dir(backup, epoch) / STATE_FILE
    try:
        values = atomic.read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise StateError(f"{path}: {type(error).__name__}: {error}") from None
    try:
        state = TrainingState.from_dict(values if isinstance(values, dict) else {})
    except StateError as error:
        raise StateError(f"{path}: {error}") from None
    if state.epoch != epoch:
        raise StateError(f"{path}: says epoch {state.epoch}, its folder says {epoch}")
    return state


def seed_variables(model) -> list:
    """The model's seed-generator states (augmentation and dropout layers), in the model's own order."""
    return [variable for variable in model.variables if variable.name == SEED_STATE_NAME]


def random_states(model) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(value) for value in keras.ops.convert_to_numpy(variable))
                 for variable in seed_variables(model))


def restore_random(model, states: tuple[tuple[int, ...], ...]) -> None:
    """Put the random streams where the state left them; a state from before they were kept restores none."""
    if not states:
        return
    variables = seed_variables(model)
    shapes_differ = any(len(values) != variable.shape[0] for values, variable in zip(states, variables))
    if len(variables) != len(states) or shapes_differ:
        raise StateError(f"it keeps {len(states)} random streams, the model has {len(variables)}")
    for variable, values in zip(variables, states):
        variable.assign(np.asarray(values, dtype=variable.dtype))


def load_weights(model, backup: Path, epoch: int) -> None:
    """The state's weights into the model (its optimizer built first, so its variables have a place)."""
    path = state_dir(backup, epoch) / WEIGHTS_FILE
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        with warnings.catch_warnings():
            # Keras only warns when a saved optimizer's variables do not line up with the model's (a state from an
            # optimizer laid out otherwise), and goes on with the moments and the step count of a fresh one
            warnings.filterwarnings("error", message="Skipping variable loading")
            model.load_weights(str(path))
    except Exception as error:  # h5py, Keras and the OS each have their own words for a bad file
        raise StateError(f"{path}: {type(error).__name__}: {error}") from None


def set_aside(backup: Path, epoch: int) -> Path:
    """Move a state that does not restore out of the way, keeping it for a look."""
    target = backup.parent / SET_ASIDE_DIR / f"{state_dir(backup, epoch).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    state_dir(backup, epoch).rename(target)
    return target


def clear_incomplete(folder: MemberFolder) -> list[Path]:
    """Remove what a killed write left half done: incoming state folders and temp files of atomic writes.
    None of it was ever committed, so nothing it held counts."""
    leftovers = [*folder.path.glob(".saving-*"), *folder.path.glob(".*.tmp"), *folder.snapshots.glob(".*"),
                 *folder.backup.glob(f"{INCOMING_PREFIX}*")]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


def restore_newest(model, backup: Path, say=print) -> TrainingState | None:
    """Load the newest state that restores into the model; each one that does not is set aside, saying why.
    None: no state restores (the model may hold a failed load's leftovers: build it anew)."""
    for epoch in committed_epochs(backup):
        try:
            state = read_state(backup, epoch)
            load_weights(model, backup, epoch)
            restore_random(model, state.random)
            return state
        except StateError as error:
            moved = set_aside(backup, epoch)
            say(f"the training state after epoch {epoch} does not restore ({error}); set aside as {moved}")
    return None
