"""The submission rules: what each competition accepts, checked before anything is written or uploaded."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.folder import resolve_layout
from ..data.layouts import data_files
from ..data.tables import file_sha256, read_test_csv
from ..job.arrays import read_job_test
from ..job.outputs import OutputShape
from ..job.records import BlendRecord, read_blend_records
from ..store import atomic

if TYPE_CHECKING:  # the record's type, without importing jobs (and Keras) at module load
    from ..job.record import JobRecord


class SubmissionError(ValueError):
    """A submission that Kaggle would reject; the message names the line."""


def label_ranges(labels) -> str:
    """0..9, or 0..8, 10..24 for a sparse set: how a person reads a set of whole numbers."""
    values = sorted(int(v) for v in labels)
    runs, start = [], values[0]
    for previous, current in zip(values, values[1:] + [None]):
        if current != previous + 1:
            runs.append(f"{start}..{previous}" if previous > start else f"{start}")
            start = current
    return ", ".join(runs)


@dataclass(frozen=True)
class SubmissionLayout:
    """What a competition accepts: two columns, the id of each test row in order, and the labels."""

    columns: tuple[str, str]
    ids: np.ndarray
    labels: tuple[int, ...]
    ids_from_test: bool = False  # the ids are the test file's id column (else 1..N)

    @classmethod
    def for_layout(cls, fmt, test_ids: np.ndarray | None, n_rows: int, labels) -> "SubmissionLayout":
        ids = np.asarray(test_ids) if fmt.ids_from_test else np.arange(1, n_rows + 1)
        return cls(tuple(fmt.submission), ids, tuple(int(label) for label in labels), fmt.ids_from_test)

    @property
    def id_rule(self) -> str:
        id_column = self.columns[0]
        return (f"{id_column}s follow the test file's id column, in order" if self.ids_from_test
                else f"{id_column}s run 1..N in order")


def submission_frame(labels: np.ndarray, layout: SubmissionLayout) -> pd.DataFrame:
    id_column, label_column = layout.columns
    return pd.DataFrame({id_column: layout.ids, label_column: np.asarray(labels, dtype=int)})


def check_submission_text(text: str, layout: SubmissionLayout) -> None:
    """The competition's rules, checked before upload: header, one row per test image, the ids in order,
    labels from the classes."""
    id_column, label_column = layout.columns
    expected_header = f"{id_column},{label_column}"
    allowed = set(layout.labels)
    lines = text.splitlines()
    if not lines:
        raise SubmissionError(f"line 1: the file is empty; expected the header '{expected_header}'")
    header = tuple(cell.strip() for cell in lines[0].lstrip("\ufeff").split(","))
    if header != layout.columns:
        raise SubmissionError(f"line 1: header is {','.join(header)!r}, expected '{expected_header}'")
    rows = list(csv.reader(io.StringIO("\n".join(lines[1:]))))
    for number, row in enumerate(rows, start=2):
        if len(row) != 2:
            raise SubmissionError(f"line {number}: {len(row)} fields, expected 2 ({expected_header})")
        if number - 2 >= len(layout.ids):
            break  # more rows than test images: reported below with the count
        expected_id = layout.ids[number - 2]
        image_id, label = (cell.strip() for cell in row)
        if not image_id.isdigit() or int(image_id) != expected_id:
            raise SubmissionError(f"line {number}: {id_column} is {image_id!r}, expected {expected_id} "
                                  f"({layout.id_rule})")
        if not (label.isdigit() and int(label) in allowed):
            raise SubmissionError(f"line {number}: {label_column} is {label!r}, expected one of "
                                  f"{label_ranges(layout.labels)}")
    if len(rows) != len(layout.ids):
        raise SubmissionError(f"line {len(rows) + 2}: {len(rows)} rows, expected {len(layout.ids)} "
                              "(one per row of the test file)")


def write_submission(path: Path, labels: np.ndarray, layout: SubmissionLayout) -> Path:
    """Checked before it is written: a submission on disk is always one the competition accepts."""
    text = submission_frame(labels, layout).to_csv(index=False, lineterminator="\n")
    check_submission_text(text, layout)
    return atomic.write_text(path, text)


def job_submission_layout(ws, record: JobRecord) -> SubmissionLayout:
    """The submission layout of a job: its format's columns, its test file's ids, its classes."""
    spec = record.spec
    test = read_job_test(ws, record)  # the train file is not needed: ids and row count are the test file's
    return SubmissionLayout.for_layout(spec.data_layout, test.ids, len(test), spec.classes)


def check_submission_file(path: Path, data_dir: Path, cache_dir: Path | None = None,
                          format_name: str | None = None) -> tuple[int, SubmissionLayout]:
    """Check a submission CSV against the test file of a data folder (its layout detected, or named);
    labels may be any the layout allows. Returns the row count and the layout."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    fmt = resolve_layout(data_dir, format_name)
    test = read_test_csv(data_files(fmt, data_dir)[1], cache_dir, fmt)
    layout = SubmissionLayout.for_layout(fmt, test.ids, len(test), range(fmt.max_label + 1))
    try:
        check_submission_text(path.read_text(encoding="utf-8", errors="replace"), layout)
    except SubmissionError as error:
        raise SubmissionError(f"{path}, {error}") from None
    return len(test), layout


def submission_blend(ws, record: JobRecord, path: Path) -> BlendRecord | None:
    """The blend of the job that wrote this file (found by its sha256 in blends.json), None when none did."""
    digest = file_sha256(path)
    return next((blend for blend in reversed(read_blend_records(ws, record.name)) if blend.sha256 == digest), None)


def blend_origin_problem(blend: BlendRecord, shape: OutputShape, job: str) -> str | None:
    """Why a blend's submission answers another test file than the job's now; None when it answers this one
    (or its record is older than blends recording it)."""
    if blend.test_sha256 and shape.test_sha256 and blend.test_sha256 != shape.test_sha256:
        return (f"it was blended from outputs of another {Path(shape.test_file or 'test.csv').name} (sha256 "
                f"{blend.test_sha256[:12]}); {shape.test_file} now has sha256 {shape.test_sha256[:12]}, so its "
                f"labels belong to other rows. `ensemble train --job {job}` predicts the members again, then "
                "`ensemble blend` writes a new one")
    return None
