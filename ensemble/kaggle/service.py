"""The kaggle CLI's kernels and datasets commands: their arguments, and the lines they print, parsed.

Formats are the real CLI's (FIELD.md, kaggle 2.2.x): `kernels push` prints `Kernel version N successfully
pushed.  Please check progress at URL` (a refusal: `Kernel push error: ...`, invalid sources listed first);
`kernels status` prints `owner/slug has status "KernelWorkerStatus.X"` (or the plain spelling) and on failure
`Failure message: "..."`; `kernels output` one `Output file downloaded to PATH` line per file. Parsing is
pure; the CLI runs in competition.run_cli only.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .competition import KaggleError

ACCELERATORS = ("NvidiaTeslaT4", "NvidiaTeslaP100", "NvidiaL4", "TpuV38", "TpuVmV38", "none")
DEFAULT_ACCELERATOR = "NvidiaTeslaT4"  # "GPU T4 x2": two 16 GB T4s, `--gpus 0,1`
_PUSHED = re.compile(r"Kernel version (\d+) successfully pushed")
_STATUS = re.compile(r'has status "(?:KernelWorkerStatus\.)?([A-Za-z_]+)"')
_FAILURE = re.compile(r'Failure message: "(.*)"', re.DOTALL)
_DOWNLOADED = re.compile(r"Output file downloaded to (.+)$")
_INVALID_SOURCES = re.compile(r"The following are not valid (\w+) sources and could not be added to the kernel: "
                              r"(\[.*\])")


class SessionStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCEL_REQUESTED = "cancel_requested"
    CANCEL_ACKNOWLEDGED = "cancel_acknowledged"

    @property
    def ended(self) -> bool:
        return self in (SessionStatus.COMPLETE, SessionStatus.ERROR, SessionStatus.CANCEL_ACKNOWLEDGED)


@dataclass(frozen=True)
class KernelStatus:
    status: SessionStatus
    failure: str | None = None


def credentials_user(environ=None, home: Path | None = None) -> str:
    """The Kaggle user the CLI acts as: KAGGLE_USERNAME, else ~/.kaggle/kaggle.json (or $KAGGLE_CONFIG_DIR)."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY"):
        return environ["KAGGLE_USERNAME"]
    folder = Path(environ["KAGGLE_CONFIG_DIR"]) if environ.get("KAGGLE_CONFIG_DIR") else \
        (home or Path.home()) / ".kaggle"
    try:
        user = json.loads((folder / "kaggle.json").read_text()).get("username")
    except (OSError, ValueError, AttributeError):
        user = None
    if not user:
        raise KaggleError("the kaggle CLI has no credentials: put your API token in ~/.kaggle/kaggle.json (kaggle.com "
                          "> Settings > API > Create New Token) or set KAGGLE_USERNAME and KAGGLE_KEY")
    return user


def slug_for(prefix: str, job: str) -> str:
    """A Kaggle slug (lowercase letters, digits, '-', 5 to 50 characters) for a job's notebook or dataset."""
    text = re.sub(r"[^a-z0-9]+", "-", f"{prefix}-{job}".lower()).strip("-")
    if len(text) > 50:
        import hashlib

        text = f"{text[:41].rstrip('-')}-{hashlib.sha256(job.encode()).hexdigest()[:8]}"
    return text.ljust(5, "0")


def title_for(slug: str) -> str:
    """A title that resolves to the slug, as the client wants (letters and digits between dashes)."""
    return slug.replace("-", " ")


def push_args(folder: Path, accelerator: str | None, timeout_s: int | None = None) -> list[str]:
    args = ["kernels", "push", "-p", str(folder)]
    if accelerator and accelerator != "none":
        args += ["--accelerator", accelerator]
    if timeout_s:
        args += ["-t", str(int(timeout_s))]
    return args


def status_args(kernel: str) -> list[str]:
    return ["kernels", "status", kernel]


def logs_args(kernel: str) -> list[str]:
    return ["kernels", "logs", kernel]


def output_args(kernel: str, out: Path) -> list[str]:
    return ["kernels", "output", kernel, "-p", str(out), "-o"]


def dataset_args(folder: Path, create: bool, message: str) -> list[str]:
    """Sub-folders are packed (-r tar): without it the CLI skips them."""
    if create:
        return ["datasets", "create", "-p", str(folder), "-r", "tar"]
    return ["datasets", "version", "-p", str(folder), "-m", message, "-r", "tar"]


def code_submit_args(competition: str, kernel: str, version: int, file_name: str, message: str) -> list[str]:
    return ["competitions", "submit", competition, "-k", kernel, "-v", str(version), "-f", file_name, "-m", message]


def parse_dataset(text: str) -> None:
    """`datasets create/version` says a refusal on a line of its output (and exits 0): the service's words."""
    refusal = next((line for line in text.splitlines() if "creation error" in line.lower()), None)
    if refusal is not None:
        raise KaggleError(f"Kaggle refused the dataset: {refusal.strip()}")


def parse_push(text: str) -> tuple[int, list[str]]:
    """The version a push made, and any sources the service would not attach; a refusal is a KaggleError
    carrying the service's own words."""
    refused = [f"{kind} sources {names}" for kind, names in _INVALID_SOURCES.findall(text)]
    match = _PUSHED.search(text)
    if match is None:
        said = next((line for line in text.splitlines() if "error" in line.lower()), text.strip()[-300:])
        raise KaggleError(f"Kaggle refused the notebook: {said.strip()}")
    return int(match.group(1)), refused


def parse_status(text: str) -> KernelStatus:
    match = _STATUS.search(text)
    if match is None:
        raise KaggleError(f"`kaggle kernels status` printed no status; it said: {text.strip()[-300:]!r}")
    try:
        status = SessionStatus(match.group(1).lower())
    except ValueError:
        raise KaggleError(f"`kaggle kernels status` printed an unknown status {match.group(1)!r}") from None
    failure = _FAILURE.search(text)
    return KernelStatus(status, failure.group(1).strip() if failure else None)


def parse_downloaded(text: str) -> list[Path]:
    return [Path(match.group(1).strip()) for line in text.splitlines() if (match := _DOWNLOADED.search(line))]


def log_lines(text: str) -> list[str]:
    """A session log as lines: the service's JSON form ([{"stream_name", "time", "data"}, ...]) or plain text."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            entries = json.loads(stripped)
            text = "".join(str(entry.get("data", "")) for entry in entries if isinstance(entry, dict))
        except ValueError:
            pass
    return [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
