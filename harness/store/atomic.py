"""Atomic writes: a file is either the old version or the complete new one, never half; a full disk or an
unwritable folder is an error that names the file and what to do."""
import errno
import json
import os
import tempfile
from pathlib import Path


class DiskError(OSError):
    """A write that failed for lack of space or permission: the message says which file and what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _explain(error: OSError, path: Path) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device writing {path}; free space there (or choose another --runs-dir) and rerun"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path} (permission denied or read-only); choose a writable --runs-dir and rerun"
    return f"cannot write {path} ({error.strerror or error}); check the folder (or choose another --runs-dir) and rerun"


def write_bytes_atomic(path: Path, data: bytes, before_rename=None) -> None:
    """Write aside, fsync, rename into place; on any failure the old file stays and the partial one is removed.
    A full disk or an unwritable folder raises DiskError naming the file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except OSError as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, DiskError):
            raise
        raise DiskError(error.errno, _explain(error, path)) from error
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def ensure_writable(folder: Path) -> None:
    """Make the folder and prove a file can be written there, before any job is submitted (DiskError if not)."""
    probe = Path(folder) / f".write-test-{os.getpid()}"
    write_bytes_atomic(probe, b"ok\n")
    probe.unlink()


def write_json(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return default
