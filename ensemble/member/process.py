"""One member of a job: train, keep the best epoch, save everything that rebuilds and scores it.

Runs as its own process (`python -m ensemble.member --job J --member I`), so the runner can place members
on devices and survive their crashes without this code knowing. Everything lands in
`models/<job>/member-XX/`; metrics.json is written last and marks the member done. Live progress (epoch,
batch, latest val accuracy, pid) goes to `jobs/<job>/progress/member-XX.json` for the runner to show.
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict, replace

from ..job.layout import JobLayout, MemberFolder
from ..job.outputs import Metrics, read_metrics
from ..job.plan import RunPlan, plan_arrays, read_plan
from ..job.planner import Costs
from ..job.spec import JobSpec
from ..nets.schedules import PLATEAU, cycle_end_epochs
from ..store import atomic
from ..store.locks import LockHeld, PidLock
from ..store.workspace import Workspace, member_name
from .calibrate import Probe, calibrated_length, measure_costs, member_epochs, recorded_final_steps
from .callbacks.clock import EpochClock
from .callbacks.commit import EpochCommit
from .callbacks.deadline import Deadline
from .callbacks.plateau import ResumableReduceLROnPlateau
from .callbacks.printer import EpochPrinter
from .callbacks.progress import PredictProgress, ProgressFile, ProgressWriter
from .callbacks.replan import Replan
from .checkpoints import TrainingState
from .model import MONITOR, fit_member_model, resize_schedule, steps_per_epoch
from .predict import member_views, write_member_outputs
from .resume import reset_member, resume_point, trained_history

# A member process killed with its runner may take a moment to go; a new one waits that long for its lock.
MEMBER_LOCK_WAIT_S = 15.0


def member_config(plan: RunPlan, index: int, epochs: int, final_steps: int | None = None) -> dict:
    """config.json: the job's spec, and this member's own length (under a time limit members differ; the last
    epoch of one fitted to the deadline may train `final_steps` steps of its order)."""
    spec = plan.spec
    partial = {"final_steps": final_steps} if final_steps else {}
    schedule = {"kind": spec.schedule, "learning_rate": spec.learning_rate, "cycles": spec.snapshots,
                "epochs": epochs, **partial}
    if spec.schedule == "plateau":
        schedule["reduce_lr_on_plateau"] = {"monitor": MONITOR, **PLATEAU}
    return {"job": plan.job, "member": index, "seed": spec.member_seed(index), "epochs": epochs, **partial,
            **({"fold": plan.member_fold(index)} if spec.folds else {}),
            **({"pseudo": plan.pseudo.to_dict()} if plan.pseudo and plan.pseudo.uses(index) else {}),
            **({"refit_of": member_name(plan.refit.parent(index)), "refit": plan.refit.to_dict()}
               if plan.is_twin(index) else {}),
            "data_dir": plan.data_dir, "spec": spec.to_dict(),
            "data": {"train": asdict(plan.train), "test": asdict(plan.test), "split_sha256": plan.split_sha256},
            "recipe": {"schedule": schedule, "loss": "sparse_categorical_crossentropy (probabilities)",
                       "tta_views": [list(view) for view in member_views(spec)] if spec.tta else None}}


def _callbacks(folder: MemberFolder, label: str, spec: JobSpec, restored: TrainingState | None,
               progress: ProgressWriter | None = None, deadline: Deadline | None = None,
               replan: Replan | None = None) -> list:
    # Order matters: the clock fills logs first; the plateau callback changes the rate before the commit
    # saves it; the epoch's line is printed before the commit (a kill between shows the epoch twice in the
    # log, never not at all); progress, the re-plan (which changes the schedule of epochs not yet committed)
    # and the deadline (which sees the re-planned length) follow the commit.
    history = list(restored.history) if restored else []
    live = [ProgressFile(progress, spec.epochs, history)] if progress else []
    plateau = ResumableReduceLROnPlateau(restored.plateau if restored else None, monitor=MONITOR, mode="max",
                                         **PLATEAU) if spec.schedule == "plateau" else None
    return [EpochClock(), *([plateau] if plateau else []), EpochPrinter(label, spec.epochs),
            EpochCommit(folder, spec, restored, plateau), *live, *([replan] if replan else []),
            *([deadline] if deadline else [])]


def train_member(ws: Workspace, job: str, index: int) -> Metrics:
    """Train (or finish training) member `index` of `job` from the run's plan and write its artifacts;
    returns its metrics. Holds the member's lock throughout: no two processes ever write one member folder."""
    with PidLock(JobLayout(ws, job).member_lock(index), wait=MEMBER_LOCK_WAIT_S):
        return _train_member(ws, read_plan(ws, job), index)


