"""Weights hashes of a run's finished training jobs, and its FIDs: what a refactor must leave unchanged.

    python scripts/weights_hashes.py RUNS_DIR RECIPE_NAME

One line per training job of the run's manifest: stage, variant, job id, step, and the SHA-256 (16 hex digits) of
its sampled network's weights and EMA in key order; then its evaluation's FID rows. Bit-identical on one machine;
another CPU gives other low bits, so compare runs made on the same machine.
"""
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import store  # noqa: E402
from harness.recipe.manifest import read_manifest  # noqa: E402


def weights_hash(state: dict) -> str:
    digest = hashlib.sha256()
    for part in ("networks", "ema"):
        for key, tensor in state[part][state["sampled"]].items():
            digest.update(key.encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def main(runs: str, name: str) -> None:
    manifest = read_manifest(Path(runs), name)
    if manifest is None:
        sys.exit(f"error: no run of {name} under {runs}; give the runs folder and the recipe's name")
    for job in manifest.plan.train:
        state = store.load_checkpoint(job.final_checkpoint)
        print(f"{job.stage:10s} {job.variant or '-':30s} {job.id:24s} step {state['step']:6d}  {weights_hash(state)}")
    for job in manifest.plan.evaluate:
        rows = (store.read_json(job.path / "metrics.json") or {}).get("rows", [])
        fids = ", ".join(f"NFE {r['nfe']} {r['value']:.6f}" for r in rows if r["metric"] == "fid")
        print(f"{job.train.stage:10s} {job.variant or '-':30s} FID {fids}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
