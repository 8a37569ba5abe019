"""The thin harness path: recipe validation, a short real training run, and the whole pipeline at tiny scale."""
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.compute.machine import machine
from harness.recipe.load import load_recipe
from harness.recipe.text import RecipeError
from helpers import ROOT, evaluation_of, stage_job, tiny_recipe  # noqa: F401 - ROOT, tiny_recipe: used by others


def test_shipped_recipes_validate():
    for path in (ROOT / "recipes").glob("*.yaml"):
        assert load_recipe(path).name == path.stem


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["stages"]["teacher"].update(stpes=10), "stages.teacher.stpes: unknown field (did you mean steps?)"),
    (lambda r: r.update(netwrok={}), "netwrok: unknown field"),
    (lambda r: r["stages"]["teacher"].update(batch_size=0), "stages.teacher.batch_size"),
    (lambda r: r["network"].update(name="resnet"), "network.name"),
    (lambda r: r.update(name="../escape"), "name"),
    (lambda r: r["stages"]["sct"]["sampling"].update(steps=[0]), "stages.sct.sampling.steps"),
    (lambda r: r["network"].update(channels=50), "attention heads"),
    (lambda r: r["network"].update(size="S"), "network.size applies to unet-edm2"),
    (lambda r: r["network"].update(modulation="edm"), "network.modulation edm is not one of toy-unet's (double-norm)"),
    (lambda r: r["network"].update(c_noise="sigma"), "network.c_noise"),
    (lambda r: r["stages"]["sct"]["tangent"].update(jvp_method="forward-ad"), "stages.sct.tangent.jvp_method"),
    (lambda r: (r["stages"]["teacher"].update(label_dropout=0.0), r["stages"]["teacher"]["sampling"].update(
        guidance=1.5)), "stages.teacher.sampling.guidance: classifier-free guidance 1.5 needs a network trained with "
                        "label dropout"),
    (lambda r: (r["stages"]["teacher"].update(label_dropout=0.0), r["stages"]["scd"].update(guidance=1.5)),
     "stages.scd: classifier-free guidance 1.5 of its teacher needs a teacher trained with label dropout"),
    (lambda r: r["stages"]["scd"].pop("teacher"), "stages.scd.teacher: method scd reads a teacher but none is given"),
    (lambda r: r["stages"]["sct"].update(teacher="teacher"), "stages.sct.teacher: method sct does not read a teacher"),
    (lambda r: r["stages"]["sct"].update(init="teachr"), "stages.sct.init: 'teachr' is not a stage of this recipe"),
    (lambda r: r["stages"]["teacher"].update(init="sct"), "stages: teacher -> sct -> teacher: init and teacher "
                                                          "references form a cycle"),
    (lambda r: r["stages"]["sct"].update(method="dmd"), "stages.sct.method: 'dmd' is not a known method"),
    (lambda r: r["stages"]["teacher"].update(tangent={"warmup_steps": 0}), "stages.teacher.tangent: unknown field"),
    (lambda r: r["stages"]["sct"]["sampling"].update(guidance=[1.5]),
     "stages.sct.sampling.guidance: [1.5]: the network of sct has no guidance input"),
    (lambda r: r["stages"].update({"a/b": r["stages"].pop("scd")}), "stage name 'a/b'"),
])
def test_bad_recipe_names_the_field(tmp_path, edit, expected):
    recipe = yaml.safe_load((ROOT / "recipes" / "digits.yaml").read_text())
    edit(recipe)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert str(path) in message and expected in message and "\n" not in message


