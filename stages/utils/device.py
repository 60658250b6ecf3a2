"""Explicit device and thread settings: stages never pick a device on their own."""

from __future__ import annotations

import torch


def configure_torch(num_threads: int, device: str) -> torch.device:
    """Set torch's CPU threads and return the config's device; a clear error when CUDA is asked
    for but absent (no silent fallback to the CPU)."""
    torch.set_num_threads(num_threads)
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config device is {device!r} but torch sees no CUDA device; set device: cpu")
    return resolved
