"""The training job of one stage (teacher diffusion, sCT or sCD): resumable, checkpointed, reporting progress.

It runs in a submitit worker; the launcher reads progress.json to draw the progress bar.
"""
import time
from pathlib import Path

from . import store
from .recipe import Recipe

PROGRESS_EVERY_S = 1.0


def build_model(recipe: Recipe, data_shape, num_classes: int, stage=None):
    """The recipe's network for this data, with the stage's dropout settings."""
    from scm.nets import build_network

    net = recipe.network
    channels, resolution = data_shape[0], data_shape[-1]
    settings = dict(num_classes=num_classes, label_dropout=stage.label_dropout if stage else 0.0)
    if net.name == "toy-unet":
        settings.update(resolution=resolution, in_channels=channels, channels=net.channels,
                        channel_mult=tuple(net.channel_mult), blocks_per_level=net.blocks_per_level,
                        attn_resolutions=tuple(net.attn_resolutions), dropout=stage.dropout if stage else 0.0)
    else:
        settings.update(dim=int(channels * data_shape[1] * data_shape[2]) if len(data_shape) == 3 else channels,
                        hidden=net.channels, depth=net.blocks_per_level)
    return build_network(net.name, **settings)


def load_ema_network(recipe: Recipe, checkpoint: Path, data_shape, num_classes: int):
    """The EMA weights of a finished stage, in eval mode."""
    net = build_model(recipe, data_shape, num_classes)
    net.load_state_dict(store.load_checkpoint(checkpoint)["ema"])
    return net.eval().requires_grad_(False)


def learning_rate(opt_config, step: int) -> float:
    """EDM2: lr_ref / sqrt(max(step / t_ref, 1)) with a linear ramp-up; or constant."""
    lr = opt_config.lr
    if opt_config.schedule == "inverse-sqrt":
        lr /= max(step / opt_config.ref_steps, 1.0) ** 0.5
    if opt_config.rampup_steps > 0:
        lr *= min(step / opt_config.rampup_steps, 1.0)
    return lr


def _optimizer(params, config):
    import torch

    cls = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}[config.name]
    return cls(params, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


def _ema(net, config, batch_size):
    from scm.ema import HalfLifeEMA, PowerEMA

    if config.kind == "power":
        return PowerEMA(net, config.sigma_rel)
    return HalfLifeEMA(net, config.halflife_images, batch_size)


def train_stage(job: dict) -> str:
    """Train one stage to its last step (resuming from the newest checkpoint) and return that checkpoint."""
    import torch
    from scm import TangentSettings, consistency_loss, diffusion_loss
    from scm.weighting import AdaptiveWeight
    from .data import load_data

    torch.set_num_threads(job["threads"])
    recipe, method, run_dir = Recipe.model_validate(job["recipe"]), job["method"], Path(job["run_dir"])
    stage = recipe.stage(method)
    final = store.checkpoint_path(run_dir, stage.steps)
    if final.is_file():
        return str(final)

    torch.manual_seed(recipe.seed)
    data = load_data(recipe.data)
    net = build_model(recipe, data.shape, data.num_classes, stage).train()
    weight = AdaptiveWeight()
    teacher = None
    if job.get("init"):  # sCT and sCD start from the teacher's EMA weights (Sec. 5)
        net.load_state_dict(store.load_checkpoint(job["init"])["ema"])
    if method == "scd":
        teacher = load_ema_network(recipe, job["init"], data.shape, data.num_classes)
    optimizer = _optimizer(list(net.parameters()) + list(weight.parameters()), stage.optimizer)
    ema = _ema(net, stage.ema, stage.batch_size)
    data_rng = torch.Generator().manual_seed(recipe.seed + 1)
    noise_rng = torch.Generator().manual_seed(recipe.seed + 2)
    step, elapsed, history = 0, 0.0, []

    saved = store.checkpoints(run_dir)
    if saved:  # resume: every piece of state that the next step depends on
        state = store.load_checkpoint(saved[-1])
        net.load_state_dict(state["net"])
        weight.load_state_dict(state["weight"])
        optimizer.load_state_dict(state["optimizer"])
        ema.ema.load_state_dict(state["ema"])
        data_rng.set_state(state["data_rng"])
        noise_rng.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]

    def checkpoint():
        store.save_checkpoint(store.checkpoint_path(run_dir, step), {
            "step": step, "net": net.state_dict(), "weight": weight.state_dict(),
            "optimizer": optimizer.state_dict(), "ema": ema.ema.state_dict(), "data_rng": data_rng.get_state(),
            "noise_rng": noise_rng.get_state(), "torch_rng": torch.get_rng_state(), "elapsed": elapsed,
            "history": history})

    tangent = TangentSettings(**stage.tangent.model_dump())
    window, last_report, start = [], time.time(), time.time() - elapsed
    while step < stage.steps:
        index = torch.randint(len(data.images), (stage.batch_size,), generator=data_rng)
        x0 = data.images[index]
        labels = data.labels[index] if data.labels is not None else None
        if method == "teacher":
            loss, diag = diffusion_loss(net, weight, x0, labels, stage.p_mean, stage.p_std, recipe.sigma_data,
                                        noise_rng)
        else:
            loss, diag = consistency_loss(net, weight, x0, labels, step, stage.p_mean, stage.p_std, tangent,
                                          teacher, stage.guidance, recipe.sigma_data, noise_rng)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{method}: non-finite loss at step {step + 1} ({diag})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(stage.optimizer, step)
        optimizer.step()
        ema.update(net, step)
        window.append({k: float(v) for k, v in diag.items()})
        elapsed = time.time() - start

        if time.time() - last_report > PROGRESS_EVERY_S or step == stage.steps:
            mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            history.append({"step": step, **mean})
            store.write_json(run_dir / "progress.json", {
                "state": "running", "step": step, "total": stage.steps, "loss": mean["loss"],
                "it_s": len(window) / max(time.time() - last_report, 1e-9), "elapsed": elapsed})
            window, last_report = [], time.time()
        if step % stage.checkpoint_every == 0 or step == stage.steps:
            checkpoint()
    store.write_json(run_dir / "progress.json", {"state": "trained", "step": step, "total": stage.steps,
                                                 "loss": history[-1]["loss"], "elapsed": elapsed,
                                                 "it_s": stage.steps / max(elapsed, 1e-9)})
    return str(final)
