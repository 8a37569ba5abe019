"""`scm-bench refs import`: EDM2's reference statistics (`img64.pkl`, `img512.pkl`: a pickled dict with
{"fid": {"mu", "sigma"}, "fd_dinov2": {"mu", "sigma"}}) as an .npz that `evaluation.reference` can name.

The pickle is read with an unpickler that rebuilds arrays and plain containers only, so a file from elsewhere cannot
run code; the output is written aside and renamed into place."""
import io
import pickle
from pathlib import Path

import numpy as np

from .. import store


def read_edm2_reference(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{metric: {"mu": [D], "sigma": [D, D]}} from an EDM2 reference pickle."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"reference statistics {path} not found; EDM2 publishes them as "
                                "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/img64.pkl and img512.pkl")
    try:
        with open(path, "rb") as f:
            refs = store.ArrayUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is not an EDM2 reference pickle ({error})") from None
    if not isinstance(refs, dict) or "fid" not in refs:
        raise ValueError(f"{path} has no 'fid' statistics; expected EDM2's {{'fid': {{'mu', 'sigma'}}, ...}}")
    out = {}
    for metric, stats in refs.items():
        mu, sigma = np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise ValueError(f"{path}: {metric} has mu {mu.shape} and sigma {sigma.shape}; expected [D] and [D, D]")
        out[metric] = {"mu": mu, "sigma": sigma}
    return out


def import_reference(path: Path, out: Path) -> Path:
    """Write the FID statistics (mu, sigma) and, where present, FD_DINOv2's (mu_dinov2, sigma_dinov2) to `out`."""
    refs = read_edm2_reference(path)
    arrays = {"mu": refs["fid"]["mu"], "sigma": refs["fid"]["sigma"]}
    if "fd_dinov2" in refs:
        arrays.update(mu_dinov2=refs["fd_dinov2"]["mu"], sigma_dinov2=refs["fd_dinov2"]["sigma"])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    store.write_bytes_atomic(Path(out), buffer.getvalue())
    return Path(out)
