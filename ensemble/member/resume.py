"""Where a member resumes: the newest training state that restores, its published files made to agree
with it, or a clean start when none does."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..job.layout import readable_history
from ..job.outputs import has_outputs, keras_file_problem, snapshot_name
from ..job.spec import JobSpec
from ..nets.schedules import cycle_end_epochs
from ..store import atomic
from .callbacks.commit import save_model_file, snapshot_path
from .checkpoints import (
    StateError,
    TrainingState,
    clear_incomplete,
    committed_epochs,
    history_csv,
    load_weights,
    restore_newest,
    set_aside,
    state_dir,
)
from .model import build_member_model


def _reset_member(member_dir: Path) -> None:
    """Start the member clean: its history, kept weights, snapshots and the models made from them."""
    for name in ("history.csv", "best.keras"):
        (member_dir / name).unlink(missing_ok=True)
    for folder in (member_dir / "snapshots", *member_dir.parent.glob(f"{member_dir.name}-snap*")):
        shutil.rmtree(folder, ignore_errors=True)
    for epoch in committed_epochs(member_dir / "backup"):
        shutil.rmtree(state_dir(member_dir / "backup", epoch), ignore_errors=True)


def trained_history(member_dir: Path, spec: JobSpec) -> list[dict] | None:
    """The history of a member whose training ran to its last epoch and whose kept weights load: only its
    outputs may be missing. None otherwise."""
    history = readable_history(member_dir / "history.csv")
    if len(history) >= spec.epochs and keras_file_problem(member_dir / "best.keras") is None:
        return history
    return None


def resume_point(member_dir: Path, spec: JobSpec, seed: int, n_train: int, say) -> tuple[object, TrainingState | None]:
    """The member's model, at the newest training state that restores (its files republished from it), or
    fresh with its files cleared when none does."""
    clear_incomplete(member_dir)
    model = build_member_model(spec, seed, n_train)
    state = restore_newest(model, member_dir / "backup", say)
    if state is not None:
        republish(model, member_dir, spec, state, say)
        return model, state
    problem = keras_file_problem(member_dir / "best.keras")
    if readable_history(member_dir / "history.csv") or (member_dir / "best.keras").exists():
        why = f"{problem}, and no training state restores" if problem and (member_dir / "best.keras").exists() \
            else "no training state restores"
        say(f"{why}: training from epoch 0")
    _reset_member(member_dir)
    return build_member_model(spec, seed, n_train), None  # anew: a failed restore may have loaded a part


def republish(model, member_dir: Path, spec: JobSpec, state: TrainingState, say) -> None:
    """Make best.keras, the snapshots and history.csv what the restored state says they are: a kill may have
    come between an epoch's commit and their publication, or published them for an epoch never committed."""
    backup = member_dir / "backup"

    def publish_from(epoch: int, path: Path) -> bool:
        """Save the weights of the state after `epoch` as `path`; the model ends at the restored state."""
        if epoch != state.epoch:
            try:
                load_weights(model, backup, epoch)
            except StateError as error:
                say(f"cannot rebuild {path} from the state after epoch {epoch} ({error}); set aside as "
                    f"{set_aside(backup, epoch)}")
                load_weights(model, backup, state.epoch)
                return False
        save_model_file(model, path)
        if epoch != state.epoch:
            load_weights(model, backup, state.epoch)
        return True

    atomic.write_text(member_dir / "history.csv", history_csv(state.history))
    best = member_dir / "best.keras"
    if state.best_epoch and not publish_from(state.best_epoch, best) and keras_file_problem(best) is not None:
        publish_from(state.epoch, best)
        say(f"{best} now holds the weights after epoch {state.epoch}: those of the best epoch "
            f"({state.best_epoch}) are lost")
    ends = cycle_end_epochs(spec.epochs, spec.snapshots) if spec.snapshots > 1 else []
    for cycle, end in enumerate(ends, 1):
        path = snapshot_path(member_dir / "snapshots", cycle)
        if end > state.epoch:  # published by a run whose later epochs are being trained again
            path.unlink(missing_ok=True)
            shutil.rmtree(member_dir.parent / snapshot_name(member_dir_index(member_dir), cycle), ignore_errors=True)
        elif keras_file_problem(path) is not None and not has_outputs(member_dir.parent / snapshot_name(
                member_dir_index(member_dir), cycle)):
            rebuilt = end in committed_epochs(backup) and publish_from(end, path)
            if not rebuilt:
                say(f"snapshot {cycle} ({path}) is missing or damaged and its epoch's state is gone: "
                    "the member will have no model for that cycle")


def member_dir_index(member_dir: Path) -> int:
    return int(member_dir.name.removeprefix("member-"))
