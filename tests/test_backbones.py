"""Backbones: packaged EfficientNet-Lite0 + FPN, and a timm ViT/EVA-02 with a simple feature pyramid."""

from __future__ import annotations

import timm
import torch

from stages.modeling.build import build_detector, detectron2_config
from stages.utils.config import load_config


def _config(**model):
    config = load_config()
    config["model"].update(model)
    return config


def test_efficientnet_fpn_levels_and_pretrained_weights():
    torch.manual_seed(0)
    pretrained = build_detector(detectron2_config(_config(), 5)).eval()
    random_init = build_detector(detectron2_config(_config(backbone_weights=None), 5)).eval()
    shapes = pretrained.backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64}
    x = torch.rand(1, 3, 128, 128)
    a = pretrained.backbone.bottom_up(x)["s32"]
    b = random_init.backbone.bottom_up(x)["s32"]
    assert not torch.allclose(a, b)


def test_vit_sfp_loads_a_patch14_checkpoint_into_patch16(tmp_path):
    # An EVA-02 checkpoint with 14x14 patches (as eva02_L_pt_m38m is released) ...
    source = timm.create_model("eva02_tiny_patch14_224", pretrained=False, num_classes=0)
    path = tmp_path / "eva02_tiny_p14.pth"
    torch.save({"model": source.state_dict()}, path)
    config = _config(backbone="vit_sfp", timm_model="eva02_tiny_patch14_224", patch_size=16,
                     backbone_weights=str(path))
    model = build_detector(detectron2_config(config, 5)).eval()
    trunk = model.backbone.net.model
    # ... is resampled to 16x16 patches ("p14to16"), the rest loaded as is.
    assert tuple(trunk.patch_embed.proj.weight.shape[-2:]) == (16, 16)
    torch.testing.assert_close(trunk.blocks[0].attn.proj.weight, source.blocks[0].attn.proj.weight)
    shapes = model.backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64}
    out = model.backbone(torch.rand(1, 3, 128, 96))
    assert out["p4"].shape[-2:] == (8, 6) and out["p3"].shape[-2:] == (16, 12)
    # EVA-02 normalises with the CLIP statistics of its timm config.
    assert abs(model.pixel_mean.flatten()[0].item() - 255 * 0.48145466) < 1e-3
