"""The training worker: one stage of one variant, whatever its method, resumable, checkpointed, reporting progress.

It runs in a submitit task; the launcher reads progress.json to draw the progress bar. The method supplies the
draws and the loss of a batch; this loop owns the rest: the data order, ranks and gradient accumulation, mixed
precision, the optimizer and its schedule, EMA, checkpoints, the non-finite policy and a polite stop.
"""
import math
import sys
import time

import torch

from scm.methods import Networks

from .. import store
from ..compute import (any_rank, device, finish, init_ranks, load_start, machine, mean_over_ranks, read_network,
                       sum_gradients, training_network)
from ..compute.posthoc import SNAPSHOTS, save_snapshot, snapshot_due
from ..data import load_data
from ..recipe.jobs import TrainJob
from .scalars import TrainingLog
from .state import TrainState, learning_rate
from .stopping import StopRequests

PROGRESS_EVERY_S = 1.0


def build_training(job: TrainJob):
    """(method, data, state) of a job, resumed from its newest intact checkpoint. The order of construction is
    fixed (networks, their start weights, the teacher, the method's modules): each draws from torch's generator."""
    method = job.method()
    torch.manual_seed(job.seed)
    data = load_data(job.data, draw_latents=True).to(device())
    trained = {}
    for spec in method.networks:
        net = training_network(job, data.shape, data.num_classes).train()
        start = job.init if spec.start == "init" else job.teacher
        if start is not None:  # a student starts from its init's (or teacher's) EMA weights (sCM Sec. 5)
            load_start(net, start)
        trained[spec.role] = net.to(device())
    teacher = read_network(job.teacher, job, data.shape, data.num_classes) if method.reads_teacher else None
    modules = {name: module.to(device()) for name, module in method.auxiliary_modules().items()}
    state = TrainState(job.seed, job.spec, Networks(trained, modules, teacher))
    saved = store.newest_checkpoint(job.path)  # damaged ones are passed over, with a warning naming them
    if saved:
        state.load_state_dict(saved[1])
    return method, data, state


def nonfinite_term(loss, diagnostics: dict, watched: dict[str, str]) -> str | None:
    """Which term went non-finite: a watched diagnostic (sCT / sCD's tangent df/dt), else the loss."""
    for key, term in watched.items():
        value = diagnostics.get(key)
        if value is not None and not math.isfinite(float(value)):
            return term
    return None if math.isfinite(float(loss.detach())) else "loss"


def accumulate_gradients(job: TrainJob, method, state: TrainState, data, ranks, autocast) -> tuple[dict, str | None]:
    """One optimizer step's gradients: the global batch (indices and draws made identically on every rank) is cut
    into this rank's share, then into micro-batches; each pass adds (its size / global batch) x its mean loss, and
    the ranks' sums are summed. So ranks and passes change only the order of float sums, not the step; except that
    with dropout (and label dropout) each rank draws its own masks, so several ranks match one process in
    distribution, not mask for mask. Returns the mean diagnostics, and the term that went non-finite (a watched
    diagnostic, the loss or a gradient; the same on every rank) or None."""
    stage = job.spec
    B = stage.batch_size
    index = torch.randint(len(data.images), (B,), generator=state.data_rng)
    draws = method.draw((B, *data.shape), state.noise_rng, state.device)
    share = B // ranks.world_size
    micro = stage.micro_batch or share
    if ranks.world_size > 1:  # dropout masks come from torch's own RNG: independent per rank, the same on resume
        torch.manual_seed((job.seed << 40) + (state.step << 12) + ranks.rank)
    state.zero_grad()
    totals, bad = {}, None
    for start in range(ranks.rank * share, (ranks.rank + 1) * share, micro):
        part = slice(start, start + micro)
        rows = index[part].to(data.images.device)
        labels = data.labels[rows] if data.labels is not None else None
        with autocast:
            loss, diagnostics = method.loss(state.nets, data.images[rows], labels, draws[part], state.step)
        bad = nonfinite_term(loss, diagnostics, method.watched)
        if bad is not None:
            break
        state.scaler.scale(loss * (micro / B)).backward()
        for key, value in diagnostics.items():
            totals[key] = totals.get(key, 0.0) + float(value) * (micro / share)
    if any_rank(bad is not None, ranks):  # every rank sees it, none is left waiting in a collective
        state.zero_grad()
        return {}, bad or "loss (on another rank)"
    params = state.parameters()
    sum_gradients(params, ranks)
    # under fp16 an overflowing gradient is the loss scaler's business (it skips the step and lowers the scale)
    if not state.scaler.is_enabled() and not all(bool(torch.isfinite(p.grad).all()) for p in params
                                                 if p.grad is not None):
        state.zero_grad()
        return {}, "gradient"
    if stage.grad_clip is not None:
        totals["grad_norm"] = clip_gradients(state, stage.grad_clip)  # the same on every rank (summed gradients)
    return mean_over_ranks(totals, ranks), None


