"""One Kaggle notebook session, played for real on this machine (started detached by `kernels push`).

    session.py OWNER/SLUG VERSION [--rerun-for COMPETITION --submission REF]   the controller
    session.py --inner PLAN.json                                              inside the namespaces

The controller runs the inner part under `unshare --mount --pid --fork`: a tmpfs on /kaggle, the
sources bound read-only at /kaggle/input/<slug>, /kaggle/working bound to a host folder (so what is
left there survives the session, also one that was killed), and the notebook executed by nbclient on
a kernel of the "Kaggle image" python, in a clean environment. The PID namespace is what makes a
time limit exact: killing its first process kills every process of the session, the kernel and its
`!pip` children included. The controller then stores /kaggle/working as the version's output and,
for a code-competition re-run, scores the submitted file against the hidden solution.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kaggle_standin as ks  # noqa: E402

HIDDEN_SOLUTION = "solution.csv"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
COPIED_ENV = ("KERAS_BACKEND",)


# ---- the controller ---------------------------------------------------------------------------------------
def run_folder(ref: str, number: int, submission: int | None) -> Path:
    folder = ks.kernel_dir(ref, number)
    return folder if submission is None else folder / "reruns" / str(submission)


def notebook_of(version: dict) -> dict:
    folder = Path(version["dir"])
    if (folder / "notebook.ipynb").is_file():
        return json.loads((folder / "notebook.ipynb").read_text())
    import nbformat  # a script kernel runs as one cell
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell((folder / "script.py").read_text())])


def competition_view(competition: str, rerun_for: str | None, run_dir: Path) -> Path:
    """The competition's public folder; on a re-run, the hidden files over it, without the solution."""
    public = ks.competitions_root() / competition
    if competition != rerun_for:
        return public
    view = run_dir / "hidden-view" / competition
    view.mkdir(parents=True, exist_ok=True)
    hidden = ks.hidden_root() / competition
    for source in (public, hidden):  # hidden files replace public ones of the same name
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith(".") and path.name != HIDDEN_SOLUTION:
                target = view / path.name
                target.unlink(missing_ok=True)
                try:
                    os.link(path, target)  # a hard link, not a symlink: a write through it must meet the ro mount
                except OSError:
                    shutil.copy2(path, target)
    return view


def mounts_for(request: dict, state: dict, rerun_for: str | None, run_dir: Path) -> list[dict]:
    mounts = [{"slug": c, "source": str(competition_view(c, rerun_for, run_dir)), "kind": "competition"}
              for c in request["competition_data_sources"]]
    for ref in request["dataset_data_sources"]:
        version = state["datasets"][ref]["versions"][-1]
        mounts.append({"slug": ref.split("/")[1], "source": version["dir"], "kind": "dataset", "version": version["number"]})
    for source in request["kernel_data_sources"]:
        parts = source.split("/")
        version = ks.latest_version(state["kernels"]["/".join(parts[:2])], parts[2] if len(parts) > 2 else None)
        output = Path(version["dir"]) / "output"
        output.mkdir(parents=True, exist_ok=True)
        mounts.append({"slug": parts[1], "source": str(output), "kind": "kernel", "version": version["number"]})
    return mounts


