"""One member of a job: train, keep the best epoch, save everything that rebuilds and scores it.

Runs as its own process (`python -m ensemble.train --job J --member I`), so the runner can place members
on devices and survive their crashes without this code knowing. Everything lands in
`models/<job>/member-XX/`; metrics.json is written last and marks the member done. Live progress (epoch,
batch, latest val accuracy, pid) goes to `jobs/<job>/progress/member-XX.json` for the runner to show.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from . import atomic
from .architectures import build_model, compile_model
from .augment import TTA_VIEWS, legacy_idg_flow, tta_view
from .checkpoints import (PlateauState, StateError, TrainingState, clear_incomplete, commit_state, committed_epochs,
                          history_csv, history_row, load_weights, prune_states, restore_newest, set_aside, state_dir,
                          states_to_keep)
from .jobs import JobRecord, JobSpec, job_arrays, load_record, member_lock_path, progress_path, readable_history
from .locks import LockHeld, PidLock
from .metrics import accuracy, log_loss
from .outputs import (ModelKind, OutputShape, has_outputs, keras_file_problem, output_problem, read_metrics,
                      save_model_outputs, snapshot_name)
from .schedules import PLATEAU, Schedule, cycle_end_epochs, optimizer_rate
from .workspace import Workspace

PREDICT_BATCH = 1024
MONITOR = "val_accuracy"
PROGRESS_EVERY_S = 1.0
# A member process killed with its runner may take a moment to go; a new one waits that long for its lock.
MEMBER_LOCK_WAIT_S = 15.0
MODEL_LOAD_S = 2.0  # loading a saved model before predicting with it, about, on 2 CPU cores
# Predicting measured 0.55x (batch 1024, quiet machine) to 1.9x (another process on the cores) of what the
# validation pass inside fit suggests: the time limit plans for some slowdown rather than overshoot.
PREDICT_MARGIN = 1.25


def current_learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class EpochClock(keras.callbacks.Callback):
    """Adds epoch_seconds, the validation pass's seconds and the learning rate the epoch started with to
    the logs, so history.csv carries the cost of each epoch and the schedule as it ran."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._rate = current_learning_rate(self.model)
        self._validation_started = None

    def on_test_begin(self, logs=None):
        self._validation_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            now = time.perf_counter()
            logs["epoch_seconds"] = now - self._started
            if self._validation_started is not None:
                logs["validation_seconds"] = now - self._validation_started
            logs["learning_rate"] = self._rate


def snapshot_path(folder: Path, cycle: int) -> Path:
    return folder / f"cycle-{cycle}.keras"


class Deadline(keras.callbacks.Callback):
    """Ends training at an epoch end when another epoch and the member's predictions would not finish
    before the job's --time-limit deadline; the member then keeps what it has and can be resumed.

    Estimates use the fastest epoch so far (the first one also traces the graph) and, for predicting,
    what finished members of the job measured, else the fastest validation pass of this one."""

    def __init__(self, deadline: float, n_val: int, n_outputs: int, views: int, snapshot_ends: tuple[int, ...] = (),
                 predict_seconds_per_image: float | None = None, clock=time.time):
        super().__init__()
        self.deadline, self.n_val, self.n_outputs, self.views = deadline, n_val, n_outputs, views
        self.snapshot_ends = snapshot_ends  # 1-based epochs after which a snapshot model is saved
        self.predict_seconds_per_image = predict_seconds_per_image
        self.clock = clock
        self.epoch_seconds: list[float] = []
        self.validation_seconds: list[float] = []
        self.stopped_at: int | None = None

    def models_after(self, epochs: int) -> int:
        """The member's kept weights and the snapshots it has after `epochs` epochs: what it must predict with."""
        return 1 + sum(end <= epochs for end in self.snapshot_ends)

    def seconds_needed(self, logs: dict, epochs_done: int) -> float:
        """Another epoch, then loading and predicting with every model the member will then have."""
        self.epoch_seconds.append(logs.get("epoch_seconds", 0.0))
        if "validation_seconds" in logs:
            self.validation_seconds.append(logs["validation_seconds"])
        per_image = self.predict_seconds_per_image
        if per_image is None:
            per_image = min(self.validation_seconds, default=0.0) / max(self.n_val, 1) * self.views
        models = self.models_after(epochs_done + 1)
        return min(self.epoch_seconds) + models * (self.n_outputs * per_image * PREDICT_MARGIN + MODEL_LOAD_S)

    def on_epoch_begin(self, epoch, logs=None):
        self._began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # the deadline runs after the epoch's commit and publication: its whole cost is what the next one needs
        whole = time.perf_counter() - self._began
        logs = {**(logs or {}), "epoch_seconds": max(whole, (logs or {}).get("epoch_seconds", 0.0))}
        if self.clock() + self.seconds_needed(logs, epoch + 1) > self.deadline:
            self.stopped_at = epoch + 1
            self.model.stop_training = True


