"""A Kaggle session's image and output: the installed TensorFlow/Keras/JAX/... held to our pins, what a job
keeps in /kaggle/working against the 20 GB cap, and `ensemble train`'s defaults there."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from importlib import metadata
from typing import Mapping

from ..job.record import load_record
from ..run.budget import format_duration
from ..run.request import DEFAULT_MEMBERS
from ..store.atomic import format_bytes
from ..store.session import OUTPUT_CAP_BYTES, OUTPUT_MARGIN_S, Session, SessionError, detect_session


# The packages whose versions the image decides (never bundled with our wheels), and each one's backend
IMAGE_PACKAGES = ("tensorflow", "keras", "jax", "numpy", "pandas", "scikit-learn", "scipy", "joblib", "matplotlib")


def version_problems(requirements: list[str], installed: Mapping[str, str | None], backend: str) -> list[str]:
    """Each requirement of ours on an image package that the installed version does not meet. A backend we
    do not run on (tensorflow under JAX, jax under TensorFlow) is not held to its pin."""
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version

    unused = {"tensorflow": "jax", "jax": "tensorflow"}
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        name = requirement.name.lower()
        if name not in IMAGE_PACKAGES or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        if unused.get(name) == backend:
            continue
        have = installed.get(name)
        try:
            fits = have is not None and requirement.specifier.contains(Version(have), prereleases=True)
        except InvalidVersion:
            fits = False
        if not fits:
            problems.append(f"{name} {have or 'missing'} (ensemble needs {name}{requirement.specifier})")
    return problems


def check_image_versions(backend: str | None = None) -> None:
    """One line when this image's TensorFlow/Keras/JAX/... do not fit our pins."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        requirements = metadata.requires("ensemble") or []
    except metadata.PackageNotFoundError:
        return
    installed = {}
    for name in IMAGE_PACKAGES:
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed[name] = None
    problems = version_problems(requirements, installed, backend)
    if problems:
        raise SessionError("this Kaggle image does not fit ensemble: " + "; ".join(problems) + ". In the notebook's "
                           "settings choose Environment > Always use latest environment, or add wheels of these "
                           "versions to the wheels dataset")


def output_note(kept_bytes: int, members_done: int, members_total: int) -> str:
    """What a job keeps in /kaggle/working, what it will keep when every member is done, and whether that
    fits the session's output."""
    per_member = kept_bytes / members_done if members_done else None
    projected = int(per_member * members_total) if per_member and members_total > members_done else kept_bytes
    when_done = f"; about {format_bytes(projected)} when all {members_total} are done" \
        if projected != kept_bytes else ""
    fits = (f"the session's output holds {format_bytes(OUTPUT_CAP_BYTES)}" if projected <= OUTPUT_CAP_BYTES else
            f"MORE than the {format_bytes(OUTPUT_CAP_BYTES)} a session's output holds: what is past it is lost; "
            "train fewer members per job")
    return f"the job keeps {format_bytes(kept_bytes)} in /kaggle/working ({members_done} members done){when_done}; {fits}"


def session_train_request(ws, request, say, session: Session | None = None, clock=time.time):
    """`ensemble train` inside a session: the image checked against our pins, and without --time-limit the
    time the session has left (less the margin that writes the output), so the job stops at an epoch end
    and is saved before Kaggle kills the session. The member count stays the job's (or the default)."""
    session = session or detect_session()
    if session is None:
        return request
    check_image_versions()
    limit = session.default_time_limit(clock())
    if request.time_limit is not None:
        if limit is not None and request.time_limit > limit:
            say(f"Kaggle session: --time-limit {format_duration(request.time_limit)} is more than the session has "
                f"left; using {format_duration(limit)}, so the output is written before the session ends")
            return replace(request, time_limit=limit)
        return request
    if limit is None:
        say("Kaggle session: its start is unknown, so no --time-limit is set; give one to be sure the output is "
            "written before the session ends")
        return request
    record = load_record(ws, request.job) if request.job else None
    n = request.n or (len(record.members) if record is not None and record.members else DEFAULT_MEMBERS)
    say(f"Kaggle session: --time-limit {format_duration(limit)} (what the session has left, less "
        f"{format_duration(OUTPUT_MARGIN_S)} to write the output)")
    return replace(request, time_limit=limit, n=n)