def notebook_env(image: Path) -> dict:
    """A session's environment: Kaggle's, not the caller's (no credentials, no index for pip)."""
    env = {"PATH": f"{image}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/kaggle/temp/home", "LANG": "C.UTF-8",
           "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "KAGGLE_KERNEL_RUN_TYPE": "Batch",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "KERAS_BACKEND": "tensorflow"}
    env.update({k: v for k, v in os.environ.items() if k in COPIED_ENV or k.startswith("OPENBLAS_")})
    return env


def update_version(ref: str, number: int, **fields) -> None:
    with ks.locked() as state:
        ks.latest_version(state["kernels"][ref], str(number)).update(fields)


def update_submission(competition: str, submission: int, **fields) -> None:
    with ks.locked() as state:
        next(r for r in state["submissions"][competition] if r["ref"] == submission).update(fields)


def time_limit_s(request: dict) -> float:
    return float(request.get("session_timeout_seconds") or os.environ.get("STANDIN_SESSION_S", ks.DEFAULT_SESSION_S))


def watch(process: subprocess.Popen, limit_s: float, working: Path) -> bool:
    """Wait for the session; kill its whole namespace at the time limit or when STANDIN_CUT_WHEN appears."""
    cut_when = os.environ.get("STANDIN_CUT_WHEN")
    deadline = time.monotonic() + limit_s
    while process.poll() is None:
        if time.monotonic() > deadline or (cut_when and (working / cut_when).exists()):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(ks.POLL_S)
    return False


def stop_namespace(process: subprocess.Popen) -> None:
    """On SIGTERM (a test's teardown): kill the session's namespace, then go."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    sys.exit(1)


def run_controller(ref: str, number: int, rerun_for: str | None, submission: int | None) -> None:
    state = ks.read_state()
    version = ks.latest_version(state["kernels"][ref], str(number))
    request = version["request"]
    run_dir = run_folder(ref, number, submission)
    working = run_dir / "working"
    shutil.rmtree(working, ignore_errors=True)
    working.mkdir(parents=True)
    slug = ref.split("/")[1]
    plan = {"notebook": notebook_of(version), "mounts": mounts_for(request, state, rerun_for, run_dir),
            "working": str(working), "log": str(run_dir / f"{slug}.log"), "result": str(run_dir / "result.json"),
            "image": os.environ["STANDIN_IMAGE"], "env": notebook_env(Path(os.environ["STANDIN_IMAGE"])),
            "jupyter": str(run_dir / "jupyter")}
    Path(plan["log"]).write_text("")
    Path(plan["result"]).unlink(missing_ok=True)
    ks.write_json_atomically(run_dir / "plan.json", plan)
    started = {"started": ks.now(), "mounts": plan["mounts"], "internet": request["enable_internet"],
               "time_limit_s": time_limit_s(request), "pid": os.getpid()}
    if submission is None:
        update_version(ref, number, status="RUNNING", **started)
    else:
        update_submission(rerun_for, submission, rerun=started)
    Path("/kaggle").mkdir(exist_ok=True)  # the mount point; it stays empty on the host
    process = subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
                                sys.executable, __file__, "--inner", str(run_dir / "plan.json")],
                               start_new_session=True, stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda *_: stop_namespace(process))
    cut = watch(process, time_limit_s(request), working)
    result = ks.read_json(Path(plan["result"]), None)
    if cut or result is None:
        result = {"status": "ERROR", "failure_message": ks.TIME_LIMIT_MESSAGE if cut
                  else f"Kernel session crashed (exit status {process.returncode})"}
    output = run_dir / "output"
    shutil.rmtree(output, ignore_errors=True)
    working.rename(output)
    ended = {"status": result["status"], "failure_message": result["failure_message"], "ended": ks.now(),
             "cut": cut}
    if submission is None:
        update_version(ref, number, **ended)
    else:
        finish_rerun(rerun_for, submission, output, ended)


def finish_rerun(competition: str, submission: int, output: Path, ended: dict) -> None:
    row = next(r for r in ks.read_state()["submissions"][competition] if r["ref"] == submission)
    if ended["status"] != "COMPLETE":
        update_submission(competition, submission, status="ERROR", rerun=row["rerun"] | ended,
                          error_description=f"Notebook Threw Exception: {ended['failure_message']}")
        return
    try:
        score = f"{accuracy(output / row['file_name'], ks.hidden_root() / competition / HIDDEN_SOLUTION):.5f}"
    except (OSError, ValueError, KeyError) as error:
        update_submission(competition, submission, status="ERROR", rerun=row["rerun"] | ended,
                          error_description=f"Submission Scoring Error: {error}")
        return
    update_submission(competition, submission, status="COMPLETE", public_score=score, rerun=row["rerun"] | ended)


def read_two_columns(path: Path) -> tuple[list[str], dict[str, str]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or len(rows[0]) != 2 or any(len(r) != 2 for r in rows[1:]):
        raise ValueError(f"{path.name} must have exactly two columns")
    labels = {r[0].strip(): r[1].strip() for r in rows[1:]}
    if len(labels) != len(rows) - 1:
        raise ValueError(f"{path.name} repeats an id")
    return rows[0], labels


def accuracy(submitted: Path, solution: Path) -> float:
    """The share of solution rows whose label the submission matches, rows matched by id."""
    header, labels = read_two_columns(submitted)
    expected_header, expected = read_two_columns(solution)
    if header != expected_header:
        raise ValueError(f"header {','.join(header)} differs from {','.join(expected_header)}")
    if set(labels) != set(expected):
        raise ValueError(f"expected {len(expected)} rows with the solution's ids, got {len(labels)}")
    return sum(labels[i] == label for i, label in expected.items()) / len(expected)


# ---- inside the namespaces --------------------------------------------------------------------------------
def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def set_up_kaggle_dirs(plan: dict) -> None:
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/kaggle")
    for name in ("input", "working", "temp", "temp/home"):
        Path("/kaggle", name).mkdir(exist_ok=True)
    mount("--bind", plan["working"], "/kaggle/working")
    for source in plan["mounts"]:
        target = f"/kaggle/input/{source['slug']}"
        Path(target).mkdir(exist_ok=True)
        mount("--bind", source["source"], target)
        mount("-o", "remount,bind,ro", target)


def write_kernelspec(plan: dict) -> None:
    """Our kernelspec first on JUPYTER_PATH, so no system or user `python3` kernel wins."""
    spec = Path(plan["jupyter"]) / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [f"{plan['image']}/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (Kaggle stand-in image)", "language": "python"}))
    os.environ["JUPYTER_PATH"] = plan["jupyter"]
    os.environ["JUPYTER_RUNTIME_DIR"] = "/kaggle/temp/.jupyter-runtime"


def logging_client(plan: dict, notebook):
    """A NotebookClient that appends each stream output to the session log as it arrives."""
    from nbclient import NotebookClient

    class LoggingClient(NotebookClient):
        def process_message(self, msg, cell, cell_index):
            content, kind = msg.get("content", {}), msg.get("msg_type")
            if kind == "stream":
                append_log(plan["log"], content.get("text", ""))
            elif kind == "error":
                append_log(plan["log"], ANSI.sub("", "\n".join(content.get("traceback", []))) + "\n")
            return super().process_message(msg, cell, cell_index)

    return LoggingClient(notebook, timeout=None, startup_timeout=180, kernel_name="python3", allow_errors=False,
                         resources={"metadata": {"path": "/kaggle/working"}})


def append_log(path: str, text: str) -> None:
    with open(path, "a") as log:
        log.write(text)


def failure_of(error: Exception) -> str:
    ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(error).__name__}: {error}"
    return next((line.strip() for line in ANSI.sub("", text).splitlines() if line.strip()), type(error).__name__)


def run_inner(plan_file: str) -> None:
    import nbformat
    plan = json.loads(Path(plan_file).read_text())
    set_up_kaggle_dirs(plan)
    write_kernelspec(plan)
    notebook = nbformat.from_dict(plan["notebook"])
    result = {"status": "COMPLETE", "failure_message": None}
    try:
        logging_client(plan, notebook).execute(env=plan["env"], cwd="/kaggle/working")
    except Exception as error:  # a cell that raised, a kernel that died: the session's ERROR
        result = {"status": "ERROR", "failure_message": failure_of(error)}
    ks.write_json_atomically(Path(plan["result"]), result)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref", nargs="?")
    parser.add_argument("version", nargs="?", type=int)
    parser.add_argument("--inner")
    parser.add_argument("--rerun-for")
    parser.add_argument("--submission", type=int)
    args = parser.parse_args(argv)
    if args.inner:
        run_inner(args.inner)
    else:
        run_controller(args.ref, args.version, args.rerun_for, args.submission)


if __name__ == "__main__":
    main(sys.argv[1:])
