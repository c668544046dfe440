"""One member of a job: train, keep the best epoch, save everything that rebuilds and scores it.

Runs as its own process (`python -m ensemble.member --job J --member I`), so the runner can place members
on devices and survive their crashes without this code knowing. Everything lands in
`models/<job>/member-XX/`; metrics.json is written last and marks the member done. Live progress (epoch,
batch, latest val accuracy, pid) goes to `jobs/<job>/progress/member-XX.json` for the runner to show.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..job.arrays import job_arrays
from ..job.layout import member_lock_path, progress_path
from ..job.record import JobRecord, load_record
from ..job.spec import JobSpec
from ..nets.augment import TTA_VIEWS
from ..nets.schedules import PLATEAU, cycle_end_epochs
from ..store import atomic
from ..store.locks import LockHeld, PidLock
from ..store.workspace import Workspace
from .callbacks.clock import EpochClock
from .callbacks.commit import EpochCommit
from .callbacks.deadline import Deadline
from .callbacks.plateau import ResumableReduceLROnPlateau
from .callbacks.printer import EpochPrinter
from .callbacks.progress import ProgressFile, ProgressWriter
from .checkpoints import TrainingState
from .model import MONITOR, fit_member_model
from .predict import measured_predict_speed, write_member_outputs
from .resume import resume_point, trained_history

# A member process killed with its runner may take a moment to go; a new one waits that long for its lock.
MEMBER_LOCK_WAIT_S = 15.0


def member_config(record: JobRecord, index: int) -> dict:
    spec = record.spec
    schedule = {"kind": spec.schedule, "learning_rate": spec.learning_rate, "cycles": spec.snapshots}
    if spec.schedule == "plateau":
        schedule["reduce_lr_on_plateau"] = {"monitor": MONITOR, **PLATEAU}
    return {"job": record.name, "member": index, "seed": spec.member_seed(index),
            "data_dir": record.data_dir, "spec": spec.to_dict(),
            "recipe": {"schedule": schedule, "loss": "sparse_categorical_crossentropy (probabilities)",
                       "tta_views": [list(view) for view in TTA_VIEWS] if spec.tta else None}}


def _callbacks(member_dir: Path, label: str, spec: JobSpec, restored: TrainingState | None,
               progress: ProgressWriter | None = None, deadline: Deadline | None = None) -> list:
    # Order matters: the clock fills logs first; the plateau callback changes the rate before the commit
    # saves it; the epoch's line is printed before the commit (a kill between shows the epoch twice in the
    # log, never not at all); progress and the deadline follow the commit.
    history = list(restored.history) if restored else []
    live = [ProgressFile(progress, spec.epochs, history)] if progress else []
    plateau = ResumableReduceLROnPlateau(restored.plateau if restored else None, monitor=MONITOR, mode="max",
                                         **PLATEAU) if spec.schedule == "plateau" else None
    return [EpochClock(), *([plateau] if plateau else []), EpochPrinter(label, spec.epochs),
            EpochCommit(member_dir, spec, restored, plateau), *live, *([deadline] if deadline else [])]


def train_member(ws: Workspace, job: str, index: int) -> dict:
    """Train (or finish training) member `index` of `job` and write its artifacts; returns its metrics.

    Holds the member's lock throughout: no two processes ever write one member directory."""
    with PidLock(member_lock_path(ws, job, index), wait=MEMBER_LOCK_WAIT_S):
        return _train_member(ws, job, index)


