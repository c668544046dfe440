"""Read and validate the 28x28 family's train/test CSVs, exactly or not at all.

Layouts are data.layouts.Layout (Digit Recognizer's by default: train.csv = `label,pixel0..pixel783`,
test.csv = `pixel0..pixel783`, values 0..255). Every rejection names the file, the line and the column,
and nothing is written when input is bad.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import atomic
from .layouts import DEFAULT_LAYOUT, LAYOUTS, SIDE, Layout

DIGITS = LAYOUTS[DEFAULT_LAYOUT]
N_PIXELS = SIDE * SIDE
PIXEL_COLUMNS = DIGITS.pixel_columns
TRAIN_COLUMNS = DIGITS.train_columns
TEST_COLUMNS = DIGITS.test_columns
MAX_ID = 2**31 - 1
_PLAIN_WHOLE_NUMBER = re.compile(r" *[0-9]+(\.0*)? *")  # 17, 17.0 or 17. with spaces around: nothing else
_NO_DIGIT_BEFORE_DOT = re.compile(r"(?:^|[,\n])[ \t]*\.")
# The bytes a data line may hold. Anything else (letters in 1e2 or inf, signs, quotes, tabs, NUL, non-ASCII)
# sends the file to the exact cell-by-cell check, which names the cell.
_DATA_BYTES = np.zeros(256, dtype=bool)
_DATA_BYTES[list(b"0123456789,. \r\n")] = True


class DataError(ValueError):
    """Input that cannot be used; the message says where and what to fix."""


@dataclass(frozen=True)
class DigitTable:
    """One parsed CSV: images as uint8 (N, 28, 28) the right way round, labels as uint8 (N,) or None for an
    unlabelled test file, and the test ids where the layout has an id column."""

    images: np.ndarray
    labels: np.ndarray | None
    sha256: str
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


def read_train_csv(path: Path, cache_dir: Path | None = None, fmt: Layout = DIGITS,
                   limit: int | None = None, sha256: str | None = None) -> DigitTable:
    """A train file, parsed exactly or refused (DataError naming file, line and column). With limit, only its
    first `limit` rows are parsed (and the rest only hashed): --limit-train reads what it uses. With sha256
    (the hash a job recorded), the cached arrays of exactly that content are read without hashing the file."""
    return _read_digit_csv(Path(path), fmt.train_columns, cache_dir, fmt, limit, sha256)


def read_test_csv(path: Path, cache_dir: Path | None = None, fmt: Layout = DIGITS,
                  sha256: str | None = None) -> DigitTable:
    return _read_digit_csv(Path(path), fmt.test_columns, cache_dir, fmt, None, sha256)


# The file is read in blocks of about this many bytes: memory stays near the parsed arrays whatever its size.
READ_BLOCK_BYTES = 16 * 2**20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(READ_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def cache_file(cache_dir: Path, fmt: Layout, kind: str, sha: str, limit: int | None) -> Path:
    """Parsed arrays of one file's content (and, with --limit-train, of its first rows)."""
    return cache_dir / (f"{fmt.name}-{kind}-{sha}" + (f"-first{limit}" if limit is not None else "") + ".npz")


def _read_cached(cached: Path, sha: str) -> DigitTable | None:
    try:
        with np.load(cached) as arrays:
            return DigitTable(arrays["images"], arrays["labels"] if "labels" in arrays else None, sha,
                              arrays["ids"] if "ids" in arrays else None)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        try:
            cached.unlink(missing_ok=True)  # a damaged cache entry: parse the CSV again
        except OSError:
            pass  # a read-only cache: parsing again is all it costs
        return None


