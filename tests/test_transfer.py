"""A job copy brought into a workspace (kernel fetch, kernel restore): found as folders or archives, each
model kept from the better copy, never a finished member replaced, the ledger made to agree with the files."""
import shutil
import tarfile

import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.job.errors import JobError
from ensemble.job.record import load_record
from ensemble.kaggle.transfer import MemberProgress, find_job_copies, import_job, stage_job
from ensemble.store.workspace import Workspace


def invoke(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *map(str, args)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_dir):
    home = tmp_path_factory.mktemp("trained")
    result = invoke(home, "train", "--n", 2, "--epochs", 1, "--model", "seed004", "--limit-train", 300, "--data",
                    sample_dir, "--job", "j", "--precision", "float32")
    assert result.exit_code == 0, result.output
    return home


def copy_home(home, to):
    shutil.copytree(home, to, ignore=shutil.ignore_patterns("lock", ".cache"))
    return Workspace(to)


def test_better_means_finished_or_more_epochs_and_a_finished_member_is_never_replaced():
    assert MemberProgress(True, 0).better_than(MemberProgress(False, 5))
    assert MemberProgress(False, 3).better_than(MemberProgress(False, 2))
    assert not MemberProgress(False, 2).better_than(MemberProgress(False, 2))
    assert not MemberProgress(True, 9).better_than(MemberProgress(True, 1))


def test_an_unfinished_member_is_replaced_by_the_finished_copy_and_a_finished_one_is_kept(trained, tmp_path):
    here = copy_home(trained, tmp_path / "here")
    there = copy_home(trained, tmp_path / "there")
    (here.models_dir / "j/member-01/metrics.json").unlink()  # member-01 is unfinished here
    (there.models_dir / "j/member-00/best.keras").write_bytes(b"damaged")  # the copy's member-00 is damaged
    kept = (here.models_dir / "j/member-00/best.keras").read_bytes()
    result = import_job(here, there, "j", "a copy")
    assert result.imported == ["member-01"]
    assert (here.models_dir / "j/member-00/best.keras").read_bytes() == kept
    assert (here.models_dir / "j/member-01/metrics.json").is_file()
    assert not list((here.models_dir / "j").glob(".importing-*")) and not list((here.models_dir / "j").glob(".replaced-*"))
    assert [m.state.value for m in load_record(here, "j").members] == ["done", "done"]


def test_a_new_workspace_adopts_the_copy_bound_to_its_own_data(trained, tmp_path, sample_dir):
    there = copy_home(trained, tmp_path / "there")
    here = Workspace(tmp_path / "fresh")
    result = import_job(here, there, "j", "a copy", data_dir=sample_dir)
    assert result.created and result.imported == ["member-00", "member-01"]
    assert load_record(here, "j").data_dir == str(sample_dir.resolve())
    assert invoke(here.home, "blend", "--job", "j").exit_code == 0


def test_another_job_of_the_same_name_is_refused(trained, tmp_path, sample_dir):
    there = Workspace(tmp_path / "other")
    result = invoke(there.home, "train", "--n", 1, "--epochs", 2, "--model", "seed004", "--limit-train", 300,
                    "--data", sample_dir, "--job", "j", "--precision", "float32")
    assert result.exit_code == 0, result.output
    here = copy_home(trained, tmp_path / "here")
    with pytest.raises(JobError, match="the copy of job 'j' from elsewhere is another job .*epochs.*nothing imported"):
        import_job(here, there, "j", "elsewhere")


@pytest.mark.parametrize("as_archives", [False, True])
def test_a_job_copy_is_found_as_folders_or_as_the_archives_an_upload_makes(trained, tmp_path, as_archives):
    staged = stage_job(Workspace(trained), "j", tmp_path / "staged", models="finished")
    assert sorted(p.name for p in (staged / "models/j").iterdir()) == ["member-00", "member-01"]
    assert not (staged / "jobs/j/lock").exists() and (staged / "jobs/j/split.npz").is_file()
    source = tmp_path / "input" / "ensemble-job-j"
    if as_archives:  # `datasets create -r tar` packs each sub-folder into one archive of its contents
        source.mkdir(parents=True)
        for folder in ("jobs", "models"):
            with tarfile.open(source / f"{folder}.tar", "w") as bundle:
                for path in (staged / folder).iterdir():
                    bundle.add(path, arcname=path.name)
    else:
        shutil.copytree(staged, source)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    homes = find_job_copies([source, tmp_path / "input"], "j", scratch)
    assert len(homes) == 1 and (homes[0] / "jobs/j/job.json").is_file()
    assert (homes[0] / "models/j/member-00/best.keras").is_file()
