"""The frozen spec: everything that decides what a member learns."""
from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, fields, replace

from ..data.formats import DEFAULT_FORMAT, TaskFormat, get_format
from ..nets.architectures import NETS
from ..nets.precision import resolve_precision
from ..nets.recipes import AUGMENTATIONS, KEEP, SCHEDULES, Augmentation, recipe_for
from .errors import JobError

# What a record written before a field existed meant by it (the first recipes had one fixed schedule,
# augmentation and checkpoint rule for every net).
SPEC_FIELD_DEFAULTS = {"recipe": None, "schedule": "plateau", "zoom": 0.1, "shift": 0.1, "rotation": 0.0,
                       "keep": "best", "snapshots": 1, "tta": False, "task": DEFAULT_FORMAT,
                       "classes": tuple(range(10))}


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides what a member learns. Two runs with equal specs build the same ensemble."""

    model: str          # the net
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    augment: str        # idg, legacy-idg or none, with the ranges below
    precision: str      # resolved: float32, mixed_bfloat16 or mixed_float16, never "auto"
    seed: int
    val_split: float
    limit_train: int | None
    train_sha256: str
    test_sha256: str
    recipe: str | None = None   # the recipe the defaults came from (None: a record older than recipes)
    schedule: str = "plateau"
    zoom: float = 0.1
    shift: float = 0.1
    rotation: float = 0.0
    keep: str = "best"          # best: the best validation epoch's weights; last: the final epoch's
    snapshots: int = 1          # K > 1: K cosine cycles, each cycle's end saved as a model of its own
    tta: bool = False           # also predict under the fixed test-time views (augment.TTA_VIEWS)
    task: str = DEFAULT_FORMAT  # the data layout (formats.FORMATS)
    classes: tuple[int, ...] = tuple(range(10))  # the training labels, sorted: output k of a net is classes[k]

    @classmethod
    def from_options(cls, *, recipe=None, model=None, epochs=None, batch_size=None, learning_rate=None,
                     schedule=None, augment=None, rotation=None, keep=None, snapshots=None, tta=None,
                     precision=None, seed=0, val_split=0.1, limit_train=None, train_sha256="", test_sha256="",
                     task=DEFAULT_FORMAT, classes=tuple(range(10)),
                     gpu_capabilities: list[float] | None = None) -> "JobSpec":
        """Fill what the user left out from the recipe (--recipe, else the net's own) and the hardware the
        members use (gpu_capabilities: the chosen GPUs, [] for the CPU, None to ask nvidia-smi)."""
        try:
            base = recipe_for(recipe, model)
        except KeyError as error:
            raise JobError(error.args[0]) from None
        net = model or base.net
        if net not in NETS:
            raise JobError(f"unknown net {net!r}; choose one of {', '.join(NETS)}")
        for name, value in (("epochs", epochs), ("batch", batch_size), ("limit-train", limit_train),
                            ("snapshots", snapshots)):
            if value is not None and value < 1:
                raise JobError(f"--{name} must be at least 1, got {value}")
        if learning_rate is not None and not learning_rate > 0:
            raise JobError(f"--lr must be positive, got {learning_rate}")
        if rotation is not None and not 0 <= rotation <= 180:
            raise JobError(f"--rotation is in degrees, 0 to 180, got {rotation}")
        for name, value, choices in (("augment", augment, AUGMENTATIONS), ("schedule", schedule, SCHEDULES),
                                     ("keep", keep, KEEP)):
            if value is not None and value not in choices:
                raise JobError(f"unknown --{name} {value!r}; choose one of {', '.join(choices)}")
        snapshots = snapshots or 1
        epochs = epochs or base.epochs
        if snapshots > 1:
            if schedule not in (None, "cosine"):
                raise JobError(f"--snapshots {snapshots} trains cosine cycles; drop --schedule {schedule} "
                               "(or pass --schedule cosine)")
            schedule = "cosine"
            if epochs % snapshots:
                fits = max(snapshots, round(epochs / snapshots) * snapshots)
                raise JobError(f"--snapshots {snapshots} needs epochs in equal cycles: {epochs} epochs do not "
                               f"split into {snapshots}; use --epochs {fits}")
        augmentation = base.augmentation
        try:
            precision = resolve_precision(precision or base.precision, gpus=gpu_capabilities)
        except ValueError as error:
            raise JobError(str(error)) from None
        return cls(model=net, epochs=epochs, batch_size=batch_size or base.batch_size,
                   optimizer=base.optimizer, learning_rate=learning_rate or base.learning_rate,
                   augment=augment or augmentation.kind, precision=precision, seed=seed, val_split=val_split,
                   limit_train=limit_train, train_sha256=train_sha256, test_sha256=test_sha256,
                   recipe=base.name, schedule=schedule or base.schedule, zoom=augmentation.zoom,
                   shift=augmentation.shift,
                   rotation=float(augmentation.rotation if rotation is None else rotation),
                   keep=keep or base.keep, snapshots=snapshots, tta=base.tta if tta is None else bool(tta), task=task,
                   classes=tuple(int(c) for c in classes))

    @classmethod
    def from_dict(cls, values: dict) -> "JobSpec":
        spec = cls(**{field.name: values.get(field.name, SPEC_FIELD_DEFAULTS.get(field.name))
                      for field in fields(cls)})
        return replace(spec, classes=tuple(int(c) for c in spec.classes))  # JSON gives a list

    def to_dict(self) -> dict:
        return asdict(self)

    def member_seed(self, index: int) -> int:
        return self.seed + index

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.augment, self.zoom, self.shift, self.rotation)

    @property
    def format(self) -> TaskFormat:
        return get_format(self.task)


def spec_differences(recorded: JobSpec, requested: JobSpec) -> list[str]:
    return [f"{name}: job has {value!r}, this run asks {getattr(requested, name)!r}"
            for name, value in recorded.to_dict().items() if getattr(requested, name) != value]


def resume_command(record: "JobRecord") -> str:
    """The `ensemble train` command line that continues this job (same spec, same data, every member)."""
    spec = record.spec
    parts = ["ensemble train", f"--job {shlex.quote(record.name)}", f"--n {len(record.members)}",
             f"--data {shlex.quote(record.data_dir)}", f"--format {spec.task}"]
    if spec.recipe is not None:
        parts.append(f"--recipe {spec.recipe}")
    parts += [f"--model {spec.model}", f"--epochs {spec.epochs}", f"--batch {spec.batch_size}",
              f"--lr {spec.learning_rate:g}", f"--schedule {spec.schedule}", f"--augment {spec.augment}",
              f"--rotation {spec.rotation:g}", f"--keep {spec.keep}", f"--snapshots {spec.snapshots}",
              "--tta" if spec.tta else "--no-tta", f"--precision {spec.precision}", f"--seed {spec.seed}",
              f"--val-split {spec.val_split}"]
    if spec.limit_train is not None:
        parts.append(f"--limit-train {spec.limit_train}")
    return " ".join(parts)
