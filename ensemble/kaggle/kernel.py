"""Jobs on Kaggle's GPUs, driven from here: upload what a session needs as private datasets, push a notebook,
follow its session, fetch its output back into the job; and a code competition's submission made by a
notebook. Every call to Kaggle goes through `run` (competition.run_cli): tests give it a stand-in CLI.

Nothing is recorded for a step that fails: a refused push records no version, a session that errs imports
nothing (its partial output can still be fetched, and the next push continues from it).
"""
from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..data.layouts import LayoutError, data_files
from ..data.tables import file_sha256
from ..job.layout import JobLayout
from ..job.outputs import ensemble_models, survey_models
from ..job.record import JobRecord, load_record, now, require_record
from ..job.records import (BlendRecord, KernelVersion, SubmissionRecord, add_submission_record,
                           read_kernel_versions, record_kernel_version)
from ..run.budget import format_duration
from ..run.runner import prepare_job
from ..store import atomic
from ..store.workspace import Workspace
from . import service
from .competition import KaggleError, find_cli, run_cli, unique_message, wait_for_score
from .notebook import METADATA_FILE, NOTEBOOK_FILE, KernelMetadata, make_notebook, predict_cells, train_cells
from ..store.session import SessionError, detect_session, input_data_folders
from .submission import check_submission_file
from .wheels import build_wheels
from .transfer import ImportResult, find_job_copies, import_job, stage_job

Run = Callable[[list[str]], str]
# The compute capability of each GPU an accelerator gives a session (FIELD.md): what precision auto sees there
SESSION_GPUS = {"NvidiaTeslaT4": (7.5, 7.5), "NvidiaTeslaP100": (6.0,), "NvidiaL4": (8.9,)}
WHEELS_SLUG = "ensemble-wheels"
POLL_S = 30.0
FOLLOW_TIMEOUT_S = 13 * 3600.0  # a session lasts about 12 hours
LOG_TAIL = 8


@dataclass(frozen=True)
class Dataset:
    ref: str        # owner/slug
    changed: bool   # a new version was uploaded (else the one there holds the same content)
    version_note: str


def folder_content_sha256(folder: Path) -> str:
    """Of the files' relative paths and bytes (not their times): what decides whether to upload again."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != "dataset-metadata.json"):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def _datasets_record(ws: Workspace) -> Path:
    return ws.cache_dir / "kaggle" / "datasets.json"


def upload_dataset(ws: Workspace, user: str, slug: str, folder: Path, run: Run) -> Dataset:
    """A private dataset owner/slug holding `folder`, versioned by its content hash: uploaded when new or
    changed, reused while unchanged."""
    ref = f"{user}/{slug}"
    content = folder_content_sha256(folder)
    uploaded = atomic.read_json(_datasets_record(ws)) if _datasets_record(ws).is_file() else {}
    note = f"ensemble {content[:12]}"
    if uploaded.get(ref, {}).get("content_sha256") == content:
        return Dataset(ref, False, note)
    atomic.write_json(folder / "dataset-metadata.json", {"title": service.title_for(slug), "id": ref,
                                                         "licenses": [{"name": "CC0-1.0"}]})
    if ref in uploaded:
        service.parse_dataset(run(service.dataset_args(folder, create=False, message=note)))
    else:
        try:
            service.parse_dataset(run(service.dataset_args(folder, create=True, message=note)))
        except KaggleError as error:
            if "already in use" not in str(error):
                raise
            # made from another machine (or this record was lost): a new version of it
            service.parse_dataset(run(service.dataset_args(folder, create=False, message=note)))
    uploaded[ref] = {"content_sha256": content, "uploaded": now()}
    atomic.write_json(_datasets_record(ws), uploaded)
    return Dataset(ref, True, note)


def upload_wheels(ws: Workspace, user: str, run: Run, out: Path | None = None) -> Dataset:
    """The offline install set as the private dataset owner/ensemble-wheels (see wheels.py)."""
    folder = out or ws.cache_dir / "kaggle" / WHEELS_SLUG
    build_wheels(folder)
    return upload_dataset(ws, user, WHEELS_SLUG, folder, run)


def upload_job(ws: Workspace, user: str, job: str, models: str, run: Run, prefix: str = "ensemble-job") -> Dataset:
    """The job's folder (and its models: 'all' or 'finished') as the private dataset owner/<prefix>-<job>: a
    training session's copy, or (ensemble-models) what a code competition's notebook predicts with."""
    slug = service.slug_for(prefix, job)
    folder = ws.cache_dir / "kaggle" / slug
    shutil.rmtree(folder, ignore_errors=True)
    stage_job(ws, job, folder, models=models)
    return upload_dataset(ws, user, slug, folder, run)


def data_source(record: JobRecord) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(dataset sources, competition sources) that give a session the job's data."""
    fmt = record.spec.data_layout
    if fmt.competition:
        return (), (fmt.competition,)
    if fmt.kaggle_dataset:
        return (fmt.kaggle_dataset,), ()
    raise KaggleError(f"the {fmt.name} layout names no Kaggle competition or dataset to attach")


