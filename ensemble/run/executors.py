"""Where members run: here, a warm worker process per slot, or as Ray tasks on a cluster.

Locally each slot has a worker (`python -m ensemble.member.worker`, member.worker) that trains the members
it is handed one after another, so start-up is paid once per slot; a worker whose member fails has exited
with the member's code, and the slot's next member starts in a fresh one. A Ray task runs the member process,
`python -m ensemble.member --job J --member I`. Either way a member's output is appended to
`jobs/<job>/logs/member-XX.log`, its environment comes from `devices.slot_environment`, and every worker or
member process is its own session (a Ctrl-C reaches only the runner, which stops members in order) and is
killed by the kernel when the process that started it dies, so a killed runner never leaves a member training.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from ..job.errors import JobError
from ..job.layout import JobLayout, move_into_log
from ..store.workspace import Workspace
from .devices import Slot, configured_backend, gpu_memory_environment, slot_environment, tensorflow_defaults

EXECUTORS = ("local", "ray")
RAY_GPU = -1  # a Slot's gpu under Ray: some GPU of the node Ray picks
RAY_NODE_ENV = "ENSEMBLE_RAY_NODE_ID"  # set for a member that runs as a Ray task: the node it runs on
_PR_SET_PDEATHSIG = 1


def member_command(home: Path, job: str, index: int) -> list[str]:
    """The member process. `python -m` would put the current directory first on the import path, so a folder
    named `ensemble` there (the parent of a clone, say) would be imported instead of this package: -P (3.11+)
    leaves it off; before 3.11 the member's first import-path entry is dropped by hand."""
    args = ["--home", str(home), "--job", job, "--member", str(index)]
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", "ensemble.member", *args]
    return [sys.executable, "-c", "import runpy, sys; del sys.path[0]; sys.argv[0] = 'ensemble.member'; "
            "runpy.run_module('ensemble.member', run_name='__main__')", *args]


def worker_command(home: Path, results_fd: int, prelog: Path | None = None) -> list[str]:
    """The slot's worker, started like the member process (see member_command on -P)."""
    args = ["--home", str(home), "--results-fd", str(results_fd), *(["--prelog", str(prelog)] if prelog else [])]
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", "ensemble.member.worker", *args]
    return [sys.executable, "-c", "import runpy, sys; del sys.path[0]; sys.argv[0] = 'ensemble.member.worker'; "
            "runpy.run_module('ensemble.member.worker', run_name='__main__')", *args]


