"""The frozen spec: everything that decides what a member learns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..data.layouts import DEFAULT_LAYOUT, LAYOUTS, Layout, get_layout
from ..nets.architectures import NETS
from ..nets.precision import PRECISIONS, resolve_precision
from ..nets.recipes import (AUGMENTATIONS, KEEP, ONECYCLE_WARMUP, RECIPES, SCHEDULES, Augmentation, Recipe,
                            recipe_for)
from ..nets.width import AUTO as AUTO_WIDTH
from ..nets.width import parse_width, resolve_width, width_problem
from ..store.hardware import list_gpus
from .errors import JobError
from .options import (at_least, declared, default_of, option, positive, probability, share_below, within,
                      zero_or_at_least)

# What a record written before a field existed meant by it (the first recipes had one fixed schedule,
# augmentation and checkpoint rule for every net), and the names earlier records used.
SPEC_FIELD_DEFAULTS = {"recipe": None, "schedule": "plateau", "zoom": 0.1, "shift": 0.1, "rotation": 0.0,
                       "flip": False, "erase": 0.0, "keep": "best", "snapshots": 1, "tta": False, "layout": DEFAULT_LAYOUT,
                       "label_smoothing": 0.0, "ema": 0.0, "ema_power": 0.0, "weight_decay": 0.0, "folds": 0,
                       "warmup": ONECYCLE_WARMUP, "width": 1.0, "classes": tuple(range(10))}
RENAMED_FIELDS = {"task": "layout"}


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides what a member learns. Two runs with equal specs build the same ensemble.

    Each option is declared here once (job.options): the CLI's flags, the API's keywords, the differences
    message and the resume command come from these fields. As asked, a field left out is None; `resolve`
    fills it from the recipe and the hardware, and a resolved spec is what job.json holds."""

    recipe: str | None = option(
        "--recipe", "A whole training recipe (default: the model's own; cnn11's fast one-cycle recipe). "
        "seed: seed 002 exactly as its notebook ran it.", choices=tuple(RECIPES))
    model: str | None = option("--model", "The net (default: the recipe's); alone, it brings its own published "
                               "recipe.", choices=tuple(NETS))
    epochs: int | None = option("--epochs", "Epochs per member (default: the recipe's).", type=int,
                                check=at_least(1), default=lambda recipe: recipe.epochs)
    batch_size: int | None = option("--batch", "Batch size (default: the recipe's).", type=int, check=at_least(1),
                                    default=lambda recipe: recipe.batch_size)
    learning_rate: float | None = option(
        "--lr", "Learning rate; the peak for onecycle and cosine (default: the recipe's).", type=float,
        check=positive, default=lambda recipe: recipe.learning_rate)
    schedule: str | None = option(
        "--schedule", "Learning-rate schedule (default: the recipe's). plateau: ReduceLROnPlateau; exp: "
        "0.95^epoch; onecycle: warm-up then cosine anneal; cosine: cosine anneal (cycles with --snapshots).",
        choices=SCHEDULES, default=lambda recipe: recipe.schedule)
    augment: str | None = option(
        "--augment", "idg: ImageDataGenerator's zoom/shift/rotation in the graph; legacy-idg: the deprecated "
        "generator; none (default: the recipe's).", choices=AUGMENTATIONS,
        default=lambda recipe: recipe.augmentation.kind)
    rotation: float | None = option("--rotation", "IDG rotation_range in degrees (default: the recipe's).",
                                    type=float, check=within(0, 180, "degrees"),
                                    default=lambda recipe: float(recipe.augmentation.rotation))
    flip: bool | None = option(
        "--flip/--no-flip", "IDG horizontal_flip: mirror each training image with chance 1/2, for classes a mirror "
        "leaves the same (clothes; never digits or letters); with --tta each test-time view is also predicted "
        "mirrored (default: the recipe's, off). See BENCHMARKS.md, \"The --flip lever\".", type=bool,
        is_flag=True, default=lambda recipe: recipe.augmentation.flip)
    erase: float | None = option(
        "--erase", "Random erasing: the chance that a training image has one random rectangle (2-40% of its area) "
        "replaced by noise, after IDG's warp where there is one (Zhong et al.; Keras' RandomErasing) (default: the "
        "recipe's, 0: off). See BENCHMARKS.md, \"Random erasing\".", type=float, check=probability,
        default=lambda recipe: recipe.augmentation.erase)
    keep: str | None = option("--keep", "Weights a member keeps: its best validation epoch, or the last "
                              "(default: the recipe's).", choices=KEEP, default=lambda recipe: recipe.keep)
    snapshots: int | None = option("--snapshots", "K cosine cycles per member; each cycle's end becomes a "
                                   "blendable model (default 1).", type=int, check=at_least(1), default=1)
    tta: bool | None = option("--tta/--no-tta", "Members also predict under fixed test-time augmentations "
                              "(default: the recipe's; on for cnn11).", type=bool, is_flag=True,
                              default=lambda recipe: recipe.tta)
    label_smoothing: float | None = option(
        "--label-smoothing", "Train against smoothed targets: 1-e on the true class, e/K spread over the K classes "
        "(default: the recipe's, 0). See BENCHMARKS.md, \"Levers\".", type=float, check=share_below(1),
        default=lambda recipe: recipe.label_smoothing)
    ema: float | None = option(
        "--ema", "Weight averaging: the optimizer keeps an exponential moving average of the weights with this "
        "momentum (e.g. 0.99; Keras' use_ema) beside the net; each epoch's validation, checkpoint and the kept "
        "weights are the average's, and training goes on from the net's own weights (default: the recipe's: "
        "0.98 for cnn11, else 0: off). See BENCHMARKS.md, \"Levers\".",
        type=float, check=share_below(1), default=lambda recipe: recipe.ema)
    ema_power: float | None = option(
        "--ema-power", "Warm the weight average up along Karras et al.'s power function: its momentum at step t is "
        "(1 - 1/t)^(G+1) until that reaches --ema's, so it starts from the first step's weights, none of the "
        "initial ones, and is --ema's average from about (G+1)/(1 - M) steps on (G 16.97 and M 0.98: 900); with "
        "--ema 0.9999, the pure power-function average (default: the recipe's, 0: --ema's momentum from the first "
        "step). See BENCHMARKS.md, \"A power-function weight average (--ema-power)\".",
        type=float, check=at_least(0), default=lambda recipe: recipe.ema_power)
    weight_decay: float | None = option(
        "--weight-decay", "Decoupled weight decay (AdamW's, Loshchilov & Hutter): each step also shrinks every "
        "kernel by the step's rate times this; biases and batch norms' scales and offsets are left alone (e.g. "
        "0.05) (default: the recipe's, 0: off). See BENCHMARKS.md, \"Weight decay\".", type=float,
        check=share_below(1), default=lambda recipe: recipe.weight_decay)
    warmup: float | None = option(
        "--warmup", "The onecycle schedule's warm-up: the share of a member's steps spent rising from lr/25 to the "
        "peak (default: the recipe's: 0.05 for cnn11, else fastai's 0.25). See BENCHMARKS.md, \"Levers\".", type=float,
        check=share_below(1), default=lambda recipe: recipe.warmup)
    width: float | str | None = option(
        "--width", "The net's width: every conv's filters times this, rounded (0.5: half the filters, about a "
        "quarter of the arithmetic; MobileNet's width multiplier); auto: 0.5 for members on the CPU, where that "
        "trains about three times the epochs in the same time, 1 (the net as published) on GPUs (default: the "
        "recipe's: auto for cnn11, else 1). See BENCHMARKS.md, \"A narrower net\".", parse=parse_width,
        check=width_problem, default=lambda recipe: recipe.width)
    precision: str | None = option(
        "--precision", "auto: mixed_bfloat16 where the hardware has bf16 (recent NVIDIA GPUs, AVX-512 BF16 CPUs), "
        "else float32 (default: the recipe's, auto except for seed). See BENCHMARKS.md.", choices=PRECISIONS,
        default=lambda recipe: recipe.precision)  # resolved: float32, mixed_bfloat16 or mixed_float16
    seed: int | None = option("--seed", "Job seed: member i trains with seed+i; the validation split uses it too "
                              "(default 0).", type=int, default=0)
    val_split: float | None = option("--val-split", "Stratified validation share of a shared split (default 0.1; "
                                     "alone, it asks for the shared split: --folds 0).", type=float, default=0.1)
    folds: int | None = option(
        "--folds", "K stratified folds: member i trains on every fold but fold i mod K and is scored on that one, so "
        "K members train on every row and score each one out of fold; 0: one shared split validates every member "
        "and is never trained on (default: the recipe's: 10 for cnn11 and cnn11_pool, else 0). See BENCHMARKS.md, "
        "\"Ten folds at equal time\".", type=int, check=zero_or_at_least(2), default=lambda recipe: recipe.folds)
    layout: str | None = option("--format", "The data layout (default: detected from the folder's files and "
                                "headers).", choices=tuple(LAYOUTS))
    limit_train: int | None = option("--limit-train", "Use only the first K rows of train.csv.", type=int,
                                     check=at_least(1))
    # not options: what the recipe and the data decide
    optimizer: str | None = None
    zoom: float | None = None
    shift: float | None = None
    train_sha256: str = ""
    test_sha256: str = ""
    classes: tuple[int, ...] = tuple(range(10))  # the training labels, sorted: output k of a net is classes[k]

    @classmethod
    def resolve(cls, asked: "JobSpec", *, train_sha256: str = "", test_sha256: str = "",
                classes=tuple(range(10)), gpu_capabilities: list[float] | None = None) -> "JobSpec":
        """The spec a run trains: what was asked, the rest from the recipe (--recipe, else the net's own) and
        the hardware the members use (gpu_capabilities: the chosen GPUs, [] for the CPU, None to ask
        nvidia-smi)."""
        options = declared(cls)
        for name, declaration in options:
            if problem := declaration.problem(getattr(asked, name)):
                raise JobError(problem)
        try:
            base = recipe_for(asked.recipe, asked.model)
        except KeyError as error:
            raise JobError(error.args[0]) from None
        values = {name: getattr(asked, name) if getattr(asked, name) is not None else default_of(declaration, base)
                  for name, declaration in options}
        values.update(recipe=base.name, model=asked.model or base.net, layout=values["layout"] or DEFAULT_LAYOUT,
                      folds=asked_folds(asked, base),
                      rotation=float(values["rotation"]), flip=bool(values["flip"]), tta=bool(values["tta"]),
                      erase=float(values["erase"]), weight_decay=float(values["weight_decay"]),
                      ema_power=float(values["ema_power"]))
        if values["snapshots"] > 1:
            if asked.schedule not in (None, "cosine"):
                raise JobError(f"--snapshots {values['snapshots']} trains cosine cycles; drop --schedule "
                               f"{asked.schedule} (or pass --schedule cosine)")
            values["schedule"] = "cosine"
            epochs, snapshots = values["epochs"], values["snapshots"]
            if epochs % snapshots:
                fits = max(snapshots, round(epochs / snapshots) * snapshots)
                raise JobError(f"--snapshots {snapshots} needs epochs in equal cycles: {epochs} epochs do not "
                               f"split into {snapshots}; use --epochs {fits}")
        # only onecycle warms up. What a resume command carries (the recipe's value) and what a record from
        # before the field holds (the old fixed 25%) are no request, whatever the schedule.
        if asked.warmup not in (None, base.warmup, SPEC_FIELD_DEFAULTS["warmup"]) and values["schedule"] != "onecycle":
            raise JobError(f"--warmup {asked.warmup:g} shapes the onecycle schedule, and this job's is "
                           f"{values['schedule']}; drop --warmup or add --schedule onecycle")
        gpus = gpu_capabilities
        if values["width"] == AUTO_WIDTH and gpus is None:
            gpus = list(list_gpus().values())
        try:
            values["precision"] = resolve_precision(values["precision"], gpus=gpus)
        except ValueError as error:
            raise JobError(str(error)) from None
        values["width"] = resolve_width(values["width"], gpus or [])
        if values["flip"] and values["augment"] == "none":
            raise JobError("--flip mirrors augmented training images, and --augment none augments nothing; drop "
                           "--flip or use --augment idg")
        if values["ema"] and values["augment"] == "legacy-idg":
            # Keras' fit owns that loop: it would validate and checkpoint the net's own weights, never the average.
            # The recipe's average is no request: left out. An asked one is refused.
            if asked.ema or asked.ema_power:
                flag = f"--ema {values['ema']:g}" if asked.ema else f"--ema-power {values['ema_power']:g}"
                raise JobError(f"{flag} swaps the average in at each epoch's end, which the legacy generator's Keras "
                               f"fit loop does not do; drop {flag.split()[0]} or use --augment idg")
            values["ema"] = 0.0
        if values["ema_power"] and not values["ema"]:
            # it shapes the average's start: with no average, a recipe's is no request, an asked one a contradiction
            if asked.ema_power:
                raise JobError(f"--ema-power {values['ema_power']:g} warms up the weight average, and this job keeps "
                               "none (--ema 0); drop --ema-power or give --ema a momentum")
            values["ema_power"] = 0.0
        return cls(**values, optimizer=base.optimizer, zoom=base.augmentation.zoom, shift=base.augmentation.shift,
                   train_sha256=train_sha256, test_sha256=test_sha256, classes=tuple(int(c) for c in classes))

    @classmethod
    def from_options(cls, *, train_sha256: str = "", test_sha256: str = "", classes=tuple(range(10)),
                     gpu_capabilities: list[float] | None = None, **asked) -> "JobSpec":
        """resolve() of the options given by field name: JobSpec.from_options(epochs=3, precision="float32")."""
        return cls.resolve(cls(**asked), train_sha256=train_sha256, test_sha256=test_sha256, classes=classes,
                           gpu_capabilities=gpu_capabilities)

    @classmethod
    def from_dict(cls, values: dict) -> "JobSpec":
        values = {RENAMED_FIELDS.get(key, key): value for key, value in values.items()}
        spec = cls(**{field.name: values.get(field.name, SPEC_FIELD_DEFAULTS.get(field.name))
                      for field in fields(cls)})
        # JSON gives a list; a record from before the recipes' folds wrote a shared split's as null
        return replace(spec, classes=tuple(int(c) for c in spec.classes), folds=spec.folds or 0)

    def to_dict(self) -> dict:
        return asdict(self)

    def same_job(self, other: "JobSpec") -> bool:
        """Whether `other` continues this job: every field alike but the test file's hash. A test file may
        change under a job (Kaggle updates a test set, a re-download reorders its rows); the members then
        predict the new one, their outputs being bound to the file they came from (job.outputs)."""
        return replace(self, test_sha256=other.test_sha256) == other

    def member_seed(self, index: int) -> int:
        return self.seed + index

    def member_fold(self, index: int) -> int | None:
        """The fold member `index` holds out (members beyond K take the folds again, with new seeds); None
        when the job has one shared split."""
        return index % self.folds if self.folds else None

    def folds_meant(self) -> int | None:
        """The folds an asked spec makes (what resolve gives it); None for an unknown recipe, which resolve refuses."""
        try:
            return asked_folds(self, recipe_for(self.recipe, self.model))
        except KeyError:
            return None

    def width_meant(self, gpus: list[float]) -> float | None:
        """The width an asked spec makes for members on these GPUs ([] for the CPU); None for an unknown recipe."""
        try:
            recipe = recipe_for(self.recipe, self.model)
        except KeyError:
            return None
        return resolve_width(self.width if self.width is not None else recipe.width, gpus)

    @property
    def net_described(self) -> str:
        """The net as the console names it: a width other than the published one is said (auto halves cnn11 on
        a CPU, and a user should see what trains)."""
        return self.model if self.width in (None, 1) else f"{self.model} at width {self.width:g}"

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.augment, self.zoom, self.shift, self.rotation, self.flip, self.erase)

    @property
    def data_layout(self) -> Layout:
        return get_layout(self.layout)


def asked_folds(asked: JobSpec, base: Recipe) -> int:
    """The folds a request means: as asked, else the shared split where only a validation share was asked
    (`--val-split 0.2` names a shared split's share), else the recipe's."""
    if asked.folds is not None:
        return asked.folds
    return 0 if asked.val_split is not None else base.folds


# what the data files decide rather than an option: a changed file is named as such (job.record.data_changed)
DATA_FIELDS = ("train_sha256", "test_sha256")


def spec_differences(recorded: JobSpec, requested: JobSpec) -> list[str]:
    """A line per option that differs, named by its flag where it is one; the data files' hashes are not
    options (a changed train file is refused on its own, a changed test file is predicted again)."""
    names = {name: declaration.name for name, declaration in declared(type(recorded))}
    return [f"{names.get(name, name)}: job has {value!r}, this run asks {getattr(requested, name)!r}"
            for name, value in recorded.to_dict().items()
            if name not in DATA_FIELDS and getattr(requested, name) != value]


def spec_words(spec: JobSpec) -> list[str]:
    """Every option of a resolved spec as command-line words, in declaration order."""
    return [word for name, declaration in declared(type(spec)) for word in declaration.words(getattr(spec, name))]
