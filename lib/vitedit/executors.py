"""Where a sweep's jobs run: a local process pool or Ray tasks. Both run the same command, one
job each (``python -m vitedit.sweep exec <job.json>``), and report the same :class:`JobResult`.

A job is a separate process group, so a timeout or a dead kernel kills it (and its papermill
kernel) without touching the other jobs; the caller records the failure in the job's folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from . import threads


@dataclass
class JobResult:
    job: str  # the job file
    returncode: int | None
    seconds: float
    timed_out: bool
    output_tail: str
    gpu: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def to_dict(self) -> dict:
        return asdict(self)


PARENT_ENV = "VITEDIT_PARENT_PID"  # the process that started a job (it must outlive it)


def job_command(job_file: str | Path) -> list[str]:
    return [sys.executable, "-m", "vitedit.sweep", "exec", str(job_file)]


def run_job(
    job_file: str | Path,
    timeout: float | None,
    env: dict | None = None,
    command: Sequence[str] | None = None,
    live: set | None = None,
) -> JobResult:
    """Run one job in its own process group; kill the whole group when ``timeout`` passes.
    ``live`` (a set) holds the running process while it runs, so that a caller can kill it."""
    # the job stops when this process dies, even before it could look (sweep.dispatch)
    env = {**os.environ, **(env or {}), PARENT_ENV: str(os.getpid())}
    cmd = list(command) if command else job_command(job_file)
    log_file = Path(job_file).with_name("job.log")
    t0 = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        if live is not None:
            live.add(proc)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = proc.wait()
        except BaseException:  # the sweep itself is interrupted: take the job down with it
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            if live is not None:
                live.discard(proc)
    tail = log_file.read_text(errors="replace")[-3000:] if log_file.is_file() else ""
    return JobResult(
        str(job_file),
        rc,
        round(time.perf_counter() - t0, 2),
        timed_out,
        tail,
        env.get("CUDA_VISIBLE_DEVICES") if env.get("CUDA_VISIBLE_DEVICES") != "" else None,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def gpu_count() -> int:
    try:
        import torch  # lazy: ~2.5 s; the sweep's planning and --dry-run need no torch otherwise

        return torch.cuda.device_count()
    except Exception:  # no usable torch/CUDA: CPU only
        return 0


def plan_workers(
    parallel: int, gpu: int | None, n_gpus: int | None = None
) -> tuple[int, list[str]]:
    """Workers and the GPU of each worker slot (``[]``: CPU).

    ``parallel`` 0 means one worker per GPU (1 without GPUs); ``gpu`` pins every worker to one GPU.
    """
    if parallel < 0:
        raise ValueError(f"--parallel must be >= 0, got {parallel}")
    n_gpus = gpu_count() if n_gpus is None else n_gpus
    if gpu is not None:
        if n_gpus and not 0 <= gpu < n_gpus:
            raise ValueError(f"--gpu {gpu}: this machine has {n_gpus} GPU(s) (0..{n_gpus - 1})")
        return max(parallel, 1), [str(gpu)]
    workers = (n_gpus or 1) if parallel == 0 else parallel
    return workers, [str(i) for i in range(n_gpus)]


class LocalExecutor:
    """A pool of ``workers`` job processes; worker slot i gets GPU ``gpus[i % len(gpus)]`` through
    ``CUDA_VISIBLE_DEVICES``. Without GPUs, CPU threads are split between the workers."""

    name = "local"

    def __init__(
        self,
        workers: int = 1,
        gpus: Sequence[str] = (),
        timeout: float | None = 7200,
        command: Callable[[str], Sequence[str]] | None = None,
    ):
        self.workers, self.gpus, self.timeout, self.command = (
            max(1, workers),
            list(gpus),
            timeout,
            command,
        )

    def _env(self, slot: int) -> dict:
        if self.gpus:
            return {"CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]}
        if self.workers > 1 and "OMP_NUM_THREADS" not in os.environ:
            return threads.environment(max(1, (os.cpu_count() or 1) // self.workers))
        return {}

    def map(self, jobs: Iterable[str]) -> Iterator[JobResult]:
        """Run the jobs; yield each result as it finishes."""
        jobs = list(jobs)
        slots = list(range(self.workers))
        lock = threading.Lock()
        live: set = set()
        stop = threading.Event()

        def one(job: str) -> JobResult:
            if stop.is_set():
                return JobResult(job, None, 0.0, False, "not started: the sweep was interrupted")
            with lock:
                slot = slots.pop(0)
            try:
                cmd = self.command(job) if self.command else None
                return run_job(job, self.timeout, self._env(slot), cmd, live)
            finally:
                with lock:
                    slots.append(slot)

        with ThreadPoolExecutor(self.workers) as pool:
            futures = [pool.submit(one, j) for j in jobs]
            try:
                for f in as_completed(futures):
                    yield f.result()
            except (
                BaseException
            ):  # interrupted (Ctrl-C, SIGTERM): stop queued jobs, kill running ones
                stop.set()
                for f in futures:
                    f.cancel()
                for proc in list(live):
                    _kill_group(proc)
                raise

    def close(self) -> None:
        pass


def _ray_job(job: str, timeout: float | None, command: list[str] | None) -> dict:
    # Ray sets CUDA_VISIBLE_DEVICES for a task that asked for GPUs; the job inherits it.
    return run_job(job, timeout, None, command).to_dict()


def _start_local_ray(ray, local_cpus, kw: dict, attempts: int = 3) -> None:
    """``ray.init`` of a local instance. Ray gives its raylet a fixed 30 s to register; on a loaded
    machine (a few cores shared with other jobs) that can run out, so a start that timed out is
    tried again after a clean shutdown (any other error is raised at once)."""
    for attempt in range(attempts):
        try:
            ray.init(num_cpus=local_cpus, **kw)
            return
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == attempts - 1:
                raise
            ray.shutdown()


class RayExecutor:
    """Each job a Ray task asking for ``num_gpus`` (fractions allowed) and ``num_cpus``.

    ``address`` None starts a local Ray instance (``ray.init``); ``"auto"`` or ``ray://...`` joins a
    cluster. Jobs write into the sweep folder, which must be on a filesystem every node shares.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_gpus: float = 0,
        num_cpus: float = 1,
        timeout: float | None = 7200,
        local_cpus: int | None = None,
        command: Callable[[str], Sequence[str]] | None = None,
    ):
        import ray  # lazy: an optional dependency (the ``ray`` extra), needed with --executor ray only

        self.ray, self.timeout, self.command = ray, timeout, command
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
            if address:
                ray.init(address=address, **kw)
            else:
                _start_local_ray(ray, local_cpus, kw)
            self._started = True
        else:
            self._started = False
        self.task = ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, max_retries=0)(_ray_job)

    def map(self, jobs: Iterable[str]) -> Iterator[JobResult]:
        pending = {}
        for j in jobs:
            cmd = list(self.command(j)) if self.command else None
            pending[self.task.remote(j, self.timeout, cmd)] = j
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        yield JobResult(**self.ray.get(ref))
                    except Exception as e:  # the task itself died (node lost, worker killed)
                        yield JobResult(
                            job,
                            None,
                            0.0,
                            False,
                            f"Ray task failed: {type(e).__name__}: {e}"[-3000:],
                        )
        except BaseException:
            for ref in pending:
                self.ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
