"""A stand-in for the `kaggle` CLI that plays Kaggle's service offline, on this machine.

The command line is the real client's: `kaggle.cli.main()` parses argv and runs the real client's
command functions (`kernels_push_cli`, `competition_submit_cli`, ...) with everything they print.
Only the network end is replaced: `KaggleApi.build_kaggle_client` returns a `FakeKaggleClient` whose
API methods are served by `Service` from the state under $STANDIN_HOME, and file transfers go
through a loopback HTTP server over that same directory. So validation, error texts and output lines
are the real client's own; where Kaggle's service decides (unknown sources, quotas, refusals) the
texts are the constants below.

Real-client behaviour worth knowing (kaggle 2.2.5), which this stand-in keeps on purpose:
- a metadata error found by the client (a ValueError) goes to stderr as the bare message, exit 1;
- a refusal by the service in `kernels push` prints `Kernel push error: <text>` on stdout and exits 0;
- a refusal in `datasets create` prints `Dataset creation error: <text>`, exit 0 (version: `Dataset
  version creation error: <text>`); an HTTP error (404, 400) goes to stderr, exit 1;
- without credentials it prints the real `print_auth_help()` text ("Authentication required ...").
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

# ---- the service's texts and formats (tests and the library read these) --------------------------------
KERNEL_URL = "https://www.kaggle.com/code/{owner}/{slug}"
DATASET_URL = "https://www.kaggle.com/datasets/{owner}/{slug}"
DOWNLOAD_404_URL = "https://www.kaggle.com/api/v1/competitions/data/download-all/{competition}"
SUBMIT_URL = "https://www.kaggle.com/api/v1/competitions/submissions/submit/{competition}"
CODE_SUBMIT_URL = "https://www.kaggle.com/api/v1/competitions/submissions/submit-code/{competition}"
SUBMISSIONS_URL = "https://www.kaggle.com/api/v1/competitions/submissions/list/{competition}"
KERNEL_STATUS_URL = "https://www.kaggle.com/api/v1/kernels/status/{owner}/{slug}"
KERNEL_OUTPUT_URL = "https://www.kaggle.com/api/v1/kernels/output/{owner}/{slug}"
DATASET_STATUS_URL = "https://www.kaggle.com/api/v1/datasets/status/{owner}/{slug}"
DATASET_VERSION_URL = "https://www.kaggle.com/api/v1/datasets/create/version/{owner}/{slug}"
HTTP_ERROR_LINE = "{code} Client Error: {reason} for url: {url}"  # requests' own raise_for_status() wording

PUSHED_LINE = "Kernel version {version} successfully pushed.  Please check progress at {url}"  # printed by the client
PUSH_ERROR_PREFIX = "Kernel push error: "
STATUS_LINE = '{ref} has status "{status}"'
FAILURE_LINE = 'Failure message: "{message}"'
OUTPUT_LINE = "Output file downloaded to {path}"
LOG_LINE = "Kernel log downloaded to {path} "  # the real client leaves that trailing space
INVALID_SOURCES_LINE = "The following are not valid {kind} sources and could not be added to the kernel: {names}"
SUBMITTED_LINE = "Successfully submitted to {title}"
SUBMISSIONS_HEADER = "ref,fileName,date,description,status,publicScore,privateScore"
FILE_SCORE = "0.98765"  # what a file submission scores, once polled STANDIN_POLLS_TO_SCORE times
SUBMISSIONS_PER_DAY = 5

NOT_YOURS = "You do not have permission to write to {ref}: it belongs to {owner}, you are {user}"
BAD_ACCELERATOR = "Invalid machine shape: {shape}. Valid options are {valid}"
CODE_ONLY = "This competition only accepts submissions from notebooks"
NOT_CODE = "This competition does not accept submissions from notebooks"
NEEDS_NO_INTERNET = "Submission to code competitions requires internet to be disabled"
NOT_COMPLETE = "Notebook version {version} has status {status}: only a successful version can be submitted"
NO_COMPETITION_SOURCE = "The notebook does not have {competition} as a data source"
NOT_IN_OUTPUT = "File {file} was not found in the output of notebook version {version}"
SLUG_IN_USE = 'The requested slug "{slug}" is already in use by a dataset. Please choose another slug.'
TIME_LIMIT_MESSAGE = "Notebook exceeded its time limit"
NOT_SERVED = "the kaggle stand-in does not serve this command ({name})"

ACCELERATORS = ("NvidiaTeslaT4", "NvidiaTeslaP100", "NvidiaL4", "NvidiaL4X1", "NvidiaH100",
                "TpuV38", "Tpu1VmV38", "TpuV5E8", "TpuV6E8")
GPU_SHAPES = tuple(name for name in ACCELERATORS if name.startswith("Nvidia"))
DEFAULT_SESSION_S = 1800
POLL_S = 0.2  # how often a session checks its time limit and STANDIN_CUT_WHEN

STANDIN_DIR = Path(__file__).resolve().parent


# ---- state: JSON files under $STANDIN_HOME, read-modify-write under one lock ------------------------------
def home() -> Path:
    return Path(os.environ["STANDIN_HOME"])


def write_json_atomically(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as out:
        json.dump(data, out, indent=1, default=str)
    os.replace(out.name, path)


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


@contextlib.contextmanager
def locked(name: str = "state"):
    """Hold the lock on STANDIN_HOME/<name>.json; a CLI call and background sessions write the same files."""
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = home() / f"{name}.json"
        data = read_json(path, {"kernels": {}, "datasets": {}, "submissions": {}} if name == "state" else [])
        yield data
        write_json_atomically(path, data)


def read_state() -> dict:
    return read_json(home() / "state.json", {"kernels": {}, "datasets": {}, "submissions": {}})


def record_call(argv: list[str]) -> None:
    with locked("calls") as calls:
        calls.append(argv)


def now() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def kernel_dir(ref: str, version: int) -> Path:
    return home() / "kernels" / ref / str(version)


def dataset_dir(ref: str, version: int) -> Path:
    return home() / "datasets" / ref / str(version)


def competitions_root() -> Path:
    return Path(os.environ.get("STANDIN_COMPETITIONS", home() / "competitions"))


def hidden_root() -> Path:
    return Path(os.environ.get("STANDIN_HIDDEN", home() / "hidden"))


def is_code_competition(competition: str) -> bool:
    return (competitions_root() / competition / ".code_competition").exists()


def competition_title(competition: str) -> str:
    title_file = competitions_root() / competition / ".title"
    return title_file.read_text().strip() if title_file.is_file() else competition.replace("-", " ").title()


def latest_version(kernel: dict, label: str | None = None) -> dict | None:
    """The version a request names (`v3` or `3`), else the newest."""
    versions = kernel.get("versions", [])
    if label:
        number = int(str(label).lstrip("v"))
        return next((v for v in versions if v["number"] == number), None)
    return versions[-1] if versions else None


def session_ended(version: dict) -> bool:
    return version.get("status") in ("COMPLETE", "ERROR")


# ---- HTTP: errors as requests raises them, files over loopback -------------------------------------------
def http_error(code: int, url: str, detail: str = ""):
    import requests
    reasons = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    response = requests.Response()
    response.status_code, response.url, response.reason = code, url, reasons.get(code, "Error")
    message = HTTP_ERROR_LINE.format(code=code, reason=response.reason, url=url)
    return requests.HTTPError(f"{message} ({detail})" if detail else message, response=response)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the CLI's output is what tests read; keep the server out of it
        pass


@functools.lru_cache(maxsize=1)
def file_server() -> str:
    """Serve STANDIN_HOME on 127.0.0.1 so the real client downloads (headers, sizes, tqdm) as it would."""
    handler = functools.partial(QuietHandler, directory=str(home()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def url_of(path: Path) -> str:
    from urllib.parse import quote
    return f"{file_server()}/{quote(str(path.relative_to(home())))}"


# ---- the service ------------------------------------------------------------------------------------------
class Service:
    """Kaggle's API methods, by the names kagglesdk's clients call, over the stand-in's state."""

    def __init__(self, user: str, command: str):
        self.user = user
        self.command = command  # the CLI function that runs, e.g. "kernels_output_cli"

    def __getattr__(self, name):
        def not_served(*args, **kwargs):
            raise ValueError(NOT_SERVED.format(name=name))
        return not_served

    # kernels ------------------------------------------------------------------------------------------------
    def save_kernel(self, request):
        ref = request.slug
        owner, slug = ref.split("/")
        shape = request.machine_shape
        refusal = self.push_refusal(ref, owner, shape, request.enable_gpu)
        if refusal:
            return push_response(error=refusal)
        state = read_state()
        invalid = {"dataset": [s for s in request.dataset_data_sources or [] if s not in state["datasets"]],
                   "competition": [c for c in request.competition_data_sources or []
                                   if not (competitions_root() / c).is_dir()],
                   "kernel": [k for k in request.kernel_data_sources or [] if not kernel_source_exists(state, k)]}
        fields = {"slug": ref, "new_title": request.new_title, "language": request.language,
                  "kernel_type": request.kernel_type, "is_private": request.is_private,
                  "enable_internet": request.enable_internet, "enable_gpu": request.enable_gpu,
                  "enable_tpu": request.enable_tpu, "machine_shape": shape,
                  "dataset_data_sources": [s for s in request.dataset_data_sources or [] if s not in invalid["dataset"]],
                  "competition_data_sources": [c for c in request.competition_data_sources or []
                                               if c not in invalid["competition"]],
                  "kernel_data_sources": [k for k in request.kernel_data_sources or [] if k not in invalid["kernel"]],
                  "session_timeout_seconds": request.session_timeout_seconds or None,
                  "quick_save": "QUICK_SAVE" in str(getattr(request, "kernel_execution_type", "") or "")}
        with locked() as state:
            kernel = state["kernels"].setdefault(ref, {"ref": ref, "versions": []})
            number = len(kernel["versions"]) + 1
            folder = kernel_dir(ref, number)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ("notebook.ipynb" if request.kernel_type == "notebook" else "script.py")).write_text(request.text)
            kernel["versions"].append({"number": number, "pushed": now(), "request": fields,
                                       "status": "COMPLETE" if fields["quick_save"] else "QUEUED",
                                       "failure_message": None, "dir": str(folder)})
        if not fields["quick_save"]:
            start_session(ref, number)
        return push_response(version=number, url=KERNEL_URL.format(owner=owner, slug=slug),
                             invalid_datasets=invalid["dataset"], invalid_competitions=invalid["competition"],
                             invalid_kernels=invalid["kernel"])

    def push_refusal(self, ref, owner, shape, enable_gpu) -> str | None:
        if owner != self.user:
            return NOT_YOURS.format(ref=ref, owner=owner, user=self.user)
        if shape and shape not in ACCELERATORS:
            return BAD_ACCELERATOR.format(shape=shape, valid=list(ACCELERATORS))
        if os.environ.get("STANDIN_REFUSE_ACCELERATOR") and (enable_gpu or shape in GPU_SHAPES):
            return os.environ["STANDIN_REFUSE_ACCELERATOR"]
        return None

    def find_kernel_version(self, request, url_template):
        ref = f"{request.user_name}/{request.kernel_slug}"
        kernel = read_state()["kernels"].get(ref)
        version = latest_version(kernel, request.version_label or None) if kernel else None
        if version is None:
            raise http_error(404, url_template.format(owner=request.user_name, slug=request.kernel_slug))
        return ref, version

    def get_kernel_session_status(self, request):
        from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus
        _, version = self.find_kernel_version(request, KERNEL_STATUS_URL)
        status = KernelWorkerStatus[version["status"]]
        shown = status.name.lower() if os.environ.get("STANDIN_PLAIN_STATUS") == "1" else status
        return SimpleNamespace(status=shown, failure_message=version.get("failure_message") or "")

    def list_kernel_session_output(self, request):
        ref, version = self.find_kernel_version(request, KERNEL_OUTPUT_URL)
        folder = Path(version["dir"])
        log_file = folder / f"{request.kernel_slug}.log"
        log = log_file.read_text() if log_file.is_file() else ""
        if self.command == "kernels_output_cli" and not session_ended(version):
            return SimpleNamespace(files=[], log="", next_page_token="")  # output exists once the session ended
        files = [SimpleNamespace(file_name=str(p.relative_to(folder / "output")), url=url_of(p))
                 for p in sorted((folder / "output").rglob("*")) if p.is_file()]
        return SimpleNamespace(files=files, log=log, next_page_token="")

    # competitions -------------------------------------------------------------------------------------------
    def download_data_files(self, request):
        import requests
        competition = request.competition_name
        folder = competitions_root() / competition
        if not folder.is_dir():
            raise http_error(404, DOWNLOAD_404_URL.format(competition=competition))
        archive = home() / "downloads" / f"{competition}.zip"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    bundle.write(path, path.relative_to(folder))
        return requests.get(url_of(archive), stream=True, timeout=60)

    def start_submission_upload(self, request):
        token = f"sub-{time.time_ns()}"
        return SimpleNamespace(create_url=f"standin-upload://{token}/{request.file_name}", token=token)

    def check_competition(self, competition, url):
        if not (competitions_root() / competition).is_dir():
            raise http_error(404, url)

    def create_submission(self, request):
        competition = request.competition_name
        url = SUBMIT_URL.format(competition=competition)
        self.check_competition(competition, url)
        if is_code_competition(competition):
            raise http_error(400, url, CODE_ONLY)
        token = request.blob_file_tokens
        uploaded = next((home() / "uploads" / token).iterdir())
        row = self.add_submission(competition, uploaded.name, request.submission_description, "file",
                                  stored=str(uploaded))
        return SimpleNamespace(message=SUBMITTED_LINE.format(title=competition_title(competition)), ref=row["ref"])

    def create_code_submission(self, request):
        competition = request.competition_name
        url = CODE_SUBMIT_URL.format(competition=competition)
        self.check_competition(competition, url)
        ref = f"{request.kernel_owner or request._kernel_owner}/{request.kernel_slug}"
        kernel = read_state()["kernels"].get(ref)
        version = latest_version(kernel, str(request.kernel_version)) if kernel and request.kernel_version else None
        if version is None:
            raise http_error(404, url)
        refusal = code_submission_refusal(competition, version, request.file_name)
        if refusal:
            raise http_error(400, url, refusal)
        row = self.add_submission(competition, request.file_name, request.submission_description, "code",
                                  kernel=ref, kernel_version=version["number"])
        start_session(ref, version["number"], rerun_for=competition, submission=row["ref"])
        return SimpleNamespace(message=SUBMITTED_LINE.format(title=competition_title(competition)), ref=row["ref"])

    def add_submission(self, competition, file_name, description, kind, **extra) -> dict:
        with locked() as state:
            rows = state["submissions"].setdefault(competition, [])
            row = {"ref": 50000000 + sum(len(r) for r in state["submissions"].values()), "file_name": file_name,
                   "date": now(), "description": description or "", "status": "PENDING", "public_score": "",
                   "private_score": "", "error_description": "", "kind": kind, "polls": 0, **extra}
            rows.insert(0, row)  # newest first, as the service lists them
        return row

    def get_submission_limits(self, request):
        today = now()[:10]
        rows = read_state()["submissions"].get(request.competition_name, [])
        used = sum(1 for r in rows if r["date"].startswith(today))
        return SimpleNamespace(num_today=used, num_total=len(rows), num_allowed_now=max(0, SUBMISSIONS_PER_DAY - used),
                               limited_by_total=False)

    def list_submissions(self, request):
        competition = request.competition_name
        self.check_competition(competition, SUBMISSIONS_URL.format(competition=competition))
        with locked() as state:
            rows = state["submissions"].get(competition, [])
            for row in rows:
                count_poll(row)
        return SimpleNamespace(submissions=[submission_item(r) for r in rows], next_page_token="")

    def get_submission(self, request):
        with locked() as state:
            rows = [r for rows in state["submissions"].values() for r in rows if r["ref"] == int(request.ref)]
            for row in rows:
                count_poll(row)
        if not rows:
            raise http_error(404, f"https://www.kaggle.com/api/v1/competitions/submissions/get/{request.ref}")
        return submission_item(rows[0])

    # datasets -----------------------------------------------------------------------------------------------
    def get_dataset_status(self, request):
        ref = f"{request.owner_slug}/{request.dataset_slug}"
        if ref not in read_state()["datasets"]:
            raise http_error(404, DATASET_STATUS_URL.format(owner=request.owner_slug, slug=request.dataset_slug))
        return SimpleNamespace(status=SimpleNamespace(name="READY"))

    def create_dataset(self, request):
        ref = f"{request.owner_slug}/{request.slug}"
        if request.owner_slug != self.user:
            return dataset_response(error=NOT_YOURS.format(ref=ref, owner=request.owner_slug, user=self.user))
        if ref in read_state()["datasets"]:
            return dataset_response(error=SLUG_IN_USE.format(slug=request.slug))
        self.store_dataset_version(ref, request.files, notes="", title=request.title, private=request.is_private)
        return dataset_response(url=DATASET_URL.format(owner=request.owner_slug, slug=request.slug), ref=ref)

    def create_dataset_version(self, request):
        ref = f"{request.owner_slug}/{request.dataset_slug}"
        if ref not in read_state()["datasets"] or request.owner_slug != self.user:
            raise http_error(404, DATASET_VERSION_URL.format(owner=request.owner_slug, slug=request.dataset_slug))
        self.store_dataset_version(ref, request.body.files, notes=request.body.version_notes)
        return dataset_response(url=DATASET_URL.format(owner=request.owner_slug, slug=request.dataset_slug), ref=ref)

    def store_dataset_version(self, ref, new_files, notes, **details):
        unpack = os.environ.get("STANDIN_UNPACK_DIRS") == "1"
        with locked() as state:
            dataset = state["datasets"].setdefault(ref, {"ref": ref, "versions": [], **details})
            number = len(dataset["versions"]) + 1
            folder = dataset_dir(ref, number)
            folder.mkdir(parents=True, exist_ok=True)
            for new_file in new_files:
                store_blob(new_file.token, folder, unpack)
            files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
            dataset["versions"].append({"number": number, "notes": notes, "created": now(), "dir": str(folder),
                                        "files": files, "unpacked_dirs": unpack})


