"""The Ray engine: sweep cells and LiRA shadows as Ray tasks on a cluster the user already runs.

Where results land: on shared storage. Every task trains through the normal pipeline into the same
run folder the sequential engine would write, so the output folder must be storage every worker node
mounts at the path the submitter sees (NFS, a cluster file system; on one machine, any folder). Before
any task starts, one probe task per node reads a token file the submitter wrote there and writes its
own answer file, which the submitter reads back; a node that cannot do either stops the command with
a message naming it. Tasks run in the submitter's working directory, so relative paths (output_dir,
data files) mean the same on every node.

Failures: a task whose worker dies (SIGKILL, a lost node) is retried by Ray (`max_retries`) and
resumes from the run's last checkpoint; an exception raised by the task is never retried: a
FairloraError (a user error) stops the command with its message, anything else is raised as is.
Ctrl-C cancels the outstanding tasks; finished runs stay and the same command resumes the rest.

Ray is imported here only: without `--engine ray` / `audit.engine: ray` it is never imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fairlora.errors import ConfigError, FairloraError, TrainingError

ATTEMPTS_DIR = ".ray"  # <folder>/.ray/<job>.jsonl: one line per attempt (node, pid, start time)
POLL_S = 0.5


@dataclass(frozen=True)
class RayOptions:
    """Where to run and what each run reserves."""

    address: str | None = None  # None: RAY_ADDRESS or a local cluster; "auto"; "ray://HOST:PORT"
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 3  # retries after a worker dies (system failures only)


@dataclass
class Job:
    """One task: a name for the progress lines and a picklable function with its arguments."""

    name: str
    function: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class JobOutput:
    """What a task returned, where it ran, and the seconds the job's function took there."""

    value: Any
    worker: str
    wall_s: float


def worker_name() -> str:
    """This process as `node-ip/pid`."""
    import ray

    return f"{ray.util.get_node_ip_address()}/{os.getpid()}"


def _run_job(job: Job, cwd: str, attempts_file: str) -> JobOutput:
    """The task body: record the attempt, run the job in the submitter's working directory."""
    worker = worker_name()
    with contextlib.chdir(cwd):
        with open(attempts_file, "a") as log:
            log.write(json.dumps({"worker": worker, "pid": os.getpid(), "start": time.time()}) + "\n")
        start = time.perf_counter()
        value = job.function(*job.args, **job.kwargs)
    return JobOutput(value, worker, time.perf_counter() - start)


def probe_node(cwd: str, folder: str, token: str) -> str | None:
    """On one node: read the submitter's token file and write an answer file; None, or what failed."""
    if not Path(cwd).is_dir():
        return f"the working directory {cwd} does not exist there"
    with contextlib.chdir(cwd):
        token_file = Path(folder) / f".probe-{token}"
        try:
            if token_file.read_text() != token:
                return f"{token_file} holds another token"
            (Path(folder) / f".probe-{token}-{os.getpid()}").write_text(worker_name())
        except OSError as error:
            return f"{error.strerror or error} ({error.filename or token_file})"
    return None


