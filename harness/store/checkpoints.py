"""Checkpoints: written atomically with a SHA-256 checksum beside them (`step-N.pt.sha256`, written before the
checkpoint is renamed into place), so one damaged later (a truncated copy, a bad disk block) is found and passed
over for an older one; loaded with weights_only=True, so a checkpoint from elsewhere cannot run code."""
import hashlib
import io
import sys
from pathlib import Path

from .atomic import write_bytes_atomic


def _checksum_file(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic, with its checksum written first: a checkpoint in place always has the checksum of its bytes."""
    import torch  # heavy: the store's other readers (the report, status) do without it

    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    write_bytes_atomic(path, data, before_rename=lambda: write_bytes_atomic(
        _checksum_file(path), (hashlib.sha256(data).hexdigest() + "\n").encode()))


def checkpoint_problem(path: Path) -> str | None:
    """Why this checkpoint cannot be trusted (missing, or its bytes differ from its checksum), or None."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    checksum = _checksum_file(path)
    if not checksum.is_file():
        return None  # written before checksums were kept: loading it is the check
    if checksum.read_text().strip() != _sha256(path):
        return "its bytes do not match its checksum (truncated or corrupt)"
    return None


def checkpoint_complete(path: Path) -> bool:
    return checkpoint_problem(path) is None


def load_checkpoint(path: Path) -> dict:
    """Tensors and plain containers only (weights_only): a checkpoint from elsewhere cannot run code."""
    import torch  # heavy: see save_checkpoint

    return torch.load(path, map_location="cpu", weights_only=True)


def newest_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint that is intact and loads, with its state; damaged ones are skipped with a warning
    naming them (and kept, for a look)."""
    for path in reversed(checkpoints(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            try:
                return path, load_checkpoint(path)
            except Exception as error:  # noqa: BLE001 - any unreadable file is passed over the same way
                problem = f"it cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
        print(f"warning: skipping checkpoint {path}: {problem}; using an earlier one", file=sys.stderr, flush=True)
    return None


def remove_partial_writes(folder: Path) -> None:
    """Temporary files left by a process killed while writing (the real files were never touched)."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a job, oldest first (names carry the zero-padded step)."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*.pt"))


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}.pt"