def _read_digit_csv(path: Path, expected: tuple[str, ...], cache_dir: Path | None, fmt: Layout,
                    limit: int | None = None, known_sha: str | None = None) -> DigitTable:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = "train" if expected[0] == "label" else "test"
    if cache_dir and known_sha and (cached := cache_file(cache_dir, fmt, kind, known_sha, limit)).is_file():
        if (table := _read_cached(cached, known_sha)) is not None:
            return table
    sha = file_sha256(path)
    cached = cache_file(cache_dir, fmt, kind, sha, limit) if cache_dir else None
    if cached is not None and cached.is_file() and (table := _read_cached(cached, sha)) is not None:
        return table
    table = _parse_in_blocks(path, expected, sha, fmt, limit)
    if table is None:  # something unusual somewhere: the exact reader parses it or says where it is wrong
        table = _parse_digit_csv(path, _leading_bytes(path, fmt, limit), expected, sha, fmt)
    if cached is not None:
        extra = {name: value for name, value in (("labels", table.labels), ("ids", table.ids)) if value is not None}
        try:
            atomic.write_with(cached, lambda handle: np.savez(handle, images=table.images, **extra))
        except (atomic.NoSpace, atomic.ReadOnly):
            pass  # the cache only saves parsing time; the write that matters will say the disk is full (or read-only)
    return table


def _leading_bytes(path: Path, fmt: Layout, limit: int | None) -> bytes:
    """The whole file, or with limit its header and first `limit` data lines."""
    if limit is None:
        return path.read_bytes()
    with path.open("rb") as handle:
        return b"".join(line for _, line in zip(range(limit + (1 if fmt.header else 0)), handle))


def _parse_in_blocks(path: Path, expected: tuple[str, ...], sha: str, fmt: Layout,
                     limit: int | None) -> DigitTable | None:
    """The fast reader for the common case, a clean file: block by block, each block's lines checked to hold
    only plain numbers with the right field count, then parsed. None at the first thing it does not expect
    (an encoding, a header, a blank line, a letter, a lone carriage return, a value out of range): the
    exact reader then parses the file or names the bad cell, so both readers accept exactly the same files."""
    limits = _column_limits(expected, fmt)
    parts: list[DigitTable] = []  # each block compact at once (uint8 pixels): the int64 parse lives one block
    rows = 0
    with path.open("rb") as handle:
        if fmt.header and not _header_is_clean(handle.readline(), expected):
            return None
        pending = b""
        while limit is None or rows < limit:
            chunk = handle.read(READ_BLOCK_BYTES)
            data = pending + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            block, pending = data[:cut], data[cut:]
            if limit is not None:
                block = _first_lines(block, limit - rows)
            if block:
                values = _parse_block(block, expected, limits)
                if values is None:
                    return None
                parts.append(_table_from_values(values, expected, sha, fmt))
                rows += len(values)
                del values
            if not chunk:
                break
    if not rows:
        return None
    if len(parts) == 1:
        return parts[0]
    joined = {name: None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])
              for name in ("images", "labels", "ids")}
    return DigitTable(joined["images"], joined["labels"], sha, joined["ids"])


def _header_is_clean(line: bytes, expected: tuple[str, ...]) -> bool:
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    if "\r" in text.rstrip("\r\n") or not text.endswith("\n"):
        return False
    header = [name.strip(" \t\r").strip('"') for name in text.split("\n", 1)[0].split(",")]
    return header == list(expected)


def _first_lines(block: bytes, count: int) -> bytes:
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
    return block if len(ends) < count else block[:ends[count - 1] + 1]


