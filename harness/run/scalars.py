"""What a job logs while it runs, in its own folder, for `tensorboard --logdir runs/store` and for scripts.

Training: JOB/stats.jsonl, one JSON line per report window as EDM2's stats.jsonl (the step, the time, the training
seconds and the scalars: the method's diagnostics, the learning rate, it/s), and where the tensorboard package is
installed (pip install scm-bench[tensorboard]) the same scalars as TensorBoard events in JOB/tensorboard/.
Evaluation: its metrics at every checkpoint step it measured (FID over training), as events in
JOB/tensorboard/eval-ID/, a run of its own beside the training's.

The JSON lines are the record and the events are made from them: a resumed job drops the lines past its
checkpoint's step (the steps it will train again) and rewrites the events from the lines kept, so neither holds a
step twice for any reader of the events (SummaryWriter's purge_step would rely on the reader honouring it)."""
import json
import math
import time
from pathlib import Path

from .. import store
from ..recipe.jobs import EvalJob

STATS_FILE = "stats.jsonl"
EVENTS_FOLDER = "tensorboard"
NOT_SCALARS = ("step", "timestamp", "elapsed")  # a line's own fields; every other key is a scalar


def event_writer(folder: Path):
    """A TensorBoard SummaryWriter on `folder`, or None without the tensorboard package (the JSON lines need
    nothing, so training goes on the same)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: pip install scm-bench[tensorboard]
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def event_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("events.out.tfevents.*"))


def read_stats(path: Path) -> list[dict]:
    """The lines of a stats.jsonl; a torn line (the job killed mid-write) is left out."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    lines = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("step"), int):
            lines.append(line)
    return lines


def _add_line(writer, line: dict) -> None:
    for key, value in line.items():
        if key not in NOT_SCALARS:
            writer.add_scalar(f"train/{key}", value, line["step"], walltime=line.get("timestamp"))


class TrainingLog:
    """stats.jsonl and the TensorBoard events of one training job, continued from `resumed_step` (0: a fresh
    start). Only rank 0 makes one."""

    def __init__(self, job_path: Path, resumed_step: int):
        self.stats_path = Path(job_path) / STATS_FILE
        kept = [line for line in read_stats(self.stats_path) if line["step"] <= resumed_step]
        if self.stats_path.exists():  # aside and renamed: a kill now leaves the old lines or the kept ones
            store.write_bytes_atomic(self.stats_path, "".join(json.dumps(line) + "\n" for line in kept).encode())
        self.events = self._rewritten_events(Path(job_path) / EVENTS_FOLDER, kept)

    @staticmethod
    def _rewritten_events(folder: Path, kept: list[dict]):
        """A writer whose new event file holds the kept lines, the old files removed once it is on disk (a kill in
        between leaves a step twice only until the next start rewrites them again)."""
        old = event_files(folder)
        writer = event_writer(folder)
        if writer is None or not old:
            return writer
        for line in kept:
            _add_line(writer, line)
        writer.flush()
        for path in old:
            path.unlink(missing_ok=True)
        return writer

    def write(self, step: int, elapsed: float, scalars: dict[str, float]) -> None:
        """One report window: a line appended (and flushed, for whoever tails it) and its events."""
        line = {"step": step, "timestamp": round(time.time(), 3), "elapsed": round(elapsed, 3),
                **{key: float(value) for key, value in scalars.items() if key not in NOT_SCALARS}}
        with open(self.stats_path, "a") as stats:
            stats.write(json.dumps(line) + "\n")
        if self.events is not None:
            _add_line(self.events, line)
            self.events.flush()  # a job killed later loses no window it reported

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


def metric_tag(row: dict) -> str:
    """The TensorBoard tag of a metrics row: eval/METRIC/SAMPLER-nfeN (with the guidance scale and the EMA length
    where they vary)."""
    tag = f"eval/{row['metric']}/{row['sampler']}-nfe{row['nfe']}"
    if row.get("guidance") not in (None, 1.0):
        tag += f"-guidance{row['guidance']:g}"
    if row.get("ema_sweep"):
        tag += f"-sigma_rel{row['sigma_rel']:g}"
    return tag


def log_evaluation(job: EvalJob, rows: list[dict]) -> None:
    """The evaluation's metrics at each checkpoint step it measured, as events in the training job's
    tensorboard/eval-ID/ (written anew: a rerun evaluation replaces its events). Nothing without tensorboard."""
    folder = job.train.path / EVENTS_FOLDER / f"eval-{job.id}"
    old = event_files(folder)
    writer = event_writer(folder)
    if writer is None:
        return
    for row in rows:
        value = row.get("value")
        if not row.get("diverged") and isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(metric_tag(row), value, int(row["checkpoint_step"]))
    writer.close()
    for path in old:
        path.unlink(missing_ok=True)