def clip_gradients(state: TrainState, max_norm: float) -> float:
    """Scale every network's gradients so that their global norm (with the method's modules) is at most max_norm;
    returns the norm before clipping. Under fp16 the gradients are unscaled first (the scaler then steps as is)."""
    if state.scaler.is_enabled():
        for optimizer in state.optimizers.values():
            state.scaler.unscale_(optimizer)
    return float(torch.nn.utils.clip_grad_norm_(state.parameters(), max_norm))


def _diverged_parent(job: TrainJob) -> dict | None:
    """A diverged record for a job whose init or teacher diverged: there is nothing to start from."""
    for field in ("init", "teacher"):
        parent = getattr(job, field)
        if isinstance(parent, TrainJob) and diverged_record(parent):
            return {"step": 0, "term": field, "policy": job.spec.on_nonfinite, "skipped": 0,
                    "message": f"its {field} {parent.id} diverged; nothing to start from"}
    return None


def train_stage(job: TrainJob, threads: int) -> str | None:
    """Train one stage to its last step (resuming from the newest intact checkpoint) and return that checkpoint,
    or None when the stage diverged (diverged.json says at which step and which term).

    SIGTERM or SIGINT (scancel, a local cancel, Ctrl-C) ends the current step, saves a checkpoint and stops; the
    next run resumes from it exactly. With several tasks in the job, each is a data-parallel rank; rank 0 alone
    writes checkpoints and progress."""
    torch.set_num_threads(threads)
    if store.checkpoint_complete(job.final_checkpoint):
        return str(job.final_checkpoint)
    if diverged_record(job):
        return None
    parent = _diverged_parent(job)
    if parent is not None:
        _mark_diverged(job, parent)
        return None
    store.remove_partial_writes(job.path / "checkpoints")
    store.remove_partial_writes(job.path / SNAPSHOTS)
    with StopRequests() as stop:  # from the start: a stop asked for while it loads is kept, not lost
        ranks = init_ranks()
        method, data, state = build_training(job)
        trained = _loop(job, method, data, state, ranks, stop)
    if not trained:  # diverged
        return None
    if stop.requested and state.step < job.steps:
        if ranks.is_main:
            store.write_json(job.path / "progress.json", {**store.read_json(job.path / "progress.json", {}),
                                                          "state": "stopped", "step": state.step})
        finish(ranks)
        raise InterruptedError(f"{job.id}: stopped by {stop.requested} at step {state.step}; the checkpoint is saved "
                               "and the next run resumes from it")
    if ranks.is_main:
        store.write_json(job.path / "progress.json", {
            "state": "trained", "step": state.step, "total": job.steps,
            "loss": state.history[-1]["loss"] if state.history else None, "skipped": len(state.skipped),
            "elapsed": state.elapsed, "it_s": job.steps / max(state.elapsed, 1e-9), "ranks": ranks.world_size})
    finish(ranks)
    return str(job.final_checkpoint)


