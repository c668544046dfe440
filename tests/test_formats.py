"""The 28x28 CSV family: each built-in layout written from the sample digits, detected and read back."""
import numpy as np
import pytest

from ensemble.data.layouts import LAYOUTS, LayoutError, data_files, detect_layout, get_layout
from ensemble.data.sources import make_sample
from ensemble.data.tables import DataError, read_test_csv, read_train_csv


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Every built-in layout, written from the same sample digits by `make_sample`."""
    root = tmp_path_factory.mktemp("layouts")
    for name, fmt in LAYOUTS.items():
        make_sample(root / name, fmt=fmt)
    return root


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_layout_is_detected_and_reads_back_the_same_digits(name, layouts, sample_dir):
    folder = layouts / name
    fmt = detect_layout(folder)
    assert fmt.name == name
    train_path, test_path = data_files(fmt, folder)
    train, test = read_train_csv(train_path, fmt=fmt), read_test_csv(test_path, fmt=fmt)
    reference = read_train_csv(sample_dir / "train.csv")
    assert np.array_equal(train.images, reference.images)  # the right way round, EMNIST's transposed storage too
    assert np.array_equal(train.labels, reference.labels)
    assert len(test) == 1000
    assert (test.labels is not None) == fmt.test_labelled
    if fmt.ids_from_test:
        assert test.ids[:3].tolist() == [100000, 100001, 100002]


def test_files_name_the_layout():
    header = ",".join(LAYOUTS["kannada-mnist"].test_columns[:3])
    assert header == "id,pixel0,pixel1"
    assert LAYOUTS["fashion-mnist"].train_columns[:2] == ("label", "pixel1")
    assert LAYOUTS["fashion-mnist"].class_name(9) == "Ankle boot"
    assert LAYOUTS["sign-language-mnist"].class_name(10) == "K" and 9 not in LAYOUTS["sign-language-mnist"].class_names
    assert LAYOUTS["emnist"].class_name(12) == "12"


def test_emnist_images_are_stored_transposed(layouts, sample_dir):
    fmt = LAYOUTS["emnist"]
    train_path, _ = data_files(fmt, layouts / "emnist")
    first_row = np.array(train_path.read_text().splitlines()[0].split(","), dtype=int)
    original = read_train_csv(sample_dir / "train.csv").images[0]
    assert first_row[0] == read_train_csv(sample_dir / "train.csv").labels[0]
    assert np.array_equal(first_row[1:].reshape(28, 28), original.T)


def test_unknown_and_ambiguous_folders_list_what_was_seen_and_the_choices(tmp_path, layouts):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "train.csv").write_text("target,p0,p1\n1,0,0\n")
    (odd / "test.csv").write_text("p0,p1\n0,0\n")
    with pytest.raises(LayoutError) as caught:
        detect_layout(odd)
    message = str(caught.value)
    assert "no known 28x28 CSV layout (test.csv starts 'p0,p1'; train.csv starts 'target,p0,p1')" in message
    assert "digit-recognizer, kannada-mnist, fashion-mnist, sign-language-mnist, emnist" in message
    both = tmp_path / "both"
    both.mkdir()
    for source in ("fashion-mnist", "sign-language-mnist"):
        for path in (layouts / source).iterdir():
            (both / path.name).write_bytes(path.read_bytes())
    with pytest.raises(LayoutError, match="fits several layouts \\(fashion-mnist, sign-language-mnist;"):
        detect_layout(both)
    with pytest.raises(LayoutError, match="unknown --format 'cifar'"):
        get_layout("cifar")


def test_label_range_and_bad_cells_follow_the_layout(tmp_path):
    fmt = LAYOUTS["sign-language-mnist"]
    pixels = ",".join(["0"] * 784)
    path = tmp_path / "sign_mnist_train.csv"
    path.write_text(",".join(fmt.train_columns) + f"\n24,{pixels}\n25,{pixels}\n")
    with pytest.raises(DataError, match="line 3, column 1 \\('label'\\): label 25 is outside 0..24"):
        read_train_csv(path, fmt=fmt)
    emnist = LAYOUTS["emnist"]
    path = tmp_path / "emnist-x-train.csv"
    path.write_text(f"3,{pixels}\n4,{pixels[:-2]}\n")
    with pytest.raises(DataError, match="line 2"):
        read_train_csv(path, fmt=emnist)
