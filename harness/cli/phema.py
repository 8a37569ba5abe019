"""`scm-bench phema`: EDM2's post-hoc EMA, the EMA of any length reconstructed after training."""
from pathlib import Path

import typer

from .common import RUNS, SMOKE, fail, run_of


def phema(recipe: Path = typer.Argument(..., help="Recipe YAML whose run trained the stage."),
          stage: str = typer.Option(..., "--stage", help="The stage (its ema: has post_hoc: snapshots)."),
          sigma_rel: list[float] = typer.Option(..., "--sigma-rel", help="EMA length to reconstruct, in (0, 0.3); "
                                                                         "repeatable."),
          variant: str = typer.Option(None, "--variant", help="Which sweep variant's job, e.g. seed=1 (where the "
                                                              "stage has several)."),
          out: Path = typer.Option(None, "--out", help="Output checkpoint (one --sigma-rel only; default: "
                                                       "JOB/phema/sigma_rel-S.pt)."),
          smoke: bool = SMOKE, runs_dir: Path = RUNS):
    """Reconstruct a stage's EMA of each --sigma-rel from its post-hoc EMA snapshots (EDM2 Sec. 3) and save it as a
    checkpoint: sample or start from it with init: {checkpoint: FILE}."""
    bad = [s for s in sigma_rel if not 0 < s < 0.3]
    if bad:
        fail(f"--sigma-rel {bad[0]:g} is out of range; give a relative EMA length in (0, 0.3), e.g. 0.08")
    if out is not None and len(sigma_rel) > 1:
        fail("--out names one file but several --sigma-rel were given; give one --sigma-rel, or leave --out out")
    manifest = run_of(recipe, runs_dir, smoke)
    from ..tools.phema import stage_job, write_reconstruction

    try:
        job = stage_job(manifest, stage, variant)
        for value in sigma_rel:
            path, rebuilt = write_reconstruction(job, value, out)
            typer.echo(f"wrote {path}: {job.stage}'s EMA sigma_rel={value:g} at step {rebuilt.step} from "
                       f"{len(rebuilt.coefficients)} snapshots (profile fit error {rebuilt.fit_error:.2%})")
    except (ValueError, OSError) as error:
        fail(str(error))
    typer.echo("sample or start from it with init: {checkpoint: FILE}")