def push_response(error=None, version=None, url=None, invalid_datasets=(), invalid_competitions=(),
                  invalid_kernels=()):
    return SimpleNamespace(error=error, versionNumber=version, url=url, invalidTags=[],
                           invalidDatasetSources=list(invalid_datasets),
                           invalidCompetitionSources=list(invalid_competitions),
                           invalidKernelSources=list(invalid_kernels))


def dataset_response(error=None, url=None, ref=None):
    return SimpleNamespace(status="error" if error else "ok", error=error, url=url, ref=ref, invalidTags=[])


def kernel_source_exists(state: dict, source: str) -> bool:
    parts = source.split("/")
    kernel = state["kernels"].get("/".join(parts[:2]))
    return bool(kernel) and latest_version(kernel, parts[2] if len(parts) > 2 else None) is not None


def code_submission_refusal(competition: str, version: dict, file_name: str) -> str | None:
    request = version["request"]
    if not is_code_competition(competition):
        return NOT_CODE
    if version["status"] != "COMPLETE":
        return NOT_COMPLETE.format(version=version["number"], status=version["status"])
    if request["enable_internet"]:
        return NEEDS_NO_INTERNET
    if competition not in request["competition_data_sources"]:
        return NO_COMPETITION_SOURCE.format(competition=competition)
    if not (Path(version["dir"]) / "output" / file_name).is_file():
        return NOT_IN_OUTPUT.format(file=file_name, version=version["number"])
    return None


