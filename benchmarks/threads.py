"""TensorFlow's thread pools against a member's epoch: the defaults and fixed inter-op / intra-op counts, side
by side in one run.

    python benchmarks/threads.py --settings default,2x2,1x2,1x1 --repeats 2

Each setting runs in a fresh process (TensorFlow reads TF_NUM_INTEROP_THREADS and TF_NUM_INTRAOP_THREADS once,
as it starts): a cnn11 member model built as members build it (the CPU's precision), its step traced on 10
batches, then --repeats epochs of 170 whole batches of 64 images through the member's own loop, each timed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from members_vs_epochs import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ROWS = 170 * 64

EPOCHS = """
import sys, time
import numpy as np
from ensemble.job.spec import JobSpec
from ensemble.member.loop import train_epochs
from ensemble.member.model import build_member_model, rate_callbacks
spec = JobSpec.from_options(model="cnn11", epochs=2, gpu_capabilities=[])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, ({rows}, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, {rows})
model = build_member_model(spec, 0, {rows})
train_epochs(model, x[:640], y[:640], batch_size=64, epochs=1, seed=0, callbacks=rate_callbacks(model),
             whole_batches=True)
for _ in range({repeats}):
    began = time.perf_counter()
    train_epochs(model, x, y, batch_size=64, epochs=1, seed=0, callbacks=rate_callbacks(model), whole_batches=True)
    print("EPOCH", time.perf_counter() - began, flush=True)
print("PRECISION", spec.precision)
"""


def epoch_seconds(setting: str, repeats: int) -> tuple[list[float], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if setting != "default":
        inter, intra = setting.split("x")
        env.update(TF_NUM_INTEROP_THREADS=inter, TF_NUM_INTRAOP_THREADS=intra)
    result = subprocess.run([sys.executable, "-c", EPOCHS.format(rows=ROWS, repeats=repeats)], env=env,
                            capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    seconds = [float(line.split()[1]) for line in lines if line.startswith("EPOCH")]
    precision = next((line.split()[1] for line in lines if line.startswith("PRECISION")), "?")
    return seconds, precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="default,2x2,1x2,1x1",
                        help="'default' or INTERxINTRA thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; epochs of {ROWS} rows at batch 64")
    print("\n| threads (inter-op x intra-op) | precision | epoch seconds |\n| --- | --- | --- |")
    for setting in args.settings.split(","):
        seconds, precision = epoch_seconds(setting, args.repeats)
        print(f"| {setting} | {precision} | {', '.join(f'{s:.2f}' for s in seconds)} |", flush=True)


if __name__ == "__main__":
    main()
