"""Network registry: recipes name a network and its settings; `build_network` returns the module."""
from torch import nn

from .toy import MLP, ToyUNet

NETWORKS = {"toy-unet": ToyUNet, "mlp": MLP}


def build_network(name: str, **settings) -> nn.Module:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](**settings)


__all__ = ["build_network", "NETWORKS", "ToyUNet", "MLP"]
