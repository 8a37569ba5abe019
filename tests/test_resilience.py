"""Nothing lost: exact resume after SIGTERM or kill -9, atomic checkpoints with checksums, divergence caught and
reported, a full disk, concurrent writers, and loading that cannot run code."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness import store
from harness.recipe.load import load_recipe
from harness.recipe.planner import plan_jobs
from harness.store.checkpoints import _checksum_file
from scm.methods import SCT
from harness.run.entry import Task, run_task
from helpers import ROOT, tiny_recipe

RUN_JOB = ("import sys; from harness.recipe.jobs import TrainJob; from harness.run.entry import Task, run_task; "
           "run_task(Task('train', TrainJob.model_validate_json(open(sys.argv[1]).read())))")


def _jobs(tmp_path: Path, *overrides) -> dict:
    """The tiny digits recipe's training and evaluation jobs by stage (teacher 6 steps; sCT 60 steps, a
    checkpoint every 20)."""
    path = tiny_recipe(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["stages"]["sct"].update(steps=60, checkpoint_every=20, batch_size=16, sampling={"steps": [1]})
    raw["evaluation"].update(samples_per_class=4)
    path.write_text(yaml.safe_dump(raw))
    plan = plan_jobs(load_recipe(path, list(overrides)), tmp_path / "runs")
    return {job.stage: job for job in plan.train}, {job.train.stage: job for job in plan.evaluate}


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    jobs, evaluations = _jobs(root)
    run_task(Task("train", jobs["teacher"]))
    return root, jobs, evaluations


def _moved(job, folder: Path):
    """The same job in another folder (two copies of one job side by side)."""
    return job.model_copy(update={"folder": str(folder)})


def _start(job, folder: Path) -> subprocess.Popen:
    spec = folder / f"{job.path.name}.json"
    spec.write_text(job.model_dump_json())
    return subprocess.Popen([sys.executable, "-c", RUN_JOB, str(spec)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        assert process.poll() is None, f"the job ended before {path.name}: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _assert_same_state(a: dict, b: dict) -> None:
    """Bitwise: weights, EMA, adaptive weighting, optimizer moments, every RNG, the step."""
    assert a["step"] == b["step"] and a["skipped"] == b["skipped"]
    for key in ("networks", "ema", "modules"):
        assert a[key].keys() == b[key].keys()
        for part in a[key]:
            for name in a[key][part]:
                assert torch.equal(a[key][part][name], b[key][part][name]), f"{key}.{part}.{name} differs"
    for role in a["optimizers"]:
        for pa, pb in zip(a["optimizers"][role]["state"].values(), b["optimizers"][role]["state"].values()):
            assert all(torch.equal(pa[k], pb[k]) for k in pa)
    for rng in ("data_rng", "noise_rng", "torch_rng"):
        assert torch.equal(a[rng], b[rng])


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_an_interrupted_run_resumes_to_bitwise_the_same_end(trained_teacher, tmp_path, how):
    """sCT (tangent warmup over the first steps, adaptive weighting, EMA) killed mid-way: SIGTERM saves the step
    it is at and exits; kill -9 loses the steps since the last checkpoint. Either way the resumed run ends with
    the weights, EMA, optimizer and RNG states of an uninterrupted run, and its evaluation gives the same FID."""
    from harness.run.evaluate import evaluate

    root, jobs, evaluations = trained_teacher
    whole, cut = _moved(jobs["sct"], tmp_path / "whole"), _moved(jobs["sct"], tmp_path / "cut")
    run_task(Task("train", whole))
    process = _start(cut, tmp_path)
    _wait_for(store.checkpoint_path(cut.path, 20), process)
    time.sleep(0.05)  # into the steps after the checkpoint
    process.send_signal(getattr(signal, how))
    process.wait(timeout=60)
    saved = [int(p.stem.split("-")[1]) for p in store.checkpoints(cut.path)]
    assert max(saved) < 60, "the job finished before the signal; the test did not interrupt it"
    if how == "SIGTERM":
        assert process.returncode != 0 and "stopped by SIGTERM" in process.stderr.read()
        assert max(saved) % 20 != 0, f"SIGTERM should save the step it stopped at, found {saved}"
        assert store.read_json(cut.path / "progress.json")["state"] == "stopped"
    else:
        assert process.returncode == -signal.SIGKILL and all(step % 20 == 0 for step in saved)
    run_task(Task("train", cut))  # the rerun resumes
    final = {name: store.load_checkpoint(job.final_checkpoint) for name, job in (("whole", whole), ("cut", cut))}
    _assert_same_state(final["whole"], final["cut"])
    rows = {name: evaluate(evaluations["sct"].model_copy(update={"train": job, "folder": str(job.path / "eval")}), 1)
            for name, job in (("whole", whole), ("cut", cut))}
    assert [(r["metric"], r["value"]) for r in rows["whole"]] == [(r["metric"], r["value"]) for r in rows["cut"]]


SAVER = """
import sys, torch
from pathlib import Path
from harness import store
folder = Path(sys.argv[1])
for step in range(1, 10 ** 6):
    store.save_checkpoint(store.checkpoint_path(folder, step), {"step": step, "w": torch.full((2_000_000,), step)})
