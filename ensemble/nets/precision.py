"""--precision auto: mixed_bfloat16 where the hardware has bf16, else float32."""
from __future__ import annotations

from ..store.hardware import cpu_flags, list_gpus

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")




def resolve_precision(requested: str, gpus: list[float] | None = None, flags: set[str] | None = None) -> str:
    """auto -> mixed_bfloat16 where the hardware computes in bf16 natively (NVIDIA compute capability >= 8,
    or a CPU with AVX-512 BF16 / AMX), mixed_float16 on older NVIDIA GPUs with tensor cores (7.x), else
    float32. BENCHMARKS.md shows the speed and that accuracy after equal epochs holds."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    gpus = list(list_gpus().values()) if gpus is None else gpus
    if gpus:
        if min(gpus) >= 8.0:
            return "mixed_bfloat16"
        return "mixed_float16" if min(gpus) >= 7.0 else "float32"
    flags = cpu_flags() if flags is None else flags
    return "mixed_bfloat16" if any(flag in flags for flag in _BF16_CPU_FLAGS) else "float32"
