"""--time-limit: durations and estimates (pure), then real jobs stopped by a tiny limit and continued."""
import json
import re
from datetime import datetime
from statistics import median

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.job.layout import read_history
from ensemble.job.planner import Costs
from ensemble.run.budget import (end_margin, fits, member_seconds, one_epoch_limit, parse_duration,
                                 short_member_note)

# the tests held to a wall-clock --time-limit run alone (`make test` runs them after the parallel pass)


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45),
                                           ("600", 600), ("1.5h", 5400), (" 2m 30s ", 150)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2 hours", "-5m", "0", "1d"])
def test_bad_durations_say_what_to_write(text):
    with pytest.raises(ValueError, match="--time-limit"):
        parse_duration(text)


def test_member_estimates_prefer_whole_members_then_epochs_then_nothing():
    assert member_seconds([100.0, 120.0, 300.0], [5.0], epochs=10, remaining_epochs=10) == 120.0
    assert member_seconds([100.0], [], epochs=10, remaining_epochs=4) == 40.0  # a resumed member: what is left
    assert member_seconds([], [5.0, 6.0, 7.0], epochs=10, remaining_epochs=10) == 60.0 + 30.0
    assert member_seconds([], [], epochs=10, remaining_epochs=10) is None
    assert fits(now=0.0, deadline=100.0, estimate=100.0) and not fits(0.0, 100.0, 100.5)
    assert fits(0.0, 100.0, None) and not fits(100.0, 100.0, None)  # unknown: start it, while time is left
    assert (end_margin(10), end_margin(200), end_margin(7200)) == (2.2, 6.0, 30.0)


def test_the_limit_that_holds_one_whole_epoch_keeps_the_end_margin_back():
    sample = Costs(startup_s=12.0, epoch_s=9.3, predict_s=10.0)  # the sample's member, as a 20 s job probed it
    assert one_epoch_limit(sample) == 34  # 31.3 s and 2.68 s of margin; 33 s would keep back 2.66 and leave 30.34
    assert 34 - end_margin(34) >= sample.member_s(1) > 33 - end_margin(33)
    assert one_epoch_limit(Costs(0.0, 47.0, 0.0)) == 50  # 50 - (2 + 1) is 47 exactly: no second more
    assert one_epoch_limit(Costs(100.0, 1300.0, 100.0)) == 1530  # past 1400 s the margin is 30 s
    assert short_member_note(sample, 6 / 57) == (
        "the time limit holds 11% of one epoch after start-up (12 s) and predictions (10 s), far from the recipe's "
        "accuracy; --time-limit 34s or more trains one whole epoch")


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


EPOCHS = 6  # more than a 10 s limit can hold, few enough that the rerun finishing them is quick
TINY = ["--epochs", str(EPOCHS), "--limit-train", "200", "--job", "tl", "--precision", "float32", "--no-tta"]


