"""What a member process leaves out of its start: packages the backend imports when installed, which no member uses.

`import tensorflow` imports Keras 3, and with it, wherever they are installed: scikit-learn and scipy's stats
(Keras' scikit-learn wrapper), matplotlib.pyplot (Keras' image gallery), IPython (Keras' notebook check) and
jax (TensorFlow Lite's optional `jax.jit`). Kaggle's images have all four, as does an install with this project's
`test` and `jax` extras; on a 2-core CPU they are 2 s of a worker's 6 s start, spent before its first member can
begin (benchmarks/startup.py). Every one of those imports sits in a `try ... except ImportError`, so a member
process marks the packages as absent before it imports the backend: a None in `sys.modules` makes `import name`
raise ModuleNotFoundError (the import system's documented rule). Only the member entry points do this (the worker's
and the member process's `main`), never a process that imports the library, such as a notebook's.
"""
from __future__ import annotations

import sys

from ..run.devices import configured_backend

# what members never import themselves: the runner makes splits and folds, the report draws, nothing here is a notebook
UNUSED_BY_MEMBERS = ("sklearn", "matplotlib", "IPython")


def unused_packages(backend: str) -> tuple[str, ...]:
    """The packages a member on `backend` never needs (jax is the JAX backend itself)."""
    return UNUSED_BY_MEMBERS + (() if backend == "jax" else ("jax",))


def skip_unused_imports(environ=None) -> tuple[str, ...]:
    """Mark this process's unused packages absent, before the backend is imported; what it marked (a package
    imported already is left as it is)."""
    skipped = tuple(name for name in unused_packages(configured_backend(environ)) if name not in sys.modules)
    for name in skipped:
        sys.modules[name] = None
    return skipped
