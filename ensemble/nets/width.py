"""--width: the net's convs' filters times a factor; auto resolves once per job, for the devices the members use.

On a CPU a step costs its arithmetic (2.2-2.8 ms a row for cnn11 on 2 AVX2 cores, at any batch), so half the
filters, about a quarter of the convs' arithmetic, buys about three times the epochs in the same time, and at equal time
the narrower net was more accurate there (BENCHMARKS.md, "A narrower net"). On a GPU that trade is unmeasured, so
auto keeps the net as published there.
"""
from __future__ import annotations

AUTO = "auto"
CPU_WIDTH = 0.5
PUBLISHED = 1.0
MAX_WIDTH = 8.0


def parse_width(text: str) -> float | str:
    """The flag's text: auto, or a positive factor (its check says when it is not positive)."""
    if text == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--width {text!r}: give a factor for every conv's filters (0.5: half) or auto") from None


def width_problem(value) -> str | None:
    """What is wrong with a width, None when fine: auto, or a factor above 0 and at most MAX_WIDTH (8: cnn11's last
    convs at 1024 filters, 64 times the arithmetic; inf or more would reach the builders and fail every member)."""
    if value == AUTO or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_WIDTH):
        return None
    return f"must be a factor above 0 and at most {MAX_WIDTH:g}, or auto"


def resolve_width(requested: float | str, gpus: list[float]) -> float:
    """auto -> CPU_WIDTH for members on the CPU (no GPUs), the published width on GPUs; a factor stays itself."""
    if requested != AUTO:
        return float(requested)
    return PUBLISHED if gpus else CPU_WIDTH
