"""What a member process leaves out of its start: packages the backend imports when installed, which no member uses.

`import tensorflow` imports Keras 3, and with it, wherever they are installed: scikit-learn and scipy's stats
(Keras' scikit-learn wrapper), matplotlib.pyplot (Keras' image gallery), IPython (Keras' notebook check) and jax
(TensorFlow Lite's optional `jax.jit`). scikit-learn and matplotlib are this project's own dependencies, IPython
comes with a notebook kernel and jax with the `jax` extra, and Kaggle's images have all four; on a 2-core CPU they
are 2.4 s of a member process's 6.3 s of imports, spent before its first epoch can begin (benchmarks/startup.py).
Every one of those imports sits in a `try ... except ImportError`, so a member process marks the packages absent
before it imports the backend: a None in `sys.modules` makes `import name` raise ModuleNotFoundError (the import
system's documented rule). A None is not quite "not installed" to code that looks into `sys.modules` first (pandas'
and h5py's IPython hooks, scipy's array-API helpers); no member reaches such code. Only the member entry points do
this (`python -m ensemble.member` and the worker's `main`), never a process that imports the library, such as a
notebook's.
"""
from __future__ import annotations

import os
import sys

# what members never import themselves: the runner makes splits and folds, the report draws, nothing here is a notebook
UNUSED_BY_MEMBERS = ("sklearn", "matplotlib", "IPython")


def unused_packages(backend: str | None) -> tuple[str, ...]:
    """The packages a member on `backend` never needs: jax is the JAX backend itself, and is kept where the backend
    is not known (a member started by hand, with no KERAS_BACKEND: Keras reads its own keras.json)."""
    return UNUSED_BY_MEMBERS + (("jax",) if backend and backend != "jax" else ())


def skip_unused_imports() -> None:
    """Mark this process's unused packages absent, before the backend is imported (one imported already stays).
    The backend is the one the runner checked and names in every member's environment (run.executors)."""
    for name in unused_packages(os.environ.get("KERAS_BACKEND")):
        sys.modules.setdefault(name, None)
