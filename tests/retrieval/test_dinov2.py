"""The paper's retrieval encoder, DINOv2, through the real torch.hub code: the official repository's
hubconf.py and dinov2 package (random weights: none can be downloaded here), weights files in the
forms users have, and the retrieval stages end to end on it.

The repository copy lives in ../shared/dinov2-hub beside this checkout; without it these tests skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stages.retrieval.encoders import IMAGENET_MEAN, IMAGENET_STD, build_encoder
from tests.conftest import REPO, tiny_config

HUB = REPO.parent / "shared" / "dinov2-hub"
pytestmark = pytest.mark.skipif(not (HUB / "hubconf.py").is_file(),
                                reason=f"the official DINOv2 hub repository is not at {HUB} (../shared is the "
                                       "development machines' shared folder; users point embed.hub_repo at their own)")  # fmt: skip

CROP = 56  # a multiple of the patch size 14


def _cfg(**extra) -> dict:
    return {"encoder": "dinov2_hub", "hub_repo": str(HUB), "hub_model": "dinov2_vits14", "hub_weights": None,
            "crop_size": CROP, "context": 0.1, "batch_size": 8, "workers": 0, **extra}


def _official_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(7)
    model = torch.hub.load(str(HUB), "dinov2_vits14", source="local", pretrained=False)
    state = model.state_dict()
    torch.save(state, tmp_path / "dinov2_vits14_pretrain.pth")
    return tmp_path / "dinov2_vits14_pretrain.pth", state


def _huggingface(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in transformers' Dinov2Model names (separate q, k, v)."""
    out = {"embeddings.cls_token": state["cls_token"], "embeddings.mask_token": state["mask_token"],
           "embeddings.position_embeddings": state["pos_embed"], "layernorm.weight": state["norm.weight"],
           "layernorm.bias": state["norm.bias"]}  # fmt: skip
    for part in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{part}"] = state[f"patch_embed.proj.{part}"]
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    for i in blocks:
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            q, k, v = state[f"{src}attn.qkv.{part}"].chunk(3)
            out |= {f"{dst}attention.attention.query.{part}": q, f"{dst}attention.attention.key.{part}": k,
                    f"{dst}attention.attention.value.{part}": v,
                    f"{dst}attention.output.dense.{part}": state[f"{src}attn.proj.{part}"]}  # fmt: skip
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"{dst}{name}.{part}"] = state[f"{src}{name}.{part}"]
        out[f"{dst}layer_scale1.lambda1"] = state[f"{src}ls1.gamma"]
        out[f"{dst}layer_scale2.lambda1"] = state[f"{src}ls2.gamma"]
    return out


def test_the_real_dinov2_architecture_embeds_through_the_hub(tmp_path: Path) -> None:
    path, state = _official_weights(tmp_path)
    encoder = build_encoder(_cfg(hub_weights=str(path)), torch.device("cpu"))
    assert (encoder.dim, encoder.input_size, encoder.mean, encoder.std) == (384, CROP, IMAGENET_MEAN, IMAGENET_STD)
    assert type(encoder.model).__module__.startswith("dinov2.")  # the official code, not a stand-in
    batch = torch.rand(3, 3, CROP, CROP, generator=torch.Generator().manual_seed(0))
    reference = torch.hub.load(str(HUB), "dinov2_vits14", source="local", pretrained=False)
    reference.load_state_dict(state)
    reference.eval()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference((batch - mean) / std)
    torch.testing.assert_close(encoder.embed(batch), expected)


@pytest.mark.parametrize("form", ["training_checkpoint", "timm", "huggingface"])
def test_weights_files_in_every_form_give_the_same_embeddings(tmp_path: Path, form: str) -> None:
    path, state = _official_weights(tmp_path)
    if form == "training_checkpoint":
        other = {"teacher": {f"backbone.{k}": v for k, v in state.items()}, "iteration": 5}
    elif form == "timm":
        other = {k: v for k, v in state.items() if k != "mask_token"}  # timm's vit_small_patch14_dinov2 names
    else:
        other = _huggingface(state)
    torch.save(other, tmp_path / f"{form}.pth")
    batch = torch.rand(2, 3, CROP, CROP, generator=torch.Generator().manual_seed(1))
    official = build_encoder(_cfg(hub_weights=str(path)), torch.device("cpu")).embed(batch)
    converted = build_encoder(_cfg(hub_weights=str(tmp_path / f"{form}.pth")), torch.device("cpu")).embed(batch)
    torch.testing.assert_close(converted, official)


def test_a_mismatched_weights_file_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    _, state = _official_weights(tmp_path)
    broken = {k: v for k, v in state.items() if not k.startswith("blocks.11.")}
    broken["head.weight"] = torch.zeros(10, 384)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth: does not fit dinov2_vits14 .*missing keys \['blocks\.11\..*"
                                         r"1 unexpected keys \['head\.weight'\]"):
        build_encoder(_cfg(hub_weights=str(tmp_path / "broken.pth")), torch.device("cpu"))
    base = dict(state)
    base["pos_embed"] = torch.zeros(1, 10, 384)
    torch.save(base, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape\.pth: tensors of another shape than the model's: \['pos_embed"):
        build_encoder(_cfg(hub_weights=str(tmp_path / "shape.pth")), torch.device("cpu"))


@pytest.mark.slow
def test_retrieval_end_to_end_on_the_real_dinov2(tmp_path: Path) -> None:
    """embed_crops, embed_images (pool, train, val), retrieve and dedup through Snakemake with the
    real DINOv2 ViT-S/14 code (random weights) on tiny mini-LVIS."""
    config = tiny_config(tmp_path / "results")
    config["embed"].update(encoder="dinov2_hub", hub_repo=str(HUB), hub_model="dinov2_vits14", crop_size=CROP)
    path = tmp_path / "dinov2.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "results" / config["run"]
    done = subprocess.run([sys.executable, "-m", "snakemake", str(run / "retrieval" / "unlabeled.json"), "--cores", "2",
                           "--configfile", str(path)], cwd=REPO, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    crops = np.load(run / "retrieval" / "crops.npy")
    assert crops.shape[1] == 384
    import pyarrow.parquet as pq

    meta = pq.read_schema(run / "retrieval" / "images_pool.parquet").metadata
    assert meta[b"encoder"] == b"dinov2_hub:dinov2_vits14" and meta[b"input_size"] == str(CROP).encode()
    neighbours = pd.read_parquet(run / "retrieval" / "neighbours.parquet")
    assert len(neighbours) == len(crops) * config["retrieve"]["k"]
    unlabeled = json.loads((run / "retrieval" / "unlabeled.json").read_text())
    truth = json.loads((run / "data" / "pool_truth.json").read_text())
    kept = {str(img["id"]) for img in unlabeled["images"]}
    assert kept and not [i for i in kept if (truth[i]["duplicate_of"] or {}).get("kind") == "val_copy"]