def member_environment(overrides: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    tensorflow_defaults(env)
    # the backend the runner checked, named for the member: what it leaves out of its imports depends on it
    # (member.startup), and Keras would otherwise read its keras.json itself, from a home it may resolve elsewhere
    env["KERAS_BACKEND"] = configured_backend(env)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGKILL it when its parent dies (no orphans training)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def launch_member(home: Path, job: str, index: int, env_overrides: dict[str, str]) -> subprocess.Popen:
    path = JobLayout(Workspace(Path(home)), job).log(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:  # appended: a resumed member's log tells its whole story
        return subprocess.Popen(member_command(home, job, index), env=member_environment(env_overrides),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)


def run_member_to_end(home: str, job: str, index: int, env_overrides: dict[str, str]) -> int:
    """A member process from start to exit, in the calling process's place: the body of a Ray task. The
    member is told its Ray node, which it writes to its progress file for the runner's ledger."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    return launch_member(Path(home), job, index, {**env_overrides, RAY_NODE_ENV: node}).wait()


@dataclass
class Worker:
    """A slot's warm worker: its process, the assignments written to its stdin, the results it reported."""

    process: subprocess.Popen
    results_fd: int
    finished: set[int] = field(default_factory=set)  # members it reported done and no poll has taken yet
    _unread: str = ""
    # a worker started before its first member was known prints into this file until that member takes its
    # output (the worker moves the file's text into the member's log); None: it was started for a member
    prelog: Path | None = None
    first: tuple[str, int] | None = None  # the first member handed to it (job, index)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def assign(self, job: str, index: int) -> bool:
        """Hand it a member; False when it can take none (it has exited)."""
        try:
            self.process.stdin.write(f"{job} {index}\n".encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        self.first = self.first or (job, index)
        return True

    def read_results(self) -> None:
        while True:
            try:
                chunk = os.read(self.results_fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                return
            if not chunk:
                return
            self._unread += chunk.decode()
            *lines, self._unread = self._unread.split("\n")
            for line in lines:
                index, code = line.split()
                if int(code) == 0:
                    self.finished.add(int(index))

    def took(self, index: int) -> int | None:
        """The member's exit code once it is over: 0 reported, else the code the worker ended with."""
        self.read_results()
        if index in self.finished:
            self.finished.discard(index)
            return 0
        returncode = self.process.poll()
        if returncode is None:
            return None
        self.read_results()  # what it wrote just before it exited
        if index in self.finished:
            self.finished.discard(index)
            return 0
        return returncode if returncode != 0 else 1  # it ended without a word about the member

    def close(self, home: Path | None = None) -> None:
        """End its input: an idle worker then exits. One never handed a member is killed at once (it may still be
        importing, and has written nothing)."""
        with suppress(OSError):
            self.process.stdin.close()
        if self.results_fd >= 0:
            with suppress(OSError):
                os.close(self.results_fd)
            self.results_fd = -1
        if self.first is None and self.alive:
            _signal_group(self.process.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=KILL_WAIT_S)
        self.settle(home)

    def settle(self, home: Path | None) -> None:
        """Once it has exited: what it printed before its first member took its output (an import that failed,
        say) goes to that member's log, under `home`, and its own file goes."""
        if self.prelog is None or self.alive:
            return
        if self.first is not None and home is not None:
            with suppress(OSError):
                move_into_log(self.prelog, JobLayout(Workspace(Path(home)), self.first[0]).log(self.first[1]))
        self.prelog.unlink(missing_ok=True)


def launch_worker(home: Path, job: str, index: int, env_overrides: dict[str, str]) -> Worker:
    """A worker for a slot, started for its first member: what it prints before that member's output is
    redirected (an import that fails, say) lands in that member's log."""
    path = JobLayout(Workspace(Path(home)), job).log(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _spawn_worker(home, env_overrides, path)


def prestart_worker(home: Path, env_overrides: dict[str, str]) -> Worker:
    """A worker for a slot, started before the runner knows its first member, so that its imports (Python,
    Keras, the backend: 3-5 s) overlap the runner's reading of the data and planning. Until a member takes its
    output it prints into a file of its own, which that member's log receives."""
    handle, name = tempfile.mkstemp(prefix="ensemble-worker-", suffix=".log")
    os.close(handle)
    prelog = Path(name)
    try:
        return _spawn_worker(home, env_overrides, prelog, prelog=prelog)
    except BaseException:
        prelog.unlink(missing_ok=True)
        raise


def _spawn_worker(home: Path, env_overrides: dict[str, str], output: Path, prelog: Path | None = None) -> Worker:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    try:
        with output.open("ab") as log:
            process = subprocess.Popen(worker_command(home, write_fd, prelog), env=member_environment(env_overrides),
                                       stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, preexec_fn=_die_with_parent, pass_fds=(write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return Worker(process, read_fd, prelog=prelog)


@dataclass
class Launched:
    """A member started on a slot; pid is known at once here, from its progress file under Ray."""

    index: int
    slot: Slot
    handle: object
    pid: int | None = None
    started: float = field(default_factory=time.time)
    resumed_from: int = 0  # epochs the member had finished before this attempt
    notes_seen: int = 0    # the member's notes (progress file) already shown
    stalled: str | None = None  # what the runner saw before it killed this attempt as stalled


KILL_WAIT_S = 30.0
STOP_IDLE_S = 10.0  # an idle worker told to end (its input closed) has this long before it is killed


class LocalExecutor:
    """Members on this machine: a warm worker per slot, one member at a time on each."""

    name = "local"
    may_queue = False  # a member starts at once

    def __init__(self, ws: Workspace, slots: list[Slot]):
        self.ws, self.slots = ws, slots
        self.workers: dict[str, Worker] = {}  # slot label -> its worker

    def slots_for(self, members: int) -> list[Slot]:
        return list(self.slots)

    def prestart(self, members: int | None) -> None:
        """Start the workers of the slots the run's first members will take (every slot, when how many members
        is not known yet) before the run is planned; a worker no member takes is killed when the run closes."""
        for slot in self.slots[:members]:
            if slot.label not in self.workers:
                self.workers[slot.label] = prestart_worker(self.ws.home, slot_environment(slot))

    def where(self, slot: Slot) -> str:
        return f"on {slot.label}"

    def start(self, job: str, index: int, slot: Slot) -> Launched:
        worker = self.workers.get(slot.label)
        if worker is None or not worker.alive or not worker.assign(job, index):
            if worker is not None:
                worker.first = worker.first or (job, index)  # what a worker started ahead printed is this member's
                worker.close(self.ws.home)
            worker = self.workers[slot.label] = launch_worker(self.ws.home, job, index, slot_environment(slot))
            if not worker.assign(job, index):
                raise JobError(f"the worker for {slot.label} exited at once; see {JobLayout(self.ws, job).log(index)}")
        return Launched(index, slot, worker, pid=worker.process.pid)

    def poll(self, launched: Launched) -> int | None:
        returncode = launched.handle.took(launched.index)
        if returncode is not None and returncode != 0:
            self._forget(launched.handle)
        return returncode

    def _forget(self, worker: Worker) -> None:
        for label, held in list(self.workers.items()):
            if held is worker:
                del self.workers[label]
        worker.close(self.ws.home)

    def stop(self, running: list[Launched], grace_s: float) -> None:
        """SIGTERM the workers of these members, SIGKILL what is left after grace_s: all writes are atomic,
        so either is safe. Their slots start fresh workers."""
        processes = [launched.handle.process for launched in running]
        for process in processes:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                try:  # a process stuck in the kernel (a hung driver, a stalled NFS) dies when it returns
                    process.wait(timeout=KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
        for launched in running:
            self._forget(launched.handle)

    def close(self) -> None:
        """Idle workers end at the end of their input; one that does not is killed."""
        workers = list(self.workers.values())
        self.workers.clear()
        for worker in workers:
            worker.close(self.ws.home)
        deadline = time.monotonic() + STOP_IDLE_S
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(worker.process.pid, signal.SIGKILL)
                with suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=KILL_WAIT_S)
            worker.settle(self.ws.home)


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


class RayExecutor:
    """Each member a Ray task (num_gpus = 1/per-gpu, or a CPU task) that runs the member process on its node.

    Nodes read and write the workspace directly: models/ and jobs/ must be on storage every node mounts at
    the same path (see README). Ray's own task retries are off; the runner retries, as it does locally.
    """

    name = "ray"
    may_queue = True  # Ray queues a task until its node has a free GPU

    def __init__(self, ws: Workspace, gpus: str | None, per_gpu: int | None, address: str | None):
        try:
            import ray
        except ImportError:
            raise JobError("--executor ray needs Ray: pip install 'ensemble[ray]'") from None
        self.ray, self.ws = ray, ws
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except Exception as error:  # Ray's own AuthenticationError is not a ConnectionError
                raise ray_start_error(error, address) from None
        try:
            self.template = ray_slot(gpus, per_gpu, ray.cluster_resources().get("GPU", 0))
        except JobError:
            self.close()
            raise
        self._task = ray.remote(run_member_to_end)

    def slots_for(self, members: int) -> list[Slot]:
        """Every member at once: Ray queues what the cluster cannot run yet."""
        return [self.template] * members

    def prestart(self, members: int | None) -> None:
        """Nothing to start ahead: a Ray task starts its member process when Ray places it."""

    def where(self, slot: Slot) -> str:
        return f"as a Ray task ({slot.label})"

    def start(self, job: str, index: int, slot: Slot) -> Launched:
        if slot.gpu is None:
            options, env = {"num_cpus": 1}, slot_environment(slot)
        else:  # Ray picks the GPU and sets CUDA_VISIBLE_DEVICES on the node itself
            options, env = {"num_gpus": 1 / slot.share, "num_cpus": 1}, gpu_memory_environment(slot.share)
        ref = self._task.options(max_retries=0, **options).remote(str(self.ws.home), job, index, env)
        return Launched(index, slot, ref)

    def poll(self, launched: Launched) -> int | None:
        ready, _ = self.ray.wait([launched.handle], timeout=0)
        if not ready:
            return None
        try:
            return int(self.ray.get(launched.handle))
        except Exception:  # the worker or its node died: the member failed like a killed process
            return -int(signal.SIGKILL)

    def stop(self, running: list[Launched], grace_s: float) -> None:
        for launched in running:
            self.ray.cancel(launched.handle, force=True)  # kills the worker; the member dies with it
        deadline = time.monotonic() + grace_s
        pending = [launched.handle for launched in running]
        while pending and time.monotonic() < deadline:
            _, pending = self.ray.wait(pending, num_returns=len(pending), timeout=0.2)

    def close(self) -> None:
        if self._started_ray:
            self.ray.shutdown()


_AUTH_WORDS = ("authenticat", "unauthenticated", "auth token", "auth_token", "ray_auth")


def ray_start_error(error: Exception, address: str | None) -> Exception:
    """What a failed ray.init means for the user. A cluster started with token authentication (Ray 2.5x+,
    RAY_AUTH_MODE=token) refuses a driver without the token; Ray may report that as a connection failure,
    so the words are looked at too. Anything else that is not a connection failure is Ray's own error."""
    text = f"{type(error).__name__}: {error}"
    if type(error).__name__ == "AuthenticationError" or any(word in text.lower() for word in _AUTH_WORDS):
        return JobError(f"--executor ray: the Ray cluster at {address or 'the default address'} refused this driver's "
                        f"authentication ({text.splitlines()[0]}). Run with the cluster's token: RAY_AUTH_MODE=token "
                        "and RAY_AUTH_TOKEN (or the file ~/.ray/auth_token) as on the head node")
    if isinstance(error, ConnectionError):
        return JobError(f"--executor ray: cannot reach a Ray cluster at {address!r} ({error}); "
                        "start one with `ray start --head`, or leave out --address for a local one")
    return error


def ray_slot(gpus: str | None, per_gpu: int | None, cluster_gpus: float) -> Slot:
    """What one member asks Ray for: a 1/per-gpu share of some GPU, or a CPU. Ray decides where and when."""
    choice = (gpus or "").strip().lower()
    if choice not in ("", "all", "cpu"):
        raise JobError(f"--gpus {gpus}: with --executor ray, Ray chooses the GPUs; use --gpus all or --gpus cpu")
    use_gpus = choice == "all" or (choice == "" and cluster_gpus > 0)
    if choice == "all" and cluster_gpus == 0:
        raise JobError("--gpus all: the Ray cluster reports no GPUs; use --gpus cpu")
    share = 1 if per_gpu is None else per_gpu
    if share < 1:
        raise JobError(f"--per-gpu must be at least 1, got {share}")
    return Slot(RAY_GPU, 0, share) if use_gpus else Slot(None, 0, 1)
