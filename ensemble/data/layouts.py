"""The 28x28 CSV family on Kaggle: one Layout per competition or dataset, and detection from a data folder.

What differs between Digit Recognizer, Kannada-MNIST, Fashion-MNIST, Sign Language MNIST and EMNIST lives
here and only here: file names, pixel column names (`pixel0..` or `pixel1..`, or no header), an id column
in test, whether test is labelled, the submission's columns and ids, the image orientation, class names
and the competition. The classes themselves come from the training labels (scikit-learn's `classes_`):
a job records them, nets have one output per class, and predictions map back to the labels.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

SIDE = 28


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    submission: tuple[str, str]             # the submission's (id, label) columns
    train_file: str = "train.csv"
    test_file: str = "test.csv"
    first_pixel: int = 0                    # pixel0..pixel783, or pixel1..pixel784
    header: bool = True                     # EMNIST's CSVs have none: label, then 784 pixels
    test_id: str | None = None              # a test column naming each image (Kannada-MNIST: "id")
    test_labelled: bool = False             # Fashion-MNIST, Sign Language MNIST and EMNIST label test
    ids_from_test: bool = False             # submission ids: the test id column, else 1..N
    max_label: int = 9                      # labels are whole numbers 0..max_label
    transposed: bool = False                # EMNIST stores each image transposed
    class_names: dict[int, str] | None = None
    competition: str | None = None          # Kaggle competition for `ensemble submit`
    code_competition: bool = False          # submitted from a Kaggle notebook only
    kaggle_dataset: str | None = None       # owner/slug of the Kaggle dataset it comes as (no competition)
    side: int = SIDE

    @property
    def pixel_columns(self) -> tuple[str, ...]:
        return tuple(f"pixel{i}" for i in range(self.first_pixel, self.first_pixel + self.side * self.side))

    @property
    def train_columns(self) -> tuple[str, ...]:
        return ("label",) + self.pixel_columns

    @property
    def test_columns(self) -> tuple[str, ...]:
        if self.test_labelled:
            return self.train_columns
        return ((self.test_id,) if self.test_id else ()) + self.pixel_columns

    def class_name(self, label: int) -> str:
        return (self.class_names or {}).get(int(label), str(int(label)))


FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")
# Sign Language MNIST: label k is the k-th letter; J (9) and Z (25) need motion and are absent
SIGN_NAMES = {k: chr(ord("A") + k) for k in range(25) if k != 9}
LAYOUTS: dict[str, Layout] = {fmt.name: fmt for fmt in (
    Layout("digit-recognizer", "Kaggle Digit Recognizer: train.csv label,pixel0..783; test.csv pixels; "
               "submission ImageId,Label from 1", ("ImageId", "Label"), competition="digit-recognizer"),
    Layout("kannada-mnist", "Kannada-MNIST: test.csv starts with an id column; submission id,label with the "
               "test ids", ("id", "label"), test_id="id", ids_from_test=True,
               competition="Kannada-MNIST", code_competition=True),
    # the datasets below have no competition: their predictions are written as id,label with ids 1..N
    Layout("fashion-mnist", "Fashion-MNIST (zalando-research/fashionmnist): fashion-mnist_train.csv and "
               "fashion-mnist_test.csv, both labelled, pixel1..pixel784", ("id", "label"),
               train_file="fashion-mnist_train.csv", test_file="fashion-mnist_test.csv", first_pixel=1,
               test_labelled=True, class_names=dict(enumerate(FASHION_NAMES)),
               kaggle_dataset="zalando-research/fashionmnist"),
    Layout("sign-language-mnist", "Sign Language MNIST (datamunge): sign_mnist_train.csv and "
               "sign_mnist_test.csv, labelled, pixel1..pixel784, 24 letters (labels 0..24 without 9)", ("id", "label"),
               train_file="sign_mnist_train.csv", test_file="sign_mnist_test.csv", first_pixel=1,
               test_labelled=True, max_label=24, class_names=SIGN_NAMES,
               kaggle_dataset="datamunge/sign-language-mnist"),
    Layout("emnist", "EMNIST (crawford/emnist): emnist-<split>-train.csv and -test.csv, no header, label "
               "then 784 pixels, images stored transposed", ("id", "label"), train_file="emnist-*-train.csv",
               test_file="emnist-*-test.csv", header=False, test_labelled=True, max_label=61, transposed=True,
               kaggle_dataset="crawford/emnist"),
)}
DEFAULT_LAYOUT = "digit-recognizer"


class LayoutError(ValueError):
    """A data folder whose layout is ambiguous or unknown; the message lists what was seen and the choices."""


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise LayoutError(f"unknown --format {name!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def data_files(fmt: Layout, folder: Path) -> tuple[Path, Path]:
    """The train and test CSV of a folder in this format: the layout's own file names (EMNIST: the one split
    found there), else two CSVs of other names whose headers fit the layout (`renamed_files`)."""
    folder = Path(folder)
    try:
        named = _named_files(fmt, folder)
    except LayoutError:
        renamed = renamed_files(fmt, folder)
        if renamed is None:
            raise
        return renamed
    if named[0].is_file() and named[1].is_file():
        return named
    return renamed_files(fmt, folder) or named


def is_own_name(fmt: Layout, train: Path, test: Path) -> bool:
    """Whether two files carry the layout's own names (the note for renamed files is needed otherwise)."""
    return fnmatch.fnmatch(train.name, fmt.train_file) and fnmatch.fnmatch(test.name, fmt.test_file)


