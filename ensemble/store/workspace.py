"""Where things live: data/, models/, jobs/, submissions/ under one home folder.

The home is the current directory unless ENSEMBLE_HOME (or the CLI's --home) names another, so a user
can run `ensemble` from any folder of their own. In a Kaggle notebook session the home is /kaggle/working
(what is left there becomes the session's output) and the parsed-CSV cache goes to /kaggle/temp, so the
output keeps only what resuming and predicting need.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .session import detect_session

HOME_ENV = "ENSEMBLE_HOME"
# A job name becomes a folder under jobs/ and models/ and a word in printed commands: letters, digits, '.',
# '_' and '-', starting with a letter, digit or '_' (so never '.', '..', a hidden folder or an option).
JOB_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


class JobNameError(ValueError):
    """A job name that could leave the workspace or read as an option; the message says the rule."""


def check_job_name(name: str) -> str:
    if not JOB_NAME.fullmatch(name or ""):
        raise JobNameError(f"job name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
                           "starting with a letter, digit or '_' (e.g. first, cnn11-20ep)")
    return name


@dataclass(frozen=True)
class Workspace:
    home: Path
    cache_root: Path | None = None  # elsewhere than the home (a Kaggle session's scratch folder)

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None) -> "Workspace":
        session = detect_session()
        chosen = home or os.environ.get(HOME_ENV) or (session.working_dir if session else None) or os.getcwd()
        cache = session.temp_dir / "ensemble-cache" if session and session.temp_dir.is_dir() else None
        return cls(Path(chosen).expanduser().resolve(), cache)

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
        return self.cache_root or self.home / ".cache" / "ensemble"


def member_name(index: int) -> str:
    return f"member-{index:02d}"