def count_poll(row: dict) -> None:
    """A file submission scores after STANDIN_POLLS_TO_SCORE looks at it; a code one when its re-run ended."""
    row["polls"] += 1
    if row["kind"] == "file" and row["status"] == "PENDING" \
            and row["polls"] >= int(os.environ.get("STANDIN_POLLS_TO_SCORE", "2")):
        row["status"], row["public_score"] = "COMPLETE", FILE_SCORE


def submission_item(row: dict):
    from kagglesdk.competitions.types.submission_status import SubmissionStatus
    return SimpleNamespace(ref=row["ref"], file_name=row["file_name"],
                           date=dt.datetime.strptime(row["date"], "%Y-%m-%d %H:%M:%S"),
                           description=row["description"], status=SubmissionStatus[row["status"]],
                           public_score=row["public_score"], private_score=row["private_score"],
                           error_description=row["error_description"], total_bytes=None, url=None)


# ---- uploads: the real client packs folders and names files; we keep the bytes ---------------------------
def upload_blob(path, quiet, blob_type, upload_context, content_type=None) -> str:
    """Replaces KaggleApi._upload_blob: keep the file under blobs/<token>/ and hand back the token."""
    token = f"blob-{time.time_ns()}"
    target = home() / "blobs" / token
    target.mkdir(parents=True)
    shutil.copy2(path, target / os.path.basename(path))
    # DirectoryArchive packs a sub-folder into a temp dir: that is how a packed folder is told from a file
    packed = not str(Path(path).resolve()).startswith(str(Path(UPLOAD_FOLDER[0]).resolve()) + os.sep)
    write_json_atomically(target / ".blob.json", {"name": os.path.basename(path), "packed_folder": packed})
    return token


