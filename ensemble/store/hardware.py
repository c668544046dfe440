"""What this machine has, as the precision and placement rules need it: its NVIDIA GPUs (index and compute
capability, from nvidia-smi) and its CPU's flags."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def list_gpus() -> dict[int, float]:
    """Index -> compute capability of each NVIDIA GPU nvidia-smi sees (empty without one)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        output = subprocess.run(["nvidia-smi", "--query-gpu=index,compute_cap", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    gpus = {}
    for line in output.splitlines():
        index, _, capability = (part.strip() for part in line.partition(","))
        if index.isdigit():
            try:
                gpus[int(index)] = float(capability)
            except ValueError:
                gpus[int(index)] = 0.0
    return gpus


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
