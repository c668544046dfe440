"""Where things live: data/, models/, jobs/, submissions/ under one home folder.

The home is the current directory unless ENSEMBLE_HOME (or the CLI's --home) names another, so a user
can run `ensemble` from any folder of their own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "ENSEMBLE_HOME"


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None) -> "Workspace":
        chosen = home or os.environ.get(HOME_ENV) or os.getcwd()
        return cls(Path(chosen).expanduser().resolve())

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def submissions_dir(self) -> Path:
        return self.home / "submissions"

    @property
    def cache_dir(self) -> Path:
        return self.home / ".cache" / "ensemble"

    def job_dir(self, job: str) -> Path:
        return self.jobs_dir / job

    def member_dir(self, job: str, index: int) -> Path:
        return self.models_dir / job / member_name(index)

    def baseline_dir(self, job: str, name: str) -> Path:
        return self.models_dir / job / f"baseline-{name}"

    def model_dir(self, job: str, name: str) -> Path:
        """A finished model's folder by its leaderboard name: member-XX, or a baseline (knn, tree, forest)."""
        return self.models_dir / job / name if name.startswith("member-") else self.baseline_dir(job, name)

    def report_dir(self, job: str) -> Path:
        return self.submissions_dir / job


def member_name(index: int) -> str:
    return f"member-{index:02d}"