def check_shared_storage(ray: Any, folder: Path) -> None:
    """Each alive node reads a token written here and writes a file read back here; ConfigError if not."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    (folder / f".probe-{token}").write_text(token)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            os.getcwd(), str(folder), token
        )
        for n in nodes
    ]
    try:
        failures = [f"{n['NodeManagerAddress']}: {e}" for n, e in zip(nodes, ray.get(refs), strict=True) if e]
        answers = sorted(folder.glob(f".probe-{token}-*"))
        if not failures and len(answers) < len(nodes):
            missing = len(nodes) - len(answers)
            failures = [f"{missing} of {len(nodes)} nodes wrote files this machine cannot see"]
    finally:
        for file in folder.glob(f".probe-{token}*"):
            file.unlink(missing_ok=True)
    if failures:
        raise ConfigError(
            f"the output folder {folder} is not storage every Ray worker shares ({'; '.join(failures)}); "
            f"set output_dir to a folder every node mounts at the same path (NFS, a cluster file system)"
        )


@contextlib.contextmanager
def connected(options: RayOptions):  # type: ignore[no-untyped-def]
    """Ray, connected to options.address (or the session the caller opened); shut down if opened here."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    try:
        # the workers' own output (transformers' logs) stays in Ray's session logs on each node
        quiet = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False}
        ray.init(address=options.address, **quiet)
    except (ConnectionError, ValueError) as error:
        raise ConfigError(
            f"Ray address {options.address!r} (--address / audit.ray_address): cannot connect ({error}); "
            f"start the cluster (`ray start --head`) or pass its address"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_jobs(
    jobs: list[Job],
    options: RayOptions,
    folder: Path,
    console: Console | None = None,
    progress: bool = True,
    what: str = "run",
) -> list[JobOutput]:
    """Run every job as a Ray task (as many at once as the cluster allows); their outputs, in job order."""
    console = console or Console(stderr=True)
    with connected(options) as ray:
        check_shared_storage(ray, folder)
        task = ray.remote(_run_job).options(
            num_cpus=options.cpus_per_run,
            num_gpus=options.gpus_per_run,
            max_retries=options.max_retries,
            retry_exceptions=False,
        )
        attempts = folder / ATTEMPTS_DIR
        attempts.mkdir(parents=True, exist_ok=True)
        refs = {}
        for index, job in enumerate(jobs):
            (attempts / f"{job.name}.jsonl").unlink(missing_ok=True)
            refs[task.remote(job, os.getcwd(), str(attempts / f"{job.name}.jsonl"))] = index
        watcher = _Watcher(jobs, attempts, console)
        return _collect(ray, refs, watcher, len(jobs), progress, what)


def _collect(
    ray: Any, refs: dict[Any, int], watcher: _Watcher, total: int, progress: bool, what: str
) -> list[JobOutput]:
    """Wait for every task, printing start/finish lines; cancel the rest on Ctrl-C or a failed task."""
    values: list[Any] = [None] * total  # JobOutput once finished
    finished = 0
    pending = list(refs)
    columns = [TextColumn(f"{what}s"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    bar = Progress(*columns, console=watcher.console, disable=not progress)
    try:
        with bar:
            bar_task = bar.add_task(what, total=total)
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                watcher.poll()
                for ref in done:
                    index = refs[ref]
                    values[index] = output = _result(ray, ref, watcher.jobs[index].name)
                    finished += 1
                    watcher.finished(index, output)
                    bar.advance(bar_task)
    except BaseException:
        _cancel(ray, pending)
        watcher.console.print(
            f"stopped: {finished} of {total} {what}s finished and kept, "
            f"{len(pending)} cancelled; run the same command to resume them"
        )
        raise
    return values


def _cancel(ray: Any, refs: list[Any], rounds: int = 5) -> None:
    """Cancel the tasks (killing their workers), again for any a cancel raced with its start."""
    for _ in range(rounds):
        for ref in refs:
            ray.cancel(ref, force=True)
        _, refs = ray.wait(refs, num_returns=len(refs), timeout=2.0)
        if not refs:
            return


def _result(ray: Any, ref: Any, name: str) -> JobOutput:
    """A task's output, its user error as itself, or a TrainingError when its workers kept dying."""
    from ray.exceptions import RayTaskError, WorkerCrashedError

    try:
        return ray.get(ref)
    except RayTaskError as error:
        if isinstance(error.cause, FairloraError):
            raise error.cause from None
        raise
    except WorkerCrashedError:
        raise TrainingError(
            f"{name}: its Ray worker died on every attempt (max_retries); see the Ray logs of the node, "
            f"then run the same command to resume it from its last checkpoint"
        ) from None


class _Watcher:
    """Prints one line per attempt start (read from the attempts files) and per finish."""

    def __init__(self, jobs: list[Job], attempts: Path, console: Console) -> None:
        self.jobs, self.attempts, self.console = jobs, attempts, console
        self.seen = [0] * len(jobs)

    def poll(self) -> None:
        for index, job in enumerate(self.jobs):
            file = self.attempts / f"{job.name}.jsonl"
            lines = file.read_text().split("\n")[:-1] if file.is_file() else []  # whole lines only
            for number, line in enumerate(lines[self.seen[index] :], start=self.seen[index] + 1):
                record = json.loads(line)
                again = f" (attempt {number})" if number > 1 else ""
                self.console.print(f"start  {job.name} on {record['worker']}{again}", highlight=False)
            self.seen[index] = max(self.seen[index], len(lines))

    def finished(self, index: int, output: JobOutput) -> None:
        self.poll()
        name = self.jobs[index].name
        self.console.print(f"finish {name} on {output.worker} in {output.wall_s:.1f} s", highlight=False)
