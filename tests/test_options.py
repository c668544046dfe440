"""Options declared once (job.options): one field added to the spec shows in --help, in job.json, in the
differences message and in the resume command, with no other edit."""
import json
import shlex
from dataclasses import dataclass, fields, replace
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ensemble.cli import declared_options
from ensemble.job.errors import JobError
from ensemble.job.layout import JobLayout
from ensemble.job.options import at_least, declared, option
from ensemble.job.record import new_record, resume_command, save_record
from ensemble.job.spec import JobSpec, spec_differences
from ensemble.run.request import TrainRequest


@dataclass(frozen=True)
class SpecWithMixup(JobSpec):
    """The spec with one more option, declared as every option is: in one field."""

    mixup: int | None = option("--mixup", "Mixup pairs per batch (default 0).", type=int, check=at_least(0),
                               default=0)


def command_for(spec_type):
    @click.command()
    @declared_options(*declared(TrainRequest), *declared(spec_type))
    def train(**options):
        click.echo(json.dumps(sorted(options)))
    return train


def test_an_option_declared_once_shows_in_help_job_json_differences_and_the_resume_command(ws, tmp_path):
    help_text = CliRunner().invoke(command_for(SpecWithMixup), ["--help"]).output
    assert "--mixup INTEGER" in help_text and "Mixup pairs per batch (default 0)." in help_text
    assert "--mixup" not in CliRunner().invoke(command_for(JobSpec), ["--help"]).output

    parsed = CliRunner().invoke(command_for(SpecWithMixup), ["--mixup", "2", "--epochs", "3"])
    assert "mixup" in json.loads(parsed.output)

    spec = SpecWithMixup.resolve(SpecWithMixup(mixup=2, precision="float32"))
    record = new_record("j", spec, tmp_path / "data").ensure_members(1)
    save_record(ws, record)
    assert json.loads((JobLayout(ws, "j").dir / "job.json").read_text())["spec"]["mixup"] == 2
    assert SpecWithMixup.resolve(SpecWithMixup(precision="float32")).mixup == 0  # its declared default

    assert spec_differences(spec, replace(spec, mixup=4)) == ["--mixup: job has 2, this run asks 4"]
    assert resume_command(record).endswith("--format digit-recognizer --mixup 2")
    with pytest.raises(JobError, match="--mixup must be at least 0, got -1"):
        SpecWithMixup.resolve(SpecWithMixup(mixup=-1))


def parsed_train_request(words: list[str]) -> TrainRequest:
    """What the real CLI's `ensemble train` options make of a printed command line ("ensemble train ...")."""
    seen = {}

    @click.command()
    @declared_options(*declared(TrainRequest), *declared(JobSpec))
    def train(**options):
        seen.update(options)

    assert CliRunner().invoke(train, words[2:]).exit_code == 0
    return TrainRequest.from_options(**seen)


def test_every_spec_option_round_trips_through_the_resume_command(tmp_path):
    """The printed command, parsed by the real CLI, asks for exactly the recorded spec."""
    spec = JobSpec.from_options(recipe="deotte", snapshots=3, epochs=6, tta=False, learning_rate=0.00123456789,
                                rotation=7.5, limit_train=300, precision="float32", seed=4, val_split=0.2)
    words = shlex.split(resume_command(new_record("j", spec, tmp_path / "my data").ensure_members(3)))
    request = parsed_train_request(words)
    assert (request.job, request.n, request.data_dir) == ("j", 3, tmp_path / "my data")
    assert JobSpec.resolve(request.spec) == replace(spec, train_sha256="", test_sha256="")


@pytest.mark.parametrize("recorded_folds, folds", [(None, 0), (0, 0), (10, 10), (3, 3)])
def test_a_cnn11_jobs_resume_command_keeps_its_split_whatever_the_recipes_folds(tmp_path, recorded_folds, folds):
    """cnn11's recipe has ten folds; a job recorded before that (folds null: its shared split) or made with
    --folds 0 resumes with its shared split, a k-fold one with its folds."""
    recorded = JobSpec.from_options(precision="float32").to_dict()
    recorded["folds"] = recorded_folds
    spec = JobSpec.from_dict(recorded)
    words = shlex.split(resume_command(new_record("j", spec, tmp_path / "d").ensure_members(2)))
    assert words[words.index("--folds") + 1] == str(folds)
    resolved = JobSpec.resolve(parsed_train_request(words).spec)
    assert resolved.folds == folds and resolved == replace(spec, train_sha256="", test_sha256="")


def test_the_api_keywords_are_the_flags_and_unknown_ones_are_refused():
    request = TrainRequest.from_options(n=2, batch=64, lr=1e-3, format="kannada-mnist", data="d",
                                        time_limit="20m", gpus="0,1")
    assert (request.n, request.time_limit, request.data_dir, request.gpus) == (2, 1200.0, Path("d"), "0,1")
    assert (request.spec.batch_size, request.spec.learning_rate, request.spec.layout) == (64, 1e-3, "kannada-mnist")
    with pytest.raises(JobError, match="unknown option batch_size; the options are"):
        TrainRequest.from_options(batch_size=64)


def test_each_spec_field_is_declared_or_decided_by_the_recipe_and_data():
    options = {name for name, _ in declared(JobSpec)}
    decided = {"optimizer", "zoom", "shift", "train_sha256", "test_sha256", "classes"}
    assert options | decided == {f.name for f in fields(JobSpec)} and not options & decided
