"""Kaggle sessions, pure parts: detection, defaults, version pins, the CLI's lines parsed, our notebooks and
their metadata as the real kaggle client validates and sends them."""
import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from ensemble.kaggle import service
from ensemble.kaggle.competition import KaggleError
from ensemble.kaggle.notebook import KernelMetadata, make_notebook, predict_cells, train_cells
from ensemble.kaggle.service import SessionStatus
from ensemble.kaggle.session import output_note, version_problems
from ensemble.store.session import (OUTPUT_MARGIN_S, SESSION_LIMIT_S, Session, SessionError, detect_session,
                                    in_notebook, session_data_dir)
from ensemble.run.progress import LiveReporter, PlainReporter, make_reporter


def kaggle_root(tmp_path, *inputs):
    root = tmp_path / "kaggle"
    for name in ("working", "temp", *[f"input/{name}" for name in inputs]):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "input").mkdir(exist_ok=True)
    return root


def test_a_session_is_known_by_its_variable_or_by_its_folders(tmp_path):
    assert detect_session({}, tmp_path / "nothing") is None
    assert detect_session({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "ENSEMBLE_SESSION_STARTED": "100"},
                          tmp_path / "nothing") == Session(tmp_path / "nothing", "Batch", 100.0)
    root = kaggle_root(tmp_path)
    found = detect_session({"ENSEMBLE_SESSION_STARTED": "5"}, root)
    assert (found.working_dir, found.run_type, found.started_at) == (root / "working", None, 5.0)


def test_the_time_limit_defaults_to_what_the_session_has_left_less_the_output_margin():
    session = Session(Path("/kaggle"), "Batch", started_at=1000.0)
    assert session.time_left(1000.0 + 3600) == SESSION_LIMIT_S - 3600
    assert session.default_time_limit(1000.0 + 3600) == SESSION_LIMIT_S - 3600 - OUTPUT_MARGIN_S
    assert session.default_time_limit(1000.0 + SESSION_LIMIT_S) == 60.0  # never below a minute
    assert Session(Path("/kaggle"), "Batch", None).default_time_limit(5.0) is None


def test_the_data_is_the_one_input_whose_files_fit_a_layout(tmp_path, sample_dir):
    root = kaggle_root(tmp_path, "digit-recognizer", "ensemble-wheels")
    session = Session(root, "Batch", None)
    fits = lambda folder: (folder / "train.csv").is_file()  # noqa: E731
    with pytest.raises(SessionError, match=r"no input of this Kaggle session .*inputs: digit-recognizer, "
                                           r"ensemble-wheels\); add the competition"):
        session_data_dir(session, fits)
    (root / "input/digit-recognizer/train.csv").write_text("label\n")
    assert session_data_dir(session, fits) == root / "input/digit-recognizer"
    (root / "input/other/inner").mkdir(parents=True)
    (root / "input/other/inner/train.csv").write_text("label\n")
    with pytest.raises(SessionError, match="several inputs of this Kaggle session hold training data .*digit-recognizer"
                                           ".*other/inner.*; choose one with --data"):
        session_data_dir(session, fits)


def test_image_versions_are_held_to_our_pins_on_the_backend_in_use():
    pins = ["tensorflow>=2.16", "keras>=3.3", "numpy>=1.26", "click>=8.2", 'pytest>=7; extra == "test"',
            "jax>=0.4.30"]
    fine = {"tensorflow": "2.18.0", "keras": "3.8.0", "numpy": "2.0.1", "jax": None}
    assert version_problems(pins, fine, backend="tensorflow") == []
    old = {**fine, "keras": "3.0.5"}
    assert version_problems(pins, old, "tensorflow") == ["keras 3.0.5 (ensemble needs keras>=3.3)"]
    assert version_problems(pins, {**fine, "tensorflow": None}, "jax") == ["jax missing (ensemble needs jax>=0.4.30)"]


