"""Running generated code against its tests, outside the fairlora process, one sandboxed process per sample.

Each sample is a fresh `python -I -` (isolated mode: no PYTHON* variables, no user site, no script
folder on sys.path) reading its program from stdin, started by a small scheduler that keeps up to
`workers` of them running and gives each:

- its own temporary folder as cwd (and HOME), removed afterwards, and a minimal environment;
- rlimits set between fork and exec: CPU seconds, address space, file size, core dumps off;
- a wall-clock timeout, after which its whole process group is killed;
- no network and no way to raise its own rlimits where `unshare -rn` works (a user namespace
  without network interfaces; detected once per `Sandbox`, else a logged note and plain processes);
- a Python audit hook installed before the completion runs that refuses: opening, listing, creating
  or removing paths outside the sample's folder (reading or listing the Python installation excepted, so
  imports work), starting processes (os.system, subprocess, exec, fork, spawn), sockets, and ctypes.

A sample passes only when the process exits with 0 AND its last stdout line is a random token that
the program prints after `check(entry_point)` returned, so an early `sys.exit(0)` or `os._exit(0)`
fails. What is NOT isolated: the audit hook is a Python-level guard, not an OS boundary (code that
sets out to forge a pass, e.g. by reading the token from its own code object, can); reads of the
Python installation are allowed; without `unshare` the network is reachable by native code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

LOG = logging.getLogger(__name__)
STDOUT_TAIL = 4096  # bytes of a sample's stdout / stderr kept for the result


@dataclass(frozen=True)
class Limits:
    """Per-sample limits: wall-clock timeout, CPU seconds, address space and file size (bytes)."""

    timeout_s: float = 10.0
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20

    @property
    def cpu_s(self) -> int:
        """CPU-time limit: the wall-clock timeout rounded up, plus one second."""
        return int(self.timeout_s) + 2


@dataclass(frozen=True)
class Outcome:
    """One sample's result: passed, why not (status), and the tails of its output."""

    passed: bool
    status: str  # passed | failed | timeout | early_exit
    stdout: str = ""
    stderr: str = ""


_GUARD = """
import os as _os, sys as _sys
def _install_guard(root, readable):
    import os.path as osp
    blocked = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
               "subprocess.Popen", "pty.spawn", "socket.", "ctypes.", "os.kill", "os.killpg")
    checked = {"os.listdir": 1, "os.scandir": 1, "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1,
               "os.rename": 2, "os.symlink": 2, "os.link": 2, "os.chmod": 1, "os.chown": 1,
               "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1, "shutil.copyfile": 2, "os.chdir": 1}
    listing = ("os.listdir", "os.scandir")
    def inside(path, roots):
        if isinstance(path, int):
            return True
        full = osp.realpath(osp.join(root, _os.fsdecode(path)))
        return any(full == r or full.startswith(r + _os.sep) for r in roots)
    def hook(event, args):
        if event.startswith(blocked):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open" and args[0] is not None:
            mode, flags = args[1] or "", args[2] or 0
            writes = any(c in mode for c in "wax+") or flags & (_os.O_WRONLY | _os.O_RDWR | _os.O_CREAT)
            if not inside(args[0], (root,) if writes else (root, *readable)):
                raise PermissionError(f"sandbox: {args[0]!r} is outside the sample's folder")
        elif event in checked:
            roots = (root, *readable) if event in listing else (root,)  # imports list the stdlib
            for path in args[: checked[event]]:
                if path is not None and not inside(path, roots):
                    raise PermissionError(f"sandbox: {event} {path!r} is outside the sample's folder")
    _sys.addaudithook(hook)
_install_guard(_os.path.realpath(_os.getcwd()), tuple(
    _os.path.realpath(p) for p in {_sys.prefix, _sys.base_prefix, _sys.exec_prefix, _sys.base_exec_prefix}))
del _install_guard
"""


