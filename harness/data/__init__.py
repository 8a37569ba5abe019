"""The data layer: data sets in memory or memory-mapped (digits, PNG folders, prepared CIFAR-10 / ImageNet,
synthetic), the prepared format `scm-bench prepare` writes, and the SD VAE's latent space."""
from .images import ImageData
from .load import data_shape, load_data
from .prepared import PREPARED_DATASETS

__all__ = ["ImageData", "data_shape", "load_data", "PREPARED_DATASETS"]
