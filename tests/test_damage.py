"""Damaged files never wedge a member or reach a submission: training states that do not restore are set
aside and the member resumes from the newest that does; a finished member whose files fail their checks is
not done, is named in every refusal, and is re-predicted (or retrained when its kept weights are lost)."""
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.job.layout import JobLayout, MemberFolder, ModelKind, read_history
from ensemble.job.outputs import job_output_shape, keras_file_problem, output_problem, read_metrics, survey_models
from ensemble.job.record import load_record
from ensemble.job.spec import JobSpec
from ensemble.member import checkpoints
from ensemble.member.callbacks.commit import EpochCommit
from ensemble.member.process import train_member
from ensemble.run.request import TrainRequest
from ensemble.run.runner import prepare_job
from ensemble.run.status import job_status
from ensemble.store.workspace import Workspace

SLICE = ["--limit-train", "300", "--seed", "5", "--precision", "float32", "--model", "seed004", "--batch", "32"]


class Killed(Exception):
    pass


def _job(tmp_path, sample_dir, epochs=3) -> Workspace:
    ws = Workspace.resolve(tmp_path / "home")
    prepare_job(ws, TrainRequest(n=1, data_dir=sample_dir, job="j", spec=JobSpec(model="seed004", batch_size=32, limit_train=128, epochs=epochs, precision="float32", schedule="plateau")), gpu_capabilities=[])
    return ws


def _train_until(ws, monkeypatch, epochs_committed):
    """Train member 0 and stop it right after `epochs_committed` epochs were committed."""
    def kill(self, step, epoch):
        if (step, epoch) == ("begin", epochs_committed):
            raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(EpochCommit, "after_step", kill)
        with pytest.raises(Killed):
            train_member(ws, "j", 0)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


DAMAGES = {
    "truncated weights": lambda state: _truncate(state / checkpoints.WEIGHTS_FILE),
    "state.json cut": lambda state: (state / checkpoints.STATE_FILE).write_text("{"),
    "state.json of another epoch": lambda state: (state / checkpoints.STATE_FILE).write_text(
        (state / checkpoints.STATE_FILE).read_text().replace('"epoch": 2', '"epoch": 7')),
    "empty folder": lambda state: [path.unlink() for path in state.iterdir()],
    "weights are not HDF5": lambda state: (state / checkpoints.WEIGHTS_FILE).write_bytes(b"\0" * 4096),
}


@pytest.mark.parametrize("damage", [pytest.param(name, marks=[pytest.mark.jax] if name == "truncated weights" else [])
                                    for name in DAMAGES])
def test_a_newest_state_that_does_not_restore_is_set_aside_and_the_member_resumes_from_the_one_before(
        damage, tmp_path, sample_dir, monkeypatch, capsys, restore_dtype_policy):
    ws = _job(tmp_path, sample_dir)
    _train_until(ws, monkeypatch, epochs_committed=2)
    member_dir = JobLayout(ws, "j").member(0).path
    assert checkpoints.committed_epochs(member_dir / "backup") == [2, 1]
    DAMAGES[damage](checkpoints.state_dir(member_dir / "backup", 2))
    capsys.readouterr()

    train_member(ws, "j", 0)
    out = capsys.readouterr().out
    assert "note: the training state after epoch 2 does not restore" in out
    assert "member-00 resuming after epoch 1/3" in out
    assert [int(row["epoch"]) for row in read_history(member_dir / "history.csv")] == [0, 1, 2]
    assert read_metrics(MemberFolder(member_dir)).epochs == 3 and keras_file_problem(member_dir / "best.keras") is None
    set_aside = list((member_dir / checkpoints.SET_ASIDE_DIR).iterdir())
    assert [path.name.split("-2")[0] for path in set_aside] == ["epoch-0002"]  # kept for a look, never retried


def test_when_no_state_restores_the_member_says_so_and_trains_from_epoch_0(tmp_path, sample_dir, monkeypatch, capsys,
                                                                         restore_dtype_policy):
    ws = _job(tmp_path, sample_dir)
    _train_until(ws, monkeypatch, epochs_committed=2)
    backup = JobLayout(ws, "j").member(0).path / "backup"
    for epoch in checkpoints.committed_epochs(backup):
        _truncate(checkpoints.state_dir(backup, epoch) / checkpoints.WEIGHTS_FILE)
    capsys.readouterr()
    train_member(ws, "j", 0)
    out = capsys.readouterr().out
    assert "no training state restores: training from epoch 0" in out and "resuming" not in out
    assert out.count("member-00 epoch ") == 3
    assert read_metrics(JobLayout(ws, "j").member(0)).epochs == 3