def build_program(code: str, test: str, entry_point: str, token: str) -> str:
    """The guard, the code (prompt + completion), the tests, the check call, then the pass token."""
    return f"{_GUARD}\n{code}\n\n{test}\n\ncheck({entry_point})\nprint({token!r}, flush=True)\n"


@dataclass
class _Running:
    index: int
    process: subprocess.Popen
    folder: Path
    token: str
    deadline: float


@dataclass
class Sandbox:
    """Runs programs as sandboxed processes (see the module docstring); `workers` at a time."""

    limits: Limits = field(default_factory=Limits)
    workers: int = 2
    python: str = sys.executable
    prefix: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.prefix = network_isolation_prefix()

    def run(
        self, programs: list[tuple[str, str, str]], progress: bool = True, desc: str = "execute"
    ) -> list[Outcome]:
        """Score each (code, test, entry_point); results in input order."""
        outcomes: list[Outcome | None] = [None] * len(programs)
        pending = list(range(len(programs)))[::-1]
        running: list[_Running] = []
        with tqdm(total=len(programs), desc=desc, disable=not progress, leave=False) as bar:
            try:
                while pending or running:
                    while pending and len(running) < max(self.workers, 1):
                        index = pending.pop()
                        running.append(self._start(index, *programs[index]))
                    still = []
                    for job in running:
                        if job.process.poll() is None and time.monotonic() < job.deadline:
                            still.append(job)
                            continue
                        outcomes[job.index] = self._finish(job)
                        bar.update(1)
                    running = still
                    if running:
                        time.sleep(0.005)
            finally:
                for job in running:  # an interrupt: nothing is left behind
                    self._finish(job)
        return [o for o in outcomes if o is not None]

    def _start(self, index: int, code: str, test: str, entry_point: str) -> _Running:
        folder = Path(tempfile.mkdtemp(prefix="fairlora-exec-"))
        work = folder / "work"
        work.mkdir()
        token = f"fairlora-pass-{secrets.token_hex(16)}"
        program = build_program(code, test, entry_point, token)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "TMPDIR": str(work)}
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            process = subprocess.Popen(
                [*self.prefix, self.python, "-I", "-"],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=work,
                env=env,
                start_new_session=True,
                preexec_fn=_limiter(self.limits),
            )
        try:
            process.stdin.write(program.encode())  # type: ignore[union-attr]
            process.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        return _Running(index, process, folder, token, time.monotonic() + self.limits.timeout_s)

    def _finish(self, job: _Running) -> Outcome:
        timed_out = job.process.poll() is None
        _kill_group(job.process)
        stdout, stderr = _tail(job.folder / "stdout"), _tail(job.folder / "stderr")
        shutil.rmtree(job.folder, ignore_errors=True)
        if timed_out:
            return Outcome(False, "timeout", stdout, stderr)
        lines = stdout.rstrip("\n").rsplit("\n", 1)
        if job.process.returncode == 0 and lines[-1] == job.token:
            return Outcome(True, "passed", stdout, stderr)
        status = "early_exit" if job.process.returncode == 0 else "failed"
        return Outcome(False, status, stdout, stderr)


def _limiter(limits: Limits):  # noqa: ANN202 - runs in the child between fork and exec
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the sample's process group (it runs in its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(path.stat().st_size - STDOUT_TAIL, 0))
        return handle.read().decode(errors="replace")


def network_isolation_prefix() -> list[str]:
    """["unshare", "-rn"] when a user + network namespace can be made here, else [] (logged)."""
    unshare = shutil.which("unshare")
    if unshare is not None:
        try:
            done = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10)
            if done.returncode == 0:
                return [unshare, "-rn"]
        except (OSError, subprocess.TimeoutExpired):
            pass
    LOG.warning(
        "code execution: `unshare -rn` is unavailable here, so samples run without network isolation "
        "(rlimits, timeout, temporary folder and the audit hook still apply)"
    )
    return []
