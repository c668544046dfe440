"""The plan of a run (jobs/<job>/plan.json): everything a member needs, written atomically by the runner
before any member starts. A member reads its plan and nothing else about the job: not the record, not the
ledger, not the other members. The data files are named with the hashes the job was made from, so a member
reads their cached arrays without hashing them again; the split is named by its hash too. The test file is
the one found when the run started (it may have changed since the job was made: job.outputs binds every
output to the file it came from).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.folder import class_indices
from ..data.tables import DataError, read_test_csv, read_train_csv
from ..store import atomic
from ..store.workspace import Workspace
from .arrays import JobArrays, split_arrays
from .errors import JobError
from .layout import JobLayout
from .outputs import OutputShape
from .planner import Costs
from .pseudo import add_pseudo_rows, read_pseudo
from .rounds import PseudoRound, RefitRound
from .spec import JobSpec
from .split import read_split_file, split_sha256

PLAN_VERSION = 1


@dataclass(frozen=True)
class DataFile:
    path: str
    sha256: str


@dataclass(frozen=True)
class BudgetRules:
    """How a member that calibrates itself plans its slot (run.planner.plan_slot)."""

    cap_per_slot: int   # members its slot may still start
    stretch: bool       # whether members may train longer than the spec's epochs (--epochs not given)
    multiple: int = 1   # epochs split into this many equal cycles (--snapshots)
    every: bool = False  # all cap_per_slot members, the time shared out (a --refit-full fold pass)


@dataclass(frozen=True)
class RunPlan:
    job: str
    data_dir: str
    spec: JobSpec
    train: DataFile
    test: DataFile
    split_sha256: str
    shape: OutputShape
    deadline: float | None = None                    # epoch seconds (--time-limit), else None
    predict_seconds_per_image: float | None = None   # as the job's finished members measured it, if any
    member_epochs: dict[int, int] = field(default_factory=dict)  # the epochs the runner gave each member
    # of those, the members planned last on their slots: each fits its length to the deadline in steps
    # (member.callbacks.replan) from its first steady epoch; the others once no member fits after them
    last_members: tuple[int, ...] = ()
    costs: Costs | None = None  # the job's costs when the runner last gave a member its length: they re-plan from them
    budget: BudgetRules | None = None  # under a deadline: how a member with no epochs given sizes itself
    pseudo: PseudoRound | None = None  # the job's pseudo-label round: members from its first index train on it
    refit: RefitRound | None = None    # the job's refit round: its twins train on every row
    version: int = PLAN_VERSION

    def to_dict(self) -> dict:
        return {**asdict(self), "spec": self.spec.to_dict(), "pseudo": self.pseudo.to_dict() if self.pseudo else None,
                "refit": self.refit.to_dict() if self.refit else None,
                "member_epochs": {str(index): epochs for index, epochs in self.member_epochs.items()},
                "last_members": list(self.last_members), "costs": self.costs.to_dict() if self.costs else None}

    @classmethod
    def from_dict(cls, values: dict) -> "RunPlan":
        return cls(job=str(values["job"]), data_dir=str(values["data_dir"]), spec=JobSpec.from_dict(values["spec"]),
                   train=DataFile(**values["train"]), test=DataFile(**values["test"]),
                   split_sha256=str(values["split_sha256"]), shape=OutputShape(**values["shape"]),
                   deadline=values.get("deadline"), predict_seconds_per_image=values.get("predict_seconds_per_image"),
                   member_epochs={int(index): int(epochs) for index, epochs in (values.get("member_epochs") or {}).items()},
                   last_members=tuple(int(index) for index in values.get("last_members") or ()),
                   costs=Costs.from_dict(values["costs"]) if values.get("costs") else None,
                   budget=BudgetRules(**values["budget"]) if values.get("budget") else None,
                   pseudo=PseudoRound.from_dict(values["pseudo"]) if values.get("pseudo") else None,
                   refit=RefitRound.from_dict(values["refit"]) if values.get("refit") else None,
                   version=int(values.get("version", PLAN_VERSION)))

    def is_twin(self, member: int) -> bool:
        """Whether `member` is a refit twin: it trains on every row."""
        return self.refit is not None and self.refit.uses(member)

    def member_fold(self, member: int) -> int | None:
        """The fold whose rows a member predicts as validation: the one it held out, a twin its fold member's
        (which it trained on; nothing scores them)."""
        return self.spec.member_fold(self.refit.parent(member) if self.is_twin(member) else member)


def write_plan(ws: Workspace, plan: RunPlan) -> Path:
    return atomic.write_json(JobLayout(ws, plan.job).plan, plan.to_dict())


def read_plan(ws: Workspace, job: str) -> RunPlan:
    path = JobLayout(ws, job).plan
    try:
        return RunPlan.from_dict(atomic.read_json(path))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise JobError(f"{path}: no run plan to train from ({type(error).__name__}: {error}); members are started "
                       f"by `ensemble train --job {job}`, which writes it") from None


def plan_arrays(ws: Workspace, plan: RunPlan, member: int | None = None) -> JobArrays:
    """The member's data, exactly what the plan names: the cached arrays of the recorded content (parsed
    again, and checked, only when the cache does not hold them), the split of the recorded hash; in a
    k-fold job, member's own fold held out (a refit twin trains on every row)."""
    spec, layout = plan.spec, plan.spec.data_layout
    train = read_train_csv(Path(plan.train.path), ws.cache_dir, layout, spec.limit_train, sha256=plan.train.sha256)
    test = read_test_csv(Path(plan.test.path), ws.cache_dir, layout, sha256=plan.test.sha256)
    for table, named in ((train, plan.train), (test, plan.test)):
        if table.sha256 != named.sha256:
            raise DataError(f"{named.path} changed since this run was planned (its content hash differs); "
                            f"rerun `ensemble train --job {plan.job}`")
    split_path = JobLayout(ws, plan.job).split
    split = read_split_file(split_path)
    if split_sha256(split) != plan.split_sha256:
        raise JobError(f"{split_path} is not the split this run was planned with; rerun "
                       f"`ensemble train --job {plan.job}`")
    y_test = class_indices(test.labels, spec.classes) if test.labels is not None else None
    arrays = split_arrays(train.images, class_indices(train.labels, spec.classes), split, test.images, y_test,
                          plan.test.sha256, plan.split_sha256, plan.member_fold(member) if member is not None else None,
                          train_all=member is not None and plan.is_twin(member))
    if member is None or plan.pseudo is None or not plan.pseudo.uses(member):
        return arrays
    if plan.pseudo.test_sha256 != plan.test.sha256:
        raise JobError(f"the job's pseudo-labels are rows of another {Path(plan.test.path).name} (sha256 "
                       f"{plan.pseudo.test_sha256[:12]}; it now has {plan.test.sha256[:12]}): put that file back to "
                       "train the members that use them")
    rows, labels = read_pseudo(plan.pseudo.path(ws, plan.job), plan.pseudo.sha256)
    return add_pseudo_rows(arrays, rows, labels)


def predict_speed(seconds_per_image: list[float]) -> float | None:
    """What the plan tells members about predicting: the fastest a finished member of the job measured."""
    measured = [value for value in seconds_per_image if value and value > 0]
    return float(np.min(measured)) if measured else None
