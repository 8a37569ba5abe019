"""Network registry: recipes name a network and its settings; `build_network` returns the module."""
from torch import nn

from .ddpmpp import DDPMpp
from .toy import MLP, ToyUNet
from .unet import UNetEDM2

NETWORKS = {"toy-unet": ToyUNet, "mlp": MLP, "unet-edm2": UNetEDM2, "ddpmpp": DDPMpp}


def build_network(name: str, **settings) -> nn.Module:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](**settings)


__all__ = ["build_network", "NETWORKS", "ToyUNet", "MLP", "UNetEDM2", "DDPMpp"]
