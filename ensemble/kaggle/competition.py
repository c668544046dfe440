"""The Kaggle loop through the official `kaggle` CLI: download a competition's data, submit a checked file,
wait for its public score and record it with the job.

The CLI's commands and output are Kaggle's (FIELD.md): `kaggle competitions download COMPETITION -p DIR`
(a zip), `kaggle competitions submit COMPETITION -f FILE -m MESSAGE`, and `kaggle competitions submissions
COMPETITION -v`, CSV with columns [ref,]fileName,date,description,status,publicScore,privateScore whose
score is empty until the status is complete. A submission is found again by its message, which `ensemble`
makes unique. Parsing is pure; running the CLI happens in `run_cli` only.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data.tables import file_sha256
from ..job.record import now, require_record
from ..job.outputs import job_output_shape
from ..job.records import SubmissionRecord, add_submission_record
from .submission import (SubmissionError, blend_origin_problem, check_submission_text, job_submission_layout,
                         submission_blend)

CLI_TIMEOUT_S = 600          # one CLI call (a download of a competition's data included)
POLL_S = 10.0
WAIT_TIMEOUT_S = 900.0
CREDENTIAL_HINTS = ("kaggle.json", "KAGGLE_USERNAME", "401", "Unauthorized", "Authentication required", "authenticate")


class KaggleError(Exception):
    """The Kaggle loop cannot go on; the message says why and what to do. Nothing was recorded."""


@dataclass(frozen=True)
class SubmissionRow:
    """One row of `kaggle competitions submissions -v`."""

    file_name: str
    date: str
    description: str
    status: str            # pending, complete or error (the CLI prints e.g. SubmissionStatus.COMPLETE)
    public_score: float | None
    private_score: float | None
    ref: str | None = None


def _status(text: str) -> str:
    lowered = text.strip().lower()
    for status in ("complete", "error", "pending"):
        if lowered.endswith(status):
            return status
    return lowered


def _score(text: str) -> float | None:
    try:
        return float(text) if text.strip() not in ("", "None") else None
    except ValueError:
        return None


def parse_submissions(text: str) -> list[SubmissionRow]:
    """The CSV the CLI prints with -v, with or without the `ref` column of CLI 2.2+."""
    lines = [line for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "fileName" in line and "status" in line), None)
    if start is None:
        raise KaggleError("the kaggle CLI printed no submissions table (expected a CSV header with "
                          f"fileName and status); it said: {text.strip()[:300]!r}")
    rows = csv.DictReader(io.StringIO("\n".join(lines[start:])))
    return [SubmissionRow(row.get("fileName", ""), row.get("date", ""), row.get("description", ""),
                          _status(row.get("status", "")), _score(row.get("publicScore", "")),
                          _score(row.get("privateScore", "")), row.get("ref")) for row in rows]


def find_submission(rows: list[SubmissionRow], message: str) -> SubmissionRow | None:
    return next((row for row in rows if row.description == message), None)


def download_args(competition: str, out: Path) -> list[str]:
    return ["competitions", "download", competition, "-p", str(out)]


def submit_args(competition: str, file: Path, message: str) -> list[str]:
    return ["competitions", "submit", competition, "-f", str(file), "-m", message]


def submissions_args(competition: str) -> list[str]:
    return ["competitions", "submissions", competition, "-v"]


def find_cli() -> str:
    path = shutil.which("kaggle")
    if path is None:
        raise KaggleError("the kaggle CLI is not installed: pip install 'ensemble[kaggle]' (or pip install kaggle), "
                          "then put your API token in ~/.kaggle/kaggle.json")
    return path


def run_cli(args: list[str], timeout: float = CLI_TIMEOUT_S) -> str:
    """Run `kaggle ARGS`; its output, or a KaggleError that says what went wrong and what to do."""
    command = [find_cli(), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise KaggleError(f"`kaggle {' '.join(args[:2])}` gave no answer in {timeout:.0f} s; check the network "
                          "and try again") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        if any(hint in output for hint in CREDENTIAL_HINTS):
            raise KaggleError("the kaggle CLI has no valid credentials: put your API token in ~/.kaggle/kaggle.json "
                              "(kaggle.com > Settings > API) or set KAGGLE_USERNAME and KAGGLE_KEY. It said: "
                              + output[-300:])
        raise KaggleError(f"`kaggle {' '.join(args[:2])}` failed (exit {done.returncode}): {telling_line(output)}")
    return output


def telling_line(output: str) -> str:
    """The line of a CLI's output that says what went wrong (its newest error line, else its last line): a
    failure is reported in one line, not with the upload bars and help text around it."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output"
    return next((line for line in reversed(lines) if "error" in line.lower()), lines[-1])[:500]