UPLOAD_FOLDER = [""]  # the -p folder of the running datasets command


def store_blob(token: str, folder: Path, unpack: bool) -> None:
    blob = home() / "blobs" / token
    meta = read_json(blob / ".blob.json", {})
    source = blob / meta["name"]
    if unpack and meta["packed_folder"]:
        unpack_archive(source, folder / Path(meta["name"]).stem)
    else:
        shutil.copy2(source, folder / meta["name"])


def unpack_archive(archive: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(target)
    else:
        with tarfile.open(archive) as bundle:
            bundle.extractall(target, filter="data")


def upload_complete(path, url, quiet, resume=False):
    """Replaces KaggleApi.upload_complete for submissions: keep the file under uploads/<token>/."""
    from kaggle.api.kaggle_api_extended import ResumableUploadResult
    token = url.split("://", 1)[1].split("/", 1)[0]
    target = home() / "uploads" / token
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, target / os.path.basename(path))
    if not quiet:
        size = os.path.getsize(path)
        print(f"100%|##########| {size}/{size} [00:00<00:00, 1.00MB/s]", file=sys.stderr)
    return ResumableUploadResult.COMPLETE


# ---- sessions ---------------------------------------------------------------------------------------------
def start_session(ref: str, version: int, rerun_for: str | None = None, submission: int | None = None) -> None:
    """Start tests/standin/session.py detached, as Kaggle starts a session and the push returns at once."""
    folder = kernel_dir(ref, version) if rerun_for is None else kernel_dir(ref, version) / "reruns" / str(submission)
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(STANDIN_DIR / "session.py"), ref, str(version)]
    if rerun_for:
        command += ["--rerun-for", rerun_for, "--submission", str(submission)]
    with open(folder / "session.out", "ab") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=str(home()))
    with locked("sessions") as sessions:
        sessions.append({"ref": ref, "version": version, "submission": submission, "pid": process.pid})


