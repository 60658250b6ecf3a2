"""One image reader everywhere (issue 22, case 8): phone photos carry an EXIF orientation, detectron2's
read_image turns them, and so must validation, the pool listing, the embeddings, inference and the
student's unlabeled stream. The reference is detectron2's own ``detection_utils.read_image``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import detection_utils
from PIL import Image

from stages.data.images import oriented_size, read_rgb_array
from stages.data.lvis import DatasetError, check_lvis, dataset_dicts
from stages.data.validation import pool_images, validate_datasets
from stages.retrieval.crops import CropDataset
from stages.retrieval.pool import WholeImageDataset
from tests.conftest import tiny_config

WIDTH, HEIGHT = 64, 48  # as stored in the file (a phone's sensor: landscape)
BOX = (8, 6, 20, 14)  # x, y, w, h of a red rectangle painted on the stored pixels


def photo(path: Path, orientation: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """A JPEG whose stored pixels hold a red rectangle at BOX on a grey-blue ramp, with the EXIF
    orientation tag (1: none)."""
    w, h = size
    ramp = np.zeros((h, w, 3), dtype=np.uint8)
    ramp[..., 2] = np.linspace(0, 250, w, dtype=np.uint8)[None, :]
    ramp[..., 1] = np.linspace(0, 250, h, dtype=np.uint8)[:, None]
    x, y, bw, bh = BOX
    ramp[y:y + bh, x:x + bw] = (255, 0, 0)
    exif = Image.Exif()
    if orientation != 1:
        exif[274] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ramp).save(path, quality=100, subsampling=0, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_reader_is_detectron2s_read_image(tmp_path: Path, orientation: int) -> None:
    path = photo(tmp_path / f"o{orientation}.jpg", orientation)
    expected = detection_utils.read_image(str(path), format="RGB")
    ours = read_rgb_array(path)
    np.testing.assert_array_equal(ours, expected)
    with Image.open(path) as im:
        assert oriented_size(im) == (expected.shape[1], expected.shape[0])
    assert expected.shape[:2] == ((WIDTH, HEIGHT) if orientation in (5, 6, 7, 8) else (HEIGHT, WIDTH))
    # the embedding stages read the same pixels
    crops = CropDataset([], 0.0, 8)
    np.testing.assert_array_equal(np.asarray(crops._image(path)), expected)
    whole, _ = WholeImageDataset([path], 16)[0]
    reference = torch.from_numpy(np.asarray(Image.fromarray(expected).resize((16, 16), Image.Resampling.BILINEAR),
                                            dtype=np.float32) / 255.0).permute(2, 0, 1)
    torch.testing.assert_close(whole, reference)


def _dataset(tmp_path: Path, orientation: int) -> tuple[Path, Path]:
    """A one-photo dataset whose json has the stored size and the rectangle annotated on the stored
    pixels three ways: a box with a polygon, and an RLE."""
    root = tmp_path / "images"
    photo(root / "p.jpg", orientation)
    x, y, w, h = BOX
    polygon = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8, order="F")
    mask[y:y + h, x:x + w] = 1
    rle = mask_util.encode(mask)
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [float(v) for v in BOX], "area": float(w * h),
             "segmentation": polygon},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [float(v) for v in BOX], "area": float(w * h),
             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}]
    data = {"images": [{"id": 1, "file_name": "p.jpg", "width": WIDTH, "height": HEIGHT, "neg_category_ids": [],
                        "not_exhaustive_category_ids": []}],
            "categories": [{"id": 1, "name": "thing", "frequency": "f"}], "annotations": anns}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    return path, root


def _settings(on_invalid: str, check: str = "decode") -> dict:
    return {"on_invalid": on_invalid, "image_check": check, "allow_paths_outside_image_root": False}


@pytest.mark.fault_injection
@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
@pytest.mark.parametrize("check", ["header", "decode"])
def test_a_turned_photo_with_its_stored_size_is_an_error_and_is_repaired(tmp_path: Path, orientation: int,
                                                                           check: str) -> None:
    """Before: a 64x48 phone photo passed validation and crashed the teacher with SizeMismatchError."""
    path, root = _dataset(tmp_path, orientation)
    with pytest.raises(DatasetError, match=rf"image 1: image .*p\.jpg carries EXIF orientation {orientation} .* it is "
                                           rf"{HEIGHT}x{WIDTH}; the json says {WIDTH}x{HEIGHT}"):
        validate_datasets(path, None, root, _settings("fail", check), 1)
    train, _, report = validate_datasets(path, None, root, _settings("skip", check), 1)
    assert report["action"].tolist() == [f"fixed: EXIF orientation {orientation} applied to the image's size (width "
                                         "and height swapped) and its annotations"]
    check_lvis(train, "repaired")
    image = detection_utils.read_image(str(root / "p.jpg"), format="RGB")  # what the detector trains on
    assert (train["images"][0]["height"], train["images"][0]["width"]) == image.shape[:2]
    red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
    ys, xs = np.nonzero(red)
    for ann in train["annotations"]:  # the repaired annotations sit on the red pixels of the turned image
        assert ann["bbox"] == [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                               float(ys.max() + 1 - ys.min())]
        seg = ann["segmentation"]
        rle = mask_util.merge(mask_util.frPyObjects(seg, *image.shape[:2])) if isinstance(seg, list) else seg
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), red)
        assert ann["area"] == red.sum()
    # detectron2's mappers take the repaired record without a SizeMismatchError
    from stages.modeling.data import WeakStrongMapper, train_mapper

    config = tiny_config(tmp_path / "results")
    record = dataset_dicts(train, root)[0]
    out = train_mapper(config)(dict(record))
    assert out["instances"].gt_boxes.tensor.shape == (2, 4)
    WeakStrongMapper(config)(dict(record))


@pytest.mark.parametrize("orientation", [3, 6])
def test_a_square_photo_is_read_turned_everywhere(tmp_path: Path, orientation: int) -> None:
    """Before: a square photo passed every check, and the crops were cut from the unturned pixels
    while detectron2 trained on the turned ones."""
    path = photo(tmp_path / "sq.jpg", orientation, size=(48, 48))
    turned = detection_utils.read_image(str(path), format="RGB")
    stored = np.asarray(Image.open(path).convert("RGB"))
    assert not np.array_equal(turned, stored)  # the case matters
    np.testing.assert_array_equal(np.asarray(CropDataset([], 0.0, 8)._image(path)), turned)
    np.testing.assert_array_equal(read_rgb_array(path), turned)


def test_the_pool_lists_photos_with_their_turned_size(tmp_path: Path) -> None:
    """Before: import_lvis listed pool photos with their unturned size."""
    photo(tmp_path / "pool" / "a.jpg", 6)
    photo(tmp_path / "pool" / "b.jpg", 1)
    images, problems = pool_images(tmp_path / "pool", 100)
    assert not problems
    assert [(img["width"], img["height"]) for img in images] == [(HEIGHT, WIDTH), (WIDTH, HEIGHT)]
