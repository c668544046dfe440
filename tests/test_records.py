"""Typed records read what earlier versions wrote, and write back what they read."""
import json

from click.testing import CliRunner

from ensemble.cli import main
from ensemble.job.layout import JobLayout, ModelFolder
from ensemble.job.outputs import Metrics, read_metrics
from ensemble.job.progress import NO_PROGRESS, Progress, read_progress
from ensemble.job.records import BlendRecord, SubmissionRecord, read_blend_records, read_submission_records
from ensemble.job.spec import JobSpec

OLD_METRICS = {"member": 3, "kind": "member", "seed": 3, "model": "cnn11", "epochs_planned": 12, "n_train": 3600,
               "n_val": 400, "n_test": 1000, "precision": "float32", "tta": True, "backend": "tensorflow",
               "device": "cpu", "versions": {"keras": "3.5.0"}, "val_accuracy": 0.99, "val_logloss": 0.03,
               "best_epoch": 11, "epochs": 12, "stopped_early": False, "fit_seconds": 100.0,
               "images_per_second": 432.0, "predict_ms_per_1k": 800.0, "params": 1284426,
               "val_accuracy_tta": 0.9925, "val_logloss_tta": 0.028}


def test_metrics_read_every_key_and_write_the_same_file_back(tmp_path):
    folder = ModelFolder(tmp_path / "member-03")
    folder.path.mkdir()
    folder.metrics.write_text(json.dumps(OLD_METRICS))
    metrics = read_metrics(folder)
    assert (metrics.val_accuracy, metrics.epochs, metrics.tta, metrics.extra["backend"]) == (0.99, 12, True, "tensorflow")
    assert metrics.predict_seconds == 800.0 / 1e6 * 1400
    assert metrics.to_dict() == OLD_METRICS
    baseline = Metrics.from_dict({"model": "knn", "kind": "baseline", "val_accuracy": 0.9, "val_logloss": 0.4,
                                  "choice": "k=3", "sweep": {"3": 0.9}})
    assert baseline.kind == "baseline" and baseline.extra == {"choice": "k=3", "sweep": {"3": 0.9}}


def test_progress_files_of_every_age_read(tmp_path):
    path = tmp_path / "member-00.json"
    assert read_progress(path) is NO_PROGRESS and not NO_PROGRESS.known
    path.write_text(json.dumps({"pid": 7, "host": "h", "phase": "training", "epoch": 2, "epochs": 5, "batch": 30,
                                "batches": 60, "val_accuracy": 0.9, "updated": 5.0, "someday": "a new key"}))
    progress = read_progress(path)
    assert (progress.pid, progress.batch_share, progress.notes, progress.known) == (7, 0.5, (), True)
    path.write_text("[1, 2]")
    assert read_progress(path) is NO_PROGRESS
    assert Progress.from_dict(Progress(notes=("a",), updated=1.0).to_dict()) == Progress(notes=("a",), updated=1.0)


def test_blend_and_submission_records_written_before_they_were_typed_still_read(ws):
    layout = JobLayout(ws, "j")
    layout.dir.mkdir(parents=True)
    old_blend = {"method": "mean", "models": ["member-00", "member-01"], "tta": False, "weights": [0.5, 0.5],
                 "val_accuracy": 0.98, "files": ["submissions/j-mean.csv", "submissions/submission.csv"]}
    layout.blends.write_text(json.dumps([old_blend]))
    (blend,) = read_blend_records(ws, "j")
    assert blend == BlendRecord("mean", ("member-00", "member-01"), False, (0.5, 0.5), 0.98,
                                ("submissions/j-mean.csv", "submissions/submission.csv"))
    assert blend.describe() == "blend-mean, val accuracy 0.9800" and blend.sha256 is None
    layout.submissions.write_text(json.dumps([{
        "competition": "digit-recognizer", "file": "s.csv", "sha256": "ab", "message": "m", "submitted": "t",
        "status": "complete", "public_score": 0.99, "private_score": None, "blend": {**old_blend, "sha256": "ab"}}]))
    (entry,) = read_submission_records(ws, "j")
    assert entry.blend.models == ("member-00", "member-01") and entry.public_score == 0.99
    assert SubmissionRecord.from_dict(entry.to_dict()) == entry


def test_a_job_record_of_the_task_era_reads_as_its_layout():
    spec = JobSpec.from_dict({"model": "cnn11", "epochs": 5, "batch_size": 64, "optimizer": "adam",
                              "learning_rate": 1e-3, "augment": "idg", "precision": "float32", "seed": 0,
                              "val_split": 0.1, "limit_train": None, "train_sha256": "a", "test_sha256": "b",
                              "task": "kannada-mnist"})
    assert spec.layout == "kannada-mnist" and spec.data_layout.test_id == "id"


def test_train_help_lists_exactly_the_declared_flags():
    text = CliRunner().invoke(main, ["train", "--help"]).output
    flags = sorted(param.opts[0] for param in main.commands["train"].params if param.opts[0] != "-h")
    assert all(f"  {flag}" in text for flag in flags)
    assert flags == sorted(["--n", "--recipe", "--model", "--epochs", "--batch", "--lr", "--schedule", "--augment",
                            "--rotation", "--flip", "--erase", "--keep", "--snapshots", "--tta", "--label-smoothing", "--ema",
                            "--ema-power", "--weight-decay",
                            "--warmup", "--width", "--time-limit",
                            "--precision", "--seed",
                            "--val-split", "--folds", "--job", "--pseudo-label", "--refit-full", "--data", "--format", "--limit-train",
                            "--gpus", "--per-gpu", "--workers", "--stall-timeout", "--retries", "--executor", "--address"])
