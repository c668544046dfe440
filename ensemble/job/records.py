"""The job's typed records of what it wrote and sent: blends.json (which blend wrote which submission)
and submissions.json (what went to Kaggle and its score). Keys are those earlier versions wrote."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..store import atomic
from ..store.workspace import Workspace
from .layout import JobLayout


@dataclass(frozen=True)
class BlendRecord:
    """One `ensemble blend`: the method, the models and weights, and the files it wrote (with the first
    one's sha256, by which `ensemble submit` finds the blend behind a file)."""

    method: str
    models: tuple[str, ...]
    tta: bool
    weights: tuple[float, ...]
    val_accuracy: float
    files: tuple[str, ...]
    sha256: str | None = None
    written: str | None = None
    test_sha256: str | None = None   # the test file the blended outputs were predicted from (None: older record)
    split_sha256: str | None = None  # the split its validation score comes from
    test_models: tuple[str, ...] = ()  # whose test outputs were blended, where not `models`' own (refit twins)

    def to_dict(self) -> dict:
        values = asdict(self)
        return {**values, "models": list(self.models), "weights": list(self.weights), "files": list(self.files),
                "test_models": list(self.test_models)}

    @classmethod
    def from_dict(cls, values: dict) -> "BlendRecord":
        known = {f.name for f in fields(cls)}
        chosen = {key: value for key, value in values.items() if key in known}
        return cls(**{**chosen, "models": tuple(chosen["models"]), "weights": tuple(chosen.get("weights", ())),
                      "files": tuple(chosen.get("files", ())), "test_models": tuple(chosen.get("test_models", ()))})

    @property
    def label(self) -> str:
        """blend-mean, blend-greedy: the leaderboard row of its method."""
        return f"blend-{self.method}"

    def describe(self) -> str:
        return f"{self.label}{' with TTA' if self.tta else ''}, val accuracy {self.val_accuracy:.4f}"


@dataclass(frozen=True)
class SubmissionRecord:
    """What `ensemble submit` records per upload in jobs/<job>/submissions.json."""

    competition: str
    file: str
    sha256: str
    message: str
    submitted: str
    status: str
    public_score: float | None = None
    private_score: float | None = None
    blend: BlendRecord | None = None  # which blend wrote the file (blends.json), when it was one
    kernel: str | None = None          # a code competition's: the notebook (owner/slug) whose output was scored
    kernel_version: int | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "blend": self.blend.to_dict() if self.blend else None}

    @classmethod
    def from_dict(cls, values: dict) -> "SubmissionRecord":
        blend = values.get("blend")
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in known},
                      "blend": BlendRecord.from_dict(blend) if blend else None})


def read_submission_records(ws: Workspace, job: str) -> list[SubmissionRecord]:
    path = JobLayout(ws, job).submissions
    if not path.is_file():
        return []
    return [SubmissionRecord.from_dict(row) for row in atomic.read_json(path)]


def add_submission_record(ws: Workspace, job: str, record: SubmissionRecord) -> Path:
    rows = [row.to_dict() for row in read_submission_records(ws, job)] + [record.to_dict()]
    return atomic.write_json(JobLayout(ws, job).submissions, rows)


def read_blend_records(ws: Workspace, job: str) -> list[BlendRecord]:
    """Which blend wrote which submission file, oldest first (jobs/<job>/blends.json)."""
    path = JobLayout(ws, job).blends
    return [BlendRecord.from_dict(row) for row in atomic.read_json(path)] if path.is_file() else []


def record_blend(ws: Workspace, job: str, entry: BlendRecord) -> Path:
    rows = [row.to_dict() for row in read_blend_records(ws, job)] + [entry.to_dict()]
    return atomic.write_json(JobLayout(ws, job).blends, rows)


@dataclass(frozen=True)
class KernelVersion:
    """One pushed version of a Kaggle notebook that worked on the job (jobs/<job>/kernel.json)."""

    kernel: str                      # owner/slug
    version: int
    purpose: str                     # train: trains the job; predict: a code competition's submission
    pushed: str
    accelerator: str | None
    sources: tuple[str, ...] = ()
    status: str | None = None        # the last status seen: queued, running, complete, error
    failure: str | None = None       # Kaggle's failure message
    fetched: str | None = None       # when its output was imported here
    imported: tuple[str, ...] = ()   # the models that import brought

    @property
    def ref(self) -> str:
        return f"{self.kernel}/{self.version}"

    def to_dict(self) -> dict:
        return {**asdict(self), "sources": list(self.sources), "imported": list(self.imported)}

    @classmethod
    def from_dict(cls, values: dict) -> "KernelVersion":
        known = {f.name for f in fields(cls)}
        chosen = {key: value for key, value in values.items() if key in known}
        return cls(**{**chosen, "sources": tuple(chosen.get("sources", ())),
                      "imported": tuple(chosen.get("imported", ()))})


def read_kernel_versions(ws: Workspace, job: str) -> list[KernelVersion]:
    path = JobLayout(ws, job).kernels
    return [KernelVersion.from_dict(row) for row in atomic.read_json(path)] if path.is_file() else []


def record_kernel_version(ws: Workspace, job: str, entry: KernelVersion) -> Path:
    """Add a version, or replace the one with its notebook and number."""
    rows = [row for row in read_kernel_versions(ws, job) if (row.kernel, row.version) != (entry.kernel, entry.version)]
    rows.append(entry)
    rows.sort(key=lambda row: (row.kernel, row.version))
    return atomic.write_json(JobLayout(ws, job).kernels, [row.to_dict() for row in rows])