def test_progress_is_plain_lines_in_a_notebook_even_on_a_pseudo_terminal(monkeypatch):
    assert in_notebook({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}) and in_notebook({"JPY_PARENT_PID": "12"})
    assert in_notebook({"MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    assert not in_notebook({"TERM": "xterm"})
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    for name in ("KAGGLE_KERNEL_RUN_TYPE", "JPY_PARENT_PID", "JPY_SESSION_NAME", "MPLBACKEND"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(make_reporter(), LiveReporter)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert isinstance(make_reporter(), PlainReporter)


def test_the_output_note_says_what_the_job_keeps_against_the_cap():
    assert output_note(30 * 10**6, 3, 10) == ("the job keeps 28.6 MiB in /kaggle/working (3 members done); about "
                                             "95.4 MiB when all 10 are done; the session's output holds 18.6 GiB")
    assert output_note(3 * 10**9, 1, 10).endswith("when all 10 are done; MORE than the 18.6 GiB a session's output "
                                                  "holds: what is past it is lost; train fewer members per job")


def test_the_cli_lines_are_read_in_both_spellings():
    pushed = ("The following are not valid dataset sources and could not be added to the kernel: ['me/gone']\n"
              "Kernel version 3 successfully pushed.  Please check progress at https://www.kaggle.com/code/me/nb")
    assert service.parse_push(pushed) == (3, ["dataset sources ['me/gone']"])
    with pytest.raises(KaggleError, match="Kaggle refused the notebook: Kernel push error: Quota exceeded"):
        service.parse_push("Kernel push error: Quota exceeded")
    assert service.parse_status('me/nb has status "KernelWorkerStatus.RUNNING"').status is SessionStatus.RUNNING
    failed = service.parse_status('me/nb has status "error"\nFailure message: "Notebook exceeded its time limit"')
    assert (failed.status, failed.failure) == (SessionStatus.ERROR, "Notebook exceeded its time limit")
    assert service.parse_downloaded("Output file downloaded to /x/a.csv\nOutput file downloaded to /x/b.log") == [
        Path("/x/a.csv"), Path("/x/b.log")]
    assert service.log_lines('[{"stream_name":"stdout","time":1.0,"data":"a\\nb\\n"},{"data":"c\\r"}]') == ["a", "b",
                                                                                                          "c"]
    assert service.log_lines("plain\n\nlines\n") == ["plain", "lines"]


def test_slugs_and_titles_resolve_to_each_other():
    slugify = pytest.importorskip("slugify").slugify
    for job in ("t4", "A_long.job-name", "x" * 100):
        slug = service.slug_for("ensemble", job)
        assert 5 <= len(slug) <= 50 and slugify(service.title_for(slug)) == slug


def test_our_kernel_and_dataset_arguments_parse_with_the_real_kaggle_cli():
    cli = pytest.importorskip("kaggle.cli")
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    cli.parse_kernels(commands)
    cli.parse_datasets(commands)
    cli.parse_competitions(commands)
    push = parser.parse_args(service.push_args(Path("k"), "NvidiaTeslaT4", 3600))
    assert (push.folder, push.acc, push.timeout) == ("k", "NvidiaTeslaT4", 3600)
    assert parser.parse_args(service.push_args(Path("k"), None)).acc is None
    assert parser.parse_args(service.status_args("me/nb")).kernel == "me/nb"
    assert parser.parse_args(service.logs_args("me/nb")).kernel == "me/nb"
    output = parser.parse_args(service.output_args("me/nb", Path("out")))
    assert (output.kernel, output.path, output.force) == ("me/nb", "out", True)
    create = parser.parse_args(service.dataset_args(Path("d"), create=True, message="m"))
    assert (create.folder, create.dir_mode, create.public) == ("d", "tar", False)
    version = parser.parse_args(service.dataset_args(Path("d"), create=False, message="ensemble 1234"))
    assert (version.folder, version.version_notes, version.dir_mode) == ("d", "ensemble 1234", "tar")
    submit = parser.parse_args(service.code_submit_args("Kannada-MNIST", "me/nb", 4, "submission.csv", "msg"))
    assert (submit.competition, submit.kernel, submit.version, submit.file_name, submit.message) == (
        "Kannada-MNIST", "me/nb", "4", "submission.csv", "msg")


def captured_push(folder: Path, accelerator: str | None):
    """What the real client would send for this folder: KaggleApi.kernels_push with build_kaggle_client stubbed."""
    extended = pytest.importorskip("kaggle.api.kaggle_api_extended")
    api = extended.KaggleApi()
    sent = []

    class Kernels:
        def save_kernel(self, request):
            sent.append(request)
            return object()

    @contextmanager
    def client():
        yield type("Client", (), {"kernels": type("K", (), {"kernels_api_client": Kernels()})()})()

    api.build_kaggle_client = client
    api.kernels_push(str(folder), None, accelerator)
    return sent[0]


@pytest.mark.parametrize("accelerator", ["NvidiaTeslaT4", None])
def test_the_real_client_accepts_our_train_notebook_offline_with_the_gpu_asked(tmp_path, accelerator):
    metadata = KernelMetadata("me/ensemble-t4", service.title_for("ensemble-t4"), accelerator,
                              ("me/ensemble-wheels", "me/ensemble-job-t4"), ("digit-recognizer",),
                              ("me/ensemble-t4/2",))
    (tmp_path / "notebook.ipynb").write_text(make_notebook(train_cells("t4", ("--gpus", "0,1"))))
    (tmp_path / "kernel-metadata.json").write_text(json.dumps(metadata.to_dict()))
    request = captured_push(tmp_path, accelerator)
    assert (request.slug, request.new_title, request.language, request.kernel_type) == (
        "me/ensemble-t4", "ensemble t4", "python", "notebook")
    assert (request.is_private, request.enable_internet, request.enable_gpu) == (True, False, accelerator is not None)
    assert (request.machine_shape or None) == accelerator
    assert list(request.dataset_data_sources) == ["me/ensemble-wheels", "me/ensemble-job-t4"]
    assert list(request.competition_data_sources) == ["digit-recognizer"]
    assert list(request.kernel_data_sources) == ["me/ensemble-t4/2"]
    cells = [cell["source"] for cell in json.loads(request.text)["cells"]]
    assert any("pip install --quiet --no-index --find-links \"$WHEELS\" ensemble" in source for source in cells)
    assert any("ensemble kernel restore --job t4\nensemble train --job t4 --gpus 0,1" in source for source in cells)
    shell = [cell["source"] for cell in json.loads(request.text)["cells"] if cell["cell_type"] == "code"
             and ("ensemble " in cell["source"] or "pip " in cell["source"])]
    assert len(shell) == 4 and all(source.startswith("%%bash\nset -euo pipefail\n") for source in shell[1:])


def test_the_predict_notebook_predicts_the_test_file_it_finds_and_checks_its_submission(tmp_path):
    cells = predict_cells("kn", "/kaggle/input/Kannada-MNIST/test.csv", "/kaggle/input/Kannada-MNIST",
                          ("--method", "mean", "--only", "member-00", "--no-tta"))
    source = cells[-1][1]
    assert ("ensemble predict /kaggle/input/Kannada-MNIST/test.csv --job kn --out /kaggle/working/submission.csv "
            "--method mean --only member-00 --no-tta\nensemble check /kaggle/working/submission.csv --data "
            "/kaggle/input/Kannada-MNIST") in source
    metadata = KernelMetadata("me/ensemble-submit-kn", "ensemble submit kn", None, ("me/w1-wheels",),
                              ("Kannada-MNIST",))
    (tmp_path / "notebook.ipynb").write_text(make_notebook(cells))
    (tmp_path / "kernel-metadata.json").write_text(json.dumps(metadata.to_dict()))
    request = captured_push(tmp_path, None)
    assert (request.enable_internet, request.enable_gpu, request.machine_shape or None) == (False, False, None)


def test_a_short_title_is_refused_by_the_real_client(tmp_path):
    metadata = {**KernelMetadata("me/ensemble-t4", "t4", None).to_dict()}
    (tmp_path / "notebook.ipynb").write_text(make_notebook(train_cells("t4", ())))
    (tmp_path / "kernel-metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="Title must be at least five characters"):
        captured_push(tmp_path, None)


def test_credentials_come_from_the_environment_or_kaggle_json(tmp_path):
    assert service.credentials_user({"KAGGLE_USERNAME": "me", "KAGGLE_KEY": "k"}) == "me"
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle/kaggle.json").write_text('{"username": "you", "key": "k"}')
    assert service.credentials_user({}, home=tmp_path) == "you"
    with pytest.raises(KaggleError, match="the kaggle CLI has no credentials: put your API token in "
                                          "~/.kaggle/kaggle.json"):
        service.credentials_user({}, home=tmp_path / "nobody")


def test_train_in_a_session_defaults_its_time_limit_and_caps_a_longer_one(tmp_path):
    from ensemble.kaggle.session import session_train_request
    from ensemble.run.request import TrainRequest
    from ensemble.store.workspace import Workspace

    said = []
    session = Session(tmp_path, "Batch", started_at=1000.0)
    clock = lambda: 1000.0 + 3600  # noqa: E731  an hour into the session
    left = SESSION_LIMIT_S - 3600 - OUTPUT_MARGIN_S
    asked = session_train_request(Workspace(tmp_path), TrainRequest(), said.append, session, clock)
    assert (asked.time_limit, asked.n) == (left, 10)
    assert said[-1] == "Kaggle session: --time-limit 10h40m00s (what the session has left, less 20m00s to write the output)"
    longer = session_train_request(Workspace(tmp_path), TrainRequest(time_limit=20 * 3600.0, n=3), said.append,
                                   session, clock)
    assert (longer.time_limit, longer.n) == (left, 3) and "is more than the session has left" in said[-1]
    shorter = TrainRequest(time_limit=600.0)
    assert session_train_request(Workspace(tmp_path), shorter, said.append, session, clock) is shorter
    assert session_train_request(Workspace(tmp_path), shorter, said.append, None, clock) is shorter  # not a session


def test_restore_binds_the_job_to_the_input_holding_its_own_train_file(tmp_path):
    from types import SimpleNamespace

    from ensemble.data.layouts import LAYOUTS
    from ensemble.data.tables import file_sha256
    from ensemble.kaggle.kernel import job_data_dir

    root = kaggle_root(tmp_path, "digit-recognizer", "a-copy", "ensemble-wheels")
    for name, rows in (("digit-recognizer", "1,0\n"), ("a-copy", "2,0\n")):
        (root / "input" / name / "train.csv").write_text("label,pixel0\n" + rows)
        (root / "input" / name / "test.csv").write_text("pixel0\n0\n")
    spec = SimpleNamespace(data_layout=LAYOUTS["digit-recognizer"],
                           train_sha256=file_sha256(root / "input/digit-recognizer/train.csv"))
    session = Session(root, "Batch", None)
    assert job_data_dir(session, spec) == root / "input/digit-recognizer"
    with pytest.raises(SessionError, match=r"the job's digit-recognizer data is in .*a-copy, .*digit-recognizer: "
                                           r"choose one \(ensemble kernel restore --data FOLDER\)"):
        job_data_dir(session, SimpleNamespace(data_layout=LAYOUTS["digit-recognizer"], train_sha256="another"))
    with pytest.raises(SessionError, match="the job's fashion-mnist data is in none of the inputs: attach it"):
        job_data_dir(session, SimpleNamespace(data_layout=LAYOUTS["fashion-mnist"], train_sha256=""))


def test_the_offline_install_set_is_ensemble_and_its_small_dependencies_built_the_same_each_time(tmp_path):
    from ensemble.kaggle.wheels import build_wheels

    first = build_wheels(tmp_path / "a")
    names = {name.split("-")[0].lower() for name in first.names()}
    assert {"ensemble", "click", "rich", "tabulate", "packaging"} <= names
    assert not names & {"tensorflow", "keras", "numpy", "pandas", "scikit_learn", "scipy", "jax", "matplotlib",
                        "joblib", "mlxtend"}
    assert build_wheels(tmp_path / "b").content_sha256 == first.content_sha256
