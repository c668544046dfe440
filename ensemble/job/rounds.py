"""The rounds a job adds after its first members, as its record keeps them: a pseudo-label round (job.pseudo
makes and reads its rows) and a refit round (job.refit)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..store.workspace import Workspace, member_name
from .layout import JobLayout


@dataclass(frozen=True)
class PseudoRound:
    """A pseudo-label round as the job records it."""

    round: int              # 1: the only round a job has
    threshold: float        # the blend's probability a row needed
    first_member: int       # members from this index on train with the rows
    rows: int               # test rows labelled
    test_rows: int          # of the test file's rows
    models: tuple[str, ...]  # the blend that labelled them (their mean softmax)
    tta: bool               # from their test-time augmented outputs
    test_sha256: str        # the test file the rows are rows of
    sha256: str             # the rows' and labels' content hash (pseudo_sha256)
    made: str

    @property
    def share(self) -> float:
        return self.rows / self.test_rows if self.test_rows else 0.0

    def path(self, ws: Workspace, job: str) -> Path:
        return JobLayout(ws, job).pseudo(self.round)

    def uses(self, member: int) -> bool:
        return member >= self.first_member

    def describe(self) -> str:
        return (f"pseudo-labels round {self.round}: {self.rows} of {self.test_rows} test rows ({self.share:.1%}) "
                f"that the mean blend of {len(self.models)} models{' with TTA' if self.tta else ''} gave at least "
                f"{self.threshold:g}, added to the training rows of {member_name(self.first_member)} and later "
                "members (legal in these competitions: the test images are every competitor's, unlabelled); "
                "validation stays on labelled rows")

    def to_dict(self) -> dict:
        return {**asdict(self), "models": list(self.models)}

    @classmethod
    def from_dict(cls, values: dict) -> "PseudoRound":
        return cls(**{**values, "models": tuple(values["models"])})


@dataclass(frozen=True)
class RefitRound:
    """A k-fold job's refit round (--refit-full) as the job records it: each fold member gets a twin, a member
    of its own seed that trains on every row for the epochs the fold member's kept weights had (the folds chose
    them, as AutoGluon's refit_full takes its bagged models' iterations). A twin has no held-out rows: blends
    weigh and score the fold members on their out-of-fold predictions, and the twins' test predictions stand
    in for theirs in the submission."""

    first_member: int          # twins are members first_member, first_member + 1, ...
    parents: tuple[int, ...]   # twin first_member + i refits member parents[i]
    epochs: tuple[int, ...]    # twin first_member + i trains epochs[i] epochs
    made: str

    @property
    def end(self) -> int:
        """One past the last twin: the member count the round makes the job."""
        return self.first_member + len(self.parents)

    def uses(self, member: int) -> bool:
        """Whether `member` is a twin (trains on every row)."""
        return self.first_member <= member < self.end

    def parent(self, member: int) -> int:
        return self.parents[member - self.first_member]

    def twin(self, parent: int) -> int | None:
        return self.first_member + self.parents.index(parent) if parent in self.parents else None

    def epochs_of(self, member: int) -> int:
        return self.epochs[member - self.first_member]

    def describe(self) -> str:
        twins = f"{member_name(self.first_member)}..{member_name(self.end - 1)}" if len(self.parents) > 1 \
            else member_name(self.first_member)
        chosen = sorted(set(self.epochs))
        return (f"refit-full: {twins} train on every training row, one per fold member, each for the epochs its fold "
                f"member's kept weights had ({', '.join(map(str, chosen))}); the fold members' out-of-fold "
                "predictions choose and score every blend, and their twins' test predictions make the submission")

    def to_dict(self) -> dict:
        return {**asdict(self), "parents": list(self.parents), "epochs": list(self.epochs)}

    @classmethod
    def from_dict(cls, values: dict) -> "RefitRound":
        return cls(int(values["first_member"]), tuple(int(p) for p in values["parents"]),
                   tuple(int(e) for e in values["epochs"]), str(values.get("made", "")))