def test_a_kill_during_the_first_save_leaves_nothing_that_counts(tmp_path, sample_dir, monkeypatch, capsys,
                                                                  restore_dtype_policy):
    """Killed between writing the first state's weights and committing it: the rerun starts clean, silently."""
    ws = _job(tmp_path, sample_dir, epochs=2)

    def kill(self, step, epoch):
        if step == "weights":
            raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(EpochCommit, "after_step", kill)
        patched.setattr(checkpoints.shutil, "rmtree", lambda *args, **kwargs: None)  # as SIGKILL: no clean-up
        with pytest.raises(Killed):
            train_member(ws, "j", 0)
    backup = JobLayout(ws, "j").member(0).path / "backup"
    assert [path.name for path in backup.iterdir()] == [".incoming-epoch-0001"]
    capsys.readouterr()
    train_member(ws, "j", 0)
    out = capsys.readouterr().out
    assert "note:" not in out and out.count("member-00 epoch ") == 2
    assert not list(JobLayout(ws, "j").member(0).path.rglob(".*"))


# --- finished members whose files are damaged -----------------------------------------------------

def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, sample_dir):
    """A finished job of two one-epoch members, trained once; each test damages a copy."""
    home = tmp_path_factory.mktemp("finished") / "home"
    result = invoke(home, "train", "--job", "d", "--n", "2", "--epochs", "1", "--data", sample_dir, *SLICE)
    assert result.exit_code == 0, result.output
    return home


FILE_DAMAGES = {
    "best.keras truncated": ("best.keras", lambda path: _truncate(path), True),
    "metrics.json cut": ("metrics.json", lambda path: path.write_text("{"), False),
    "val_probs of the wrong shape": ("val_probs.npy", lambda path: np.save(path, np.zeros((3, 10), np.float32)), False),
    "test_probs not an array": ("test_probs.npy", lambda path: path.write_bytes(b"not numpy"), False),
    "val_probs with NaN": ("val_probs.npy",
                           lambda path: np.save(path, np.full(np.load(path).shape, np.nan, np.float32)), False),
}