def _loop(job: TrainJob, method, data, state: TrainState, ranks, stop) -> bool:
    """Steps until the last one or a stop request; False when the stage diverged."""
    stage = job.spec
    window, last_report, start = [], time.time(), time.time() - state.elapsed
    log = TrainingLog(job.path, state.step) if ranks.is_main else None  # continues after the resumed step
    autocast = torch.autocast(device().type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        stage.precision), enabled=stage.precision != "fp32")
    while state.step < stage.steps:
        diagnostics, term = accumulate_gradients(job, method, state, data, ranks, autocast)
        state.step += 1
        if term is None:
            state.update(stage)
        else:  # this step's draws are used up and nothing is updated, so resume stays exact
            state.skipped.append({"step": state.step, "term": term})
            if stage.on_nonfinite == "stop" or len(state.skipped) > stage.max_skipped_steps:
                if ranks.is_main:
                    _mark_diverged(job, _divergence(job, state, term))
                    log.close()
                finish(ranks)
                return False
        state.elapsed = time.time() - start
        stopping = any_rank(stop.requested is not None, ranks)
        if not ranks.is_main:
            if stopping:
                break
            continue
        if diagnostics:
            window.append(diagnostics)
        if window and (time.time() - last_report > PROGRESS_EVERY_S or state.step == stage.steps):
            _report(job, state, window, time.time() - last_report, log)
            window, last_report = [], time.time()
        if snapshot_due(job, state.step):  # before the checkpoint: a job resumed from it has this snapshot
            save_snapshot(job, state.step, state.post_hoc_emas(stage.ema))
        if state.step % stage.checkpoint_every == 0 or state.step == stage.steps or stopping:
            # where it trained, for the metrics rows (another CPU gives other low bits): not part of the state
            store.save_checkpoint(store.checkpoint_path(job.path, state.step), {**state.state_dict(),
                                                                                "machine": machine()})
        if stopping:
            break
    if log is not None:
        log.close()
    return True


def _divergence(job: TrainJob, state: TrainState, term: str) -> dict:
    stage = job.spec
    where = {"tangent": "the tangent df/dt", "loss": "the loss", "gradient": "a gradient"}.get(term, term)
    why = ("on_nonfinite: stop" if stage.on_nonfinite == "stop" else
           f"more than max_skipped_steps={stage.max_skipped_steps} steps skipped")
    return {"step": state.step, "term": term, "policy": stage.on_nonfinite, "skipped": len(state.skipped),
            "message": f"{job.stage} ({stage.method}): {where} went non-finite at step {state.step} ({why})"}


def diverged_record(job: TrainJob) -> dict | None:
    """What diverged.json says (step, term, policy, skipped, message), or None for a job that did not diverge."""
    return store.read_json(job.path / "diverged.json")


def _mark_diverged(job: TrainJob, record: dict) -> None:
    store.write_json(job.path / "diverged.json", record)
    store.write_json(job.path / "progress.json", {**store.read_json(job.path / "progress.json", {}),
                                                  "state": "diverged", "step": record["step"],
                                                  "diverged": record["message"]})
    print(f"warning: {job.id} diverged: {record['message']}", file=sys.stderr, flush=True)


def _report(job: TrainJob, state: TrainState, window: list[dict], seconds: float,
            log: TrainingLog | None = None) -> None:
    """Append the window's mean diagnostics to the history, refresh progress.json and log the window (stats.jsonl,
    TensorBoard) with the learning rate and the speed."""
    mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
    state.history.append({"step": state.step, **mean, **({"skipped": len(state.skipped)} if state.skipped else {})})
    it_s = len(window) / max(seconds, 1e-9)
    store.write_json(job.path / "progress.json", {
        "state": "running", "step": state.step, "total": job.steps, "loss": mean["loss"],
        "it_s": it_s, "elapsed": state.elapsed})
    if log is not None:
        log.write(state.step, state.elapsed, {**state.history[-1], "lr": learning_rate(job.spec.optimizer, state.step),
                                              "it_s": it_s})
