"""Train the digits FID classifier deterministically and ship its weights.

Usage: cd <repo root> && python scripts/train_digits_classifier.py
Writes harness/evaluation/assets/digits_classifier.pt (state_dict) and digits_classifier.json (metadata).
"""

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the repo is not necessarily pip-installed

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness.evaluation.classifier import (  # noqa: E402
    ASSETS_DIR, DEFAULT_WEIGHTS, SPLIT_SPEC, DigitsClassifier, digits_split,
)

SEED = 0
EPOCHS = 40
BATCH_SIZE = 64
LR = 2e-3
WEIGHT_DECAY = 1e-4


def random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by -1..1 pixels in x and y, filling with background (-1)."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    offsets = torch.randint(0, 3, (x.shape[0], 2), generator=gen)
    out = torch.empty_like(x)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + 8, dx:dx + 8]
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def save_atomically(data: bytes, path: Path) -> None:
    """Write via a temp file in the same folder, then os.replace, so readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped assets should be world-readable
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    # Serialize in memory: torch.save names the zip's root folder after the target file,
    # so saving straight to a random temp name would make the bytes differ run to run.
    buf = io.BytesIO()
    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def main() -> None:
    start = time.perf_counter()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # thread count can change float reduction order
    gen = torch.Generator().manual_seed(SEED)

    x_train, y_train, x_test, y_test = digits_split()
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = -(-len(y_train) // BATCH_SIZE)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=EPOCHS * steps_per_epoch)

    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(y_train), generator=gen)
        for start_i in range(0, len(order), BATCH_SIZE):
            idx = order[start_i:start_i + BATCH_SIZE]
            loss = F.cross_entropy(model(random_shift(x_train[idx], gen)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  "
                  f"train acc {accuracy(model, x_train, y_train):.4f}  test acc {accuracy(model, x_test, y_test):.4f}")

    test_acc = accuracy(model, x_test, y_test)
    elapsed = time.perf_counter() - start
    ASSETS_DIR.mkdir(parents=True, exist_ok=True)
    save_atomically(state_dict_bytes(model), DEFAULT_WEIGHTS)
    meta = {
        "heldout_accuracy": round(test_acc, 6),
        "n_train": len(y_train),
        "n_test": len(y_test),
        "split": {"function": "sklearn.model_selection.train_test_split", **SPLIT_SPEC,
                  "data": "sklearn.datasets.load_digits", "pixel_scale": "value/8 - 1"},
        "seed": SEED,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "optimizer": f"AdamW(lr={LR}, weight_decay={WEIGHT_DECAY}) + OneCycleLR",
        "augmentation": "random +-1 pixel shifts, background fill",
        "torch_version": torch.__version__,
    }
    json_path = DEFAULT_WEIGHTS.with_suffix(".json")
    save_atomically((json.dumps(meta, indent=2) + "\n").encode(), json_path)
    print(f"held-out accuracy {test_acc:.4f} ({len(y_test)} images), {elapsed:.1f}s -> {DEFAULT_WEIGHTS}")


if __name__ == "__main__":
    main()