"""


def test_killing_the_writer_mid_checkpoint_leaves_the_previous_one_intact(tmp_path):
    """A process saving 8 MB checkpoints as fast as it can is killed (-9) at five random moments; every time, each
    checkpoint in place matches its checksum and loads, the newest is whole, and the stray temporary file of the
    interrupted write is cleaned up before training goes on."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        process = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], cwd=ROOT)
        _wait_for(store.checkpoint_path(tmp_path, 1), process)
        time.sleep(rng.uniform(0.05, 0.6))
        process.kill()
        process.wait()
        for path in store.checkpoints(tmp_path):
            assert store.checkpoint_complete(path), path
        path, state = store.newest_checkpoint(tmp_path)
        assert state["step"] == int(path.stem.split("-")[1]) and bool((state["w"] == state["step"]).all())
        store.remove_partial_writes(tmp_path / "checkpoints")
        assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
        for old in store.checkpoints(tmp_path):
            old.unlink()


class Foreign:
    """In a checkpoint, a pickle that would build an arbitrary object: weights_only refuses to load it."""


def test_a_truncated_or_corrupt_checkpoint_is_skipped_with_a_warning(tmp_path, capfd):
    for step in (1, 2, 3, 4):
        store.save_checkpoint(store.checkpoint_path(tmp_path, step), {"step": step, "w": torch.randn(1000)})
    newest, corrupt, foreign = (store.checkpoint_path(tmp_path, s) for s in (4, 3, 2))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated copy
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    corrupt.write_bytes(bytes(data))
    torch.save({"step": 2, "w": Foreign()}, foreign)
    _checksum_file(foreign).unlink()  # no checksum: loading is the check
    path, state = store.newest_checkpoint(tmp_path)
    assert path == store.checkpoint_path(tmp_path, 1) and state["step"] == 1
    err = capfd.readouterr().err
    assert f"skipping checkpoint {newest}: its bytes do not match its checksum" in err
    assert f"skipping checkpoint {corrupt}: its bytes do not match its checksum" in err
    assert f"skipping checkpoint {foreign}: it cannot be read (UnpicklingError" in err


REAL_LOSS = SCT.loss  # taken once: a second sabotage wraps the real loss, not the first sabotage


def _train_with(monkeypatch, job, bad_at: dict):
    """train_stage with sCT's loss sabotaged at the given steps ({step: term})."""
    from harness.run.train import train_stage

    real = REAL_LOSS

    def loss(self, nets, x0, labels, draws, step):
        value, diag = real(self, nets, x0, labels, draws, step)
        term = bad_at.get(step + 1)
        if term == "loss":
            value = value * float("nan")
        elif term == "tangent":
            diag = {**diag, "tangent_norm": torch.tensor(float("inf"))}
        elif term == "gradient":  # finite value, NaN gradient: d sqrt(x)/dx at 0 is inf, times 0
            value = value + torch.sqrt(0 * sum(p.sum() for p in nets.net.parameters()))
        return value, diag

    monkeypatch.setattr(SCT, "loss", loss)
    return train_stage(job, threads=1)


@pytest.mark.parametrize("term", ["loss", "tangent", "gradient"])
def test_a_non_finite_term_stops_the_job_as_diverged(trained_teacher, tmp_path, monkeypatch, term):
    from harness.recipe.jobs import Plan
    from harness.recipe.manifest import RunManifest
    from harness.run.status import job_rows

    _, jobs, _ = trained_teacher
    job = _moved(jobs["sct"], tmp_path / "sct-x")
    assert _train_with(monkeypatch, job, {7: term}) is None
    record = store.read_json(job.path / "diverged.json")
    assert (record["step"], record["term"], record["policy"]) == (7, term, "stop")
    assert store.read_json(job.path / "progress.json")["state"] == "diverged"
    manifest = RunManifest(recipe="tiny", source="tiny.yaml", plan=Plan(recipe="tiny", train=[job], evaluate=[]),
                           written="now")
    assert job_rows(manifest)[0]["state"] == f"diverged at step 7 ({term})"
    assert not job.final_checkpoint.exists()