@pytest.mark.serial
def test_a_tiny_time_limit_shortens_the_member_then_a_wrong_estimate_stops_one_and_a_rerun_continues_it(
        tmp_path, sample_dir):
    result = invoke(tmp_path, "train", "--data", sample_dir, "--time-limit", "10s", "--n", "1", *TINY)
    assert result.exit_code == 0, result.output
    member = tmp_path / "models/tl/member-00"
    record = json.loads((tmp_path / "jobs/tl/job.json").read_text())
    planned = record["members"][0]["epochs"]
    history = read_history(member / "history.csv")
    # the first member calibrated and sized itself to the time left: a shortened member, complete
    assert 1 <= planned < EPOCHS and len(history) == planned, (planned, len(history))
    assert json.loads((member / "config.json").read_text())["epochs"] == planned
    assert "member-00 calibrated: start-up" in (tmp_path / "jobs/tl/logs/member-00.log").read_text()
    assert re.search(rf"budget plan: 1 member x {planned} epochs?, ~\d+ s of 10 \(start-up", result.output), result.output
    assert record["members"][0]["state"] == "done" and record["members"][0]["stopped_early"] is False
    assert set(record["costs"]) == {"startup_s", "epoch_s", "predict_s"}
    assert record["budget"]["time_limit"] == 10 and record["budget"]["used_s"] > 0
    assert re.search(r"time limit 0m10s: fitted 1 complete member in", result.output), result.output
    board = invoke(tmp_path, "leaderboard", "--job", "tl", "--format", "csv")
    assert board.exit_code == 0 and "stopped early" not in board.output

    # a rerun plans from the job's recorded costs (no calibration); costs that are far too low make the
    # planner give member-01 all its epochs, and the deadline stops it at an epoch end instead. (--n 3: the plan
    # has a member after it, so it does not fit its steps to the deadline from its first steady epoch, as a slot's
    # last member would; once it re-plans as the last, too little time is left to shorten it.)
    record["costs"] = {"startup_s": 0.01, "epoch_s": 0.01, "predict_s": 0.01}
    (tmp_path / "jobs/tl/job.json").write_text(json.dumps(record))
    # 8 s: members now start 2.4 s sooner (member.startup), and under JAX 12 s held all 6 epochs
    wrong = invoke(tmp_path, "train", "--job", "tl", "--time-limit", "8s", "--n", "3")
    assert wrong.exit_code == 0, wrong.output
    assert "calibrated" not in (tmp_path / "jobs/tl/logs/member-01.log").read_text()
    assert json.loads((tmp_path / "jobs/tl/plan.json").read_text())["last_members"] == [], wrong.output
    record = json.loads((tmp_path / "jobs/tl/job.json").read_text())
    second = record["members"][1]
    trained = len(read_history(tmp_path / "models/tl/member-01/history.csv"))
    assert second["epochs"] == EPOCHS and second["stopped_early"] is True and 1 <= trained < EPOCHS, second
    assert (tmp_path / "models/tl/member-01/backup").is_dir()  # kept, so that the member can continue
    status = invoke(tmp_path, "status", "--job", "tl")
    assert f"stopped early by the time limit at epoch {trained}/{EPOCHS}" in status.output
    assert invoke(tmp_path, "blend", "--job", "tl").exit_code == 0  # what fitted is a finished, blendable job
    board = invoke(tmp_path, "leaderboard", "--job", "tl", "--format", "csv")
    assert f"stopped early at epoch {trained}/{EPOCHS} (time limit)" in board.output

    again = invoke(tmp_path, "train", "--job", "tl")  # no limit this time: member-01 finishes
    assert again.exit_code == 0, again.output
    assert f"member-01 (seed 1) resumes after epoch {trained}/{EPOCHS}" in again.output
    assert [int(row["epoch"]) for row in read_history(tmp_path / "models/tl/member-01/history.csv")] == list(range(EPOCHS))
    assert len(read_history(member / "history.csv")) == planned  # member-00 keeps its own length
    record = json.loads((tmp_path / "jobs/tl/job.json").read_text())
    assert [m["stopped_early"] for m in record["members"]] == [False, False]