class EpochPrinter(keras.callbacks.Callback):
    """One flushed line per epoch: the runner relays these, and they make the member's log readable."""

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs = label, epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(f"{self.label} epoch {epoch + 1}/{self.epochs}  loss {logs.get('loss', math.nan):.4f}  "
              f"acc {logs.get('accuracy', math.nan):.4f}  val_loss {logs.get('val_loss', math.nan):.4f}  "
              f"val_acc {logs.get(MONITOR, math.nan):.4f}  lr {logs.get('learning_rate', math.nan):.1e}  "
              f"{logs.get('epoch_seconds', math.nan):.1f}s", flush=True)


class ProgressWriter:
    """One member's progress file: who runs it (pid, host) and how far it is."""

    def __init__(self, path: Path):
        self.path = path
        self.identity = {"pid": os.getpid(), "host": platform.node(),
                         "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                         "ray_node_id": os.environ.get("ENSEMBLE_RAY_NODE_ID")}  # executors.RAY_NODE_ENV
        self.state: dict = {}

    def write(self, phase: str, **fields) -> None:
        self.state.update(fields, phase=phase)
        atomic.write_json(self.path, {**self.identity, **self.state, "updated": time.time()})

    def note(self, message: str) -> None:
        """Something the user should know (a damaged file set aside, a restart): in the member's log, and in
        its progress file for the runner to show."""
        print(f"note: {message}", flush=True)
        self.state["notes"] = self.state.get("notes", []) + [message]
        self.write(self.state.get("phase", "starting"))


class ProgressFile(keras.callbacks.Callback):
    """Keeps jobs/<job>/progress/member-XX.json current: the runner's live view reads it (so does Ray's
    driver, on another machine), and `ensemble status` shows it."""

    def __init__(self, reporter: ProgressWriter, epochs: int, history: list[dict]):
        super().__init__()
        self.reporter, self.epochs = reporter, epochs
        self.finished = len(history)
        self.val_accuracy = history[-1][MONITOR] if history else None
        self.epoch_seconds = history[-1].get("epoch_seconds") if history else None
        self._written = 0.0

    def on_train_begin(self, logs=None):
        self.batches = self.params.get("steps")

    def on_epoch_begin(self, epoch, logs=None):
        self._write(epoch, batch=0)

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._written >= PROGRESS_EVERY_S:
            self._write(self.finished, batch=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.finished = epoch + 1
        self.val_accuracy = (logs or {}).get(MONITOR, self.val_accuracy)
        self.epoch_seconds = (logs or {}).get("epoch_seconds")
        self._write(self.finished, batch=0)

    def _write(self, finished: int, batch: int) -> None:
        self.finished = finished
        self._written = time.monotonic()
        self.reporter.write("training", epoch=finished, epochs=self.epochs, batch=batch, batches=self.batches,
                            val_accuracy=self.val_accuracy, epoch_seconds=self.epoch_seconds)


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters carry across a resume (the stock one restarts them at train begin).

    The learning rate itself comes back with the optimizer's weights; the best value, the epochs waited and
    the cooldown come back from the restored training state, exactly as they stood after its epoch.
    """

    def __init__(self, restored: PlateauState | None = None, **kwargs):
        super().__init__(**kwargs)
        self._restored = restored

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._restored is not None:
            self.best, self.wait, self.cooldown_counter = (self._restored.best, self._restored.wait,
                                                           self._restored.cooldown)

    def counters(self) -> PlateauState:
        best = None if self.best is None else float(self.best)
        return PlateauState(best, int(self.wait), int(self.cooldown_counter))


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

    def __init__(self, member_dir: Path, spec: JobSpec, restored: TrainingState | None,
                 plateau: ResumableReduceLROnPlateau | None = None):
        super().__init__()
        self.member_dir, self.backup = member_dir, member_dir / "backup"
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
                              self.plateau.counters() if self.plateau else None)
        commit_state(self.model, self.backup, state, after_weights=lambda: self.after_step("weights", epoch))
        self.state = state
        self.after_step("state", epoch)
        prune_states(self.backup, states_to_keep(state, previous.epoch))
        if improved:
            save_model_file(self.model, self.member_dir / "best.keras")
        self.after_step("best", epoch)
        if epoch + 1 in self.snapshot_ends:
            cycle = self.snapshot_ends.index(epoch + 1) + 1
            save_model_file(self.model, snapshot_path(self.member_dir / "snapshots", cycle))
        self.after_step("snapshot", epoch)
        atomic.write_text(self.member_dir / "history.csv", history_csv(state.history))
        self.after_step("history", epoch)


def member_config(record: JobRecord, index: int) -> dict:
    spec = record.spec
    schedule = {"kind": spec.schedule, "learning_rate": spec.learning_rate, "cycles": spec.snapshots}
    if spec.schedule == "plateau":
        schedule["reduce_lr_on_plateau"] = {"monitor": MONITOR, **PLATEAU}
    return {"job": record.name, "member": index, "seed": spec.member_seed(index),
            "data_dir": record.data_dir, "spec": spec.to_dict(),
            "recipe": {"schedule": schedule, "loss": "sparse_categorical_crossentropy (probabilities)",
                       "tta_views": [list(view) for view in TTA_VIEWS] if spec.tta else None}}


def runtime_description() -> dict:
    backend = keras.backend.backend()
    backend_package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend)
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    try:
        versions[backend_package] = importlib.metadata.version(backend_package)
    except importlib.metadata.PackageNotFoundError:
        pass
    devices = keras.distribution.list_devices() or []
    accelerators = [device for device in devices if not device.lower().startswith("cpu")]
    return {"backend": backend, "device": accelerators[0] if accelerators else "cpu",
            "visible_devices": devices, "host": platform.node(), "versions": versions}


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


def predict_probabilities(model: keras.Model, images: np.ndarray, tta: bool = False
                          ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Softmax on images, plain and (with tta) averaged over TTA_VIEWS, and the seconds it took."""
    started = time.perf_counter()
    plain = np.asarray(model.predict(images.astype("float32"), batch_size=PREDICT_BATCH, verbose=0), np.float32)
    augmented = None
    if tta:
        views = [plain] + [np.asarray(model.predict(tta_view(images, view), batch_size=PREDICT_BATCH, verbose=0))
                           for view in TTA_VIEWS[1:]]
        augmented = np.mean(views, axis=0, dtype=np.float64).astype(np.float32)
    return plain, augmented, time.perf_counter() - started


def steps_per_epoch(spec: JobSpec, n_train: int) -> int:
    return math.ceil(n_train / spec.batch_size)


def member_schedule(spec: JobSpec, n_train: int) -> Schedule:
    return Schedule(spec.schedule, spec.learning_rate, spec.epochs, steps_per_epoch(spec, n_train), spec.snapshots)


def build_member_model(spec: JobSpec, seed: int, n_train: int):
    """A member's compiled model: seeded, under the job's precision policy (set before any layer exists)."""
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(spec.precision)
    model = build_model(spec.model, len(spec.classes), spec.augmentation, seed)
    return compile_model(model, spec.optimizer, optimizer_rate(member_schedule(spec, n_train)))


def fit_member_model(model, spec: JobSpec, arrays, seed: int, callbacks: list, initial_epoch: int = 0):
    """Train on the whole arrays at once (augmentation in the graph); legacy-idg feeds the old generator."""
    if spec.augment == "legacy-idg":
        return model.fit(legacy_idg_flow(arrays.x_train, arrays.y_train, spec.batch_size, seed, spec.augmentation),
                         epochs=spec.epochs, initial_epoch=initial_epoch, validation_data=(arrays.x_val, arrays.y_val),
                         callbacks=callbacks, verbose=0)
    return model.fit(arrays.x_train.astype("float32"), arrays.y_train, batch_size=spec.batch_size,
                     epochs=spec.epochs, initial_epoch=initial_epoch,
                     validation_data=(arrays.x_val.astype("float32"), arrays.y_val),
                     shuffle=True, callbacks=callbacks, verbose=0)


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


def measured_predict_speed(member_dir: Path) -> float | None:
    """What a finished member measured predicting (ms per 1000 images); None when it has no readable metrics."""
    try:
        metrics = read_metrics(member_dir)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return metrics.get("predict_ms_per_1k") if isinstance(metrics, dict) else None


def _out_of_time(deadline: Deadline | None, history: list[dict]) -> bool:
    """A resumed member with epochs behind it starts no epoch that its deadline cannot hold."""
    return bool(deadline and history
                and deadline.clock() + deadline.seconds_needed(dict(history[-1]), len(history)) > deadline.deadline)


def write_member_outputs(member_dir: Path, config: dict, spec: JobSpec, index: int, arrays,
                         history: list[dict]) -> dict:
    """Predict validation and test with the kept weights (and each finished snapshot) and save them."""
    runtime = runtime_description()
    common = {"seed": spec.member_seed(index), "model": spec.model, "epochs_planned": spec.epochs,
              "n_train": len(arrays.x_train), "n_val": len(arrays.x_val), "n_test": len(arrays.x_test),
              "precision": spec.precision, "tta": spec.tta, **runtime}
    shape = OutputShape(len(arrays.x_val), len(arrays.x_test), len(spec.classes))
    for cycle, end_epoch in enumerate(cycle_end_epochs(spec.epochs, spec.snapshots) if spec.snapshots > 1 else [], 1):
        path = snapshot_path(member_dir / "snapshots", cycle)
        target = member_dir.parent / snapshot_name(index, cycle)
        if end_epoch > len(history) or output_problem(target, shape, ModelKind.SNAPSHOT) is None:
            continue
        if problem := keras_file_problem(path):
            if target.exists():  # outputs that fail their checks, and no weights to make them again
                shutil.rmtree(target)
                print(f"note: {target.name} dropped: its outputs are damaged and {problem}", flush=True)
            continue
        target.mkdir(parents=True, exist_ok=True)
        snapshot_metrics = _predict_and_save(path, target, {**config, "snapshot": cycle}, spec, arrays,
                                             history[:end_epoch])
        print(f"{target.name} (cycle {cycle}, epoch {end_epoch}): val_acc {snapshot_metrics['val_accuracy']:.4f}",
              flush=True)
    return _predict_and_save(member_dir / "best.keras", member_dir, config, spec, arrays, history,
                             {"member": index, "kind": "member", **common})


def _predict_and_save(model_path: Path, model_dir: Path, config: dict, spec: JobSpec, arrays,
                      history: list[dict], metrics_base: dict | None = None) -> dict:
    """metrics_base None: a snapshot, whose weights are those of its last epoch in `history`."""
    model = keras.saving.load_model(model_path, compile=False)
    val_probs, val_tta, _ = predict_probabilities(model, arrays.x_val, spec.tta)
    test_probs, test_tta, test_seconds = predict_probabilities(model, arrays.x_test, spec.tta)
    fit_seconds = sum(row.get("epoch_seconds", 0.0) for row in history)
    snapshot = metrics_base is None
    metrics = dict(metrics_base or {"member": config["member"], "kind": "snapshot", "cycle": config["snapshot"],
                                    "seed": config["seed"], "model": spec.model, "precision": spec.precision,
                                    "tta": spec.tta})
    weights_epoch = len(history) if snapshot or spec.keep == "last" \
        else int(max(history, key=lambda row: row[MONITOR])["epoch"]) + 1
    metrics.update({
        "val_accuracy": accuracy(val_probs, arrays.y_val), "val_logloss": log_loss(val_probs, arrays.y_val),
        "best_epoch": weights_epoch, "epochs": len(history),
        "stopped_early": not snapshot and len(history) < spec.epochs,
        "fit_seconds": round(fit_seconds, 3),
        "images_per_second": round(len(arrays.x_train) * len(history) / fit_seconds, 1) if fit_seconds else None,
        "predict_ms_per_1k": round(test_seconds / max(len(arrays.x_test), 1) * 1e6, 3),
        "params": int(model.count_params()),
    })
    if spec.tta:
        metrics.update(val_accuracy_tta=accuracy(val_tta, arrays.y_val), val_logloss_tta=log_loss(val_tta, arrays.y_val))
    save_model_outputs(model_dir, config, val_probs, test_probs, metrics, (val_tta, test_tta) if spec.tta else None)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ensemble.train",
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


if __name__ == "__main__":
    sys.exit(main())
