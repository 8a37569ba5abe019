"""Small CNN on sklearn's 8x8 digits, used as the feature extractor for digits FID.

Pixel convention: classifier inputs are value/8 - 1 in [-1, 1] (digit values are 0..16).
The same image stored as uint8 is round(value * 255/16), so x/127.5 - 1 maps it back.
Weights ship in harness/assets/digits_classifier.pt; regenerate them with
`python scripts/train_digits_classifier.py`.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_WEIGHTS = ASSETS_DIR / "digits_classifier.pt"
FEATURE_DIM = 64
NUM_CLASSES = 10
# The one split used for training and for the held-out accuracy check.
SPLIT_SPEC = {"test_size": 0.25, "random_state": 0, "stratify": "y"}


class DigitsClassifier(nn.Module):
    """conv(1->32) -> conv(32->64) -> pool to 4x4 -> conv(64->64) -> fc 64 -> fc 10."""

    def __init__(self, feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc_feat = nn.Linear(64 * 4 * 4, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations [B, 64] (after the nonlinearity): the FID features."""
        h = F.silu(self.conv1(x))
        h = F.silu(self.conv2(h))
        h = F.avg_pool2d(h, 2)  # 8x8 -> 4x4
        h = F.silu(self.conv3(h))
        return F.silu(self.fc_feat(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, 10]."""
        return self.head(self.features(x))


def load_digits_classifier(path=None, device="cpu") -> DigitsClassifier:
    """Load the shipped weights in eval mode with gradients off."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"digits classifier weights not found at {path}; run `python scripts/train_digits_classifier.py`"
        )
    model = DigitsClassifier()
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    model.to(device).eval().requires_grad_(False)
    return model


def digits_split():
    """(x_train, y_train, x_test, y_test): x float32 [N,1,8,8] in [-1,1], y int64 [N]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=SPLIT_SPEC["test_size"],
        random_state=SPLIT_SPEC["random_state"], stratify=digits.target,
    )
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """[N,1,8,8] (or [N,8,8]) tensor in [-1,1] -> uint8 numpy [N,8,8], for writing PNGs."""
    x = x.detach().float().cpu().reshape(-1, 8, 8)
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def identity_resize(img_np: np.ndarray) -> np.ndarray:
    """clean-fid `custom_fn_resize` that keeps images at 8x8.

    clean-fid's default "clean" resize goes to 299x299 for Inception. Keep the uint8 dtype:
    its dataset only handles uint8 (scaled by ToTensor()*255) or float32 returns. Module-level
    (not a lambda) so it pickles for num_workers > 0.
    """
    return img_np


class CleanFidDigitsExtractor(nn.Module):
    """Feature extractor for clean-fid's `model=` / `custom_feat_extractor=` argument.

    clean-fid calls model(batch) with float32 [B, 3, H, W] in [0, 255] and takes
    `.detach().cpu().numpy()` of the result, so this returns a torch tensor [B, 64].
    Use with `custom_fn_resize=identity_resize` so that H = W = 8.
    """

    def __init__(self, classifier: DigitsClassifier | None = None, device="cpu"):
        super().__init__()
        self.classifier = classifier if classifier is not None else load_digits_classifier(device=device)
        self.classifier.eval().requires_grad_(False)

    @staticmethod
    def to_classifier_input(batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() != 4 or batch.shape[-2:] != (8, 8):
            raise ValueError(
                f"expected [B, C, 8, 8] images, got {tuple(batch.shape)}; "
                "pass custom_fn_resize=identity_resize to clean-fid"
            )
        # PNGs of grey digits become 3 equal RGB channels; the mean also tolerates colour.
        gray = batch.float().mean(dim=1, keepdim=True)
        return gray / 127.5 - 1.0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.classifier.eval()
        with torch.no_grad():
            return self.classifier.features(self.to_classifier_input(batch))