def _train_member(ws: Workspace, plan: RunPlan, index: int) -> Metrics:
    layout = JobLayout(ws, plan.job)
    progress = ProgressWriter(layout.progress(index))
    spec = plan.spec
    seed = spec.member_seed(index)
    folder = layout.member(index)
    label = folder.name
    folder.path.mkdir(parents=True, exist_ok=True)
    if trained_on := _trained_split(folder):
        if trained_on != plan.split_sha256:
            progress.note(f"{label} was trained on another validation split (sha256 {trained_on[:12]}; this "
                          f"run's has {plan.split_sha256[:12]}): training it again from epoch 0")
            reset_member(folder)
    arrays = plan_arrays(ws, plan, index)
    epochs, calibrated_final, probe = own_epochs(plan, index, folder, arrays, progress, label)
    probed = probe.costs if probe else None
    spec = replace(spec, epochs=epochs)
    final_steps = calibrated_final if probed else recorded_final_steps(folder, steps_per_epoch(spec, len(arrays.x_train)))
    twin = plan.is_twin(index)
    if twin:  # its length was chosen by the folds, and nothing held out could choose an epoch
        spec = replace(spec, keep="last")
    config = member_config(plan, index, spec.epochs, final_steps)
    atomic.write_json(folder.config, config)  # now, so an unfinished member says what it is

    history = trained_history(folder, spec)  # None: epochs are left to train, or the kept weights are bad
    deadline = member_deadline(plan, spec, arrays, probe)
    if history is None:
        model, state = resume_point(folder, spec, seed, len(arrays.x_train), progress.note, final_steps,
                                    built=probe.model if probe else None)
        history = list(state.history) if state else []
        progress.write("starting", epoch=len(history), epochs=spec.epochs, batch=0, batches=None,
                       val_accuracy=history[-1].get(MONITOR) if history else None)
        if len(history) < spec.epochs and not _out_of_time(deadline, history):
            # else no epoch fits the time left
            if history:
                print(f"{label} resuming after epoch {len(history)}/{spec.epochs}", flush=True)
            replan = member_replan(plan, index, folder, spec, model, arrays, probed, progress, label, deadline,
                                   final_steps) if not history and not twin else None
            callbacks = _callbacks(folder, label, spec, state, progress, deadline, replan)
            fit_member_model(model, spec, arrays, seed, callbacks, initial_epoch=len(history),
                             validate=not twin, final_steps=final_steps)
            history = list(next(c for c in callbacks if isinstance(c, EpochCommit)).state.history)
            if replan:
                spec = replace(spec, epochs=replan.epochs)
                config = member_config(plan, index, spec.epochs, replan.final_steps)
    stopped_early = len(history) < spec.epochs
    if stopped_early:
        print(f"{label} stopped by the time limit after epoch {len(history)}/{spec.epochs}; "
              "a rerun with more time continues it", flush=True)
    progress.write("predicting", epoch=len(history), batch=0)
    metrics = write_member_outputs(folder, config, spec, index, arrays, history, [PredictProgress(progress)])
    if not stopped_early:  # everything the state could rebuild now exists and loads
        shutil.rmtree(folder.backup, ignore_errors=True)
    progress.write("done", val_accuracy=None if twin else metrics.val_accuracy)  # a twin's: in-sample
    if twin:  # its validation rows are rows it trained on: no score to print
        print(f"{label} done: refit of {metrics.refit_of} on all {len(arrays.x_train)} rows, {metrics.epochs} epochs, "
              f"{metrics.fit_seconds:.0f}s fit", flush=True)
    else:
        print(f"{label} done: val_acc {metrics.val_accuracy:.4f} (best epoch {metrics.best_epoch}), "
              f"{metrics.fit_seconds:.0f}s fit", flush=True)
    return metrics


