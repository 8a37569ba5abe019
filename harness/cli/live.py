"""Progress where no terminal shows bars (CI, `make demo | tee`, a Slurm log): every EVERY_S seconds a plain line
per job that is running or has changed (state, step / total, loss, it/s, ETA), and each job's last state at the
end. The launcher feeds it from the jobs' progress.json, as it feeds the rich bars on a terminal."""
import os
import sys
import time
from datetime import timedelta

EVERY_S = 30.0
EVERY_ENV = "SCM_BENCH_PROGRESS_EVERY_S"  # tests (and impatient users) set a shorter interval
ACTIVE = ("running", "evaluating")  # repeated while unchanged: a line says the job is still alive


def interval_from_env() -> float:
    """SCM_BENCH_PROGRESS_EVERY_S when it is a positive number of seconds, else EVERY_S."""
    try:
        seconds = float(os.environ.get(EVERY_ENV, EVERY_S))
    except ValueError:
        return EVERY_S
    return seconds if seconds > 0 else EVERY_S


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(max(seconds, 0.0))))


def describe(name: str, info: dict) -> str:
    """One job's line (without the time): `teacher: running 1200/5000 loss 0.0312 4.1 it/s ETA 0:15:27`."""
    state, step, total = info.get("state") or "starting", info.get("step", 0), info.get("total")
    parts = [f"{name:>8}: {state}"]
    if total:
        parts.append(f"{step}/{total}")
    loss, it_s = info.get("loss"), info.get("it_s")
    if isinstance(loss, (int, float)):
        parts.append(f"loss {loss:.4f}")
    if isinstance(it_s, (int, float)) and it_s > 0:
        parts.append(f"{it_s:.1f} it/s")
        if state == "running" and total:
            parts.append(f"ETA {_duration((total - step) / it_s)}")
    return " ".join(parts)


class PlainProgress:
    """The launcher's progress view as plain lines on `out` (stdout), at most one round every `every_s` seconds
    of `clock` (time.monotonic); a context manager whose exit prints the jobs' last states."""

    def __init__(self, every_s: float | None = None, clock=time.monotonic, out=None):
        self.every_s = interval_from_env() if every_s is None else every_s
        self.clock, self.out = clock, out or sys.stdout
        self.start = self.due = clock()
        self.latest: dict[str, dict] = {}  # the newest progress of each job, by name, in the order first seen
        self.printed: dict[str, str] = {}  # the line last printed for each job

    def update(self, name: str, info: dict) -> None:
        if not info:
            return
        self.latest[name] = info
        now = self.clock()
        if now >= self.due:
            self._print(now, repeat_active=True)
            self.due = now + self.every_s

    def _print(self, now: float, repeat_active: bool) -> None:
        for name, info in self.latest.items():
            line = describe(name, info)
            if line != self.printed.get(name) or (repeat_active and info.get("state") in ACTIVE):
                print(f"[{_duration(now - self.start)}] {line}", file=self.out, flush=True)
                self.printed[name] = line

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self._print(self.clock(), repeat_active=False)
