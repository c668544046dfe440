"""`ensemble demo`: the whole product on the offline sample, scored against the sample's true test labels."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np

from .blend.blending import blend_job, load_outputs
from .data.sources import make_sample
from .data.tables import read_labels_csv
from .job.record import require_record
from .nets.metrics import accuracy
from .report.leaderboard import write_report
from .run.progress import make_reporter
from .job.spec import JobSpec
from .run.request import TrainRequest
from .run.runner import member_gpu_capabilities, run_job
from .store.workspace import Workspace

# 12 epochs of the cnn11 recipe (one-cycle Adam to 2e-3) on the 3600 sample training digits, 3 members, in a
# few minutes on 2 CPU cores.
DEMO_EPOCHS = 12


def run_demo(ws: Workspace, members: int = 3, epochs: int = DEMO_EPOCHS,
             echo: Callable[[str], None] = print) -> str:
    started = time.perf_counter()
    sample_dir = ws.data_dir / "sample"
    if not (sample_dir / "train.csv").is_file():
        echo(f"writing the sample to {sample_dir}")
        make_sample(sample_dir)
    asked = JobSpec(model="cnn11", epochs=epochs)
    request = TrainRequest(n=members, data_dir=sample_dir, spec=asked)
    folds, width = asked.folds_meant(), asked.width_meant(member_gpu_capabilities(request))
    # named by what the recipe and the devices decide: an older demo job with another spec is left as it is
    job = f"demo-cnn11-{epochs}ep" + (f"-{folds}folds" if folds else "") + (f"-w{width:g}" if width != 1 else "")
    request = replace(request, job=job)
    outcome = run_job(ws, request, reporter=make_reporter(echo))
    if outcome.interrupted:
        return f"demo interrupted; run it again to resume job {job}"
    result = blend_job(ws, job)
    truth = read_labels_csv(sample_dir / "test_labels.csv")
    record = require_record(ws, job)
    outputs = load_outputs(ws, record, tta=result.tta)  # what the submission was made from
    blended = np.mean(outputs.test_probs, axis=0)
    lines = [f"demo: {len(outputs.names)} x {record.spec.net_described}, {epochs} epochs, sample digits "
             f"({validation_rows(outputs)}, test {len(truth)})",
             f"{'':16}{'val acc':>9}{'test acc':>10}"]
    for name, test_probs in zip(outputs.names, outputs.test_probs):
        lines.append(f"{name:16}{result.member_val_accuracy[name]:9.4f}{accuracy(test_probs, truth):10.4f}")
    blend_label = "blend (mean)" + (" TTA" if result.tta else "")
    lines.append(f"{blend_label:16}{result.val_accuracy:9.4f}{accuracy(blended, truth):10.4f}")
    report = write_report(ws, job)
    lines += [f"submission: {result.paths[-1]} (checked)",
              f"report:     {report.paths['html']}",
              f"wall time: {time.perf_counter() - started:.0f} s",
              f"Next: ensemble leaderboard --job {job}, or on Kaggle's data: ensemble data kaggle digit-recognizer "
              "--out data/ && ensemble train --time-limit 2h --data data/"]
    return "\n".join(lines)


def validation_rows(outputs) -> str:
    """What the val acc column rests on: the shared split's rows, or each member's own fold."""
    if outputs.val_mask is None:
        return f"validation {outputs.val_probs.shape[1]}"
    held_out = outputs.val_mask.sum(axis=1)  # each member's fold
    low, high = held_out.min(), held_out.max()
    return (f"validation: each member its own fold of {low if low == high else f'{low}-{high}'} rows, the blend the "
            f"{int(outputs.scored_rows.sum())} rows they hold out")