def _trained_split(folder: MemberFolder) -> str | None:
    """The split the member's kept weights were trained and scored on, as its metrics say (None: unknown)."""
    try:
        return read_metrics(folder).split_sha256
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def own_epochs(plan: RunPlan, index: int, folder: MemberFolder, arrays, progress: ProgressWriter, label: str
               ) -> tuple[int, int | None, Probe | None]:
    """The member's length: kept once started, else given by the plan, else (the job's first member under a
    time limit) calibrated from a probe of its own training; as (epochs, steps of a partial last epoch the
    calibration gave it, else None, the probe, else None)."""
    epochs = member_epochs(plan, index, folder)
    if epochs is not None:
        return epochs, None, None
    probe = measure_costs(plan.spec, arrays, plan.spec.member_seed(index))
    costs = probe.costs
    epochs, final_steps = calibrated_length(plan, plan.spec, probe, len(arrays.x_train))
    per_epoch = steps_per_epoch(plan.spec, len(arrays.x_train))
    progress.write("starting", epochs=epochs, costs=costs.to_dict(),
                   final_share=final_steps / per_epoch if final_steps else None)
    last = f", the last {final_steps} of its {per_epoch} steps" if final_steps else ""
    print(f"{label} calibrated: start-up {costs.startup_s:.1f} s, {costs.epoch_s:.1f} s an epoch, predictions "
          f"{costs.predict_s:.1f} s; trains {epochs} epoch{'s' if epochs != 1 else ''}{last} to fit the time limit",
          flush=True)
    return epochs, final_steps, probe


def member_replan(plan: RunPlan, index: int, folder: MemberFolder, spec: JobSpec, model, arrays,
                  probed: Costs | None, progress: ProgressWriter, label: str, deadline: Deadline | None,
                  final_steps: int | None = None) -> Replan | None:
    """The callback that sizes a member again from its own epochs, for one that sized itself from a probe (the
    costs it `probed`) and for one the runner gave its length (from the job's costs, last on its slot or not),
    where its length is the planner's to change: no snapshot cycles to keep whole, no time shared among every
    fold, and not the legacy generator (Keras' `fit` owns that loop's length)."""
    rules = plan.budget
    if deadline is None or rules is None or rules.every or spec.snapshots > 1 or spec.augment == "legacy-idg":
        return None
    if probed is not None:
        costs, last = probed, None
    elif plan.costs is not None and index in plan.member_epochs:
        # predictions as the deadline keeps them back (with its margin and the model's load), not as measured:
        # else the deadline would stop the member before the partial last epoch fitted to it
        costs = replace(plan.costs, predict_s=max(plan.costs.predict_s, deadline.measured_predictions_s() or 0.0))
        last = index in plan.last_members
    else:
        return None

    def resize(epochs: int, final_steps: int | None, measured: Costs) -> None:
        resize_schedule(model, spec, len(arrays.x_train), epochs, final_steps)
        # a resume trains the new length
        atomic.write_json(folder.config, member_config(plan, index, epochs, final_steps))
        per_epoch = steps_per_epoch(spec, len(arrays.x_train))
        progress.write("training", epochs=epochs, final_share=final_steps / per_epoch if final_steps else None,
                       costs=measured.to_dict())
        last = f", the last {final_steps} of its {per_epoch} steps" if final_steps else ""
        print(f"{label} re-planned from its own epochs ({measured.epoch_s:.1f} s each): trains {epochs} epochs"
              f"{last}", flush=True)

    return Replan(plan.deadline, costs, rules, plan.spec.epochs, spec.epochs, resize, last=last,
                  final_steps=final_steps)


def member_deadline(plan: RunPlan, spec: JobSpec, arrays, probe: Probe | None = None) -> Deadline | None:
    """The run's --time-limit as a callback, when the plan has one. It keeps back for predicting at the speed the
    job's finished members measured, else the probe's: the member's first validation pass also traces, and at
    twice the real speed it stopped a short budget's member an epoch early (14.6 s kept back for 5 s)."""
    if plan.deadline is None:
        return None
    speed = plan.predict_seconds_per_image or (probe.predict_row_s if probe and probe.predict_row_s else None)
    return Deadline(plan.deadline, len(arrays.x_val), len(arrays.x_val) + len(arrays.x_test),
                    views=len(member_views(spec)),
                    snapshot_ends=tuple(cycle_end_epochs(spec.epochs, spec.snapshots)) if spec.snapshots > 1 else (),
                    predict_seconds_per_image=speed)


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
        member_dir = JobLayout(ws, args.job).member(args.member).path
        if not (atomic.is_no_space(error) or atomic.low_on_space(member_dir)):
            raise
        no_space = error if isinstance(error, atomic.NoSpace) else atomic.NoSpace(member_dir)
        try:
            print(f"member {args.member}: {no_space}", flush=True)
        except OSError:  # the log is on the full disk too: the exit code says it
            pass
        return atomic.NO_SPACE_EXIT
    return 0