def push_notebook(ws: Workspace, job: str, metadata: KernelMetadata, cells, purpose: str, run: Run,
                  timeout_s: int | None = None) -> KernelVersion:
    folder = ws.cache_dir / "kaggle" / "kernels" / metadata.kernel.split("/")[1]
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / NOTEBOOK_FILE, make_notebook(cells))
    atomic.write_json(folder / METADATA_FILE, metadata.to_dict())
    version, refused = service.parse_push(run(service.push_args(folder, metadata.accelerator, timeout_s)))
    sources = (*metadata.datasets, *metadata.competitions, *metadata.kernels)
    entry = KernelVersion(metadata.kernel, version, purpose, now(), metadata.accelerator, sources, "queued",
                          f"pushed without {'; '.join(refused)}" if refused else None)
    record_kernel_version(ws, job, entry)  # it runs on Kaggle all the same: status and fetch must find it
    if refused:
        raise KaggleError(f"Kaggle pushed {metadata.kernel} version {version} without some of its inputs "
                          f"({'; '.join(refused)}), so it cannot run as asked; check that they exist and are yours, "
                          "then push again")
    return entry


def latest_version(ws: Workspace, job: str, purpose: str = "train") -> KernelVersion:
    versions = [row for row in read_kernel_versions(ws, job) if row.purpose == purpose]
    if not versions:
        raise KaggleError(f"job {job} has no Kaggle notebook yet: `ensemble kernel train --job {job}` pushes one")
    return versions[-1]


def train_on_kaggle(ws: Workspace, request, accelerator: str | None, run: Run = run_cli,
                    echo=print) -> tuple[str, KernelVersion]:
    """Record the job here (spec, split, plan: the session trains exactly this job), upload the wheels and the
    job, and push a notebook that continues it, attaching the last version's output when there is one."""
    find_cli()
    user = service.credentials_user()
    accelerator = None if accelerator in (None, "none") else accelerator
    # precision auto resolves for the session's GPUs, not this machine's (frozen in the job's spec)
    record = prepare_job(ws, request, list(SESSION_GPUS.get(accelerator, ()))).record
    datasets, competitions = data_source(record)
    wheels = upload_wheels(ws, user, run)
    echo(f"wheels   {wheels.ref} ({'uploaded ' + wheels.version_note if wheels.changed else 'unchanged, reused'})")
    job_data = upload_job(ws, user, record.name, "all", run)
    echo(f"job      {job_data.ref} ({'uploaded ' + job_data.version_note if job_data.changed else 'unchanged'})")
    slug = service.slug_for("ensemble", record.name)
    kernel = f"{user}/{slug}"
    earlier = [row for row in read_kernel_versions(ws, record.name) if row.kernel == kernel]
    metadata = KernelMetadata(kernel, service.title_for(slug), accelerator, (wheels.ref, job_data.ref, *datasets),
                              competitions, (earlier[-1].ref,) if earlier else ())
    entry = push_notebook(ws, record.name, metadata, train_cells(record.name, run_options(request)), "train", run)
    echo(f"pushed   {kernel} version {entry.version} ({accelerator or 'CPU'}; internet off"
         + (f"; continues from version {earlier[-1].version}'s output" if earlier else "") + ")")
    return record.name, entry


def run_options(request) -> tuple[str, ...]:
    """The run options of `ensemble kernel train` that the session's `ensemble train` gets (the spec is the
    job's, frozen in job.json)."""
    words = []
    for flag, value in (("--gpus", request.gpus), ("--per-gpu", request.per_gpu), ("--workers", request.workers),
                        ("--n", request.n), ("--retries", request.retries)):
        if value is not None:
            words += [flag, str(value)]
    if request.time_limit:
        words += ["--time-limit", format_duration(request.time_limit)]
    if request.stall_timeout:
        words += ["--stall-timeout", f"{int(request.stall_timeout)}s"]
    if request.pseudo_label is not None:
        words += ["--pseudo-label", f"{request.pseudo_label:g}"]
    if request.refit_full:  # the session's run makes the round once its fold members finish
        words += ["--refit-full"]
    return tuple(words)


def session_status(kernel: str, run: Run) -> service.KernelStatus:
    return service.parse_status(run(service.status_args(kernel)))


def session_log(kernel: str, run: Run) -> list[str]:
    try:
        return service.log_lines(run(service.logs_args(kernel)))
    except KaggleError:
        return []  # no log before the session starts