def _named_files(fmt: Layout, folder: Path) -> tuple[Path, Path]:
    if "*" not in fmt.train_file:
        return folder / fmt.train_file, folder / fmt.test_file
    trains = sorted(folder.glob(fmt.train_file))
    if len(trains) != 1:
        found = ", ".join(path.name for path in trains) or "none"
        raise LayoutError(f"{folder}: expected one {fmt.train_file} (found {found}); put one split per folder")
    split = re.fullmatch(r"emnist-(.+)-train\.csv", trains[0].name).group(1)
    return trains[0], folder / f"emnist-{split}-test.csv"


def renamed_files(fmt: Layout, folder: Path) -> tuple[Path, Path] | None:
    """(train, test) among a folder's CSVs of other names, when exactly one pair's headers fit the layout.
    Where train and test share a header (a labelled test), the file whose name says train is train, else the
    larger one. None when no pair, or more than one, fits."""
    if not folder.is_dir():
        return None
    csvs = sorted(path for path in folder.iterdir() if path.suffix.lower() == ".csv" and path.is_file())
    pairs = [(train, test) for train in csvs for test in csvs if train != test and _headers_fit(fmt, train, test)]
    if len(pairs) == 2 and pairs[0] == pairs[1][::-1]:  # the same two files either way round
        first, second = pairs[0]
        says_train = [path for path in (first, second) if "train" in path.name.lower()]
        if len(says_train) == 1:
            train = says_train[0]
        else:
            train = max((first, second), key=lambda path: path.stat().st_size)
        pairs = [(train, second if train == first else first)]
    return pairs[0] if len(pairs) == 1 else None


def _first_line(path: Path) -> str:
    with path.open("rb") as handle:
        return handle.readline(65536).decode("utf-8-sig", errors="replace").strip()


def detect_layout(folder: Path) -> Layout:
    """The layout of a data folder, from its file names and headers; refuses what fits none or several. Files
    with a layout's own names decide; only where none has them do the headers of other names count."""
    folder = Path(folder)
    candidates = [fmt for fmt in LAYOUTS.values() if _own_files_fit(fmt, folder)]
    if not candidates:
        candidates = [fmt for fmt in LAYOUTS.values() if renamed_files(fmt, folder) is not None]
    if len(candidates) == 1:
        return candidates[0]
    seen = _describe_folder(folder)
    choices = ", ".join(LAYOUTS)
    if not candidates:
        raise LayoutError(f"{folder}: no known 28x28 CSV layout ({seen}). Known layouts: {choices}; "
                          "name one with --format, or see README 'Data layouts'")
    raise LayoutError(f"{folder}: fits several layouts ({', '.join(fmt.name for fmt in candidates)}; {seen}); "
                      "choose one with --format")


def _own_files_fit(fmt: Layout, folder: Path) -> bool:
    try:
        train, test = _named_files(fmt, folder)
    except LayoutError:
        return False
    return train.is_file() and test.is_file() and _headers_fit(fmt, train, test)


def _headers_fit(fmt: Layout, train: Path, test: Path) -> bool:
    train_head, test_head = _first_line(train).split(","), _first_line(test).split(",")
    if not fmt.header:
        return train_head[0].strip().isdigit() and test_head[0].strip().isdigit()
    names = lambda cells: [cell.strip().strip('"') for cell in cells[:2]]  # noqa: E731
    return names(train_head) == list(fmt.train_columns[:2]) and names(test_head) == list(fmt.test_columns[:2])


def _describe_folder(folder: Path) -> str:
    if not folder.is_dir():
        return "the folder does not exist"
    csvs = sorted(path for path in folder.iterdir() if path.suffix == ".csv")
    if not csvs:
        return "no .csv files"
    parts = []
    for path in csvs[:4]:
        cells = _first_line(path).split(",")
        parts.append(f"{path.name} starts '{','.join(cells[:3])}{',...' if len(cells) > 3 else ''}'")
    return "; ".join(parts)
