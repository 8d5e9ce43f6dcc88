"""The torch device and threads of a job, with deterministic kernels (every stage that runs torch:
training, metrics, the HMM's fit). Imports torch; nothing else of the package.
"""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def configure_torch(threads: int, device: torch.device) -> None:
    """Thread count and deterministic kernels for bit-identical reruns."""
    torch.set_num_threads(max(1, threads))
    warn_only = device.type != "cpu"
    try:
        # torch.use_deterministic_algorithms also imports torch._inductor (seconds per process) to
        # set a flag that only torch.compile reads; the workflow does not compile.
        torch._C._set_deterministic_algorithms(True, warn_only=warn_only)
    except AttributeError:  # pragma: no cover - a torch without the private setter
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