def test_the_skip_policy_counts_skipped_steps_and_gives_up_past_the_limit(trained_teacher, tmp_path, monkeypatch):
    root, _, _ = trained_teacher
    jobs, _ = _jobs(root, "stages.sct.on_nonfinite=skip", "stages.sct.max_skipped_steps=2")
    job = _moved(jobs["sct"], tmp_path / "skip")
    assert _train_with(monkeypatch, job, {5: "loss", 50: "gradient"}) is not None
    final = store.load_checkpoint(job.final_checkpoint)
    assert final["skipped"] == [{"step": 5, "term": "loss"}, {"step": 50, "term": "gradient"}]
    assert all(torch.isfinite(v).all() for v in final["networks"]["net"].values())
    assert store.read_json(job.path / "progress.json")["skipped"] == 2
    job = _moved(job, tmp_path / "too-many")
    assert _train_with(monkeypatch, job, {3: "loss", 4: "loss", 9: "tangent"}) is None
    record = store.read_json(job.path / "diverged.json")
    assert (record["step"], record["term"], record["skipped"]) == (9, "tangent", 3)
    assert "more than max_skipped_steps=2" in record["message"]


def test_a_diverged_run_is_reported_as_diverged_never_with_a_number(tmp_path):
    """A real divergence (sCT at lr 1e30) in a whole recipe run: the teacher and sCD finish, sCT's rows say
    diverged with the step and term, the report shows "diverged" in its FID cell, and a rerun does not retrain."""
    from harness.recipe.manifest import read_manifest
    from harness.report.report import write_report
    from harness.run.runner import run_recipe

    class Quiet:
        def update(self, name, info):
            pass

    path = tiny_recipe(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["stages"]["sct"]["optimizer"]["lr"] = 1.0e30
    raw["evaluation"]["samples_per_class"] = 3
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path)
    rows = run_recipe(recipe, path, tmp_path / "runs", "debug", Quiet())
    sct = [r for r in rows if r["method"] == "sct"]
    assert sct and all(r["diverged"] and np.isnan(r["value"]) for r in sct)
    assert sct[0]["diverged_term"] in ("loss", "tangent", "gradient") and 1 <= sct[0]["diverged_step"] <= 6
    assert all(not r["diverged"] and np.isfinite(r["value"]) for r in rows if r["method"] != "sct")
    write_report(read_manifest(tmp_path / "runs", "tiny"), tmp_path / "runs", tmp_path / "results")
    text = (tmp_path / "results" / "tiny" / "table.md").read_text()
    assert len(re.findall(r"\| sCT .*\| diverged \|", text)) == 2, text
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "store").rglob("*.json")}
    again = run_recipe(recipe, path, tmp_path / "runs", "debug", Quiet())
    assert json.dumps(again) == json.dumps(rows)  # the same rows (NaN included); nothing trained or evaluated again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "store").rglob("*.json")} == stamp


def test_a_full_disk_stops_with_a_clear_error_and_keeps_the_last_checkpoint(trained_teacher, tmp_path, monkeypatch):
    from harness.run import train
    from harness.store import atomic

    _, jobs, _ = trained_teacher
    job = _moved(jobs["sct"], tmp_path / "full")
    real_fsync, real_save = os.fsync, store.save_checkpoint

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    def save(path, state):  # the disk fills up after the first checkpoint
        if state["step"] > 20:
            monkeypatch.setattr(atomic.os, "fsync", full)
        real_save(path, state)

    monkeypatch.setattr(store, "save_checkpoint", save)
    with pytest.raises(store.DiskError, match=r"^no space left on the device writing .*; free space there"):
        train.train_stage(job, threads=1)
    kept = store.checkpoints(job.path)
    assert kept and all(store.checkpoint_complete(p) for p in kept)
    assert not [p for p in job.path.rglob(".*.tmp")]  # no partial file left behind
    assert [int(p.stem.split("-")[1]) for p in kept] == [20]
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    monkeypatch.setattr(store, "save_checkpoint", real_save)
    assert train.train_stage(job, threads=1).endswith("step-00000060.pt")  # space again: it resumes and finishes


