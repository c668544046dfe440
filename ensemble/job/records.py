"""The job's typed records of what it wrote and sent: blends.json (which blend wrote which submission)
and submissions.json (what went to Kaggle and its score)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..store import atomic

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    pass


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
    blend: dict | None = None  # which blend wrote the file (blends.json), when it was one


def submissions_path(ws, job: str) -> Path:
    return ws.job_dir(job) / "submissions.json"


def read_submission_records(ws, job: str) -> list[SubmissionRecord]:
    path = submissions_path(ws, job)
    if not path.is_file():
        return []
    return [SubmissionRecord(**row) for row in atomic.read_json(path)]


def add_submission_record(ws, job: str, record: SubmissionRecord) -> Path:
    rows = [asdict(row) for row in read_submission_records(ws, job)] + [asdict(record)]
    return atomic.write_json(submissions_path(ws, job), rows)


def blends_path(ws, job: str) -> Path:
    return ws.job_dir(job) / "blends.json"


def read_blend_records(ws, job: str) -> list[dict]:
    """Which blend wrote which submission file, oldest first (jobs/<job>/blends.json)."""
    path = blends_path(ws, job)
    return atomic.read_json(path) if path.is_file() else []


def record_blend(ws, job: str, entry: dict) -> Path:
    return atomic.write_json(blends_path(ws, job), read_blend_records(ws, job) + [entry])