@pytest.mark.parametrize("network", [
    {"name": "unet-edm2", "channels": 16, "channel_mult": [1, 2], "blocks_per_level": 1, "attn_resolutions": [4]},
    {"name": "ddpmpp", "channels": 16, "channel_mult": [1, 2], "blocks_per_level": 1, "attn_resolutions": [4],
     "time_embedding": "fourier", "fourier_scale": 0.5},
])
def test_paper_networks_train_from_a_recipe(tmp_path, network):
    """The registry's paper networks build from recipe fields and train; EDM2's weights are renormalized after
    each optimizer step (forced weight normalization), never inside forward."""
    import torch
    from harness.run.train import train_stage

    job = stage_job(tiny_recipe(tmp_path, network=network), tmp_path / "runs", "teacher",
                    ["stages.teacher.steps=3", "stages.teacher.batch_size=8"])
    state = torch.load(train_stage(job, threads=1), weights_only=True)
    assert state["step"] == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in state["history"])
    if network["name"] == "unet-edm2":
        weights = [v for k, v in state["networks"]["net"].items() if k.endswith("weight") and v.dim() >= 2]
        rms = torch.stack([w.flatten(1).square().mean(1).sqrt().mean() for w in weights])
        torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_stages_train(tmp_path, precision):
    """Autocast around the losses (forward, the tangent pass, sCD's teacher); fp16 with loss scaling, whose state is
    checkpointed. A few steps of teacher then sCD stay finite."""
    import torch
    from harness.run.train import train_stage

    path = tiny_recipe(tmp_path)
    overrides = [f"stages.{stage}.{key}" for stage in ("teacher", "scd")
                 for key in ("steps=3", "batch_size=8", f"precision={precision}")]
    for stage in ("teacher", "scd"):
        state = torch.load(train_stage(stage_job(path, tmp_path / "runs", stage, overrides), threads=1),
                           weights_only=True)
        assert state["step"] == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in state["history"])
        assert bool(state["scaler"]) == (precision == "fp16")


@pytest.mark.parametrize("text, expected", [("", "YAML mapping"), ("a: [1, 2", "not valid YAML"),
                                            ("- 1\n- 2\n", "YAML mapping")])
def test_empty_or_broken_yaml(tmp_path, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=expected):
        load_recipe(path)


def test_bench_jvp_command_runs_and_writes_every_case(tmp_path):
    """A smoke run of `scm-bench bench jvp` (tiny batch, one round): every case timed and measured, ratios > 0."""
    import pandas as pd

    csv = tmp_path / "bench.csv"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "bench", "jvp", "-n", "toy", "--batch", "4",
                           "--repeats", "1", "--threads", "1", "--csv", str(csv)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.read_csv(csv)
    assert len(rows) == 8 and (rows.ms > 0).all() and (rows.peak_mb > 0).all()
    assert rows.set_index("case").loc["JVP dual (ours)", "target"] == 2.0
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "bench", "jvp", "-n", "huge"], capture_output=True,
                         text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown --network 'huge'" in bad.stderr


def test_set_overrides_fields_and_names_bad_ones(tmp_path):
    path = ROOT / "recipes" / "digits.yaml"
    recipe = load_recipe(path, ["stages.teacher.steps=7", "stages.sct.optimizer.lr=5e-5",
                                "network.attn_resolutions=[2, 4]", "resources.partition=gpu",
                                "stages.sct.tangent.warmup_steps=3"])
    assert recipe.stages["teacher"].steps == 7 and recipe.stages["sct"].optimizer.lr == 5e-5
    assert recipe.stages["sct"].settings.tangent.warmup_steps == 3
    assert recipe.network.attn_resolutions == [2, 4] and recipe.resources.partition == "gpu"
    for bad, expected in [("stages.teacher.stpes=3", "stages.teacher.stpes: unknown field"),
                          ("steps", "expected key=value"), ("seed.x=1", "seed is not a mapping"),
                          ("stages.teacher.steps=0", "stages.teacher.steps")]:
        with pytest.raises(RecipeError, match=expected):
            load_recipe(path, [bad])
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--set", "seed=[oops",
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "not valid YAML" in done.stderr and not (tmp_path / "runs").exists()


def test_cli_slurm_without_sbatch_says_how_to_get_one(tmp_path):
    import os

    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no sbatch on this PATH
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(ROOT / "recipes" / "digits.yaml"),
                           "--executor", "slurm", "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 2 and "sbatch is not on PATH" in done.stderr and "slurm-local.sh" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_bad_recipe_exits_2_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nstages: {teacher: {method: diffusion, steps: 5, lernrate: 1}}\n")
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert "stages.teacher.lernrate: unknown field" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_short_digits_training_lowers_loss(tmp_path):
    """A real teacher run on the digits: the loss falls and stays finite; the final checkpoint exists."""
    import torch
    from harness.run.train import train_stage

    job = stage_job(tiny_recipe(tmp_path), tmp_path / "runs", "teacher",
                    ["stages.teacher.steps=150", "stages.teacher.batch_size=64", "stages.teacher.checkpoint_every=50"])
    history = torch.load(train_stage(job, threads=2), weights_only=True)["history"]
    losses = [h["mse"] for h in history]
    assert all(map(lambda v: v == v and abs(v) < 1e6, losses))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