# ---- the command line -------------------------------------------------------------------------------------
def credentials() -> str | None:
    """The user name, found as the real client finds it: KAGGLE_USERNAME/KAGGLE_KEY, or kaggle.json."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return os.environ["KAGGLE_USERNAME"]
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    config = read_json(config_dir / "kaggle.json", {}) if (config_dir / "kaggle.json").is_file() else {}
    return config.get("username") if config.get("username") and config.get("key") else None


class FakeKaggleClient:
    """What `with self.build_kaggle_client() as kaggle:` yields: every API client is the Service."""

    def __init__(self, service: Service):
        self.kernels = SimpleNamespace(kernels_api_client=service)
        self.competitions = SimpleNamespace(competition_api_client=service)
        self.datasets = SimpleNamespace(dataset_api_client=service)
        self.blobs = SimpleNamespace(blob_api_client=service)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def http_client(self):
        import requests
        return requests.Session()


def command_name(argv: list[str]) -> str:
    """The real parser's choice of CLI function for argv (e.g. 'kernels_push_cli'), '' when it rejects it."""
    import argparse
    import kaggle.cli
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    for add in (kaggle.cli.parse_competitions, kaggle.cli.parse_datasets, kaggle.cli.parse_kernels):
        add(subparsers)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            func = parser.parse_args(argv).func
        except (SystemExit, AttributeError):
            return ""
    return func.__func__.__name__


def install_fakes(api, user: str | None, command: str) -> None:
    from kaggle.api.kaggle_api_extended import print_auth_help
    if user is None:
        def authenticate():
            print_auth_help()
            sys.exit(1)
        api.authenticate = authenticate
        api._authenticated = False
    else:
        api.config_values[api.CONFIG_NAME_USER] = user
        api._authenticated = True
    service = Service(user or "", command)
    api.build_kaggle_client = lambda: FakeKaggleClient(service)
    api._upload_blob = upload_blob
    api.upload_complete = upload_complete
    api.already_printed_version_warning = True


def main(argv: list[str]) -> int:
    record_call(argv)
    os.environ.pop("KAGGLE_API_TOKEN", None)  # a token would make the real client ask the network who we are
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    with contextlib.redirect_stdout(io.StringIO()):  # `import kaggle` authenticates and may print help
        import kaggle
        import kaggle.cli
    user = credentials()
    command = command_name(argv)
    folder_flag = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-p", "--path")), os.getcwd())
    UPLOAD_FOLDER[0] = folder_flag
    install_fakes(kaggle.api, user, command)
    sys.argv = ["kaggle", *argv]
    try:
        kaggle.cli.main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