def follow(ws: Workspace, job: str, entry: KernelVersion, run: Run = run_cli, echo=print, poll_s: float = POLL_S,
           timeout_s: float = FOLLOW_TIMEOUT_S, clock=time.monotonic, sleep=time.sleep) -> KernelVersion:
    """Poll the session until it ends, printing a progress line and the log's new lines; its last status is
    recorded. Ctrl-C (KeyboardInterrupt) stops the following, never the session."""
    started, shown, last = clock(), 0, None
    while True:
        status = session_status(entry.kernel, run)
        lines = session_log(entry.kernel, run)
        for line in lines[shown:]:
            echo(f"  | {line}")
        shown = max(shown, len(lines))
        if status.status is not last or status.status.ended:
            echo(f"[{time.strftime('%H:%M:%S')}] {entry.kernel} version {entry.version}: {status.status.value} "
                 f"({int(clock() - started)} s)")
            last = status.status
        if status.status.ended:
            entry = replace(entry, status=status.status.value, failure=status.failure)
            record_kernel_version(ws, job, entry)
            return entry
        if clock() - started + poll_s > timeout_s:
            raise KaggleError(f"{entry.kernel} version {entry.version} is still {status.status.value} after "
                              f"{int(timeout_s)} s; the session goes on: `ensemble kernel status --job {job}`")
        sleep(poll_s)


def failed_session(entry: KernelVersion, log: list[str], job: str) -> KaggleError:
    tail = " | ".join(log[-3:]) or "no log lines"
    return KaggleError(f"the Kaggle session {entry.kernel} version {entry.version} ended in {entry.status}: "
                       f"{entry.failure or 'no failure message'} (log: {tail}). Its partial output can still be "
                       f"fetched (`ensemble kernel fetch --job {job}`) and continued (`ensemble kernel train --job "
                       f"{job}`)")


def kernel_status(ws: Workspace, job: str | None, run: Run = run_cli) -> tuple[KernelVersion, service.KernelStatus,
                                                                               list[str]]:
    record = require_record(ws, job)
    entry = latest_version(ws, record.name)
    status = session_status(entry.kernel, run)
    entry = replace(entry, status=status.status.value, failure=status.failure)
    record_kernel_version(ws, record.name, entry)
    return entry, status, session_log(entry.kernel, run)[-LOG_TAIL:]


def download_output(ws: Workspace, entry: KernelVersion, run: Run) -> Path:
    out = ws.cache_dir / "kaggle" / "output" / f"{entry.kernel.split('/')[1]}-v{entry.version}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run(service.output_args(entry.kernel, out))
    return out


def fetch_job(ws: Workspace, job: str | None, run: Run = run_cli) -> ImportResult:
    """Download the latest version's output and import the job from it (transfer.import_job)."""
    record = require_record(ws, job)
    entry = latest_version(ws, record.name)
    status = session_status(entry.kernel, run)
    if not status.status.ended:
        raise KaggleError(f"{entry.kernel} version {entry.version} is still {status.status.value}; fetch once it has "
                          f"ended (`ensemble kernel status --job {record.name}`)")
    out = download_output(ws, entry, run)
    if not (out / "jobs" / record.name / "job.json").is_file():
        log = [line for path in out.glob("*.log") for line in service.log_lines(path.read_text(errors="replace"))]
        raise KaggleError(f"the output of {entry.kernel} version {entry.version} holds no job {record.name} "
                          f"(log: {' | '.join(log[-3:]) or 'none'}); nothing imported")
    result = import_job(ws, Workspace(out), record.name, f"{entry.kernel} version {entry.version}")
    for log in out.glob("*.log"):
        target = JobLayout(ws, record.name).dir / "logs" / f"kaggle-v{entry.version}.log"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)
    record_kernel_version(ws, record.name, replace(entry, status=status.status.value, failure=status.failure,
                                                   fetched=now(), imported=tuple(result.imported)))
    return result


def job_data_dir(session, spec) -> Path:
    """The session input that holds the job's own data: its layout's train and test files, and where several
    inputs do, the one whose train file is the job's (by sha256)."""
    fmt = spec.data_layout

    def has_files(folder: Path) -> bool:
        try:
            return all(path.is_file() for path in data_files(fmt, folder))
        except LayoutError:
            return False

    found = input_data_folders(session, has_files)
    if len(found) > 1:
        found = [folder for folder in found if file_sha256(data_files(fmt, folder)[0]) == spec.train_sha256] or found
    if len(found) != 1:
        where = ", ".join(map(str, found)) or "none of the inputs"
        raise SessionError(f"the job's {fmt.name} data is in {where}: {'choose one' if found else 'attach it'} "
                           "(ensemble kernel restore --data FOLDER)")
    return found[0]


