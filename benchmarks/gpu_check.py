"""`make gpu-check`: everything of the paper-scale path that needs a GPU, as one command that fits a short lease.

In order of value, each part in a process of its own with its own time limit (a slow part cannot eat the rest):
  attention  the Triton attention forward+JVP kernel against float64 (fp16, bf16; d 64, 128; L 256..8192 and one L
             that is not a multiple of any block), then time and peak memory against torch.func.jvp of math
             attention and against SDPA's forward alone, beside the public anchor
  bench      `scm-bench bench jvp` on EDM2-S and EDM2-XXL at ImageNet 512 latent size (4x64x64), bf16 autocast
  training   50 real sCD steps of EDM2-S (table2_scd.yaml under --set, synthetic latents) through the training
             worker's own step: time, FLOPs and peak memory against `scm-bench plan`'s figures for the same job
  tangents   fp16 / bf16 tangents of EDM2-S at real size across t in [0, t_max] against float32
  ddp        with two GPUs or more: a 2-rank nccl step's gradient against one process's
It writes results/gpu/<card>-<date>.md and .csv and prints the summary. Without a GPU it says so and writes nothing;
--cpu-tiny runs the same code at toy sizes on the CPU (Triton under its interpreter; the test suite runs it).
"""
import argparse
import csv
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing it (a GPU machine's own python)

from gpu_check_parts import PARTS, Context  # noqa: E402  (after the path)
from gpu_check_report import render, summary  # noqa: E402
LIMITS_S = {"attention": 170, "bench": 100, "training": 80, "tangents": 35, "ddp": 20}  # on a GPU; under 7 min
TINY_LIMITS_S = {"attention": 30, "bench": 30, "training": 30, "tangents": 20, "ddp": 30}


def run_part(name: str, rows: Path, tiny: bool, limit: float, fused: bool = True) -> dict:
    """One part in a child process; what it emitted before a failure or its limit is kept. `fused` False turns the
    Triton attention kernel off (after the attention part failed, so the later parts still measure)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", **({} if fused else {"SCM_FUSED_ATTENTION": "0"})}
    if tiny:
        env["TRITON_INTERPRET"] = "1"
    command = [sys.executable, __file__, "--run-part", name, "--rows", str(rows), "--seconds", str(limit)]
    start = time.time()
    try:
        done = subprocess.run(command + (["--cpu-tiny"] if tiny else []), env=env, timeout=limit + 15,
                              capture_output=True, text=True)
        status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode}): {_last_line(done.stderr)}"
        log = done.stdout + done.stderr
    except subprocess.TimeoutExpired as stopped:
        status, log = f"stopped at its limit of {limit:.0f} s", _text(stopped.stdout) + _text(stopped.stderr)
    return {"part": name, "status": status, "seconds": round(time.time() - start, 1), "log": log}


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(rows)


def card_name(tiny: bool) -> str:
    return "cpu-tiny" if tiny else torch.cuda.get_device_name()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-tiny", action="store_true", help="toy sizes on the CPU (Triton interpreted)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu", help="folder of the .md and .csv")
    parser.add_argument("--parts", nargs="+", default=list(LIMITS_S), choices=list(LIMITS_S))
    parser.add_argument("--budget-s", type=float, default=480, help="all parts together (default 8 min)")
    parser.add_argument("--run-part", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_part:
        PARTS[args.run_part](Context(args.rows, args.cpu_tiny, args.seconds))
        return 0
    if not args.cpu_tiny and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine; nothing was run or written (--cpu-tiny runs the same code at "
              "toy sizes on the CPU)")
        return 0
    return check(args)


def check(args) -> int:
    card = card_name(args.cpu_tiny)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    stem = f"{re.sub(r'[^A-Za-z0-9]+', '-', card).strip('-').lower()}-{stamp}"
    limits = TINY_LIMITS_S if args.cpu_tiny else LIMITS_S
    deadline = time.time() + args.budget_s
    rows_file = args.out / f".{stem}.rows.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    rows_file.unlink(missing_ok=True)
    statuses = []
    for name in args.parts:
        limit = min(limits[name], deadline - time.time())
        if limit < 5:
            statuses.append({"part": name, "status": "not run: the budget was spent", "seconds": 0, "log": ""})
            continue
        print(f"gpu-check: {name} (limit {limit:.0f} s)", flush=True)
        fused = not any(s["status"].startswith("failed") for s in statuses if s["part"] == "attention")
        statuses.append(run_part(name, rows_file, args.cpu_tiny, limit, fused))
        if not fused:
            statuses[-1]["status"] += " (Triton attention off: SCM_FUSED_ATTENTION=0)"
        print(f"gpu-check: {name}: {statuses[-1]['status']} in {statuses[-1]['seconds']} s", flush=True)
        if not statuses[-1]["status"].startswith("ok"):
            print(statuses[-1]["log"][-3000:], flush=True)
    rows = read_rows(rows_file)
    rows_file.unlink(missing_ok=True)
    environment = environment_line(card)
    write_csv(rows + [{"part": s["part"], "status": s["status"], "seconds": s["seconds"]} for s in statuses],
              args.out / f"{stem}.csv")
    (args.out / f"{stem}.md").write_text(render(card, stamp, environment, rows, statuses))
    print(summary(rows, statuses))
    print(f"wrote {args.out / stem}.md and .csv")
    return 0


def environment_line(card: str) -> str:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return (f"{card}; torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton_version}, "
            f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    sys.exit(main())
