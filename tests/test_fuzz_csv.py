"""Any bytes given as a CSV are either parsed exactly or refused with a DataError that names the file, the
line and (where there is one) the column; never another exception. Hypothesis corrupts valid files."""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ensemble.data import tables as data
from ensemble.data.layouts import Layout

# the digit layout at 2x2 pixels: the same reader, small enough to corrupt thousands of times a minute
TINY = Layout("tiny", "2x2 test layout", ("ImageId", "Label"), side=2)
COLUMNS = TINY.train_columns  # label, pixel0..pixel3
ROWS = [[3, 0, 255, 17, 4], [9, 1, 2, 3, 200], [0, 0, 0, 0, 0]]
VALID = ",".join(COLUMNS) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in ROWS)
CELLS = ["", " ", "1e2", "inf", "-inf", "1e400", "nan", "NaN", "-1", "256", "10", "3.5", "3.0", "x", '"', "'7'",
         "0x10", "+5", "٣", "１", "\t4", "4 ", "999999999999999999999", ",", "7,7", "\x00"]
MESSAGE = re.compile(r"^(?P<path>.+?)(, line \d+(, column \d+( \('[^']*'\))?)?)?: \S")


def reference_parse(text: str):
    """What the file says when every cell is a plain whole number in range: (labels, pixels), else None."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines = lines[:-1]
    # header names may be quoted ("label","pixel0",...): the reader allows that
    if not lines or [cell.strip().strip('"') for cell in lines[0].rstrip("\r").split(",")] != list(COLUMNS):
        return None
    values = []
    for line in lines[1:]:
        cells = line.rstrip("\r").split(",")
        if len(cells) != len(COLUMNS) or not all(re.fullmatch(r"\s*\d+(\.0*)?\s*", cell) for cell in cells):
            return None
        numbers = [int(float(cell)) for cell in cells]
        if numbers[0] > TINY.max_label or max(numbers[1:]) > 255:
            return None
        values.append(numbers)
    if not values:
        return None
    array = np.array(values)
    return array[:, 0], array[:, 1:].reshape(-1, 2, 2)


corruption = st.one_of(
    st.tuples(st.just("cell"), st.integers(0, len(ROWS) - 1), st.integers(0, len(COLUMNS) - 1),
              st.sampled_from(CELLS)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID))),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.sampled_from(["\n", ",", "\r", "\x00", "é", '"', "\n\n"])),
    st.tuples(st.just("delete"), st.integers(0, len(VALID) - 1), st.integers(1, 5)),
    st.tuples(st.just("encoding"), st.sampled_from(["utf-16", "utf-16-le", "latin-1", "utf-8-sig", "cp1252"])),
    st.tuples(st.just("bytes"), st.integers(0, len(VALID)), st.binary(min_size=1, max_size=4)),
)


def corrupt(steps) -> bytes:
    text, encoding, extra = VALID, "utf-8", []
    for step in steps:
        kind = step[0]
        if kind == "cell":
            _, row, column, value = step
            lines = text.split("\n")
            if row + 1 < len(lines):
                cells = lines[row + 1].split(",")
                if column < len(cells):
                    cells[column] = value
                    lines[row + 1] = ",".join(cells)
            text = "\n".join(lines)
        elif kind == "truncate":
            text = text[: step[1]]
        elif kind == "insert":
            text = text[: step[1]] + step[2] + text[step[1]:]
        elif kind == "delete":
            text = text[: step[1]] + text[step[1] + step[2]:]
        elif kind == "encoding":
            encoding = step[1]
        else:
            extra.append(step)
    raw = text.encode(encoding, errors="replace")
    for _, at, blob in extra:
        raw = raw[:at] + blob + raw[at:]
    return raw


def outcome_in_small_blocks(path):
    """The same file read in blocks of 23 bytes (lines split across reads): the table, or the error's text."""
    default, data.READ_BLOCK_BYTES = data.READ_BLOCK_BYTES, 23
    try:
        return data.read_train_csv(path, fmt=TINY)
    except data.DataError as error:
        return str(error)
    finally:
        data.READ_BLOCK_BYTES = default


# 3000 corruptions a run (10000 took 40 s of CI on a 2-core CPU); each CI run draws new ones
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(corruption, min_size=1, max_size=3))
def test_any_corruption_is_parsed_exactly_or_refused_with_its_place(tmp_path_factory, steps):
    raw = corrupt(steps)
    path = tmp_path_factory.mktemp("fuzz") / "train.csv"
    path.write_bytes(raw)
    try:
        table = data.read_train_csv(path, fmt=TINY)
    except data.DataError as error:
        match = MESSAGE.match(str(error))
        assert match and match.group("path") == str(path), str(error)
        assert outcome_in_small_blocks(path) == str(error)
        return
    small_blocks = outcome_in_small_blocks(path)
    assert np.array_equal(small_blocks.images, table.images) and np.array_equal(small_blocks.labels, table.labels)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pytest.fail(f"accepted bytes that are not UTF-8: {raw!r}")
    expected = reference_parse(text)
    assert expected is not None, f"accepted a file with a bad cell or layout: {text!r}"
    assert np.array_equal(table.labels, expected[0]) and np.array_equal(table.images, expected[1]), text


@pytest.mark.parametrize("cell, message", [
    ("inf", "line 3, column 2 ('pixel0'): not a finite number: 'inf'"),
    ("1e400", "line 3, column 2 ('pixel0'): not a finite number: '1e400'"),
    ("1e2", "line 3, column 2 ('pixel0'): not a plain whole number: '1e2' (write 100)"),
    ("+5", "line 3, column 2 ('pixel0'): not a plain whole number: '+5' (write 5)"),
])
def test_number_spellings_are_refused_at_their_cell(tmp_path, cell, message):
    path = tmp_path / "train.csv"
    lines = VALID.splitlines()
    lines[2] = lines[2].replace(",1,", f",{cell},", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataError) as caught:
        data.read_train_csv(path, fmt=TINY)
    assert str(caught.value) == f"{path}, {message}"


def test_a_later_real_bad_cell_does_not_hide_an_earlier_exponent(tmp_path):
    path = tmp_path / "train.csv"
    lines = VALID.splitlines()
    lines[1] = lines[1].replace(",0,", ",1e2,", 1)
    lines[3] = lines[3].replace(",0,", ",x,", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataError, match="line 2, column 2 \\('pixel0'\\): not a plain whole number: '1e2'"):
        data.read_train_csv(path, fmt=TINY)


def test_utf16_is_named_as_an_encoding_problem(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(VALID.encode("utf-16"))
    with pytest.raises(data.DataError, match="not UTF-8 text: it looks like UTF-16; save it as UTF-8"):
        data.read_train_csv(path, fmt=TINY)
