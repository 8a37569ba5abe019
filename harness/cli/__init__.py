"""The scm-bench command line (typer). Thin: parse, call one function of a layer below, print. Those layers load
inside the commands, so `scm-bench --help` and a bad option answer at once, without importing torch."""
import typer

from .baselines import baselines_app
from .phema import phema
from .report import report
from .run import cancel, run, status
from .tools import bench_app, findings_app, plan, prepare, refs_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reproduce and benchmark continuous-time consistency models (sCM: TrigFlow, sCT, sCD) and "
                       "your own methods against them.")
app.command()(run)
app.command()(status)
app.command()(cancel)
app.command()(report)
app.command()(plan)
app.command()(phema)
app.command(help="Prepare a data set from your own copy: cifar10 (the python archive), imagenet64 or "
                 "imagenet512-latents (an ImageNet training folder; latents with the SD VAE).")(prepare)
app.add_typer(refs_app, name="refs")
app.add_typer(bench_app, name="bench")
app.add_typer(findings_app, name="findings")
app.add_typer(baselines_app, name="baselines")

__all__ = ["app"]