def _parse_block(block: bytes, expected: tuple[str, ...], limits: np.ndarray) -> np.ndarray | None:
    """A block of whole lines as an (n, fields) uint8/int64 array, or None when it is not plainly clean."""
    if (block.startswith((b"\n", b"\r\n")) or b"\n\n" in block or b"\n\r\n" in block
            or re.search(rb"\r(?!\n)", block) or re.search(rb"(?:^|[,\n])[ \t]*\.", block)  # ".0": the exact reader names it
            or not _only_plain_bytes(block, len(expected))):
        return None
    try:
        frame = pd.read_csv(io.BytesIO(block), header=None, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    values = frame.to_numpy()
    if frame.shape[1] != len(expected) or not _all_whole_numbers_in_range(values, limits):
        return None
    return values.astype(np.int64)


def _table_from_values(values: np.ndarray, expected: tuple[str, ...], sha: str, fmt: Layout) -> DigitTable:
    first_pixel = len(expected) - fmt.side * fmt.side
    images = values[:, first_pixel:].astype(np.uint8).reshape(-1, fmt.side, fmt.side)
    if fmt.transposed:
        images = np.ascontiguousarray(images.transpose(0, 2, 1))
    labels = values[:, 0].astype(np.uint8) if expected[0] == "label" else None
    ids = values[:, 0].astype(np.int64) if fmt.test_id and expected[0] == fmt.test_id else None
    return DigitTable(images, labels, sha, ids)


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text (a BOM allowed), or a DataError that says which encoding it looks like and where."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or raw[:200].count(b"\x00") > 20:
            raise DataError(f"{path}, line 1: not UTF-8 text: it looks like UTF-16; save it as UTF-8") from None
        line = raw[:error.start].count(b"\n") + 1
        column = raw[:error.start].split(b"\n")[-1].count(b",") + 1
        raise DataError(f"{path}, line {line}, column {column}: not UTF-8 text (byte 0x{raw[error.start]:02x}); "
                        "save the file as UTF-8") from None


def _only_plain_bytes(data: bytes, n_fields: int) -> bool:
    """Whether the data lines hold nothing but digits, commas, dots, spaces and line ends (a lone carriage
    return was refused before), each line exactly n_fields fields: else the exact check finds the fault.
    (The CSV reader would quietly turn a line's extra leading fields into an index.)"""
    codes = np.frombuffer(data.rstrip(b"\r\n"), dtype=np.uint8)
    if not _DATA_BYTES[codes].all():
        return False
    line_of_each_byte = np.cumsum(codes == ord("\n"), dtype=np.int32)
    commas_per_line = np.bincount(line_of_each_byte[codes == ord(",")], minlength=line_of_each_byte[-1] + 1)
    return bool((commas_per_line == n_fields - 1).all())


def _parse_digit_csv(path: Path, raw: bytes, expected: tuple[str, ...], sha: str, fmt: Layout) -> DigitTable:
    text = _decode(path, raw)
    if not text.strip():
        what = f"a header line '{expected[0]},{expected[1]},...'" if fmt.header else "rows of label,784 pixels"
        raise DataError(f"{path}: the file is empty (expected {what})")
    lone_return = re.search("\r(?!\n)", text)
    if lone_return:  # the CSV reader would end a line there, where a person sees none
        line = text[:lone_return.start()].count("\n") + 1
        raise DataError(f"{path}, line {line}: a carriage return inside the line (old Mac line ends?); save the file "
                        "with \\n or \\r\\n line ends")
    if fmt.header:
        # the first line as the CSV reader splits lines: at newlines only (str.splitlines also splits at \x0b)
        header = [name.strip(" \t\r").strip('"') for name in text.split("\n", 1)[0].split(",")]
        _check_header(path, header, expected)
    limits = _column_limits(expected, fmt)
    body = text.split("\n", 1)[1] if fmt.header and "\n" in text else "" if fmt.header else text
    if not body.strip():
        raise DataError(f"{path}: has a header but no data rows")
    if not _only_plain_bytes(body.encode("utf-8"), len(expected)):
        _raise_first_bad_cell(path, text, expected, limits, fmt)
    try:
        frame = pd.read_csv(io.StringIO(text), header=0 if fmt.header else None, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        _raise_first_bad_cell(path, text, expected, limits, fmt)
    values = frame.to_numpy()
    if frame.shape[1] != len(expected) or not _all_whole_numbers_in_range(values, limits) \
            or _NO_DIGIT_BEFORE_DOT.search(text):  # '.0' reads as 0 but is not a plain whole number
        _raise_first_bad_cell(path, text, expected, limits, fmt)
    return _table_from_values(values.astype(np.int64), expected, sha, fmt)


def _column_limits(expected: tuple[str, ...], fmt: Layout) -> np.ndarray:
    """The largest value each column may hold: a label, an id, or a pixel (all from 0)."""
    return np.array([fmt.max_label if name == "label" else MAX_ID if name == fmt.test_id else 255
                     for name in expected], dtype=np.int64)


def _check_header(path: Path, header: list[str], expected: tuple[str, ...]) -> None:
    where = f"{path}, line 1"
    if expected[0] != "label" and header and header[0] == "label":
        raise DataError(f"{where}, column 1: a test file must not have a 'label' column "
                        f"(this looks like a train file; {path.name} holds {expected[0]}..{expected[-1]} only)")
    if expected[0] == "label" and tuple(header) == expected[1:]:
        raise DataError(f"{where}, column 1: no 'label' column (this looks like a test file; "
                        "train.csv starts with 'label')")
    seen: set[str] = set()
    for number, (got, want) in enumerate(zip(header, expected), start=1):
        if got == want:
            seen.add(got)
            continue
        if got in seen:
            raise DataError(f"{where}, column {number}: '{got}' appears twice (expected '{want}')")
        # a missing label or id column is that, not pixels out of order
        if got in expected and (want in header or want.startswith("pixel")):
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


def _all_whole_numbers_in_range(values: np.ndarray, limits: np.ndarray) -> bool:
    if values.dtype.kind not in "iuf":
        return False
    if values.dtype.kind == "f" and (np.isnan(values).any() or (values != np.round(values)).any()):
        return False
    return bool(values.min() >= 0 and (values.max(axis=0) <= limits).all())


def _raise_first_bad_cell(path: Path, text: str, expected: tuple[str, ...], limits: np.ndarray,
                          fmt: Layout) -> None:
    """Walk the text cell by cell (slow, but only for a file already known to be bad) to the first cell,
    line or field count that is wrong, and say where it is and what is wrong with it."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    first = 1 if fmt.header else 0
    for number, line in enumerate(lines[first:], start=first + 1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip():
            raise DataError(f"{path}, line {number}: blank line")
        cells = line.split(",")
        for column, (cell, limit) in enumerate(zip(cells, limits)):
            if not _PLAIN_WHOLE_NUMBER.fullmatch(cell) or int(cell.split(".")[0]) > limit:
                raise DataError(f"{path}, line {number}, column {column + 1} ('{expected[column]}'): "
                                f"{_describe_bad_cell(cell, expected[column], int(limit))}")
        if len(cells) != len(expected):
            extra = "extra field" if len(cells) > len(expected) else "missing field"
            raise DataError(f"{path}, line {number}, column {min(len(cells), len(expected)) + 1}: {len(cells)} "
                            f"fields, expected {len(expected)} ({extra})")
    raise DataError(f"{path}: could not read the values as whole numbers")


def _describe_bad_cell(cell: str, column_name: str, limit: int) -> str:
    shown = cell.strip()
    if not shown:
        return "blank cell"
    try:
        number = float(shown)
    except ValueError:
        return f"not a number: '{shown}'"
    if math.isnan(number):
        return f"NaN ('{shown}'): every cell needs a whole number"
    if not math.isfinite(number):
        return f"not a finite number: '{shown}'"
    if number != round(number):
        return f"not a whole number: '{shown}'"
    if not _PLAIN_WHOLE_NUMBER.fullmatch(cell) and not shown.startswith("-"):
        return f"not a plain whole number: '{shown}' (write {int(number)})"
    if column_name == "label":
        return f"label {shown} is outside 0..{limit}"
    if limit != 255:
        return f"{column_name} {shown} is outside 0..{limit}"
    return f"value {shown} is outside 0..255"


def read_labels_csv(path: Path, fmt: Layout = DIGITS) -> np.ndarray:
    """Answers in the layout's submission format, e.g. the sample's test_labels.csv, as labels in file order."""
    return read_answers_csv(path, fmt)[1]


def read_answers_csv(path: Path, fmt: Layout = DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """Answers in the layout's submission format as (ids, labels), in file order."""
    frame = pd.read_csv(path)
    if tuple(frame.columns) != tuple(fmt.submission):
        raise DataError(f"{path}, line 1: header must be {','.join(fmt.submission)}, "
                        f"found {','.join(map(str, frame.columns))}")
    return frame[fmt.submission[0]].to_numpy(), frame[fmt.submission[1]].to_numpy()
