"""Everything the next training step depends on. A checkpoint is exactly this state, so resume is exact: per trained
network its weights, optimizer and EMA; the method's own modules (w(t)); the step; every random generator."""
import torch
from torch import nn

from scm.ema import HalfLifeEMA, PowerEMA
from scm.methods import Networks

from ..recipe.sections import sigma_rel_key


def learning_rate(opt_config, step: int) -> float:
    """EDM2: lr_ref / sqrt(max(step / t_ref, 1)) with a linear ramp-up; or constant."""
    lr = opt_config.lr
    if opt_config.schedule == "inverse-sqrt":
        lr /= max(step / opt_config.ref_steps, 1.0) ** 0.5
    if opt_config.rampup_steps > 0:
        lr *= min(step / opt_config.rampup_steps, 1.0)
    return lr


def _optimizer(params, config):
    cls = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}[config.name]
    return cls(params, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


def _ema(net, config, batch_size):
    if config.kind == "power":
        return PowerEMA(net, config.sigma_rel)
    return HalfLifeEMA(net, config.halflife_images, batch_size)


class TrainState:
    """The state of one training job: `nets` (networks by role, the method's modules, the teacher), one optimizer
    and one EMA per trained network (the method's modules train with the first network's optimizer), the data
    order and noise generators, the step, the log and the loss scaler."""

    def __init__(self, seed: int, stage, nets: Networks):
        self.nets = nets
        modules = [p for module in nets.modules.values() for p in module.parameters()]
        first = next(iter(nets.trained))
        self.optimizers = {role: _optimizer(list(net.parameters()) + (modules if role == first else []),
                                            stage.optimizer) for role, net in nets.trained.items()}
        self.emas = {role: _ema(net, stage.ema, stage.batch_size) for role, net in nets.trained.items()}
        # power EMAs of other lengths beside the sampled network's (also_sigma_rel, post_hoc's): only it is sampled
        self.tracked = {sigma_rel: PowerEMA(nets.net, sigma_rel) for sigma_rel in stage.ema.tracked_sigma_rel}
        where = next(nets.net.parameters()).device
        self.data_rng = torch.Generator().manual_seed(seed + 1)
        self.noise_rng = torch.Generator(device=where).manual_seed(seed + 2)  # the method's draws (t, z, ...)
        self.step, self.elapsed, self.history = 0, 0.0, []
        self.skipped = []  # steps passed over for a non-finite term (on_nonfinite: skip): {"step", "term"}
        # fp16 needs loss scaling (its range ends at 65504); bf16 has fp32's range
        self.scaler = torch.amp.GradScaler(where.type, enabled=stage.precision == "fp16")

    @property
    def device(self) -> torch.device:
        return next(self.nets.net.parameters()).device

    def parameters(self) -> list:
        """Every trained parameter: the networks', then the method's modules'."""
        return [p for net in self.nets.trained.values() for p in net.parameters()] + \
               [p for module in self.nets.modules.values() for p in module.parameters()]

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def update(self, stage) -> None:
        """One optimizer step of every trained network at this step's learning rate, then its EMA."""
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(stage.optimizer, self.step)
            self.scaler.step(optimizer)
        self.scaler.update()
        for role, net in self.nets.trained.items():
            if hasattr(net, "normalize_weights_"):  # EDM2's forced weight normalization, outside forward
                net.normalize_weights_()
            self.emas[role].update(net, self.step)
        for ema in self.tracked.values():
            ema.update(self.nets.net, self.step)

    def post_hoc_emas(self, config) -> dict[float, nn.Module]:
        """The sampled network's EMA of each post_hoc length of the EMA `config`: tracked beside the sampled one,
        or the sampled one itself (the only length tracked_sigma_rel leaves out)."""
        sampled = self.emas[next(iter(self.nets.trained))].ema
        tracked = {sigma_rel_key(s): ema.ema for s, ema in self.tracked.items()}
        return {s: tracked.get(sigma_rel_key(s), sampled) for s in config.post_hoc.sigma_rel}

    def state_dict(self) -> dict:
        return {"step": self.step, "sampled": next(iter(self.nets.trained)),
                "networks": {role: net.state_dict() for role, net in self.nets.trained.items()},
                "modules": {name: module.state_dict() for name, module in self.nets.modules.items()},
                "optimizers": {role: opt.state_dict() for role, opt in self.optimizers.items()},
                "ema": {role: ema.ema.state_dict() for role, ema in self.emas.items()},
                "data_rng": self.data_rng.get_state(), "noise_rng": self.noise_rng.get_state(),
                "torch_rng": torch.get_rng_state(), "elapsed": self.elapsed, "history": self.history,
                "skipped": self.skipped, "scaler": self.scaler.state_dict(),
                **({"cuda_rng": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
                **({"tracked_ema": {sigma_rel_key(s): ema.ema.state_dict() for s, ema in self.tracked.items()}}
                   if self.tracked else {})}

    def load_state_dict(self, state: dict) -> None:
        for role, net in self.nets.trained.items():
            net.load_state_dict(state["networks"][role])
            self.optimizers[role].load_state_dict(state["optimizers"][role])
            self.emas[role].ema.load_state_dict(state["ema"][role])
        for sigma_rel, ema in self.tracked.items():
            ema.ema.load_state_dict(state["tracked_ema"][sigma_rel_key(sigma_rel)])
        for name, module in self.nets.modules.items():
            module.load_state_dict(state["modules"][name])
        self.data_rng.set_state(state["data_rng"])
        self.noise_rng.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.elapsed, self.history = state["step"], state["elapsed"], state["history"]
        self.skipped = state.get("skipped", [])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
