"""`scm-bench findings tangent-terms RECIPE`: sCM Fig. 4, the two parts of df/dt along t for trained diffusion models.

With f(x_t, t) = cos t x_t - sin t sd F(x_t / sd, t), the derivative's network part is sd sin t dF/dt, and
dF/dt = J_x F (dx_t/dt) / sd + dF/dt|_x. So the two terms are

    x-part: sd sin t J_x F (dx_t/dt)       (J_x with respect to x_t; dx_t/dt = sd F(x_t / sd, t), the model's
                                            own PF-ODE velocity)
    t-part: sd sin t dF/dt|_x              (through c_noise(t) and the time embedding)

each measured as the RMS over pixels, averaged over real images x0 with noise z, on a grid of t up to TrigFlow's
t_max. EDM's c_noise = log(sd tan t) / 4 has dc_noise/dt = 1 / (4 sin t cos t), unbounded at pi/2; a Fourier
embedding of scale s multiplies the embedding's derivative by 2 pi s. Both JVPs go through torch.func.jvp.
"""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .. import store
from ..compute import read_network
from ..data import load_data
from ..recipe.jobs import TrainJob
from ..recipe.manifest import RunManifest
from ..report.figures import save_figure

T_MAX = math.atan(80.0 / 0.5)  # sigma_max 80 at sd 0.5: t_max = 1.5645 (TrigFlow)
SAMPLES = 256


def time_grid() -> np.ndarray:
    """Evenly over (0, 1.5) and then closer and closer to t_max, where the terms may blow up."""
    near = T_MAX - np.geomspace(T_MAX - 1.5, 1e-3, 12)
    return np.concatenate([np.linspace(0.02, 1.45, 24), near])


def df_dt_terms(net, x_t, t, labels, sigma_data: float):
    """(x-part, t-part) of df/dt at (x_t, t) per element: sd sin t J_x F dx_t/dt and sd sin t dF/dt|_x."""
    def F(x, time):
        return net(x, time, labels)

    with torch.no_grad():
        velocity = sigma_data * F(x_t / sigma_data, t)
        # J_{x/sd} F (dx_t/dt / sd) = J_{x_t} F dx_t/dt
        _, along_x = torch.func.jvp(F, (x_t / sigma_data, t), (velocity / sigma_data, torch.zeros_like(t)))
        _, along_t = torch.func.jvp(F, (x_t / sigma_data, t), (torch.zeros_like(x_t), torch.ones_like(t)))
    scale = sigma_data * torch.sin(t).view(-1, *[1] * (x_t.ndim - 1))
    return scale * along_x, scale * along_t


def terms_along_t(net, x0, labels, sigma_data: float, times, seed: int = 0) -> list[dict]:
    """RMS of the x-part and t-part of df/dt at each t (mean over the images; the same z for every t)."""
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)) * sigma_data
    rows = []
    for t in times:
        x_t = math.cos(t) * x0 + math.sin(t) * z
        x_part, t_part = df_dt_terms(net, x_t, torch.full((len(x0),), float(t)), labels, sigma_data)
        rms = lambda v: float(v.flatten(1).pow(2).mean(1).sqrt().mean())  # noqa: E731
        rows.append({"t": float(t), "x_part": rms(x_part), "t_part": rms(t_part)})
    return rows


def _label(job: TrainJob) -> str:
    net = job.network
    c_noise = "EDM c_noise log(sd tan t)" if net.c_noise == "log-sigma" else "TrigFlow c_noise = t"
    embedding = f"Fourier scale {net.fourier_scale:g}" if net.time_embedding == "fourier" else "positional"
    return f"{c_noise}, {embedding}"


def measured_jobs(manifest: RunManifest, stages: list[str]) -> list[TrainJob]:
    """The run's training jobs of these stages (default: every stage that starts fresh, e.g. the teachers)."""
    jobs = [job for job in manifest.plan.train if job.recipe == manifest.recipe
            and (job.stage in stages if stages else job.init is None and job.teacher is None)]
    if not jobs:
        raise ValueError(f"{manifest.recipe} has no training job of stage(s) {', '.join(stages) or '(fresh)'}; "
                         "name a stage of the recipe with --stage")
    return jobs


def measure(manifest: RunManifest, samples: int = SAMPLES, stages: list[str] = ()) -> pd.DataFrame:
    """The terms of every measured job of the run that has finished training (see measured_jobs)."""
    jobs = measured_jobs(manifest, list(stages))
    data = load_data(jobs[0].data)
    pick = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))[:samples]
    x0 = data.images[pick].float()
    labels = data.labels[pick] if data.labels is not None else None
    rows = []
    for job in jobs:
        if not store.checkpoint_complete(job.final_checkpoint):
            raise FileNotFoundError(f"{job.id} ({job.label}) has not finished training; run scm-bench run for the "
                                    "recipe first")
        net = read_network(job, job, data.shape, data.num_classes).cpu()
        for row in terms_along_t(net, x0, labels, job.sigma_data, time_grid()):
            rows.append({"formulation": _label(job), "variant": job.variant, "job": job.id, **row})
    return pd.DataFrame(rows)


def figure(frame, title: str):
    """Two panels (x-part, t-part) against t, log scale, one line style and marker per formulation."""
    fig = Figure(figsize=(9.5, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    styles = [("o", "-", "black"), ("s", "--", "#0072B2"), ("^", ":", "#D55E00"), ("D", "-.", "#009E73")]
    for (name, part), marker in zip(frame.groupby("formulation", sort=False), styles):
        for ax, column in zip(axes, ("x_part", "t_part")):
            ax.plot(part.t, part[column], marker=marker[0], linestyle=marker[1], color=marker[2], markersize=3.5,
                    linewidth=1.2, label=name)
    for ax, what in zip(axes, ("x-part  sd sin t J_x F dx_t/dt", "t-part  sd sin t dF/dt|_x")):
        ax.set(yscale="log", xlabel="t", title=what)
        ax.axvline(math.pi / 2, color="0.6", linewidth=0.8)
        ax.grid(True, which="both", linewidth=0.3, color="0.85")
    axes[0].set_ylabel("RMS over pixels (mean over images)")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{title}: the two terms of df/dt against t (grey line: pi/2)", fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.84, wspace=0.06)
    return fig


def write(manifest: RunManifest, results_root: Path, samples: int = SAMPLES, stages: list[str] = ()) -> list[Path]:
    frame = measure(manifest, samples, stages)
    out = Path(results_root) / manifest.recipe
    store.write_bytes_atomic(out / "tangent_terms.csv", frame.to_csv(index=False, float_format="%.6g").encode())
    fig = figure(frame, manifest.recipe)
    paths = [out / "tangent_terms.csv"]
    for suffix in (".png", ".pdf"):
        save_figure(fig, out / f"tangent_terms{suffix}")
        paths.append(out / f"tangent_terms{suffix}")
    return paths
