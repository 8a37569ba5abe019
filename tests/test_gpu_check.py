"""`make gpu-check`'s script at toy sizes on the CPU (--cpu-tiny: the same code path, Triton interpreted), so it
cannot rot between the rare sessions that have a GPU; and its one-line refusal where there is none."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-tiny", "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_cpu_tiny_runs_every_part_and_writes_the_page(tiny):
    out, stdout = tiny
    pages, tables = list(out.glob("cpu-tiny-*.md")), list(out.glob("cpu-tiny-*.csv"))
    assert len(pages) == 1 and len(tables) == 1, list(out.iterdir())
    rows = _rows(tables[0])
    statuses = {r["part"]: r["status"] for r in rows if r["status"]}
    assert statuses == dict.fromkeys(["attention", "bench", "training", "tangents", "ddp"], "ok"), stdout
    page = pages[0].read_text()
    for heading in ("## 1. Triton attention", "## 2. `scm-bench bench jvp`", "## 3. sCD training steps",
                    "## 4. Half-precision tangents", "## 5. Data-parallel step"):
        assert heading in page
    assert not list(out.glob(".*.jsonl"))  # the parts' row file is folded into the csv and removed


def test_cpu_tiny_figures_hold_against_their_references(tiny):
    out, _ = tiny
    rows = [r for r in _rows(next(out.glob("cpu-tiny-*.csv"))) if not r["status"]]  # measured rows, not statuses
    attention = [r for r in rows if r["part"] == "attention"]
    assert attention and all(r["accurate"] == "True" for r in attention)
    assert all(float(r["err_ty"]) < 2e-3 for r in attention)  # fp16 kernel vs float64
    training = next(r for r in rows if r["part"] == "training")
    assert int(training["steps"]) >= 10 and float(training["s_per_step"]) > 0
    # on the CPU every op is an aten op, so the plan's model of a step's FLOPs meets the counted ones
    assert abs(float(training["counted_flops_per_step"]) / float(training["plan_flops_per_step"]) - 1) < 0.05
    tangents = [r for r in rows if r["part"] == "tangents"]
    assert len(tangents) == 2 * 2 * 11 and all(r["finite"] == "True" for r in tangents)
    assert max(float(r["relative_error"]) for r in tangents if r["dtype"] == "fp16") < 1e-2
    ddp = next(r for r in rows if r["part"] == "ddp")
    assert ddp["equal"] == "True" and float(ddp["relative_error"]) < 1e-4
    bench = {r["case"]: r for r in rows if r["part"] == "bench"}
    assert float(bench["JVP dual (ours)"]["ms"]) > 0 and float(bench["diffusion step"]["ms"]) > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    assert done.stdout.strip().count("\n") == 0 and "no CUDA GPU" in done.stdout
    assert not out.exists()
