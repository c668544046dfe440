import pytest

from ensemble.nets.precision import resolve_precision
from ensemble.store.hardware import cpu_flags


@pytest.mark.parametrize("gpus, flags, expected", [
    ([], {"avx2", "avx512f"}, "float32"),
    ([], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ([], {"amx_bf16", "amx_tile"}, "mixed_bfloat16"),
    ([9.0], set(), "mixed_bfloat16"),          # H100 / H200
    ([8.0, 8.6], set(), "mixed_bfloat16"),     # A100, RTX 30xx
    ([7.0], {"avx512_bf16"}, "mixed_float16"),  # V100: tensor cores without bf16; the GPU decides
    ([6.1], {"avx512_bf16"}, "float32"),
])
def test_auto_precision_follows_the_hardware(gpus, flags, expected):
    assert resolve_precision("auto", gpus=gpus, flags=flags) == expected


def test_explicit_precision_is_kept_and_unknown_refused():
    assert resolve_precision("float32", gpus=[9.0], flags={"avx512_bf16"}) == "float32"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_an_unsupported_backend_is_refused_up_front(tmp_path):
    from ensemble.run.devices import PlacementError, check_backend, configured_backend

    assert configured_backend({"KERAS_BACKEND": "jax"}) == "jax"
    config = tmp_path / "keras.json"
    config.write_text('{"backend": "torch", "floatx": "float32"}')
    assert configured_backend({}, config) == "torch"
    assert configured_backend({}, tmp_path / "missing.json") == "tensorflow"
    assert check_backend({"KERAS_BACKEND": "tensorflow"}) == "tensorflow"
    with pytest.raises(PlacementError, match="Keras backend 'torch' is not supported .* set KERAS_BACKEND=tensorflow"):
        check_backend({"KERAS_BACKEND": "torch"})
    with pytest.raises(PlacementError, match="'torch'"):
        check_backend({}, config)
