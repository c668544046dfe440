"""Self-tests of the offline Kaggle stand-in: its sessions, its strictness, its output lines."""
import json
import os
import tarfile

import pytest

from kaggle_service import formats, write_kernel

REF = "tester/tiny-notebook"
PROBE = '''
import errno, importlib.util, os
print("inputs", sorted(os.listdir("/kaggle/input")))
open("/kaggle/working/out.txt", "w").write("hello")
os.makedirs("/kaggle/working/sub", exist_ok=True)
open("/kaggle/working/sub/deep.txt", "w").write("deep")
try:
    open("/kaggle/input/digit-recognizer/new.csv", "w")
    raise AssertionError("/kaggle/input is writable")
except OSError as error:
    assert error.errno == errno.EROFS, error
assert importlib.util.find_spec("click") is None
assert os.environ.get("PIP_NO_INDEX") == "1" and os.environ["KAGGLE_KERNEL_RUN_TYPE"] == "Batch"
assert "KAGGLE_USERNAME" not in os.environ and not os.path.exists(os.path.expanduser("~/.kaggle"))
assert os.getcwd() == "/kaggle/working"
print("probe ok")
'''


@pytest.fixture
def service(kaggle_service):
    kaggle_service.add_competition("digit-recognizer", {"train.csv": "label,pixel0\n1,0\n", "test.csv": "pixel0\n0\n"})
    return kaggle_service


def push(service, folder, *extra):
    return service.run("kernels", "push", "-p", folder, *extra)


def test_a_session_runs_the_notebook_offline_with_read_only_inputs(service, tmp_path):
    folder = write_kernel(tmp_path / "nb", [PROBE], REF, competition_sources=["digit-recognizer"])
    pushed = push(service, folder)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().endswith(formats.PUSHED_LINE.format(
        version=1, url="https://www.kaggle.com/code/tester/tiny-notebook"))
    version = service.wait(REF, 60)
    assert version["status"] == "COMPLETE", version
    assert [m["slug"] for m in version["mounts"]] == ["digit-recognizer"]
    status = service.run("kernels", "status", REF)
    assert status.stdout.strip() == formats.STATUS_LINE.format(ref=REF, status="KernelWorkerStatus.COMPLETE")
    assert "probe ok" in service.run("kernels", "logs", REF).stdout
    out = tmp_path / "out"
    output = service.run("kernels", "output", REF, "-p", out)
    assert output.returncode == 0, output.stderr
    assert (out / "out.txt").read_text() == "hello" and (out / "sub/deep.txt").read_text() == "deep"
    assert "inputs ['digit-recognizer']" in (out / "tiny-notebook.log").read_text()
    assert formats.OUTPUT_LINE.format(path=out / "sub/deep.txt") in output.stdout
    assert not os.listdir("/kaggle")  # the host's mount point stays empty
    assert service.calls()[0] == ["kernels", "push", "-p", str(folder)]


