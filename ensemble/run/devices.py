"""Where members run, decided without loading a deep-learning backend (the GPUs themselves are read by
store.hardware, and `--precision auto` is resolved by nets.precision, once, when a job is created).

`--gpus/--per-gpu/--workers` become slots here: a slot is one
member process at a time, pinned by its environment (CUDA_VISIBLE_DEVICES and the backends' memory
settings), so a crash or an out-of-memory in one member touches no other.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


class PlacementError(ValueError):
    """--gpus / --per-gpu / --workers ask for devices this machine does not have."""


# TensorFlow's settings for each of our processes that may load it (the CLI, members, workers), unless the user's
# environment sets them: read once, when TensorFlow loads
TENSORFLOW_DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # no start-up chatter in the console or the member logs
    # oneDNN's kernels: TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX, and without
    # them a float32 cnn11 step on an AVX2-only CPU takes 1.5x as long (BENCHMARKS.md, "oneDNN on an AVX2-only CPU")
    "TF_ENABLE_ONEDNN_OPTS": "1",
}


def tensorflow_defaults(environ) -> None:
    """TENSORFLOW_DEFAULTS into `environ` (a dict, or os.environ before TensorFlow loads) where it has none."""
    for name, value in TENSORFLOW_DEFAULTS.items():
        environ.setdefault(name, value)


SUPPORTED_BACKENDS = ("tensorflow", "jax")


def configured_backend(environ=None, config_path: Path | None = None) -> str:
    """The Keras backend members will run on: KERAS_BACKEND, else ~/.keras/keras.json, else tensorflow
    (read without importing Keras, which would load the backend)."""
    environ = os.environ if environ is None else environ
    if environ.get("KERAS_BACKEND"):
        return environ["KERAS_BACKEND"]
    path = config_path or Path(environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(Path(path).read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def check_backend(environ=None, config_path: Path | None = None) -> str:
    """Refuse, before anything is written, a backend the members are not built and tested for."""
    backend = configured_backend(environ, config_path)
    if backend not in SUPPORTED_BACKENDS:
        raise PlacementError(f"Keras backend {backend!r} is not supported (KERAS_BACKEND or ~/.keras/keras.json): "
                             f"members are built and tested on {' and '.join(SUPPORTED_BACKENDS)}; "
                             "set KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax")
    return backend


@dataclass(frozen=True)
class Slot:
    """Room for one member process at a time: a GPU (shared by `share` slots) or a CPU worker."""

    gpu: int | None  # None: CPU
    number: int      # 0 .. share-1 on this device
    share: int       # slots on this device, so members can size their memory and threads

    @property
    def device(self) -> str:
        if self.gpu is None:
            return "cpu"
        return f"gpu:{self.gpu}" if self.gpu >= 0 else "gpu"  # < 0: a GPU that Ray picks

    @property
    def label(self) -> str:
        return self.device if self.share == 1 else f"{self.device}#{self.number}"


def parse_gpus(text: str | None, available: dict[int, float]) -> list[int]:
    """--gpus as GPU indices ([] = CPU). Default: every GPU there is, else the CPU. A wrong id is refused
    here, before anything starts."""
    if text is None:
        return sorted(available)
    text = text.strip().lower()
    if text == "cpu":
        return []
    if text == "all":
        if not available:
            raise PlacementError("--gpus all: no NVIDIA GPU found (nvidia-smi lists none); use --gpus cpu")
        return sorted(available)
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PlacementError(f"--gpus {text!r}: expected GPU ids like 0,1, or all, or cpu") from None
    if not wanted or len(set(wanted)) != len(wanted):
        raise PlacementError(f"--gpus {text!r}: expected distinct GPU ids like 0,1")
    unknown = [gpu for gpu in wanted if gpu not in available]
    if unknown:
        have = ", ".join(map(str, sorted(available))) if available else "none (nvidia-smi lists no GPU)"
        raise PlacementError(f"--gpus {text}: no GPU {', '.join(map(str, unknown))} on this machine "
                             f"(GPUs: {have}); use --gpus cpu to train on the CPU")
    return wanted


def plan_slots(gpus: list[int], per_gpu: int | None = None, workers: int | None = None) -> list[Slot]:
    """Slots interleaved across GPUs (0#0, 1#0, 0#1, 1#1, ...) so the first members spread out."""
    if gpus:
        if workers not in (None, 1):
            raise PlacementError("--workers is for CPU training; on GPUs use --per-gpu K to run K members per GPU")
        share = 1 if per_gpu is None else per_gpu
        if share < 1:
            raise PlacementError(f"--per-gpu must be at least 1, got {share}")
        return [Slot(gpu, number, share) for number in range(share) for gpu in gpus]
    if per_gpu not in (None, 1):
        raise PlacementError("--per-gpu needs GPUs; on the CPU use --workers K")
    share = 1 if workers is None else workers
    if share < 1:
        raise PlacementError(f"--workers must be at least 1, got {share}")
    return [Slot(None, number, share) for number in range(share)]


def slot_environment(slot: Slot, cpu_count: int | None = None) -> dict[str, str]:
    """Environment variables that pin a member process to its slot and size it for its neighbours."""
    if slot.gpu is None:
        env = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
        if slot.share > 1:
            # K processes each starting a thread per core would fight over the cores: split them.
            threads = str(max(1, (cpu_count or os.cpu_count() or 1) // slot.share))
            env.update(OMP_NUM_THREADS=threads, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1")
        return env
    return {"CUDA_VISIBLE_DEVICES": str(slot.gpu), **gpu_memory_environment(slot.share)}


def gpu_memory_environment(share: int) -> dict[str, str]:
    """TensorFlow grows its memory as needed; JAX preallocates a 1/share slice (its default is 75% of the
    GPU, which would leave the second member of a shared GPU nothing)."""
    env = {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    if share > 1:
        fraction = f"{0.9 / share:.3f}"  # 10% left for the CUDA contexts themselves
        env.update(XLA_PYTHON_CLIENT_MEM_FRACTION=fraction, XLA_CLIENT_MEM_FRACTION=fraction)
    return env
