import pytest

from ensemble.nets.width import AUTO, CPU_WIDTH, parse_width, resolve_width, width_problem


def test_auto_is_half_the_filters_on_the_cpu_and_the_published_net_on_gpus():
    assert resolve_width(AUTO, gpus=[]) == CPU_WIDTH == 0.5
    assert resolve_width(AUTO, gpus=[7.5, 7.5]) == 1.0  # Kaggle's T4 x2
    assert resolve_width(AUTO, gpus=[9.0]) == 1.0


def test_an_asked_factor_is_kept_whatever_the_devices():
    assert resolve_width(0.75, gpus=[]) == 0.75 and resolve_width(0.75, gpus=[9.0]) == 0.75
    assert resolve_width(2, gpus=[]) == 2.0 and type(resolve_width(2, gpus=[])) is float


def test_the_flags_text_is_auto_or_a_factor():
    assert parse_width("auto") == AUTO and parse_width("0.5") == 0.5 and parse_width("1") == 1.0
    with pytest.raises(ValueError, match=r"--width 'half': give a factor for every conv's filters \(0.5: half\) or "
                                         r"auto"):
        parse_width("half")


def test_a_width_is_auto_or_a_factor_above_0_and_at_most_8():
    assert [width_problem(value) for value in (AUTO, 0.5, 1, 3.0, 8)] == [None] * 5
    assert {width_problem(value) for value in (0, -0.5, 8.01, float("inf"), float("nan"), "wide", True)} == {
        "must be a factor above 0 and at most 8, or auto"}
