"""A pseudo-label round as the job record keeps it (job.pseudo makes and reads the rows)."""
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