@pytest.mark.parametrize("damage", FILE_DAMAGES)
def test_every_damage_is_found_by_the_one_check_and_named(damage, finished_job, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(finished_job, home)
    name, spoil, _ = FILE_DAMAGES[damage]
    member_dir = home / "models/d/member-01"
    ws = Workspace(home)
    shape = job_output_shape(ws, load_record(ws, "d"))
    assert output_problem(MemberFolder(member_dir), shape) is None
    spoil(member_dir / name)
    assert output_problem(MemberFolder(member_dir), shape).startswith(str(member_dir / name))
    assert survey_models(ws, load_record(ws, "d")).damaged.keys() == {"member-01"}


# the three ways back: kept weights lost (retrain), metrics unreadable and outputs of the wrong shape (predict again)
@pytest.mark.parametrize("damage", ["best.keras truncated", "metrics.json cut", "val_probs of the wrong shape"])
def test_a_finished_member_with_a_damaged_file_is_not_done_until_a_rerun_rebuilds_it(damage, finished_job, tmp_path,
                                                                                     sample_dir):
    home = tmp_path / "home"
    shutil.copytree(finished_job, home)
    name, spoil, retrains = FILE_DAMAGES[damage]
    damaged = home / "models/d/member-01" / name
    spoil(damaged)

    blend = invoke(home, "blend")
    assert blend.exit_code == 1 and "Traceback" not in blend.output
    assert f"member-01 (damaged: {damaged}" in blend.output
    assert not (home / "submissions").exists()  # nothing is written before every input passed its checks
    report = invoke(home, "leaderboard")
    assert report.exit_code == 0 and f"damaged, left out: member-01 ({damaged}" in report.output
    predicted = invoke(home, "predict", "--job", "d", sample_dir / "test.csv", "--out", tmp_path / "p.csv")
    assert predicted.exit_code == 1 and f"member-01: {damaged}" in predicted.output
    assert not (tmp_path / "p.csv").exists()

    log = home / "jobs/d/logs/member-01.log"
    epochs_logged = log.read_text().count("member-01 epoch ")
    rerun = invoke(home, "train", "--job", "d")
    assert rerun.exit_code == 0, rerun.output
    assert f"member-01: {damaged}" in rerun.output
    assert log.read_text().count("member-01 epoch ") == epochs_logged + (1 if retrains else 0)
    survey = survey_models(Workspace(home), load_record(Workspace(home), "d"))
    assert survey.damaged == {} and [m.name for m in survey.finished if m.kind is ModelKind.MEMBER] == \
        ["member-00", "member-01"]
    assert invoke(home, "blend").exit_code == 0


def test_a_damaged_job_record_is_named_then_rebuilt_exactly_from_its_member_folders(finished_job, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(finished_job, home)
    record_file = home / "jobs/d/job.json"
    original = load_record(Workspace(home), "d")
    record_file.write_text(record_file.read_text()[:40])

    status = invoke(home, "status", "--job", "d")
    assert status.exit_code == 1 and f"{record_file}: the job record is damaged" in status.output
    assert "`ensemble train --job d` rebuilds the record" in status.output
    rerun = invoke(home, "train", "--job", "d")
    assert rerun.exit_code == 0, rerun.output
    assert f"{record_file} was damaged: set aside as job.json.damaged-" in rerun.output
    assert "0 to train, 2 already done" in rerun.output  # the members' files say they are finished
    rebuilt = load_record(Workspace(home), "d")
    assert rebuilt.spec == original.spec and rebuilt.data_dir == original.data_dir
    assert [(m.name, m.seed, m.state.value) for m in rebuilt.members] == \
        [(m.name, m.seed, "done") for m in original.members]
    assert len(list((home / "jobs/d").glob("job.json.damaged-*"))) == 1
    assert invoke(home, "blend", "--job", "d").exit_code == 0


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_missing_or_damaged_split_is_made_again_exactly_from_the_seed_and_data(damage, finished_job, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(finished_job, home)
    split_file = home / "jobs/d/split.npz"
    with np.load(split_file) as saved:
        original = {key: saved[key] for key in saved.files}
    split_file.unlink() if damage == "deleted" else _truncate(split_file)

    rerun = invoke(home, "train", "--job", "d")
    assert rerun.exit_code == 0, rerun.output
    assert f"{split_file} was missing or damaged: made again from the job's seed (5) and data" in rerun.output
    with np.load(split_file) as remade:
        assert {key: remade[key].tolist() for key in remade.files} == {k: v.tolist() for k, v in original.items()}
    assert invoke(home, "blend", "--job", "d").exit_code == 0


ARTIFACT_DAMAGES = {
    **{name: (file, spoil) for name, (file, spoil, _) in FILE_DAMAGES.items()},
    "config.json deleted": ("config.json", lambda path: path.unlink()),
    "a test-time augmented half alone": ("test_probs.npy",
                                         lambda path: np.save(path.with_name("test_probs_tta.npy"), np.load(path))),
}


@pytest.mark.parametrize("damage", ARTIFACT_DAMAGES)
def test_status_and_blend_say_the_same_of_every_damaged_artifact(damage, finished_job, tmp_path):
    """One answer (job.state.member_status): a member whose files fail the artifact check is not done in
    `ensemble status`, and `ensemble blend` refuses it naming the same file and fault."""
    home = tmp_path / "home"
    shutil.copytree(finished_job, home)
    file, spoil = ARTIFACT_DAMAGES[damage]
    target = home / "models/d/member-01" / file
    assert target.is_file()
    spoil(target)

    status = invoke(home, "status", "--job", "d")
    assert status.exit_code == 0, status.output
    frame = job_status(Workspace(home), "d")[1]
    states = dict(zip(frame["member"], zip(frame["state"], frame["note"])))
    assert states["member-00"] == ("done", "")
    state, note = states["member-01"]
    assert state == "pending" and note.startswith(f"damaged: {home / 'models/d/member-01'}")
    fault = note.removeprefix("damaged: ")

    blend = invoke(home, "blend", "--job", "d")
    assert blend.exit_code == 1
    assert f"has 1 unfinished of 2 members: member-01 (damaged: {fault})" in blend.output
    assert not (home / "submissions").exists()
