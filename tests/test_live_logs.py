"""While it runs: a training job's stats.jsonl and TensorBoard events (continued, not duplicated, after a resume), an
evaluation's metrics as events, and the plain progress lines `scm-bench run` prints when stdout is not a terminal."""
import io
import json
import math

import pytest

from helpers import evaluation_of, stage_job, tiny_recipe

DIFFUSION_SCALARS = {"loss", "mse", "w_mean", "lr", "it_s"}  # the teacher's diagnostics, the learning rate, the speed


def _scalars(events_folder) -> dict[str, list]:
    """{tag: [(step, value)]} read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(events_folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A 6-step teacher reporting every step, then resumed from its step-4 checkpoint as if killed before step 6
    with a line torn mid-write: (job, the first run's lines)."""
    from harness import store
    from harness.run import train
    from harness.run.scalars import STATS_FILE, read_stats

    tmp = tmp_path_factory.mktemp("live")
    job = stage_job(tiny_recipe(tmp), tmp / "runs", "teacher",
                    ["stages.teacher.steps=6", "stages.teacher.checkpoint_every=4"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "PROGRESS_EVERY_S", 0.0)  # a report window per step
        train.train_stage(job, threads=1)
        first = read_stats(job.path / STATS_FILE)
        store.checkpoint_path(job.path, 6).unlink()
        with open(job.path / STATS_FILE, "a") as stats:
            stats.write('{"step": 7, "loss": 0.')
        train.train_stage(job, threads=1)
    return job, first


def test_stats_lines_cover_the_run_in_order_with_every_scalar(resumed):
    _, first = resumed
    assert [line["step"] for line in first] == [1, 2, 3, 4, 5, 6]
    for line in first:
        assert set(line) == {"step", "timestamp", "elapsed"} | DIFFUSION_SCALARS
        assert all(math.isfinite(line[key]) for key in DIFFUSION_SCALARS)
    assert [line["timestamp"] for line in first] == sorted(line["timestamp"] for line in first)
    assert first[-1]["lr"] > 0 and first[-1]["it_s"] > 0


def test_a_resumed_job_appends_without_repeating_a_step(resumed):
    """Steps 5 and 6 (past the checkpoint) are dropped and trained again, bitwise as before: the lines match the
    first run's; the torn line is gone."""
    from harness.run.scalars import STATS_FILE, read_stats

    job, first = resumed
    lines = read_stats(job.path / STATS_FILE)
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert len((job.path / STATS_FILE).read_text().splitlines()) == 6
    assert [line["loss"] for line in lines] == [line["loss"] for line in first]
    assert lines[:4] == first[:4]  # the kept lines are the very same, timestamps too


def test_tensorboard_events_hold_the_scalars_once_per_step(resumed):
    pytest.importorskip("tensorboard")
    from harness.run.scalars import EVENTS_FOLDER, STATS_FILE, read_stats

    job, _ = resumed
    scalars = _scalars(job.path / EVENTS_FOLDER)
    assert set(scalars) == {f"train/{key}" for key in DIFFUSION_SCALARS}
    lines = read_stats(job.path / STATS_FILE)
    for key in DIFFUSION_SCALARS:
        assert [step for step, _ in scalars[f"train/{key}"]] == [1, 2, 3, 4, 5, 6]
        assert [value for _, value in scalars[f"train/{key}"]] == pytest.approx([line[key] for line in lines])
    assert len(list((job.path / EVENTS_FOLDER).glob("events.out.tfevents.*"))) == 1  # the old file replaced


def test_without_tensorboard_only_the_json_lines_are_written(tmp_path, monkeypatch):
    from harness.run import scalars

    monkeypatch.setattr(scalars, "event_writer", lambda folder: None)
    log = scalars.TrainingLog(tmp_path, 0)
    log.write(3, 1.5, {"loss": 0.25, "lr": 1e-3})
    log.close()
    assert [(line["step"], line["loss"]) for line in scalars.read_stats(tmp_path / scalars.STATS_FILE)] == [(3, 0.25)]
    assert not (tmp_path / scalars.EVENTS_FOLDER).exists()


def test_an_evaluation_logs_its_metrics_at_each_checkpoint_step(tmp_path):
    """FID over training: one scalar per evaluated checkpoint and setting; a NaN (diverged) row is left out; a rerun
    replaces the events instead of adding to them."""
    pytest.importorskip("tensorboard")
    from harness.run.scalars import EVENTS_FOLDER, log_evaluation

    job = evaluation_of(tiny_recipe(tmp_path), tmp_path / "runs", "teacher")
    setting = {"sampler": "heun", "nfe": 7, "guidance": 1.0}
    rows = [{**setting, "metric": "fid", "checkpoint_step": 4, "value": 30.0},
            {**setting, "metric": "fid", "checkpoint_step": 6, "value": 20.0},
            {**setting, "metric": "kid", "checkpoint_step": 6, "value": float("nan")},
            {**setting, "sigma_rel": 0.1, "ema_sweep": True, "metric": "fid", "checkpoint_step": 6, "value": 25.0}]
    log_evaluation(job, rows)
    log_evaluation(job, rows)
    folder = job.train.path / EVENTS_FOLDER / f"eval-{job.id}"
    assert _scalars(folder) == {"eval/fid/heun-nfe7": [(4, 30.0), (6, 20.0)],
                                "eval/fid/heun-nfe7-sigma_rel0.1": [(6, 25.0)]}


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_a_line_per_job_every_interval():
    from harness.cli.live import PlainProgress

    clock, out = _Clock(), io.StringIO()
    running = {"state": "running", "total": 100, "loss": 0.5, "it_s": 5.0}
    with PlainProgress(every_s=30, clock=clock, out=out) as view:
        view.update("teacher", {**running, "step": 10})  # the first update prints at once
        clock.now += 10
        view.update("teacher", {**running, "step": 60})  # within the interval: nothing
        clock.now += 25
        view.update("teacher", {**running, "step": 90})
        view.update("sct", {"state": "running", "step": 0, "total": 50})  # first seen: waits for the next round
        clock.now += 31
        view.update("teacher", {**running, "step": 90})  # unchanged but running: printed again (alive)
        view.update("teacher", {"state": "done", "step": 100, "total": 100, "loss": 0.25, "it_s": 4.0})
    assert out.getvalue().splitlines() == [
        "[0:00:00]  teacher: running 10/100 loss 0.5000 5.0 it/s ETA 0:00:18",
        "[0:00:35]  teacher: running 90/100 loss 0.5000 5.0 it/s ETA 0:00:02",
        "[0:01:06]  teacher: running 90/100 loss 0.5000 5.0 it/s ETA 0:00:02",
        "[0:01:06]      sct: running 0/50",
        "[0:01:06]  teacher: done 100/100 loss 0.2500 4.0 it/s"]


def test_run_prints_plain_lines_when_stdout_is_not_a_terminal(tmp_path, monkeypatch):
    """Through the command (typer's runner: stdout is no terminal), the interval from the environment."""
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.run import runner

    def fake_run(spec, source, runs_dir, kind, view, *args, **kwargs):
        for step in (1, 2):
            view.update("teacher", {"state": "running", "step": step, "total": 2, "loss": 1.0, "it_s": 2.0})
        view.update("teacher", {"state": "done", "step": 2, "total": 2, "loss": 0.5, "it_s": 2.0})
        return []

    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCM_BENCH_PROGRESS_EVERY_S", "0.000001")
    monkeypatch.setattr(runner, "run_recipe", fake_run)
    result = CliRunner().invoke(app, ["run", str(tiny_recipe(tmp_path)), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "teacher:" in line]
    assert [line.split("] ", 1)[1] for line in lines] == [
        " teacher: running 1/2 loss 1.0000 2.0 it/s ETA 0:00:00",
        " teacher: running 2/2 loss 1.0000 2.0 it/s ETA 0:00:00",
        " teacher: done 2/2 loss 0.5000 2.0 it/s"]
    assert "━" not in result.output  # no bars
