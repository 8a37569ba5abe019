"""sCM in plain PyTorch: TrigFlow, networks, the diffusion / sCT / sCD objectives, samplers and EMA.

Never imports `harness`; everything here works on tensors and modules only.
"""
from . import trigflow
from .ema import HalfLifeEMA, PowerEMA
from .objectives import Noise, TangentSettings, consistency_loss, diffusion_loss, draw_noise
from .sampling import consistency_sample, guided, teacher_sample
from .weighting import AdaptiveWeight

__all__ = ["trigflow", "HalfLifeEMA", "PowerEMA", "TangentSettings", "consistency_loss", "diffusion_loss", "Noise", "draw_noise",
           "consistency_sample", "guided", "teacher_sample", "AdaptiveWeight"]
