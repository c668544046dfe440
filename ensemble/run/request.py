"""What `ensemble train` (or `Job.train`) asks of a run: the spec as asked, and how the run goes.

Every option is declared once, on JobSpec (what decides the spec) or here (how many members, where, how
long); the CLI's flags and the API's keywords are generated from these declarations (job.options).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..job.errors import JobError
from ..job.options import at_least, declared, option, run_field
from ..job.spec import JobSpec
from ..store.workspace import check_job_name
from . import budget
from .executors import EXECUTORS

DEFAULT_MEMBERS = 10


def parsed(declaration, value):
    """A value as the flag's text would give it: text through the option's parser where it has one
    (time_limit="20m", width="0.5"), anything else as given."""
    try:
        return declaration.parse(value) if declaration.parse and isinstance(value, str) else value
    except ValueError as error:
        raise JobError(str(error)) from None


@dataclass(frozen=True)
class TrainRequest:
    spec: JobSpec = field(default_factory=JobSpec)  # as asked: a field left None comes from the recipe
    n: int | None = option("--n", "Number of members in the job (default 10; with --time-limit, as many as fit).",
                           type=int, check=at_least(1))
    time_limit: float | None = option(
        "--time-limit", "Fit the job into this much time (2h, 90m, 1h30m, 600): members start while they fit, "
        "a running one stops at an epoch end. A rerun with a new limit continues the job.",
        parse=budget.parse_duration)  # seconds
    job: str | None = option(
        "--job", "Job name (default: continue the newest job with the same options, else a timestamp). An "
        "existing job named alone (ensemble train --job J) continues with its own options and data.",
        parse=check_job_name)
    data_dir: Path | None = option("--data", "Folder with the train and test CSVs, e.g. train.csv and test.csv "
                                   "(default: data/).", type=Path)  # None: data/, or a continued job's folder
    gpus: str | None = option("--gpus", "GPU ids like 0,1, or all, or cpu (default: every GPU nvidia-smi lists, "
                              "else the CPU).")
    per_gpu: int | None = option("--per-gpu", "Members sharing one GPU at once (default 1).", type=int)
    workers: int | None = option("--workers", "Members at once on the CPU (default 1).", type=int)
    stall_timeout: float | None = option(
        "--stall-timeout", "Kill and retry a member whose progress has not moved for this long (20s, 5m); it "
        "resumes from its last finished epoch (default: 10m, longer for a member whose own updates are slow).",
        parse=budget.parse_stall_timeout)  # seconds
    pseudo_label: float | None = option(
        "--pseudo-label", "A pseudo-label round: the mean blend of the job's finished members labels the test rows "
        "it gives at least this probability (e.g. 0.99), and the members this run adds (--n above the job's count) "
        "also train on them. Recorded with the job; a rerun continues it.", type=float, check=lambda value: None
        if 0 < value < 1 else "must be between 0 and 1")
    refit_full: bool | None = option(
        "--refit-full", "With --folds: once the fold members finish, train a twin of each on every row for the "
        "epochs its fold member's kept weights had; the folds still choose and score every blend, and the twins' "
        "test predictions make the submission (AutoGluon's refit_full). See BENCHMARKS.md, \"K-fold\".",
        type=bool, is_flag=True)
    retries: int = run_field(2, "--retries", "Further attempts for a member whose process dies; each resumes "
                             "from its last epoch.", type=int)
    executor: str = run_field("local", "--executor", "local: member processes on this machine; ray: Ray tasks "
                              "(pip install 'ensemble[ray]').", choices=EXECUTORS)
    address: str | None = option("--address", "Ray cluster: auto or ray://HOST:PORT (default: start a local "
                                 "Ray instance).")

    @classmethod
    def from_options(cls, **given) -> "TrainRequest":
        """A request from options named as a user writes them, the flags without dashes: epochs=5, batch=64,
        lr=1e-3, format="kannada-mnist", data="data/", gpus="0,1", time_limit="20m". None: not given."""
        spec_fields = {declaration.keyword: (name, declaration) for name, declaration in declared(JobSpec)}
        run_fields = {declaration.keyword: (name, declaration) for name, declaration in declared(cls)}
        unknown = sorted(set(given) - set(spec_fields) - set(run_fields))
        if unknown:
            raise JobError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the options "
                           f"are {', '.join(sorted([*run_fields, *spec_fields]))}")
        spec = JobSpec(**{spec_fields[key][0]: parsed(spec_fields[key][1], value) for key, value in given.items()
                          if key in spec_fields})
        run = {}
        for key, value in given.items():
            if key in run_fields and value is not None:
                name, declaration = run_fields[key]
                run[name] = parsed(declaration, value)
        if run.get("data_dir") is not None:
            run["data_dir"] = Path(run["data_dir"])
        return cls(spec=spec, **run)

    @property
    def members(self) -> int:
        """The member count, or with a time limit the cap on it."""
        if self.n is not None:
            return self.n
        return budget.UNLIMITED_MEMBERS if self.time_limit else DEFAULT_MEMBERS

    @property
    def continues_as_recorded(self) -> bool:
        """Nothing of the spec or data asked: a named existing job continues exactly as it was created."""
        return self.data_dir is None and self.spec == type(self.spec)()
