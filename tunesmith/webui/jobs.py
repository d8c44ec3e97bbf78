"""One background `tunesmith` process at a time (train, eval or export), with its output kept for the page.

The job lives in the server, not in the page: a closed and reopened page polls the same runner and finds
the job still running, its log, and (through the run folder's metrics.jsonl) its loss curve.
"""

from __future__ import annotations

import codecs
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.errors import TunesmithError

STOP_GRACE_S = 15.0  # after SIGINT, how long a job gets to exit before it is killed


def tunesmith_argv(*args: str) -> list[str]:
    """The argument list of `tunesmith ARGS...` run with this Python (no shell, no PATH lookup)."""
    return [sys.executable, "-m", "tunesmith", *map(str, args)]


class LogBuffer:
    """The last lines a process printed. A carriage return (progress bars) rewrites the current line."""

    def __init__(self, max_lines: int = 2000):
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.current = ""
        self._after_return = False  # the next text replaces the current line
        self._lock = threading.Lock()

    def feed(self, text: str) -> None:
        with self._lock:
            for piece in _split_keep(text):
                if piece == "\n":
                    self.lines.append(self.current)
                    self.current = ""
                elif piece == "\r":
                    self._after_return = True
                else:
                    if self._after_return:
                        self.current = ""
                        self._after_return = False
                    self.current += piece

    def tail(self, count: int = 40) -> str:
        with self._lock:
            lines = list(self.lines)[-count:] + ([self.current] if self.current else [])
        return "\n".join(lines[-count:])


def _split_keep(text: str) -> list[str]:
    pieces, start = [], 0
    for index, char in enumerate(text):
        if char in "\r\n":
            if index > start:
                pieces.append(text[start:index])
            pieces.append(char)
            start = index + 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


@dataclass
class Job:
    kind: str  # train | eval | export
    argv: list[str]
    process: subprocess.Popen
    run_dir: Path | None = None  # where metrics.jsonl appears (train jobs)
    output: Path | None = None  # a results file the job writes (eval jobs)
    log: LogBuffer = field(default_factory=LogBuffer)
    started: float = field(default_factory=time.time)
    stopped_by_user: bool = False

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def state(self) -> str:
        """running | finished | stopped | failed"""
        code = self.returncode
        if code is None:
            return "running"
        if self.stopped_by_user:
            return "stopped"
        return "finished" if code == 0 else "failed"


class JobRunner:
    def __init__(self, cwd: str | Path = "."):
        self.cwd = Path(cwd)
        self.job: Job | None = None
        self._lock = threading.Lock()

    def start(self, kind: str, argv: list[str], run_dir: Path | None = None, output: Path | None = None) -> Job:
        with self._lock:
            if self.job is not None and self.job.running:
                raise TunesmithError(
                    f"a {self.job.kind} job is already running (pid {self.job.process.pid}); "
                    "wait for it to finish or stop it first"
                )
            env = dict(os.environ, PYTHONUNBUFFERED="1")  # env-ok: passed on to the job; unbuffered log lines
            process = subprocess.Popen(
                argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
            self.job = Job(kind, argv, process, run_dir, output)
        threading.Thread(target=_pump, args=(self.job,), daemon=True).start()
        return self.job

    def stop(self) -> bool:
        """Interrupt the running job (it exits as on Ctrl-C), killing it if it does not exit in time."""
        job = self.job
        if job is None or not job.running:
            return False
        job.stopped_by_user = True
        _signal_group(job.process, signal.SIGINT)
        try:
            job.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(job.process, signal.SIGKILL)
            job.process.wait()
        return True


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the job runs in its own session: reach its children too
    except ProcessLookupError:
        pass


def _pump(job: Job) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stream = job.process.stdout
    while True:
        chunk = stream.read1(4096)
        if not chunk:
            break
        job.log.feed(decoder.decode(chunk))
    job.log.feed(decoder.decode(b"", final=True))
    job.process.wait()
