"""The store layer: files written atomically, checkpoints with checksums, safe loading. Nothing here knows recipes,
methods or jobs; every other layer writes through it."""
from .atomic import DiskError, ensure_writable, read_json, write_bytes_atomic, write_json
from .checkpoints import (checkpoint_complete, checkpoint_path, checkpoint_problem, checkpoints, load_checkpoint,
                          newest_checkpoint, remove_partial_writes, save_checkpoint)
from .unpickle import ArrayUnpickler

__all__ = ["DiskError", "ensure_writable", "read_json", "write_bytes_atomic", "write_json", "checkpoint_complete",
           "checkpoint_path", "checkpoint_problem", "checkpoints", "load_checkpoint", "newest_checkpoint",
           "remove_partial_writes", "save_checkpoint", "ArrayUnpickler"]