def safe_extract(archive: Path, out: Path) -> list[Path]:
    """Unzip, refusing members that would land outside `out`."""
    out = out.resolve()
    written = []
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            target = (out / member.filename).resolve()
            if out not in target.parents and target != out:
                raise KaggleError(f"{archive}: member {member.filename!r} would be written outside {out}; not unpacked")
        bundle.extractall(out)
        written = [out / name for name in bundle.namelist() if not name.endswith("/")]
    return written


def download(competition: str, out: Path, run: Callable[[list[str]], str] = run_cli) -> list[Path]:
    """Download a competition's data into `out` and unzip it; returns the files unpacked."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.zip"))
    run(download_args(competition, out))
    archives = sorted(set(out.glob("*.zip")) - before) or sorted(out.glob("*.zip"))
    if not archives:
        raise KaggleError(f"`kaggle competitions download {competition}` wrote no zip into {out}")
    files = [path for archive in archives for path in safe_extract(archive, out)]
    for archive in archives:
        archive.unlink()
    return files


def unique_message(job: str, text: str | None, now: Callable[[], float] = time.time) -> str:
    """The submission's description: the user's text (or the job), with a stamp that makes it findable."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now()))
    return f"{text or 'ensemble job ' + job} [ensemble {job} {stamp}]"


def wait_for_score(competition: str, message: str, run: Callable[[list[str]], str] = run_cli,
                   poll_s: float = POLL_S, timeout_s: float = WAIT_TIMEOUT_S,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
                   ) -> SubmissionRow:
    """Poll the submissions list until the one with this message is complete (or failed, or time is up)."""
    started = clock()
    while True:
        row = find_submission(parse_submissions(run(submissions_args(competition))), message)
        if row is not None and row.status == "complete":
            return row
        if row is not None and row.status == "error":
            raise KaggleError(f"Kaggle could not score the submission {message!r} (status error); see "
                              f"https://www.kaggle.com/competitions/{competition}/submissions")
        if clock() - started + poll_s > timeout_s:
            where = "is still being scored" if row is not None else "is not in the submissions list yet"
            raise KaggleError(f"no score after {timeout_s:.0f} s: the submission {message!r} {where}. Its score "
                              f"will show at https://www.kaggle.com/competitions/{competition}/submissions")
        sleep(poll_s)


def competition_for(fmt, competition: str | None) -> str:
    """The competition a job's submission goes to: --competition, else its layout's."""
    chosen = competition or fmt.competition
    if chosen is None:
        raise KaggleError(f"the {fmt.name} layout is a Kaggle dataset, not a competition: there is nowhere to "
                          "submit; name a competition with --competition if this data belongs to one")
    return chosen


def is_code_competition(fmt, competition: str) -> bool:
    return fmt.code_competition and competition == fmt.competition


def submit_job(ws, job: str | None, message: str | None = None, file: Path | None = None, wait: bool = False,
               competition: str | None = None, run: Callable[[list[str]], str] = run_cli,
               poll_s: float = POLL_S, timeout_s: float = WAIT_TIMEOUT_S,
               sleep: Callable[[float], None] = time.sleep, code_submit: Callable | None = None,
               accelerator: str | None = None, echo=print) -> SubmissionRecord:
    """Check a job's submission file, upload it, and (with wait) poll until Kaggle scores it; record it in
    jobs/<job>/submissions.json. A code competition's goes through a notebook that predicts the hidden test
    set itself (`code_submit`: kernel.submit_code_competition). Any failure raises KaggleError and records
    nothing."""
    record = require_record(ws, job)
    spec = record.spec
    target = competition_for(spec.data_layout, competition)
    path = Path(file) if file else ws.submissions_dir / "submission.csv"
    if not path.is_file():
        raise KaggleError(f"{path}: no such file; write one with `ensemble blend --job {record.name}`")
    try:
        check_submission_text(path.read_text(encoding="utf-8", errors="replace"), job_submission_layout(ws, record))
    except SubmissionError as error:
        raise KaggleError(f"{path}, {error}; not uploaded") from None
    digest = file_sha256(path)
    origin = submission_blend(ws, record, path)
    if origin is not None and (problem := blend_origin_problem(origin, job_output_shape(ws, record), record.name)):
        raise KaggleError(f"{path}: {problem}; not uploaded")
    if is_code_competition(spec.data_layout, target):
        if code_submit is None:
            raise KaggleError(f"{target} is a code competition: Kaggle scores it only from a notebook's output")
        find_cli()
        return code_submit(ws, record, target, path, origin, message, wait, accelerator, run, poll_s, timeout_s,
                           sleep, echo)
    description = unique_message(record.name, message)
    run(submit_args(target, path, description))
    status, public, private = "submitted", None, None
    if wait:
        row = wait_for_score(target, description, run, poll_s, timeout_s, sleep=sleep)
        status, public, private = row.status, row.public_score, row.private_score
    entry = SubmissionRecord(target, str(path), digest, description, now(), status, public, private, origin)
    add_submission_record(ws, record.name, entry)
    return entry