def restore_in_session(ws: Workspace, job: str, sources: list[Path] | None = None,
                       data_dir: Path | None = None) -> list[ImportResult]:
    """In a session: copy the job from the read-only inputs (the job's dataset, an earlier version's output)
    into the workspace, each model kept from the best copy, the record bound to the session's data (the
    input that holds the job's layout and train file, or `data_dir`)."""
    session = detect_session()
    if sources is None:
        if session is None:
            raise SessionError("`ensemble kernel restore` looks for the job in a Kaggle session's inputs; here, "
                               "name the folders with --from")
        sources = sorted(path for path in session.input_dir.iterdir() if path.is_dir())
    scratch = (session.temp_dir if session and session.temp_dir.is_dir() else ws.cache_dir) / "restore"
    scratch.mkdir(parents=True, exist_ok=True)
    folders = [*sources, *(inner for source in sources for inner in sorted(source.iterdir()) if inner.is_dir())]
    copies = find_job_copies(folders, job, scratch)
    if not copies and not JobLayout(ws, job).record.is_file():
        raise SessionError(f"no input holds job {job} (looked in {', '.join(map(str, sources)) or 'nothing'}); attach "
                           f"its dataset, or an earlier version's output")
    if data_dir is None and session is not None:
        spec = (load_record(Workspace(copies[0]), job) if copies else load_record(ws, job)).spec
        data_dir = job_data_dir(session, spec)
    return [import_job(ws, Workspace(copy), job, str(copy), data_dir=data_dir) for copy in copies]


# --- code competitions -------------------------------------------------------------------------------------


def predict_options(blend: BlendRecord | None) -> tuple[str, ...]:
    """`ensemble predict` options that make the local blend again on another test file."""
    if blend is None:
        return ()
    return ("--method", blend.method, "--only", ",".join(blend.models), "--tta" if blend.tta else "--no-tta")


def submit_code_competition(ws: Workspace, record: JobRecord, competition: str, path: Path, origin: BlendRecord | None,
                            message: str | None, wait: bool, accelerator: str | None, run: Run, poll_s: float,
                            timeout_s: float, sleep, echo=print) -> SubmissionRecord:
    """Upload the finished members, push an offline notebook that predicts the test file it finds at run
    time, wait for it, check its submission.csv, submit it as the notebook's output, record it."""
    user = service.credentials_user()
    accelerator = None if accelerator in (None, "none") else accelerator
    survey = survey_models(ws, record)
    members = ensemble_models(survey.finished)
    if not members:
        raise KaggleError(f"job {record.name} has no finished members to submit")
    wheels = upload_wheels(ws, user, run)
    job_data = upload_job(ws, user, record.name, "finished", run, prefix="ensemble-models")
    slug = service.slug_for("ensemble-submit", record.name)
    kernel = f"{user}/{slug}"
    fmt = record.spec.data_layout
    folder = f"/kaggle/input/{competition}"
    if origin is not None and (baselines := [name for name in origin.models if not name.startswith("member-")]):
        raise KaggleError(f"the submission's blend uses {', '.join(baselines)}: baselines keep no model to predict "
                          "a hidden test set with; blend the members (ensemble blend) and submit that")
    test_name = fmt.test_file if "*" not in fmt.test_file else data_files(fmt, record.data_path)[1].name
    metadata = KernelMetadata(kernel, service.title_for(slug), accelerator, (wheels.ref, job_data.ref), (competition,))
    cells = predict_cells(record.name, f"{folder}/{test_name}", folder, predict_options(origin))
    entry = push_notebook(ws, record.name, metadata, cells, "predict", run)
    echo(f"pushed   {kernel} version {entry.version}: predicts {competition}'s test file offline")
    entry = follow(ws, record.name, entry, run, echo, poll_s=poll_s, sleep=sleep)
    if entry.status != "complete":
        raise failed_session(entry, session_log(entry.kernel, run), record.name)
    out = download_output(ws, entry, run)
    produced = out / "submission.csv"
    if not produced.is_file():
        raise KaggleError(f"{kernel} version {entry.version} wrote no submission.csv; not submitted")
    try:
        check_submission_file(produced, record.data_path, ws.cache_dir, fmt.name)
    except Exception as error:  # SubmissionError, DataError: what Kaggle would refuse
        raise KaggleError(f"{kernel} version {entry.version}'s submission.csv fails the check ({error}); not "
                          "submitted") from None
    description = unique_message(record.name, message)
    run(service.code_submit_args(competition, kernel, entry.version, "submission.csv", description))
    status, public, private = "submitted", None, None
    if wait:
        row = wait_for_score(competition, description, run, poll_s, timeout_s, sleep=sleep)
        status, public, private = row.status, row.public_score, row.private_score
    submitted = SubmissionRecord(competition, str(path), file_sha256(produced), description, now(), status, public,
                                 private, origin, kernel, entry.version)
    add_submission_record(ws, record.name, submitted)
    return submitted
