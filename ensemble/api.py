"""The Python face of `ensemble`, for notebooks: a `Job` created or opened in a workspace, trained, blended,
ranked and applied to new rows. Every CLI command is a thin call into this module, and errors are the
library's typed exceptions (JobError, DataError, SubmissionError, ...), as on the command line.

    from ensemble import Job
    job = Job.create(home="work", data="data/", job="first", n=3, epochs=5, time_limit="20m")
    job.train()
    job.blend(method="mean")
    job.leaderboard()                  # a DataFrame: blends, members and baselines ranked
    job.predict("new.csv")             # a DataFrame in the competition's submission format

Keyword options are named as the CLI's flags without their dashes (`epochs`, `batch`, `lr`, `limit_train`,
`format`, `gpus`, `seed`, `time_limit`, ...): run.request.TrainRequest.from_options maps them.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .blend.baselines import BASELINES, run_baselines
from .blend.blending import BlendResult, blend_job
from .blend.predict import Prediction, predict_csv
from .blend.verify import JobSubmissionCheck, check_job_submission
from .data.layouts import DEFAULT_LAYOUT, get_layout
from .data.sources import make_from_idx, make_sample
from .demo import DEMO_EPOCHS, run_demo
from .job.record import JobRecord, require_record
from .job.records import KernelVersion, SubmissionRecord
from .job.spec import JobSpec
from .kaggle.competition import download as kaggle_download
from .kaggle.competition import find_cli, run_cli, submit_job
from .kaggle.kernel import failed_session, fetch_job
from .kaggle.kernel import follow as follow_session
from .kaggle.kernel import kernel_status as kaggle_kernel_status
from .kaggle.kernel import restore_in_session, session_log, submit_code_competition, train_on_kaggle, upload_wheels
from .kaggle.service import credentials_user
from .kaggle.transfer import ImportResult
from .kaggle.wheels import build_wheels
from .kaggle.session import session_train_request
from .store.session import detect_session
from .kaggle.transfer import job_output_note
from .kaggle.submission import SubmissionLayout, check_submission_file
from .report.leaderboard import Report, write_report
from .run.progress import PlainReporter
from .run.request import TrainRequest
from .run.runner import TrainOutcome, member_gpu_capabilities, prepare_job, run_job
from .run.status import damaged_jobs, job_status, jobs_table
from .store.workspace import Workspace

Home = str | os.PathLike | Workspace | None


def workspace(home: Home = None) -> Workspace:
    """The workspace a home names: a Workspace as it is, a folder, or None for $ENSEMBLE_HOME / the cwd."""
    return home if isinstance(home, Workspace) else Workspace.resolve(home)


def sample(out, layout: str = DEFAULT_LAYOUT, force: bool = False) -> dict[str, Path]:
    """`ensemble data sample`: the 5000 offline digits as Kaggle CSVs in a layout of the family."""
    return make_sample(Path(out), fmt=get_layout(layout), force=force)


def from_idx(directory, out, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """`ensemble data idx`: MNIST-format IDX files as a shuffled train.csv and test.csv."""
    return make_from_idx(Path(directory), Path(out), seed=seed, force=force)


def download(competition: str, out) -> list[Path]:
    """`ensemble data kaggle`: a competition's files through the kaggle CLI, unzipped."""
    return kaggle_download(competition, Path(out))


def status(home: Home = None, job: str | None = None) -> tuple[JobRecord, pd.DataFrame, dict]:
    """`ensemble status`: the record, its member table and the runner holding its lock ({} when none)."""
    return job_status(workspace(home), job)


