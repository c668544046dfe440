"""`ensemble demo`: the whole product on the offline sample, scored against the sample's true test labels."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .blend import blend_job, load_outputs
from .data import make_sample, read_labels_csv
from .jobs import require_record
from .metrics import accuracy
from .progress import make_reporter
from .runner import TrainRequest, run_job
from .workspace import Workspace

# 12 epochs of the cnn11 recipe (Adam 1e-4) on the 3600 sample training digits: about 97% per member,
# the 3-member blend higher, in well under 15 minutes on 2 CPU cores.
DEMO_EPOCHS = 12


def run_demo(ws: Workspace, members: int = 3, epochs: int = DEMO_EPOCHS,
             echo: Callable[[str], None] = print) -> str:
    started = time.perf_counter()
    sample_dir = ws.data_dir / "sample"
    if not (sample_dir / "train.csv").is_file():
        echo(f"writing the sample to {sample_dir}")
        make_sample(sample_dir)
    job = f"demo-{epochs}ep"
    outcome = run_job(ws, TrainRequest(n=members, data_dir=sample_dir, job=job, model="cnn11", epochs=epochs),
                      reporter=make_reporter(echo))
    if outcome.interrupted:
        return f"demo interrupted; run it again to resume job {job}"
    result = blend_job(ws, job)
    truth = read_labels_csv(sample_dir / "test_labels.csv")
    outputs = load_outputs(ws, require_record(ws, job))
    blended = np.mean(outputs.test_probs, axis=0)
    lines = [f"demo: {len(outputs.names)} x cnn11, {epochs} epochs, sample digits "
             f"(validation {outputs.val_probs.shape[1]}, test {len(truth)})",
             f"{'':16}{'val acc':>9}{'test acc':>10}"]
    for name, test_probs in zip(outputs.names, outputs.test_probs):
        lines.append(f"{name:16}{result.member_val_accuracy[name]:9.4f}{accuracy(test_probs, truth):10.4f}")
    lines.append(f"{'blend (mean)':16}{result.val_accuracy:9.4f}{accuracy(blended, truth):10.4f}")
    lines += [f"submission: {result.paths[-1]} (checked)",
              f"wall time: {time.perf_counter() - started:.0f} s"]
    return "\n".join(lines)
