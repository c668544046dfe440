"""Options declared once: a dataclass field whose metadata is an `Option` (flag, help, type, choices, default,
check) is a command-line option of `ensemble train`, a keyword of `Job.create`, a line of the "differs from
the job" message and a word of the printed resume command. JobSpec's options decide the spec; TrainRequest's
decide how a run goes (where, how many at once, how long).
"""
from __future__ import annotations

import shlex
from dataclasses import Field, dataclass, field, fields
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """How a field is asked for. `default` is what the field means when not given, or a function of the
    recipe (None: the field stays None, or the owner fills it)."""

    flag: str                              # --batch; a boolean's pair is --tta/--no-tta
    help: str
    type: type = str
    choices: tuple[str, ...] | None = None
    default: Any = None                    # a value, or a callable of the recipe
    check: Callable[[Any], str | None] | None = None  # the problem with a given value, None when it is fine
    is_flag: bool = False                  # an on/off pair (--tta/--no-tta), or a switch (--refit-full)
    parse: Callable[[str], Any] | None = None  # text -> value (ValueError: a usage error)
    show_default: bool = False             # --help shows the default (options that always have one)

    @property
    def keyword(self) -> str:
        """The name a user writes: the flag without its dashes (--limit-train: limit_train)."""
        return self.flag.split("/")[0].lstrip("-").replace("-", "_")

    @property
    def name(self) -> str:
        return self.flag.split("/")[0]

    def problem(self, value) -> str | None:
        """What is wrong with a given value, as a sentence that starts with the flag; None when fine."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"unknown {self.name} {value!r}; choose one of {', '.join(self.choices)}"
        why = self.check(value) if self.check else None
        return f"{self.name} {why}, got {value}" if why else None

    def words(self, value) -> list[str]:
        """The value as it is typed on a command line; [] for a value that is not given."""
        if value is None:
            return []
        if self.is_flag and "/" not in self.flag:  # a switch: on, or not given
            return [self.flag] if value else []
        if self.is_flag:
            on, off = self.flag.split("/")
            return [on if value else off]
        text = str(value)
        if isinstance(value, float):  # short where that is exact (10, 0.001), else every digit
            text = f"{value:g}" if float(f"{value:g}") == value else repr(value)
        return [self.name, shlex.quote(text)]


def option(flag: str, help: str, **details) -> Field:
    """A dataclass field declared as an option: None until given or resolved."""
    return field(default=None, metadata={"option": Option(flag, help, **details)})


def run_field(default, flag: str, help: str, **details) -> Field:
    """An option whose value is never None: it has its default from the start."""
    return field(default=default, metadata={"option": Option(flag, help, default=default, show_default=True,
                                                             **details)})


def declared(cls) -> list[tuple[str, Option]]:
    """(field name, its Option) for every declared option of a dataclass, in declaration order."""
    return [(f.name, f.metadata["option"]) for f in fields(cls) if "option" in f.metadata]


def option_of(cls, name: str) -> Option | None:
    return dict(declared(cls)).get(name)


def at_least(minimum):
    return lambda value: None if value >= minimum else f"must be at least {minimum}"


def zero_or_at_least(minimum):
    return lambda value: None if value == 0 or value >= minimum else f"must be 0 or at least {minimum}"


def positive(value) -> str | None:
    return None if value > 0 else "must be positive"


def share_below(high):
    return lambda value: None if 0 <= value < high else f"must be from 0 to below {high:g}"


def probability(value) -> str | None:
    return None if 0 <= value <= 1 else "is a probability, from 0 to 1"


def within(low, high, unit: str):
    return lambda value: None if low <= value <= high else f"is in {unit}, {low:g} to {high:g}"


def default_of(option: Option, recipe) -> Any:
    return option.default(recipe) if callable(option.default) else option.default