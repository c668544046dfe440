"""A job travels between this machine and Kaggle sessions: staged as a folder for upload, found again in a
session's read-only inputs (as folders, or as the archives a dataset upload may turn them into), and imported
into a workspace.

The import is the one place a job copy enters a workspace (`ensemble kernel fetch` here, `ensemble kernel
restore` in a session). Every model goes through the one artifact check (job.outputs.survey_models), each
member folder lands by rename (never half copied), and a member is only ever replaced by a better one: a
finished member by nothing, a partial one by a finished one or one with more committed epochs.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..job.errors import JobError
from ..job.layout import JobLayout, MemberFolder, model_kind, ModelKind
from ..job.ledger import MemberState
from ..job.outputs import JobModels, job_output_shape, read_metrics, survey_models
from ..job.record import JobRecord, load_record, save_record
from ..job.spec import spec_differences
from ..run.runner import reconcile
from ..store.locks import LockHeld, PidLock
from ..store.workspace import Workspace, member_name
from ..store.session import folder_bytes
from .session import output_note

# What a job folder keeps that travels: the record, its split and plan, and what it wrote and sent
JOB_FILES = ("job.json", "split.npz", "plan.json", "blends.json", "submissions.json", "kernel.json", "pseudo-1.npz")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
UPLOADED_FOLDERS = ("jobs", "models")  # the archives an upload of a staged job may turn into; no others are opened


@dataclass(frozen=True)
class MemberProgress:
    finished: bool  # all its epochs trained (a member the time limit stopped early is not: it goes on)
    epoch: int      # epochs trained: its committed states', or its outputs' when it has them

    def better_than(self, other: "MemberProgress") -> bool:
        if other.finished:
            return False
        return self.finished or self.epoch > other.epoch


@dataclass
class ImportResult:
    job: str
    source: str
    imported: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # model -> why the local one stayed
    created: bool = False

    def summary(self) -> str:
        parts = [f"imported {', '.join(self.imported)}" if self.imported else "imported nothing"]
        if self.kept:
            parts.append("kept here: " + "; ".join(f"{name} ({why})" for name, why in self.kept.items()))
        return f"job {self.job} from {self.source}: " + "; ".join(parts)


def stage_job(ws: Workspace, job: str, out: Path, models: str = "all") -> Path:
    """Copy what a job needs elsewhere into out/jobs/<job> and out/models/<job>: models 'all' (finished and
    partial members, snapshots, baselines), 'finished' (what `ensemble predict` needs), or 'none'."""
    layout, record = JobLayout(ws, job), load_record(ws, job)
    if record is None:
        raise JobError(f"no job {job!r} in {ws.jobs_dir}")
    target_job = Path(out) / "jobs" / job
    target_job.mkdir(parents=True, exist_ok=True)
    for name in JOB_FILES:
        if (layout.dir / name).is_file():
            shutil.copy2(layout.dir / name, target_job / name)
    if models == "none" or not layout.models_dir.is_dir():
        return Path(out)
    survey = survey_models(ws, record)
    for folder in sorted(path for path in layout.models_dir.iterdir() if path.is_dir()):
        if models == "finished" and not survey.is_finished(_model_name(folder.name)):
            continue
        if models == "finished" and model_kind(folder.name) is ModelKind.BASELINE:
            continue
        shutil.copytree(folder, Path(out) / "models" / job / folder.name, ignore=_unfinished_writes)
    return Path(out)


def _model_name(folder_name: str) -> str:
    return folder_name.removeprefix("baseline-")


def _unfinished_writes(_directory, names):
    return [name for name in names if name.startswith((".saving-", ".incoming-")) or name.endswith(".tmp")]


def find_job_copies(folders: list[Path], job: str, scratch: Path) -> list[Path]:
    """Homes holding a copy of the job among these folders (a session's inputs): a folder with
    jobs/<job>/job.json at its top, or archives (jobs.tar, models.tar, ...) that unpack to one."""
    homes = []
    for folder in folders:
        if (folder / "jobs" / job / "job.json").is_file():
            homes.append(folder)
            continue
        archives = [path for path in sorted(folder.iterdir()) if path.is_file() and _stem(path) in UPLOADED_FOLDERS
                    and path.name.endswith(ARCHIVE_SUFFIXES)]
        if not archives:
            continue
        unpacked = Path(tempfile.mkdtemp(prefix=f"{folder.name}-", dir=scratch))
        for archive in archives:
            try:
                unpack(archive, _archive_target(unpacked, archive))
            except (OSError, tarfile.TarError, zipfile.BadZipFile) as error:
                raise JobError(f"{archive}: does not unpack ({type(error).__name__}: {error}); upload the job "
                               "again (`ensemble kernel train --job ...` does)") from None
        if (unpacked / "jobs" / job / "job.json").is_file():
            homes.append(unpacked)
    return homes


def _stem(archive: Path) -> str:
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem


def _archive_target(home: Path, archive: Path) -> Path:
    """jobs.tar holds what was the jobs/ folder (the upload packs each sub-folder), unless it starts with it."""
    stem = _stem(archive)
    names = _archive_names(archive)
    return home if any(name.split("/")[0] == stem for name in names) else home / stem


def _archive_names(archive: Path) -> list[str]:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            return bundle.namelist()
    with tarfile.open(archive) as bundle:
        return bundle.getnames()


def unpack(archive: Path, out: Path) -> None:
    """Unpack a tar or zip, refusing members that would land outside `out`."""
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    for name in _archive_names(archive):
        target = (root / name).resolve()
        if target != root and root not in target.parents:
            raise JobError(f"{archive}: member {name!r} would be written outside {out}; not unpacked")
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(out)
    else:
        with tarfile.open(archive) as bundle:
            bundle.extractall(out, filter="data")


def member_progress(folder: MemberFolder, survey: JobModels, name: str) -> MemberProgress:
    ref = next((model for model in survey.finished if model.name == name), None)
    epochs = folder.committed_epochs()
    trained = epochs[0] if epochs else 0
    if ref is not None:
        trained = max(trained, read_metrics(folder).epochs or 0)
    return MemberProgress(ref is not None and not ref.stopped_early, trained)


def import_job(ws: Workspace, source: Workspace, job: str, origin: str, data_dir: Path | None = None) -> ImportResult:
    """Bring a job copy (source: a downloaded output or an unpacked input) into the workspace: its record when
    there is none here (bound to `data_dir` when given: the data as this machine has it), then each model
    that is better than the one here. The job's lock is held throughout, so no run here sees half of it."""
    incoming = load_record(source, job)
    if incoming is None:
        raise JobError(f"{source.home}: holds no job {job!r} (no jobs/{job}/job.json)")
    lock = PidLock(JobLayout(ws, job).lock)
    try:
        lock.acquire()
    except LockHeld as held:
        raise JobError(f"job {job} is running here ({held}); bring the copy in once that run has ended") from None
    try:
        return _import_locked(ws, source, incoming, origin, data_dir)
    finally:
        lock.release()


def _import_locked(ws: Workspace, source: Workspace, incoming: JobRecord, origin: str,
                   data_dir: Path | None) -> ImportResult:
    job = incoming.name
    record = load_record(ws, job)
    result = ImportResult(job, origin, created=record is None)
    if record is None:
        record = _adopt_record(ws, source, incoming, data_dir)
    elif differences := spec_differences(record.spec, incoming.spec):
        raise JobError(f"the copy of job {job!r} from {origin} is another job ({'; '.join(differences)}); "
                       "nothing imported")
    elif record.pseudo is not None and incoming.pseudo is not None and record.pseudo != incoming.pseudo:
        raise JobError(f"the copy of job {job!r} from {origin} has another pseudo-label round than this one "
                       f"(threshold {incoming.pseudo.threshold:g}, {incoming.pseudo.rows} rows; here "
                       f"{record.pseudo.threshold:g}, {record.pseudo.rows}); nothing imported")
    elif problem := refit_mismatch(record, incoming):
        raise JobError(f"the copy of job {job!r} from {origin} {problem}; nothing imported")
    elif data_dir is not None:
        record.data_dir = str(Path(data_dir).resolve())
    # held to the split, not to the test file: weights are what travel, and a session may see another test
    # file (a code competition's hidden one); `ensemble train` predicts such members again
    shape = job_output_shape(ws, record).weights_only()
    here, there = survey_models(ws, record, shape), survey_models(source, incoming, shape)
    _import_models(ws, source, record, incoming, here, there, result)
    record = _merged_ledger(record, incoming, result.imported)
    if record.pseudo is None and incoming.pseudo is not None:  # the round the copy's members trained with
        pseudo_file = incoming.pseudo.path(source, job)
        if pseudo_file.is_file():
            shutil.copy2(pseudo_file, incoming.pseudo.path(ws, job))
        record.pseudo = incoming.pseudo
    record.refit = record.refit or incoming.refit  # the copy's twins are twins here too
    reconcile(ws, record, shape)  # the ledger agrees with the files: a copy made mid-run says "running"
    save_record(ws, record)
    return result


def refit_mismatch(record: JobRecord, incoming: JobRecord) -> str | None:
    """Why the copy's refit round does not fit this job's: another round, or one side's twins landing on the
    other's fold members (a round on one side only, with members at its twins' indexes on the other); None
    when they fit."""
    ours, theirs = record.refit, incoming.refit
    if ours is not None and theirs is not None and (ours.parents, ours.epochs) != (theirs.parents, theirs.epochs):
        return (f"has another refit round than this one (twins from member {theirs.first_member}, epochs "
                f"{list(theirs.epochs)}; here from {ours.first_member}, {list(ours.epochs)})")
    for has, other, where in ((record, incoming, "has fold members where this job has refit twins"),
                              (incoming, record, "has refit twins where this job has fold members")):
        if has.refit is not None and other.refit is None and len(other.members) > has.refit.first_member:
            return where + f" (from {member_name(has.refit.first_member)} on)"
    return None


def _adopt_record(ws: Workspace, source: Workspace, incoming: JobRecord, data_dir: Path | None) -> JobRecord:
    """The copy's record and job files as this workspace's, the ledger's running members pending again."""
    layout = JobLayout(ws, incoming.name)
    layout.dir.mkdir(parents=True, exist_ok=True)
    for name in JOB_FILES:
        if name != "job.json" and (JobLayout(source, incoming.name).dir / name).is_file():
            shutil.copy2(JobLayout(source, incoming.name).dir / name, layout.dir / name)
    record = replace(incoming, members=[replace(member) for member in incoming.members])
    if data_dir is not None:
        record.data_dir = str(Path(data_dir).resolve())
    for member in record.members:
        if member.state is MemberState.RUNNING:
            member.state, member.pid, member.note = MemberState.PENDING, None, "was running when the copy was made"
    return record


def _import_models(ws: Workspace, source: Workspace, record: JobRecord, incoming: JobRecord, here: JobModels,
                   there: JobModels, result: ImportResult) -> None:
    mine, theirs = JobLayout(ws, record.name), JobLayout(source, incoming.name)
    if not theirs.models_dir.is_dir():
        return
    for folder in sorted(path for path in theirs.models_dir.iterdir() if path.is_dir()):
        kind = model_kind(folder.name)
        if kind is ModelKind.SNAPSHOT:
            continue  # a snapshot travels with its member
        name = _model_name(folder.name)
        if kind is ModelKind.BASELINE:
            if there.is_finished(name) and not here.is_finished(name):
                _land(folder, mine.models_dir / folder.name)
                result.imported.append(folder.name)
            continue
        local = MemberFolder(mine.models_dir / folder.name)
        theirs_progress = member_progress(MemberFolder(folder), there, name)
        ours = member_progress(local, here, name)
        if theirs_progress.better_than(ours):
            _land(folder, local.path)
            for snapshot in MemberFolder(folder).snapshot_folders():
                _land(snapshot.path, mine.models_dir / snapshot.name)
            result.imported.append(folder.name)
        elif theirs_progress.finished or theirs_progress.epoch:
            result.kept[folder.name] = "finished here" if ours.finished else f"{ours.epoch} epochs here, " \
                                                                              f"{theirs_progress.epoch} in the copy"
        elif there.damaged.get(name):
            result.kept[folder.name] = f"the copy is damaged: {there.damaged[name]}"


def _land(source: Path, target: Path) -> None:
    """Copy a model folder beside its place, then swap it in by rename: the name never holds half a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".importing-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=_unfinished_writes)
    retired = target.parent / f".replaced-{target.name}"
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def _merged_ledger(record: JobRecord, incoming: JobRecord, imported: list[str]) -> JobRecord:
    """The ledger with the imported members' lines from the copy (the next run checks them against the disk)."""
    theirs = {member.name: member for member in incoming.members}
    for index, member in enumerate(record.members):
        if member.name in imported and member.name in theirs:
            line = replace(theirs[member.name], pid=None)
            if line.state is MemberState.RUNNING:
                line.state = MemberState.PENDING
            record.members[index] = line
    known = {member.name for member in record.members}
    record.members.extend(replace(member, pid=None) for member in incoming.members
                          if member.name not in known and member.name in imported)
    record.members.sort(key=lambda member: member.index)
    return record


def job_output_note(ws: Workspace, job: str) -> str:
    """What the job keeps in the session's output, and what it will keep when every member is done."""
    record = load_record(ws, job)
    layout = JobLayout(ws, job)
    kept = folder_bytes(layout.models_dir) + folder_bytes(layout.dir)
    done = len([m for m in survey_models(ws, record).finished if m.kind is ModelKind.MEMBER]) if record else 0
    return output_note(kept, done, len(record.members) if record else 0)