def jobs(home: Home = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """`ensemble jobs`: a row per readable job, and {job: what is wrong} for damaged records."""
    ws = workspace(home)
    return jobs_table(ws), damaged_jobs(ws)


def check(file, data, home: Home = None, layout: str | None = None) -> tuple[int, SubmissionLayout]:
    """`ensemble check`: a submission against a data folder's test file, as Kaggle checks it."""
    return check_submission_file(Path(file), Path(data), workspace(home).cache_dir, layout)


def demo(home: Home = None, members: int = 3, epochs: int = DEMO_EPOCHS, echo=print) -> str:
    """`ensemble demo`: the whole path on the offline sample."""
    return run_demo(workspace(home), members=members, epochs=epochs, echo=echo)


def train(home: Home, request: TrainRequest, reporter=None) -> TrainOutcome:
    """`ensemble train`: create or continue the job the request names (or implies) and train its members. In a
    Kaggle session the time limit defaults to what the session has left, and the output it keeps is said."""
    ws, reporter = workspace(home), reporter or PlainReporter()
    session = detect_session()
    request = session_train_request(ws, request, reporter.event, session)
    outcome = run_job(ws, request, reporter=reporter)
    if session is not None:
        reporter.event(job_output_note(ws, outcome.job))
    return outcome


class Job:
    """One job of a workspace. `create` records it (spec, split, plan) without training; `open` finds an
    existing one; `train` trains what is not done yet, and resumes whatever was interrupted."""

    def __init__(self, ws: Workspace, name: str, request: TrainRequest | None = None):
        self.ws, self.name = ws, name
        self._request = request or TrainRequest(job=name)  # a bare --job: continue as recorded

    def __repr__(self) -> str:
        return f"Job({self.name!r}, home={str(self.ws.home)!r})"

    @classmethod
    def create(cls, home: Home = None, *, data=None, job: str | None = None, n: int | None = None,
               **options) -> "Job":
        """Record a new job (or continue the one with this name and spec): the spec from the options and
        the recipe, the validation split, the plan. Nothing trains until `.train()`."""
        ws = workspace(home)
        request = TrainRequest.from_options(data=data, job=job, n=n, **options)
        # auto precision and width resolve for the devices the members will use, as `train` resolves them
        prepared = prepare_job(ws, request, member_gpu_capabilities(request))
        return cls(ws, prepared.record.name, replace(request, job=prepared.record.name))

    @classmethod
    def open(cls, name: str | None = None, home: Home = None) -> "Job":
        """An existing job by name, or the newest one."""
        ws = workspace(home)
        return cls(ws, require_record(ws, name).name)

    # what it is
    @property
    def record(self) -> JobRecord:
        return require_record(self.ws, self.name)

    @property
    def spec(self) -> JobSpec:
        return self.record.spec

    def status(self) -> pd.DataFrame:
        """A row per member: state (as blend sees it), attempts, device, epoch, validation accuracy."""
        return job_status(self.ws, self.name)[1]

    # what it does
    def train(self, reporter=None, **options) -> TrainOutcome:
        """Train every member that is not done; options as in `create` (time_limit, gpus, n, ...) change
        this run, and options that change the spec are refused for an existing job."""
        request = self._request
        if options:
            given = TrainRequest.from_options(job=self.name, **options)
            request = replace(given, spec=given.spec if given.spec != JobSpec() else request.spec,
                              data_dir=given.data_dir or request.data_dir)
        return train(self.ws, request, reporter)

    def blend(self, method: str = "mean", *, tta: bool | None = None, only: tuple[str, ...] | None = None,
              out=None, allow_partial: bool = False) -> BlendResult:
        """Blend the finished members into checked submissions (submissions/submission.csv and a copy named
        after the blend); `.report()` ranks it beside the members."""
        return blend_job(self.ws, self.name, method, Path(out) if out else None, only=only,
                         allow_partial=allow_partial, tta=tta)

    def check(self, file=None) -> JobSubmissionCheck:
        """`ensemble check --job`: a submission (default submissions/submission.csv) is exactly what this job's
        members give for its test file as they both are now."""
        return check_job_submission(self.ws, self.name, Path(file) if file else self.ws.submissions_dir /
                                    "submission.csv")

    def report(self) -> Report:
        """Rank blends, members and baselines and write the report files (md, csv, html)."""
        return write_report(self.ws, self.name)

    def leaderboard(self) -> pd.DataFrame:
        return self.report().frame

    def baselines(self, only: tuple[str, ...] = BASELINES, n_jobs: int = -1, echo=print) -> list[dict]:
        """KNN, a decision tree and a random forest on the job's split, saved like members."""
        return run_baselines(self.ws, self.name, only, n_jobs=n_jobs, echo=echo)

    def predict_file(self, csv_file, out=None, *, only: tuple[str, ...] | None = None, method: str = "mean",
                     tta: bool | None = None) -> Prediction:
        """`ensemble predict`: the job's models on a CSV of its test layout, written as a submission."""
        return predict_csv(self.ws, self.name, Path(csv_file), Path(out) if out else None, only, method, tta)

    def predict(self, rows, *, only: tuple[str, ...] | None = None, method: str = "mean",
                tta: bool | None = None) -> pd.DataFrame:
        """Predictions for a DataFrame (in the test file's columns) or a CSV path, as a DataFrame in the
        competition's submission format."""
        with tempfile.TemporaryDirectory(prefix="ensemble-predict-") as scratch:
            source = rows
            if isinstance(rows, pd.DataFrame):
                source = Path(scratch) / "rows.csv"
                rows.to_csv(source, index=False)
            prediction = self.predict_file(source, Path(scratch) / "predictions.csv", only=only, method=method,
                                           tta=tta)
            return pd.read_csv(prediction.path)

    def submit(self, message: str | None = None, file=None, wait: bool = False, competition: str | None = None,
               timeout_s: float = 900, accelerator: str | None = None, echo=print) -> SubmissionRecord:
        """Upload the submission (a code competition's through a notebook that predicts its hidden test set)."""
        return submit_job(self.ws, self.name, message, Path(file) if file else None, wait, competition,
                          timeout_s=timeout_s, code_submit=submit_code_competition, accelerator=accelerator, echo=echo)


# --- Kaggle notebooks ----------------------------------------------------------------------------------------


def kernel_train(home: Home, request: TrainRequest, accelerator: str | None = "NvidiaTeslaT4", follow: bool = True,
                 poll_s: float = 30.0, echo=print) -> tuple[KernelVersion, ImportResult | None]:
    """`ensemble kernel train`: push a notebook that trains (or continues) the job on Kaggle; with follow, wait
    for the session and import its output. A session ending in error raises KaggleError."""
    ws = workspace(home)
    job, entry = train_on_kaggle(ws, request, accelerator, echo=echo)
    if not follow:
        return entry, None
    entry = follow_session(ws, job, entry, echo=echo, poll_s=poll_s)
    if entry.status != "complete":
        raise failed_session(entry, session_log(entry.kernel, run_cli), job)
    return entry, fetch_job(ws, job)


def kernel_status(home: Home = None, job: str | None = None):
    """`ensemble kernel status`: the job's latest notebook version, its session status and the log's last lines."""
    return kaggle_kernel_status(workspace(home), job)


def kernel_fetch(home: Home = None, job: str | None = None) -> ImportResult:
    """`ensemble kernel fetch`: the latest version's output imported into the job."""
    return fetch_job(workspace(home), job)


def kernel_restore(home: Home = None, job: str | None = None, sources=None, data=None) -> list[ImportResult]:
    """`ensemble kernel restore`, in a session: the job copied from the read-only inputs into /kaggle/working."""
    return restore_in_session(workspace(home), job, [Path(s) for s in sources] if sources else None,
                              Path(data) if data else None)


def kernel_wheels(home: Home = None, out=None):
    """`ensemble kernel wheels`: the offline install set into `out`, or (without) uploaded as a private dataset."""
    if out is not None:
        return build_wheels(Path(out))
    find_cli()
    return upload_wheels(workspace(home), credentials_user(), run_cli)
