"""Where a member resumes: the newest training state that restores, its published files made to agree
with it, or a clean start when none does."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..job.layout import MemberFolder, committed_epochs, readable_history, state_dir
from ..job.outputs import keras_file_problem
from ..job.spec import JobSpec
from ..nets.schedules import cycle_end_epochs
from ..store import atomic
from .callbacks.commit import save_model_file
from .checkpoints import (StateError, TrainingState, clear_incomplete, history_csv, load_weights, restore_newest,
                          set_aside)
from .model import build_member_model, resize_schedule


def reset_member(folder: MemberFolder) -> None:
    """Start the member clean: its history, kept weights, snapshots and the models made from them."""
    folder.metrics.unlink(missing_ok=True)
    for path in (folder.history, folder.best):
        path.unlink(missing_ok=True)
    for path in (folder.snapshots, *(snapshot.path for snapshot in folder.snapshot_folders())):
        shutil.rmtree(path, ignore_errors=True)
    for epoch in committed_epochs(folder.backup):
        shutil.rmtree(state_dir(folder.backup, epoch), ignore_errors=True)


def trained_history(folder: MemberFolder, spec: JobSpec) -> list[dict] | None:
    """The history of a member whose training ran to its last epoch and whose kept weights load: only its
    outputs may be missing. None otherwise."""
    history = readable_history(folder.history)
    if len(history) >= spec.epochs and keras_file_problem(folder.best) is None:
        return history
    return None


def resume_point(folder: MemberFolder, spec: JobSpec, seed: int, n_train: int, say, final_steps: int | None = None,
                 built=None) -> tuple[object, TrainingState | None]:
    """The member's model (its last epoch `final_steps` long where given), at the newest training state that
    restores (its files republished from it), or fresh with its files cleared when none does. `built`: the
    member's model as built from its seed (the probe's, its steps traced), used instead of building one."""
    clear_incomplete(folder)
    if built is not None:
        model = built
        resize_schedule(model, spec, n_train, spec.epochs, final_steps)
    else:
        model = build_member_model(spec, seed, n_train, final_steps)
    tried = bool(folder.committed_epochs())
    state = restore_newest(model, folder.backup, say)
    if state is not None:
        republish(model, folder, spec, state, say)
        return model, state
    problem = keras_file_problem(folder.best)
    if readable_history(folder.history) or folder.best.exists():
        why = f"{problem}, and no training state restores" if problem and folder.best.exists() \
            else "no training state restores"
        say(f"{why}: training from epoch 0")
    reset_member(folder)
    if tried:  # a failed restore may have loaded a part: anew
        model = build_member_model(spec, seed, n_train, final_steps)
    return model, None


def republish(model, folder: MemberFolder, spec: JobSpec, state: TrainingState, say) -> None:
    """Make best.keras, the snapshots and history.csv what the restored state says they are: a kill may have
    come between an epoch's commit and their publication, or published them for an epoch never committed."""
    backup = folder.backup

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

    atomic.write_text(folder.history, history_csv(state.history))
    best = folder.best
    if state.best_epoch and not publish_from(state.best_epoch, best) and keras_file_problem(best) is not None:
        publish_from(state.epoch, best)
        say(f"{best} now holds the weights after epoch {state.epoch}: those of the best epoch "
            f"({state.best_epoch}) are lost")
    ends = cycle_end_epochs(spec.epochs, spec.snapshots) if spec.snapshots > 1 else []
    for cycle, end in enumerate(ends, 1):
        path = folder.snapshot_model(cycle)
        outputs = folder.snapshot_outputs(cycle)
        if end > state.epoch:  # published by a run whose later epochs are being trained again
            path.unlink(missing_ok=True)
            shutil.rmtree(outputs.path, ignore_errors=True)
        elif keras_file_problem(path) is not None and not outputs.has_outputs:
            rebuilt = end in committed_epochs(backup) and publish_from(end, path)
            if not rebuilt:
                say(f"snapshot {cycle} ({path}) is missing or damaged and its epoch's state is gone: "
                    "the member will have no model for that cycle")