@pytest.mark.serial
def test_members_start_only_while_the_time_left_covers_them(tmp_path, sample_dir):
    """No --n: members are added one after another until the next would not fit; none is left pending.
    How many fit depends on this machine's speed, so the run is held against its own measured member times:
    after the last member ended, one more would have run past the limit."""
    result = invoke(tmp_path, "train", "--data", sample_dir, "--time-limit", "40s", "--epochs", "2", "--no-tta",
                    "--limit-train", "200", "--job", "grow", "--precision", "float32")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "jobs/grow/job.json").read_text())
    members = record["members"]
    assert {member["state"] for member in members} == {"done"}, members
    starts = [datetime.strptime(m["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp() for m in members]
    ends = [datetime.strptime(m["ended"], "%Y-%m-%dT%H:%M:%S%z").timestamp() for m in members]
    assert all(later >= earlier for earlier, later in zip(ends, starts[1:]))  # one after another (one slot)
    walls = [end - start for start, end in zip(starts, ends)]
    # the clock starts before the first member (start-up, data) and timestamps are whole seconds
    deadline_after_first_start = 40 - end_margin(40)
    assert ends[-1] - starts[0] + median(walls) > deadline_after_first_start - 10, (walls, ends[-1] - starts[0])
    complete = sum(not member["stopped_early"] for member in members)  # the last may be stopped at an epoch end
    assert re.search(rf"time limit 0m40s: fitted {complete} complete members?", result.output), result.output
    blended = invoke(tmp_path, "blend", "--job", "grow")
    assert blended.exit_code == 0 and f"mean blend of {len(members)}" in blended.output


def test_snapshot_members_are_blended_ranked_and_named_like_members(tmp_path, sample_dir):
    """--snapshots 2 --tta: each cycle's end is a model of its own; blend, --only and the report use them."""
    result = invoke(tmp_path, "train", "--data", sample_dir, "--n", "1", "--epochs", "2", "--snapshots", "2", "--tta",
                    "--model", "seed004",  # the net does not matter here; a small one keeps CI short
                    "--limit-train", "300", "--job", "snap", "--precision", "float32")
    assert result.exit_code == 0, result.output
    for cycle in (1, 2):
        folder = tmp_path / f"models/snap/member-00-snap{cycle}"
        assert {p.name for p in folder.iterdir()} >= {"config.json", "val_probs.npy", "test_probs.npy",
                                                       "val_probs_tta.npy", "test_probs_tta.npy", "metrics.json"}
    blended = invoke(tmp_path, "blend", "--job", "snap")
    assert blended.exit_code == 0, blended.output
    assert "mean blend of 2 (member-00-snap1, member-00-snap2), with test-time augmentation" in blended.output
    assert re.search(r"without TTA  val accuracy 0\.\d{4}  \(the submission uses TTA outputs; --no-tta switches\)",
                     blended.output), blended.output
    plain = invoke(tmp_path, "blend", "--job", "snap", "--no-tta")
    assert "without test-time augmentation" in plain.output and "with TTA  val accuracy" in plain.output
    only = invoke(tmp_path, "blend", "--job", "snap", "--only", "member-00-snap1,member-00")
    assert only.exit_code == 0 and (tmp_path / "submissions/snap-mean-tta-member-00-snap1+member-00.csv").is_file()
    assert (tmp_path / "submissions/snap-mean-tta.csv").is_file() and (tmp_path / "submissions/snap-mean.csv").is_file()
    blends = json.loads((tmp_path / "jobs/snap/blends.json").read_text())
    assert [(b["method"], b["tta"], b["models"]) for b in blends] == [
        ("mean", True, ["member-00-snap1", "member-00-snap2"]), ("mean", False, ["member-00-snap1", "member-00-snap2"]),
        ("mean", True, ["member-00-snap1", "member-00"])]
    board = invoke(tmp_path, "leaderboard", "--job", "snap", "--format", "csv")
    rows = {line.split(",")[1]: line.split(",") for line in board.stdout.splitlines()[1:]}
    assert {"member-00", "member-00-snap1", "member-00-snap2", "blend-mean", "blend-greedy"} <= set(rows)
    assert rows["member-00-snap2"][2] == "snapshot" and rows["member-00"][2] == "member"
    assert all(rows[name][4] != "" for name in ("member-00-snap1", "blend-mean"))  # val_acc_tta filled in
    # the digit sample's test file is unlabelled, and its answers lie beside it (test_labels.csv): scored on them
    truth = pd.read_csv(sample_dir / "test_labels.csv")["Label"].to_numpy()
    member_probs = np.load(tmp_path / "models/snap/member-00/test_probs.npy")
    assert float(rows["member-00"][5]) == pytest.approx(np.mean(member_probs.argmax(axis=1) == truth))
    assert sorted(int(row[0]) for row in rows.values()) == list(range(1, len(rows) + 1))


def test_a_time_limit_with_ray_or_a_bad_duration_is_refused_before_anything_is_written(tmp_path, sample_dir):
    ray = invoke(tmp_path, "train", "--data", sample_dir, "--time-limit", "1h", "--executor", "ray")
    assert ray.exit_code == 1 and "--time-limit runs members on this machine" in ray.output
    bad = invoke(tmp_path, "train", "--data", sample_dir, "--time-limit", "2 hours")
    assert bad.exit_code == 2 and "write a duration like 2h, 90m, 1h30m, 45s or 600" in bad.output
    assert not (tmp_path / "jobs").exists()
