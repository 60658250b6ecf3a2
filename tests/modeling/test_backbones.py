"""Backbones: packaged EfficientNet-Lite0 + FPN, and a timm ViT/EVA-02 with a simple feature pyramid."""

from __future__ import annotations

import pytest
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


# -- the ViTDet / EVA-02 detection recipe: window attention with global blocks, layer-wise decay, drop-path

VITS = {"vit": "vit_tiny_patch16_224", "eva02": "eva02_tiny_patch14_224"}


def _vit(kind: str, **model):
    config = _config(backbone="vit_sfp", timm_model=VITS[kind], patch_size=16, backbone_weights=None, **model)
    torch.manual_seed(0)
    return build_detector(detectron2_config(config, 5, solver=config["teacher"])).eval()


@pytest.mark.parametrize("kind", sorted(VITS))
def test_windows_covering_the_whole_map_equal_global_attention(kind):
    """A 64 x 64 image is a 4 x 4 token map: 4 x 4 windows are the whole map, so windowed blocks must
    compute exactly what global blocks do (EVA-02: the window's rotary grid is the map's)."""
    windowed = _vit(kind, window_size=4, global_blocks=[1])
    plain = _vit(kind)
    plain.load_state_dict(windowed.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(windowed.backbone.net(x)["s16"], plain.backbone.net(x)["s16"], rtol=0, atol=1e-6)
        # smaller windows are another computation
        smaller = _vit(kind, window_size=2, global_blocks=[1])
        smaller.load_state_dict(windowed.state_dict())
        assert not torch.allclose(smaller.backbone.net(x)["s16"], plain.backbone.net(x)["s16"], atol=1e-4)


@pytest.mark.parametrize("kind", sorted(VITS))
def test_window_and_global_blocks_sit_where_configured(kind):
    model = _vit(kind, window_size=2, global_blocks=[2, 5], drop_path=0.1)
    trunk = model.backbone.net
    depth = len(trunk.model.blocks)
    assert [trunk.windowed(i) for i in range(depth)] == [i not in (2, 5) for i in range(depth)]
    seen = {}
    hooks = [block.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, tuple(args[0].shape)))
             for i, block in enumerate(trunk.model.blocks)]
    with torch.no_grad():
        trunk(torch.rand(1, 3, 96, 64))  # a 6 x 4 map: 3 x 2 windows of 2 x 2 tokens
    for h in hooks:
        h.remove()
    for i in range(depth):
        assert seen[i][:2] == ((1, 24) if i in (2, 5) else (6, 4)), (i, seen[i])
    assert trunk.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # timm's linear drop-path ramp
    with pytest.raises(ValueError, match=r"model.global_blocks.*\[99\] do not exist"):
        _vit(kind, window_size=2, global_blocks=[99])


def test_layer_decay_parameter_groups_have_the_right_rates():
    from stages.modeling.training import optimizer_param_groups

    config = _config(backbone="vit_sfp", timm_model=VITS["vit"], patch_size=16, backbone_weights=None,
                     layer_decay=0.8)
    config["teacher"]["base_lr"] = 0.01
    cfg = detectron2_config(config, 5, solver=config["teacher"])
    model = build_detector(cfg)
    groups = optimizer_param_groups(cfg, model)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = len(model.backbone.net.model.blocks)  # 12
    assert lr_of[id(named["backbone.net.model.patch_embed.proj.weight"])] == pytest.approx(0.01 * 0.8 ** (depth + 1))
    assert lr_of[id(named["backbone.net.model.blocks.0.attn.qkv.weight"])] == pytest.approx(0.01 * 0.8 ** depth)
    assert lr_of[id(named["backbone.net.model.blocks.11.mlp.fc2.weight"])] == pytest.approx(0.01 * 0.8)
    assert lr_of[id(named["backbone.net.model.norm.weight"])] == pytest.approx(0.01)
    assert lr_of[id(named["roi_heads.box_predictor.0.cls_score.weight"])] == pytest.approx(0.01)
    # norms keep no weight decay, whatever their learning rate
    wd_of = {id(p): g.get("weight_decay") for g in groups for p in g["params"]}
    assert wd_of[id(named["backbone.net.model.blocks.3.norm1.weight"])] == 0.0
    # without decay, the groups are detectron2's own
    config["model"]["layer_decay"] = 1.0
    plain = optimizer_param_groups(detectron2_config(config, 5, solver=config["teacher"]), model)
    assert {g["lr"] for g in plain} == {0.01}
    # the decay needs a ViT trunk
    with pytest.raises(ValueError, match="model.layer_decay"):
        eff = _config(layer_decay=0.8)
        optimizer_param_groups(detectron2_config(eff, 5, solver=eff["teacher"]),
                               build_detector(detectron2_config(eff, 5, solver=eff["teacher"])))


@pytest.mark.slow
def test_vit_sfp_with_windows_trains_on_minilvis(tiny_minilvis, tmp_path):
    import json

    from stages.modeling.teacher import train_teacher
    from tests.conftest import identity_similarity, tiny_config

    config = tiny_config(tmp_path / "results")
    config["model"].update(backbone="vit_sfp", timm_model=VITS["eva02"], patch_size=16, backbone_weights=None,
                           window_size=2, global_blocks=[5], drop_path=0.1, layer_decay=0.8)
    config["teacher"].update(smoothing="uniform", iterations=40, warmup_iters=5, checkpoint_period=100,
                             batch_size=2, base_lr=0.01)
    train_json = tiny_minilvis / "train.json"
    train_teacher(config, train_json, tiny_minilvis / "images", identity_similarity(tmp_path / "s.npy", train_json),
                  tmp_path / "t.pth", tmp_path / "ckpt")
    losses = [json.loads(line)["total_loss"] for line in (tmp_path / "ckpt" / "metrics.json").read_text().splitlines()
              if "total_loss" in line]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