def test_an_unwritable_runs_folder_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["run", str(tiny_recipe(tmp_path)), "--executor", "debug", "--runs-dir",
                                      str(blocker / "runs")])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write") and "--runs-dir" in lines[0]


WRITER = """
import sys
from pathlib import Path
from harness import store
run_dir, n = Path(sys.argv[1]), int(sys.argv[2])
for i in range(1, n + 1):
    rows = [{"job": run_dir.name, "metric": "fid", "value": float(k), "nfe": 1, "method": "sct"} for k in range(i)]
    store.write_json(run_dir / "metrics.json", {"key": {}, "rows": rows})
    store.write_json(run_dir / "progress.json", {"state": "evaluating", "step": i})
"""


def test_eight_concurrent_writers_lose_nothing_and_a_reader_never_fails(tmp_path):
    """8 processes (as array tasks) rewrite their metrics and status 150 times each while the report reads the
    store in a loop: every read parses, and at the end every job has all its rows."""
    from harness.report.rows import load_rows

    dirs = [tmp_path / f"sct-{k}" for k in range(8)]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(d), "150"], cwd=ROOT) for d in dirs]
    reads = 0
    while any(w.poll() is None for w in writers):
        frame = load_rows([d / "metrics.json" for d in dirs])  # raises on a half-written file
        assert frame.empty or set(frame.metric) == {"fid"}
        for d in dirs:
            assert store.read_json(d / "progress.json", {}).get("state", "evaluating") == "evaluating"
        reads += 1
    assert all(w.returncode == 0 for w in writers) and reads > 3
    frame = load_rows([d / "metrics.json" for d in dirs])
    assert len(frame) == 8 * 150 and sorted(frame.groupby("job").size().unique()) == [150]
    assert not list(tmp_path.rglob(".*.tmp"))


def test_nothing_is_loaded_in_a_way_that_can_run_code():
    """Checkpoints with weights_only=True, YAML with safe_load, pickles through the arrays-only unpickler, and
    no eval / exec anywhere in the code."""
    unsafe = {r"torch\.load\((?![^)]*weights_only=True)": "torch.load without weights_only=True",
              r"yaml\.(load|unsafe_load|full_load)\(": "yaml loading other than safe_load",
              r"(?<![.\w])(eval|exec)\(": "eval / exec", r"pickle\.loads?\(": "plain pickle loading",
              r"np\.load\([^)]*allow_pickle=True": "numpy pickle loading"}
    found = []
    paths = [*ROOT.glob("harness/**/*.py"), *ROOT.glob("scm/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    assert len(paths) > 60  # every layer of the harness is read, not only its top folder
    for path in paths:
        text = path.read_text()
        for pattern, what in unsafe.items():
            found += [f"{path.name}: {what}" for _ in re.finditer(pattern, text)]
    assert not found, found


def test_sigterm_to_the_launcher_stops_its_local_jobs_with_a_checkpoint(tmp_path):
    """`scm-bench run` killed politely (SIGTERM, as `kill` or a batch system sends): exit 130 and the message, its
    local training job stopped too (not orphaned) with a checkpoint at its step, from which a rerun resumes."""
    path = tiny_recipe(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["stages"]["teacher"].update(steps=5000, checkpoint_every=5000)
    path.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "harness.cli", "run", str(path), "--runs-dir", str(tmp_path / "runs")]
    launcher = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    progress = next(iter((tmp_path / "runs" / "store").glob("diffusion-*")), None)
    deadline = time.time() + 120
    while progress is None or (store.read_json(progress / "progress.json", {}) or {}).get("step", 0) < 5:
        assert launcher.poll() is None and time.time() < deadline, launcher.stderr.read()[-2000:]
        time.sleep(0.5)
        progress = next(iter((tmp_path / "runs" / "store").glob("diffusion-*")), None)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 130 and "run the same command again to resume" in err
    state = store.read_json(progress / "progress.json")
    assert state["state"] == "stopped" and state["step"] >= 5
    assert store.checkpoint_complete(store.checkpoint_path(progress, state["step"]))
    running = subprocess.run(["pgrep", "-f", str(tmp_path / "runs")], capture_output=True, text=True).stdout
    assert running.strip() == "", f"jobs left running: {running}"
