"""A member's live progress (jobs/<job>/progress/member-XX.json) as a type: the member writes it, the runner,
`ensemble status` and the live view read it. Keys are those earlier versions wrote, so old files read."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..store import atomic


@dataclass(frozen=True)
class Progress:
    pid: int | None = None
    host: str | None = None
    cuda_visible_devices: str | None = None
    ray_node_id: str | None = None
    phase: str = "starting"          # starting, training, predicting, done
    epoch: int | None = None         # finished epochs
    epochs: int | None = None
    final_share: float | None = None  # the share of an epoch's steps its last epoch trains, when partial
    batch: int = 0                   # batches done in the current epoch
    batches: int | None = None       # batches per epoch, once the member knows
    val_accuracy: float | None = None
    epoch_seconds: float | None = None
    heartbeat_s: float | None = None  # the longest gap between this member's updates while it trained or predicted
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the member found and did (damaged files)
    costs: dict | None = None        # a calibrating member's measured costs (run.planner.Costs as a dict)
    updated: float = 0.0             # time.time() of the write

    @property
    def known(self) -> bool:
        """Whether a member wrote this (an empty Progress stands for none yet)."""
        return self.updated > 0

    @property
    def batch_share(self) -> float:
        """How much of the current epoch is done."""
        return self.batch / self.batches if self.batches else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, values: dict) -> "Progress":
        known = {f.name for f in fields(cls)}
        chosen = {key: value for key, value in values.items() if key in known}
        chosen["notes"] = tuple(chosen.get("notes") or ())
        return cls(**chosen)


NO_PROGRESS = Progress()


def read_progress(path: Path) -> Progress:
    """A member's progress; NO_PROGRESS before it starts, or for a file that does not read as one."""
    try:
        values = atomic.read_json(path)
        return Progress.from_dict(values) if isinstance(values, dict) else NO_PROGRESS
    except (OSError, ValueError, TypeError):
        return NO_PROGRESS
