"""The offline install set for a Kaggle session: a wheel of `ensemble` and of each runtime dependency a
Kaggle image may lack, built from what is installed here (so the session runs exactly the versions tested
here, and building needs no network).

The heavy packages a Kaggle image ships (IMAGE_PACKAGES: TensorFlow, Keras, JAX, numpy, pandas, scikit-learn,
scipy, matplotlib, joblib) are never bundled, nor what only they need. Each wheel is packed from the installed
distribution's files by `wheel pack`; `ensemble` itself, installed editable from a checkout, is packed from
its package folder. A notebook installs them with `pip install --no-index --find-links DIR ensemble`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .competition import KaggleError
from .session import IMAGE_PACKAGES

ROOT = "ensemble"
NEVER_BUNDLED = frozenset({*IMAGE_PACKAGES, "jaxlib", "tensorflow-cpu", "tf-keras"})
_SKIPPED_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
WHEEL_TEXT = "Wheel-Version: 1.0\nGenerator: ensemble (repacked)\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions(root: str = ROOT) -> list[metadata.Distribution]:
    """`root` and every distribution its runtime requirements pull in, less the image's own packages (which
    are not followed: what only TensorFlow needs, the image has)."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    queue = [root]
    while queue:
        name = canonical(queue.pop())
        if name in seen or name in NEVER_BUNDLED:
            continue
        dist = installed_distribution(name)
        if dist is None:
            raise KaggleError(f"{name} is needed by ensemble but not installed here; pip install it, then build "
                              "the wheels again")
        seen[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                queue.append(requirement.name)
    return list(seen.values())


def installed_distribution(name: str) -> metadata.Distribution | None:
    """The installed distribution of a name: a dist-info (what pip installed) before an egg-info (a source
    checkout's build leftover on sys.path, which holds no installed file list)."""
    found = list(metadata.distributions(name=name))
    installed = [dist for dist in found if str(getattr(dist, "_path", "")).endswith(".dist-info")]
    return (installed or found or [None])[0]


def _editable_root(dist: metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    try:
        return bool(text and json.loads(text).get("dir_info", {}).get("editable"))
    except ValueError:
        return False


def _stage(dist: metadata.Distribution, staging: Path) -> Path:
    """The distribution's files laid out as an unpacked wheel: name-version/ with its packages and dist-info."""
    name, version = dist.metadata["Name"], dist.version
    safe = re.sub(r"[-_.]+", "_", name)
    folder = staging / f"{safe}-{version}"
    info = folder / f"{safe}-{version}.dist-info"
    info.mkdir(parents=True)
    wheel_text = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: false" in wheel_text:
        raise KaggleError(f"{name} {version} is not pure Python, so it cannot be repacked from this install; put its "
                          f"wheel beside the others (pip download {name}=={version} --only-binary :all: --no-deps)")
    if _editable_root(dist):
        for top in (dist.read_text("top_level.txt") or name).split():
            spec = importlib.util.find_spec(top)
            if spec is None or not spec.submodule_search_locations:
                raise KaggleError(f"cannot find the package folder of {top} to pack {name}")
            source = Path(next(iter(spec.submodule_search_locations)))
            shutil.copytree(source, folder / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        for file in dist.files or []:
            parts = Path(file).parts
            if parts[0] == ".." or "__pycache__" in parts or file.name.endswith(".pyc") or \
                    parts[0].endswith(".dist-info"):
                continue
            target = folder / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dist.locate_file(file), target)
    for entry in (dist.files or []):
        if entry.parts[0].endswith(".dist-info") and entry.name not in _SKIPPED_DIST_INFO and entry.name != "WHEEL":
            target = info / Path(*entry.parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dist.locate_file(entry), target)
    if not (info / "METADATA").is_file():
        (info / "METADATA").write_text(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "")
    for extra in ("entry_points.txt", "top_level.txt"):
        if not (info / extra).is_file() and dist.read_text(extra):
            (info / extra).write_text(dist.read_text(extra))
    (info / "WHEEL").write_text(WHEEL_TEXT)
    return folder


def pack(folder: Path, out: Path) -> Path:
    """`wheel pack` of an unpacked wheel folder; the wheel's path."""
    before = set(out.glob("*.whl"))
    done = subprocess.run([sys.executable, "-m", "wheel", "pack", "--dest-dir", str(out), str(folder)],
                          capture_output=True, text=True, env={"SOURCE_DATE_EPOCH": "315532800", **os.environ})
    if done.returncode != 0:
        missing = "No module named wheel" in done.stderr
        raise KaggleError("the `wheel` package is needed to build the offline install: pip install 'ensemble[kaggle]'"
                          if missing else f"wheel pack {folder.name} failed: {done.stderr.strip()[-300:]}")
    made = sorted(set(out.glob("*.whl")) - before)
    return made[0] if made else next(out.glob(f"{folder.name}-*.whl"))


@dataclass(frozen=True)
class WheelSet:
    folder: Path
    wheels: tuple[Path, ...]
    content_sha256: str  # of what the wheels hold (their RECORDs), not of the zip bytes

    def names(self) -> list[str]:
        return [path.name for path in self.wheels]


def content_hash(wheels: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(wheels, key=lambda p: p.name):
        with zipfile.ZipFile(path) as bundle:
            record = next(name for name in bundle.namelist() if name.endswith(".dist-info/RECORD"))
            lines = sorted(line for line in bundle.read(record).decode().splitlines() if not line.startswith(record))
        digest.update(path.name.encode() + b"\n" + "\n".join(lines).encode() + b"\n")
    return digest.hexdigest()


def build_wheels(out: Path) -> WheelSet:
    """Wheels of ensemble and its small dependencies into `out` (emptied of older wheels first)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    wheels = []
    with tempfile.TemporaryDirectory(prefix="ensemble-wheels-") as scratch:
        for dist in runtime_distributions():
            wheels.append(pack(_stage(dist, Path(scratch)), out))
    return WheelSet(out, tuple(sorted(wheels)), content_hash(wheels))