def test_a_cell_that_raises_ends_the_session_in_error(service, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_PLAIN_STATUS", "1")
    push(service, write_kernel(tmp_path / "nb", ["print('before')", "raise RuntimeError('boom here')"], REF))
    version = service.wait(REF, 60)
    assert (version["status"], version["failure_message"]) == ("ERROR", "RuntimeError: boom here")
    lines = service.run("kernels", "status", REF).stdout.splitlines()
    assert lines == [formats.STATUS_LINE.format(ref=REF, status="error"),
                     formats.FAILURE_LINE.format(message="RuntimeError: boom here")]


def test_metadata_is_checked_by_the_real_client(service, tmp_path):
    refused = push(service, write_kernel(tmp_path / "nb", ["1"], "tester/tiny", title="tiny"))
    assert (refused.returncode, refused.stderr.strip()) == (1, "Title must be at least five characters")
    assert service.kernel("tester/tiny") is None
    bad_accelerator = push(service, write_kernel(tmp_path / "nb2", ["1"], REF), "--accelerator", "Gpu9000")
    assert bad_accelerator.stdout.startswith(formats.PUSH_ERROR_PREFIX + "Invalid machine shape: Gpu9000")
    not_mine = push(service, write_kernel(tmp_path / "nb3", ["1"], "someone/tiny-notebook"))
    assert not_mine.stdout.startswith(formats.PUSH_ERROR_PREFIX + "You do not have permission")
    argparse_error = service.run("kernels", "push", "--no-such-flag")
    assert argparse_error.returncode == 2 and "unrecognized arguments" in argparse_error.stderr


def test_internet_defaults_on_and_sources_must_exist(service, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_REFUSE_ACCELERATOR", "You have used up your GPU quota")
    folder = write_kernel(tmp_path / "nb", ["1"], REF, enable_internet=None, dataset_sources=["tester/missing-one"],
                          competition_sources=["digit-recognizer", "no-such-comp"], kernel_sources=["tester/nothing"])
    gpu = push(service, folder, "--accelerator", "NvidiaTeslaT4")
    assert gpu.stdout.strip() == formats.PUSH_ERROR_PREFIX + "You have used up your GPU quota"
    pushed = push(service, folder, "-t", "30")
    lines = pushed.stdout.splitlines()
    assert lines[:3] == [formats.INVALID_SOURCES_LINE.format(kind=k, names=n) for k, n in
                         (("dataset", ["tester/missing-one"]), ("competition", ["no-such-comp"]),
                          ("kernel", ["tester/nothing"]))]
    request = service.kernel(REF)["versions"][0]["request"]
    assert request["enable_internet"] is True and request["session_timeout_seconds"] == 30
    assert request["competition_data_sources"] == ["digit-recognizer"] and request["dataset_data_sources"] == []
    assert service.wait(REF, 60)["status"] == "COMPLETE"


@pytest.mark.parametrize("unpack", ["0", "1"])
def test_a_dataset_round_trip_with_folders_as_tar(service, tmp_path, monkeypatch, unpack):
    monkeypatch.setenv("STANDIN_UNPACK_DIRS", unpack)
    data = tmp_path / "data"
    (data / "wheels").mkdir(parents=True)
    (data / "wheels/a.whl").write_text("wheel")
    (data / "top.txt").write_text("top")
    meta = {"title": "Tiny wheels", "id": "tester/tiny-wheels", "licenses": [{"name": "CC0-1.0"}]}
    (data / "dataset-metadata.json").write_text(json.dumps(meta))
    created = service.run("datasets", "create", "-p", data, "-r", "tar")
    assert created.returncode == 0, created.stderr
    assert "Starting upload for file wheels.tar" in created.stdout
    assert created.stdout.strip().endswith("Your private Dataset is being created. Please check progress at "
                                           "https://www.kaggle.com/datasets/tester/tiny-wheels")
    again = service.run("datasets", "create", "-p", data)
    assert "Dataset creation error: " + formats.SLUG_IN_USE.format(slug="tiny-wheels") in again.stdout
    (data / "top.txt").write_text("top v2")
    versioned = service.run("datasets", "version", "-p", data, "-m", "second", "-r", "tar")
    assert "Dataset version is being created." in versioned.stdout, versioned.stderr
    dataset = service.dataset("tester/tiny-wheels")
    files = dataset["versions"][-1]["files"]
    assert files == (["top.txt", "wheels/a.whl"] if unpack == "1" else ["top.txt", "wheels.tar"])
    if unpack == "0":
        with tarfile.open(os.path.join(dataset["versions"][-1]["dir"], "wheels.tar")) as bundle:
            assert "./a.whl" in bundle.getnames() or "a.whl" in bundle.getnames()
    meta["id"] = "tester/not-there-yet"
    (data / "dataset-metadata.json").write_text(json.dumps(meta))
    missing = service.run("datasets", "version", "-p", data, "-m", "x")
    assert missing.returncode == 1 and "404 Client Error: Not Found" in missing.stderr
    meta.update(id="tester/short", title="Short")
    (data / "dataset-metadata.json").write_text(json.dumps(meta))
    short = service.run("datasets", "create", "-p", data)
    assert (short.returncode, short.stderr.strip()) == (1, "The dataset slug must be between 6 and 50 characters")


def test_a_cut_session_keeps_its_partial_output(service, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_CUT_WHEN", "models/m/metrics.json")
    cells = ["import os, time\nos.makedirs('models/m', exist_ok=True)\nopen('models/m/weights', 'w').write('w')\n"
             "open('models/m/metrics.json', 'w').write('{}')\ntime.sleep(60)\nopen('never.txt', 'w')"]
    push(service, write_kernel(tmp_path / "nb", cells, REF))
    version = service.wait(REF, 40)
    assert (version["status"], version["failure_message"], version["cut"]) == ("ERROR", formats.TIME_LIMIT_MESSAGE, True)
    out = tmp_path / "out"
    assert service.run("kernels", "output", REF, "-p", out).returncode == 0
    assert (out / "models/m/weights").read_text() == "w" and not (out / "never.txt").exists()


def test_no_credentials_is_the_real_clients_auth_help(service, monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.setenv("HOME", str(tmp_path))
    result = service.run("competitions", "submissions", "digit-recognizer", "-v")
    assert result.returncode == 1 and "Authentication required" in result.stdout


def test_file_submissions_score_after_polls_and_code_ones_on_the_hidden_rows(service, tmp_path):
    (tmp_path / "sub.csv").write_text("ImageId,Label\n1,1\n")
    submitted = service.run("competitions", "submit", "digit-recognizer", "-f", tmp_path / "sub.csv", "-m", "first")
    assert formats.SUBMITTED_LINE.format(title="Digit Recognizer") in submitted.stdout, submitted.stderr
    polls = [service.run("competitions", "submissions", "digit-recognizer", "-v").stdout for _ in range(2)]
    assert polls[0].splitlines()[0] == formats.SUBMISSIONS_HEADER
    assert ",SubmissionStatus.PENDING,," in polls[0] and f",SubmissionStatus.COMPLETE,{formats.FILE_SCORE}," in polls[1]
    service.add_competition("kannada-mnist", {"train.csv": "label,p\n1,0\n", "test.csv": "id,p\n1,0\n"}, code=True,
                            hidden={"test.csv": "id,p\n7,0\n8,0\n", "solution.csv": "id,label\n7,3\n8,4\n"})
    refused = service.run("competitions", "submit", "kannada-mnist", "-f", tmp_path / "sub.csv", "-m", "x")
    assert refused.returncode == 1 and formats.CODE_ONLY in refused.stderr
    predict = ("import pandas as pd\ntest = pd.read_csv('/kaggle/input/kannada-mnist/test.csv')\n"
               "pd.DataFrame({'id': test.id, 'label': 3}).to_csv('submission.csv', index=False)")
    push(service, write_kernel(tmp_path / "nb", [predict], "tester/kannada-run", competition_sources=["kannada-mnist"]))
    assert service.wait("tester/kannada-run", 60)["status"] == "COMPLETE"
    code = service.run("competitions", "submit", "kannada-mnist", "-k", "tester/kannada-run", "-v", "1",
                       "-f", "submission.csv", "-m", "code one")
    assert code.returncode == 0, code.stderr
    ref = int(code.stdout.split("Submission ref: ")[1].split()[0])
    row = service.wait_submission("kannada-mnist", ref, 60)
    assert (row["status"], row["public_score"]) == ("COMPLETE", "0.50000"), row


def test_download_zips_the_competition_and_unknown_ones_are_404(service, tmp_path):
    import zipfile
    got = service.run("competitions", "download", "digit-recognizer", "-p", tmp_path)
    assert got.returncode == 0, got.stderr
    assert f"Downloading digit-recognizer.zip to {tmp_path}" in got.stdout
    assert sorted(zipfile.ZipFile(tmp_path / "digit-recognizer.zip").namelist()) == ["test.csv", "train.csv"]
    unknown = service.run("competitions", "download", "no-such-comp", "-p", tmp_path)
    assert unknown.returncode == 1
    assert formats.HTTP_ERROR_LINE.format(code=404, reason="Not Found", url=formats.DOWNLOAD_404_URL.format(
        competition="no-such-comp")) in unknown.stderr
