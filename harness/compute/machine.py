"""What a job computed on: the GPU's name, else the CPU's model; torch's thread count and version. Training on
another CPU changes the low bits of every weight (and so of FID), so each metrics row records both machines: two
rows from different machines are never mistaken for a regression."""
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (Linux), else what Python's platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """{machine, threads, torch}: the device that computes (GPU name, or CPU model), torch's threads and version."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_model()
    return {"machine": name, "threads": torch.get_num_threads(), "torch": str(torch.__version__)}