class Quiet:
    def update(self, name, info):
        pass


def test_pipeline_end_to_end_and_resume(tmp_path):
    """teacher -> sCT, sCD -> evaluation -> report; a second run reuses every finished job; the report reads
    exactly what the run's manifest lists."""
    from harness.recipe.manifest import read_manifest
    from harness.report.report import write_report
    from harness.run.runner import run_recipe
    from harness.run.status import job_rows

    path = tiny_recipe(tmp_path)
    recipe = load_recipe(path)
    rows = run_recipe(recipe, path, tmp_path / "runs", "local", Quiet())
    assert sorted((r["stage"], r["method"], r["nfe"]) for r in rows if r["metric"] == "fid") == [
        ("scd", "scd", 1), ("scd", "scd", 2), ("sct", "sct", 1), ("sct", "sct", 2), ("teacher", "diffusion", 7)]
    values = {metric: [r["value"] for r in rows if r["metric"] == metric]
              for metric in ("fid", "kid", "class_accuracy")}
    assert all(len(v) == 5 for v in values.values())  # one per setting, each metric
    assert all(v > 0 for v in values["fid"]) and all(0 <= v <= 1 for v in values["class_accuracy"])
    here = machine()  # where it trained and evaluated: rows from another CPU are told apart
    assert all(r["machine"] == r["train_machine"] == here["machine"] != "" and r["threads"] >= 1 and
               r["train_threads"] >= 1 and r["torch"] == r["train_torch"] == here["torch"] for r in rows)
    store_root = tmp_path / "runs" / "store"
    mtimes = {p: p.stat().st_mtime for p in store_root.glob("*/evaluations/*/metrics.json")}
    assert len(mtimes) == 3 and len(list(store_root.glob("*/checkpoints"))) == 3
    again = run_recipe(recipe, path, tmp_path / "runs", "local", Quiet())
    assert again == rows and all(p.stat().st_mtime == t for p, t in mtimes.items())
    manifest = read_manifest(tmp_path / "runs", "tiny")
    jobs = job_rows(manifest)
    assert sorted((r["stage"], r["work"]) for r in jobs) == sorted(
        (stage, work) for stage in ("teacher", "sct", "scd") for work in ("train", "evaluate"))
    assert all(r["state"] in ("trained", "finished") and r["executor"] == "local" and r["job_id"] for r in jobs)
    table = write_report(manifest, tmp_path / "runs", tmp_path / "results")
    assert list(table.stage) == ["teacher", "sct", "sct", "scd", "scd"]
    assert (tmp_path / "results" / "tiny" / "table.md").read_text().count("[samples](samples/") == 5
    assert table.fid_ratio.iloc[0] == 1.0


def test_cli_help_does_not_import_torch():
    code = "import sys, harness.cli; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
    done = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "run" in done.stdout and "report" in done.stdout