def _train_member(ws: Workspace, job: str, index: int) -> dict:
    progress = ProgressWriter(progress_path(ws, job, index))
    record = load_record(ws, job)
    spec = record.spec
    seed = spec.member_seed(index)
    member_dir = ws.member_dir(job, index)
    member_dir.mkdir(parents=True, exist_ok=True)
    config = member_config(record, index)
    atomic.write_json(member_dir / "config.json", config)  # now, so an unfinished member says what it is
    arrays = job_arrays(ws, record)
    label = member_dir.name

    history = trained_history(member_dir, spec)  # None: epochs are left to train, or the kept weights are bad
    deadline = member_deadline(ws, record, spec, arrays)
    if history is None:
        model, state = resume_point(member_dir, spec, seed, len(arrays.x_train), progress.note)
        history = list(state.history) if state else []
        progress.write("starting", epoch=len(history), epochs=spec.epochs, batch=0, batches=None,
                       val_accuracy=history[-1].get(MONITOR) if history else None)
        if len(history) < spec.epochs and not _out_of_time(deadline, history):
            # else no epoch fits the time left
            if history:
                print(f"{label} resuming after epoch {len(history)}/{spec.epochs}", flush=True)
            callbacks = _callbacks(member_dir, label, spec, state, progress, deadline)
            fit_member_model(model, spec, arrays, seed, callbacks, initial_epoch=len(history))
            history = list(next(c for c in callbacks if isinstance(c, EpochCommit)).state.history)
    stopped_early = len(history) < spec.epochs
    if stopped_early:
        print(f"{label} stopped by the time limit after epoch {len(history)}/{spec.epochs}; "
              "a rerun with more time continues it", flush=True)
    progress.write("predicting", epoch=len(history), batch=0)
    metrics = write_member_outputs(member_dir, config, spec, index, arrays, history)
    if not stopped_early:  # everything the state could rebuild now exists and loads
        shutil.rmtree(member_dir / "backup", ignore_errors=True)
    progress.write("done", val_accuracy=metrics["val_accuracy"])
    print(f"{label} done: val_acc {metrics['val_accuracy']:.4f} (best epoch {metrics['best_epoch']}), "
          f"{metrics['fit_seconds']:.0f}s fit", flush=True)
    return metrics


def member_deadline(ws: Workspace, record: JobRecord, spec: JobSpec, arrays) -> Deadline | None:
    """The job's --time-limit as a callback, when this run has one."""
    deadline = record.last_run.deadline if record.last_run else None
    if deadline is None:
        return None
    measured = [measured_predict_speed(ws.member_dir(record.name, m.index)) for m in record.members]
    measured = [value for value in measured if isinstance(value, (int, float)) and value > 0]
    return Deadline(deadline, len(arrays.x_val), len(arrays.x_val) + len(arrays.x_test),
                    views=len(TTA_VIEWS) if spec.tta else 1,
                    snapshot_ends=tuple(cycle_end_epochs(spec.epochs, spec.snapshots)) if spec.snapshots > 1 else (),
                    predict_seconds_per_image=min(measured) / 1e6 if measured else None)


def _out_of_time(deadline: Deadline | None, history: list[dict]) -> bool:
    """A resumed member with epochs behind it starts no epoch that its deadline cannot hold."""
    return bool(deadline and history
                and deadline.clock() + deadline.seconds_needed(dict(history[-1]), len(history)) > deadline.deadline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ensemble.member",
                                     description="Train one member of a job (the runner starts this).")
    parser.add_argument("--home", help="workspace folder (default: ENSEMBLE_HOME or the current directory)")
    parser.add_argument("--job", required=True)
    parser.add_argument("--member", type=int, required=True)
    args = parser.parse_args(argv)
    ws = Workspace.resolve(args.home)
    try:
        train_member(ws, args.job, args.member)
    except LockHeld as held:
        print(f"member {args.member} of job {args.job!r} is being trained by pid {held.holder.get('pid', '?')} "
              f"on {held.holder.get('host', '?')} (lock {held.path}); not starting a second copy", flush=True)
        return 3
    except Exception as error:
        member_dir = ws.member_dir(args.job, args.member)
        if not (atomic.is_no_space(error) or atomic.low_on_space(member_dir)):
            raise
        no_space = error if isinstance(error, atomic.NoSpace) else atomic.NoSpace(member_dir)
        try:
            print(f"member {args.member}: {no_space}", flush=True)
        except OSError:  # the log is on the full disk too: the exit code says it
            pass
        return atomic.NO_SPACE_EXIT
    return 0

