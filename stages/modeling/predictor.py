"""A trained detector on images: loading a checkpoint, inference, LVIS results.

Each detection: image_id, category_id, bbox (XYWH), score, segmentation (RLE); at most
``model.detections_per_image`` per image (the detector's output; the evaluator applies the AP budget
``evaluation.max_detections`` itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from tqdm import tqdm

from stages.data.images import ImageReadError, read_rgb_array
from stages.data.lvis import image_path
from stages.modeling.build import build_detector, detectron2_config
from stages.modeling.data import test_transform
from stages.utils.weights import load_checkpoint_state


def load_detector(config: dict[str, Any], weights: Path, num_classes: int) -> torch.nn.Module:
    """A detector in eval mode with a trained checkpoint (loaded with weights_only)."""
    cfg = detectron2_config(config, num_classes)
    cfg.MODEL.TIMM.WEIGHTS = ""  # the checkpoint holds the trained backbone
    model = build_detector(cfg)
    state = load_checkpoint_state(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not fit the configured detector (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.to(cfg.MODEL.DEVICE).eval()
    return model


def instances_to_results(instances, image_id: int, category_ids: list[int]) -> list[dict[str, Any]]:
    """LVIS results for one image's detector output (boxes XYWH, masks as RLE)."""
    boxes = instances.pred_boxes.tensor.cpu().numpy()
    scores = instances.scores.cpu().numpy()
    classes = instances.pred_classes.cpu().numpy()
    masks = instances.pred_masks.cpu().numpy() if instances.has("pred_masks") else None
    results = []
    for k in range(len(instances)):
        x0, y0, x1, y1 = boxes[k].tolist()
        det = {"image_id": int(image_id), "category_id": int(category_ids[classes[k]]),
               "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[k])}
        if masks is not None:
            rle = mask_util.encode(np.asfortranarray(masks[k].astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            det["segmentation"] = rle
        results.append(det)
    return results


@torch.inference_mode()
def predict(model: torch.nn.Module, config: dict[str, Any], images: list[dict], image_root: Path,
            category_ids: list[int], batch_size: int = 4) -> list[dict[str, Any]]:
    transform = test_transform(config)
    device = torch.device(config["device"])
    results: list[dict[str, Any]] = []
    max_dets = config["model"]["detections_per_image"]  # detectron2's TEST.DETECTIONS_PER_IMAGE, held here too
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch"):
        batch, metas = [], images[start:start + batch_size]
        for img in metas:
            path = image_path(img, image_root)
            try:
                array = read_rgb_array(path)  # EXIF-oriented, as detectron2 reads training images
            except ImageReadError as exc:
                raise ValueError(f"{path}: cannot read image {img['id']}: {exc}") from exc
            resized = transform.get_transform(array).apply_image(array)
            batch.append({"image": torch.as_tensor(resized.transpose(2, 0, 1).copy()).float().to(device),
                          "height": img["height"], "width": img["width"]})
        try:
            outputs = model(batch)
        except FloatingPointError as exc:
            raise FloatingPointError(f"predict, images {[img['id'] for img in metas]}: {exc}") from exc
        for img, out in zip(metas, outputs):
            inst = out["instances"].to("cpu")
            if len(inst) > max_dets:
                inst = inst[torch.argsort(inst.scores, descending=True)[:max_dets]]
            results.extend(instances_to_results(inst, img["id"], category_ids))
    return results