def test_the_report_does_not_import_torch():
    """`scm-bench report` reads what a run evaluated through the store's view of its manifest: no method, no torch
    (a second and more at every report otherwise)."""
    code = ("import sys, harness.report.report, harness.store.runs, harness.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def _short_job(tmp_path, stage="teacher", steps=6):
    return stage_job(tiny_recipe(tmp_path), tmp_path / "runs", stage,
                     [f"stages.{stage}.steps={steps}", f"stages.{stage}.checkpoint_every=4"])


def test_job_failure_reports_the_jobs_own_error(tmp_path):
    """submitit wraps a job's exception with log paths; the user sees the exception line."""
    import submitit
    from harness.data.images import load_image_folder
    from harness.run.submission import job_error

    job = submitit.LocalExecutor(folder=str(tmp_path)).submit(load_image_folder, str(tmp_path / "nowhere"))
    with pytest.raises(Exception) as error:
        job.result()
    assert job_error(error.value) == (f"FileNotFoundError: data folder {tmp_path / 'nowhere'} not found; "
                                      "point data.path at a folder of PNG images")


def test_cli_missing_data_folder_is_caught_before_submitting(tmp_path):
    path = tiny_recipe(tmp_path, data={"name": "folder", "path": str(tmp_path / "nowhere")})
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "data folder" in done.stderr and "nowhere" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_student_resume_is_exact(tmp_path):
    """sCT and sCD (JVP, RNG replay, tangent warmup, teacher reload) resume to the same weights as an unbroken run."""
    import torch
    from harness import store
    from harness.run.train import train_stage

    for stage in ("sct", "scd"):
        runs = []
        for name in ("a", "b"):
            path = tiny_recipe(tmp_path / f"{stage}-{name}")
            overrides = [f"stages.{stage}.checkpoint_every=4"]
            train_stage(stage_job(path, tmp_path / f"{stage}-{name}" / "runs", "teacher", overrides), threads=1)
            job = stage_job(path, tmp_path / f"{stage}-{name}" / "runs", stage, overrides)
            runs.append((job, torch.load(train_stage(job, threads=1), weights_only=True)))
        job, unbroken = runs[1]
        store.checkpoint_path(job.path, 6).unlink()
        resumed = torch.load(train_stage(job, threads=1), weights_only=True)
        for key in ("networks", "ema", "modules"):
            for part in unbroken[key]:
                assert all(torch.equal(runs[0][1][key][part][k], resumed[key][part][k]) for k in unbroken[key][part]), \
                    (stage, key)


def test_training_is_seeded_and_resume_is_exact(tmp_path):
    """Two runs give identical weights; a run stopped after its step-4 checkpoint and resumed ends identical too."""
    import torch
    from harness import store
    from harness.run.train import train_stage

    first = torch.load(train_stage(_short_job(tmp_path / "a"), threads=1), weights_only=True)
    second_job = _short_job(tmp_path / "b")
    second = torch.load(train_stage(second_job, threads=1), weights_only=True)
    for key in ("networks", "ema"):
        assert all(torch.equal(first[key]["net"][k], second[key]["net"][k]) for k in first[key]["net"])
    store.checkpoint_path(second_job.path, 6).unlink()  # as if killed between steps 4 and 6
    resumed = torch.load(train_stage(second_job, threads=1), weights_only=True)
    for key in ("networks", "ema", "modules"):
        for part in first[key]:
            assert all(torch.equal(first[key][part][k], resumed[key][part][k]) for k in first[key][part])


def test_folder_dataset_with_labels(tmp_path):
    """A folder of same-size PNGs with a labels file loads to [-1, 1]; a mismatched labels file is a clear error."""
    import numpy as np
    from PIL import Image
    from harness.data.images import load_image_folder

    pixels = np.random.default_rng(0).integers(0, 256, (5, 12, 12), dtype=np.uint8)
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(tmp_path / f"img{i}.png")
    (tmp_path / "labels.txt").write_text("0\n2\n1\n2\n0\n")
    data = load_image_folder(str(tmp_path), str(tmp_path / "labels.txt"))
    assert data.images.shape == (5, 1, 12, 12) and data.num_classes == 3
    assert data.images.min() >= -1 and data.images.max() <= 1
    assert np.allclose((data.images[:, 0].numpy() + 1) * 127.5, pixels)
    assert data.labels.tolist() == [0, 2, 1, 2, 0]
    (tmp_path / "short.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match="has 2 lines but the folder has 5 images"):
        load_image_folder(str(tmp_path), str(tmp_path / "short.txt"))
    Image.fromarray(pixels[0][:8, :8]).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="differ in size"):
        load_image_folder(str(tmp_path))


def test_a_second_copy_of_a_running_job_waits_for_it_and_then_finds_the_work_done(tmp_path):
    """As after a rerun whose earlier launcher was killed while its job went on: the copy waits for the lock,
    then resumes (here: trains, since the holder wrote nothing); past its wait limit it stops with a clear error."""
    import fcntl
    import threading
    from harness.run.entry import Task, run_task

    job = _short_job(tmp_path)
    job.path.mkdir(parents=True)
    with open(job.path / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match="still running in another process after 0.5 s"):
            run_task(Task("train", job, lock_wait_s=0.5))
        assert not (job.path / "checkpoints").exists()
        threading.Timer(1.5, lambda: fcntl.flock(held, fcntl.LOCK_UN)).start()
        started = time.time()
        final = run_task(Task("train", job))
    assert time.time() - started > 1.4 and Path(final).is_file()
