"""Fault injection, inputs: each kind of broken LVIS json or image file, in fail mode (one clear error
naming file, record and reason for every problem) and in skip mode (the record dropped or repaired,
every action in the report, the result a valid dataset)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from stages.cli import import_lvis
from stages.data.lvis import DatasetError, check_lvis, frequency_group, load_lvis, read_json
from stages.data.validation import validate_datasets
from tests.conftest import tiny_config

pytestmark = pytest.mark.fault_injection


@pytest.fixture
def user_data(tiny_minilvis: Path, tmp_path: Path) -> dict[str, Path]:
    """A private copy of the tiny mini-LVIS, laid out as a user's LVIS files."""
    root = tmp_path / "user"
    shutil.copytree(tiny_minilvis / "images", root / "images")
    for name in ("train", "val"):
        shutil.copyfile(tiny_minilvis / f"{name}.json", root / f"{name}.json")
    return {"train": root / "train.json", "val": root / "val.json", "images": root / "images",
            "pool": root / "images" / "pool"}  # fmt: skip


def edit(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def first_ann(data: dict) -> dict:
    return data["annotations"][0]


def settings(on_invalid: str, image_check: str = "decode", allow_outside: bool = False) -> dict:
    return {"on_invalid": on_invalid, "image_check": image_check, "allow_paths_outside_image_root": allow_outside}


# Each case breaks one thing; (kind, record id or None, text of the reason, action in skip mode).
def _degenerate_box(u):
    edit(u["train"], lambda d: first_ann(d)["bbox"].__setitem__(2, 0.0))
    return "annotation", json.loads(u["train"].read_text())["annotations"][0]["id"], "degenerate bbox", "dropped the annotation"


def _empty_polygon(u):
    edit(u["train"], lambda d: first_ann(d).__setitem__("segmentation", []))
    return "annotation", read_json(u["train"])["annotations"][0]["id"], "empty polygon list", "dropped the annotation"


def _zero_area_polygon(u):
    edit(u["train"], lambda d: first_ann(d).__setitem__("segmentation", [[1, 1, 5, 5, 9, 9]]))
    return "annotation", read_json(u["train"])["annotations"][0]["id"], "zero area", "dropped the annotation"


def _missing_image_ref(u):
    edit(u["train"], lambda d: first_ann(d).__setitem__("image_id", 999999))
    return "annotation", read_json(u["train"])["annotations"][0]["id"], "image_id 999999 (int) is not an image", "dropped"


def _missing_category_ref(u):
    edit(u["train"], lambda d: first_ann(d).__setitem__("category_id", 4242))
    return "annotation", read_json(u["train"])["annotations"][0]["id"], "category_id 4242 (int) is not a category", "dropped"


def _box_outside_image(u):
    edit(u["train"], lambda d: first_ann(d).__setitem__("bbox", [500.0, 500.0, 10.0, 10.0]))
    return "annotation", read_json(u["train"])["annotations"][0]["id"], "outside the image", "dropped the annotation"


def _missing_frequency(u):
    edit(u["train"], lambda d: d["categories"][0].pop("frequency"))
    return "category", read_json(u["train"])["categories"][0]["id"], "frequency must be one of r/c/f", "fixed: frequency"


def _unknown_neg_category(u):
    edit(u["train"], lambda d: d["images"][0].__setitem__("neg_category_ids", [4242]))
    return "image", read_json(u["train"])["images"][0]["id"], "neg_category_ids names unknown", "fixed: unknown category"


def _image_missing_on_disk(u):
    image = read_json(u["train"])["images"][1]
    (u["images"] / image["file_name"]).unlink()
    return "image", image["id"], "image file not found", "dropped the image and its annotations"


def _corrupt_image(u):
    image = read_json(u["train"])["images"][2]
    (u["images"] / image["file_name"]).write_bytes(b"this is not a png")
    return "image", image["id"], "unreadable image", "dropped the image and its annotations"


def _truncated_image(u):
    image = read_json(u["train"])["images"][3]
    path = u["images"] / image["file_name"]
    Image.effect_noise((64, 64), 64).convert("RGB").save(path)  # noise: no compression, so a long body
    path.write_bytes(path.read_bytes()[:-2000])
    return "image", image["id"], "unreadable image", "dropped the image and its annotations"


def _wrong_image_size(u):
    image = read_json(u["train"])["images"][4]
    path = u["images"] / image["file_name"]
    Image.open(path).resize((40, 50)).save(path)
    return "image", image["id"], "is 40x50, the json says 64x64", "dropped the image and its annotations"


RECORD_CASES = [_degenerate_box, _empty_polygon, _zero_area_polygon, _missing_image_ref, _missing_category_ref,
                _box_outside_image, _missing_frequency, _unknown_neg_category, _image_missing_on_disk,
                _corrupt_image, _truncated_image, _wrong_image_size]  # fmt: skip


@pytest.mark.parametrize("case", RECORD_CASES, ids=lambda f: f.__name__.strip("_"))
def test_fail_mode_names_file_record_and_reason(user_data, case) -> None:
    kind, record_id, reason, _ = case(user_data)
    with pytest.raises(DatasetError) as raised:
        validate_datasets(user_data["train"], user_data["val"], user_data["images"], settings("fail"), 2)
    message = str(raised.value)
    assert str(user_data["train"]) in message and f"{kind} {record_id}" in message and reason in message
    assert "dataset.on_invalid: skip" in message
    report = raised.value.report
    assert len(report) == 1 and report.iloc[0]["record_id"] == str(record_id)


@pytest.mark.parametrize("case", RECORD_CASES, ids=lambda f: f.__name__.strip("_"))
def test_skip_mode_repairs_and_reports(user_data, case) -> None:
    before = read_json(user_data["train"])
    kind, record_id, reason, action = case(user_data)
    train, val, report = validate_datasets(user_data["train"], user_data["val"], user_data["images"],
                                           settings("skip"), 2)  # fmt: skip
    assert len(report) == 1
    row = report.iloc[0]
    assert (row["file"], row["kind"], row["record_id"]) == (str(user_data["train"]), kind, str(record_id))
    assert reason in row["reason"] and row["action"].startswith(action)
    check_lvis(train, "repaired train")  # what comes out is a valid dataset
    check_lvis(val, "repaired val")
    if action.startswith("dropped the image"):
        assert record_id not in {img["id"] for img in train["images"]}
        assert not [a for a in train["annotations"] if a["image_id"] == record_id]
        lost = [a for a in before["annotations"] if a["image_id"] == record_id]
        assert len(train["annotations"]) == len(before["annotations"]) - len(lost)
    elif action.startswith("dropped"):
        assert len(train["annotations"]) == len(before["annotations"]) - 1
        assert record_id not in {a["id"] for a in train["annotations"]}
    else:
        assert len(train["annotations"]) == len(before["annotations"])


def test_missing_frequency_is_derived_with_the_lvis_rule_for_train_and_val(user_data) -> None:
    edit(user_data["train"], lambda d: [c.pop("frequency") for c in d["categories"]])
    train, val, report = validate_datasets(user_data["train"], user_data["val"], user_data["images"],
                                           settings("skip"), 2)  # fmt: skip
    counts = {c["id"]: len({a["image_id"] for a in train["annotations"] if a["category_id"] == c["id"]})
              for c in train["categories"]}  # fmt: skip
    assert {c["id"]: c["frequency"] for c in train["categories"]} == {i: frequency_group(n) for i, n in counts.items()}
    assert [c["frequency"] for c in val["categories"]] == [c["frequency"] for c in train["categories"]]
    assert [frequency_group(n) for n in (0, 1, 10, 11, 100, 101)] == ["r", "r", "r", "c", "c", "f"]
    assert len(report) == len(train["categories"])


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_broken_structure_is_fatal_in_both_modes(user_data, mode: str) -> None:
    edit(user_data["train"], lambda d: d["images"].append(dict(d["images"][0])))
    duplicate = read_json(user_data["train"])["images"][0]["id"]
    with pytest.raises(DatasetError, match=rf"image {duplicate}: duplicate image id"):
        validate_datasets(user_data["train"], user_data["val"], user_data["images"], settings(mode), 2)


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_val_image_that_is_a_train_file_is_leakage(user_data, mode: str) -> None:
    train_file = read_json(user_data["train"])["images"][0]["file_name"]
    edit(user_data["val"], lambda d: d["images"][0].__setitem__("file_name", train_file))
    with pytest.raises(DatasetError, match=r"val\.json.*\n.*is in the train set \(leakage\)"):
        validate_datasets(user_data["train"], user_data["val"], user_data["images"], settings(mode), 2)


@pytest.mark.parametrize("text, reason", [("{not json", "not valid JSON"), ("[1, 2]", "top level must be a JSON object"),
                                          ('{"images": []}', "missing or non-list 'categories'")])  # fmt: skip
def test_malformed_json_is_named(user_data, text: str, reason: str) -> None:
    user_data["train"].write_text(text)
    with pytest.raises(DatasetError, match=rf"(?s)train\.json.*{reason}"):
        validate_datasets(user_data["train"], user_data["val"], user_data["images"], settings("skip"), 2)


def test_fail_mode_lists_every_problem_at_once(user_data) -> None:
    cases = [_degenerate_box, _missing_frequency, _corrupt_image, _wrong_image_size]
    expected = [case(user_data) for case in cases]
    with pytest.raises(DatasetError) as raised:
        validate_datasets(user_data["train"], user_data["val"], user_data["images"], settings("fail"), 2)
    assert "4 problem(s)" in str(raised.value)
    assert sorted(raised.value.report["record_id"]) == sorted(str(e[1]) for e in expected)


def _user_config(tmp_path: Path, user_data: dict, on_invalid: str) -> Path:
    config = tiny_config(tmp_path / "results")
    config["dataset"].update(source="lvis", train_json=str(user_data["train"]), val_json=str(user_data["val"]),
                             image_root=str(user_data["images"]), unlabeled_dir=str(user_data["pool"]),
                             on_invalid=on_invalid)  # fmt: skip
    path = tmp_path / f"user_{on_invalid}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_import_lvis_skip_writes_repaired_files_and_the_report(user_data, tmp_path: Path) -> None:
    expected = [case(user_data) for case in (_degenerate_box, _corrupt_image)]
    (user_data["pool"] / "broken.png").write_bytes(b"\x89PNG no")
    out = tmp_path / "out"
    import_lvis.main(["--config", str(_user_config(tmp_path, user_data, "skip")), "--out-train", str(out / "train.json"),
                      "--out-val", str(out / "val.json"), "--out-pool", str(out / "pool.json"),
                      "--out-report", str(out / "validation.csv")])  # fmt: skip
    report = pd.read_csv(out / "validation.csv", dtype=str)
    assert sorted(report["record_id"]) == sorted([str(e[1]) for e in expected] + [str(user_data["pool"] / "broken.png")])
    load_lvis(out / "train.json")
    pool = read_json(out / "pool.json")
    assert "broken.png" not in {Path(img["file_name"]).name for img in pool["images"]} and pool["images"]


def test_import_lvis_fail_writes_no_dataset(user_data, tmp_path: Path, capsys) -> None:
    _degenerate_box(user_data)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="degenerate bbox"):
        import_lvis.main(["--config", str(_user_config(tmp_path, user_data, "fail")), "--out-train",
                          str(out / "train.json"), "--out-val", str(out / "val.json"), "--out-pool",
                          str(out / "pool.json"), "--out-report", str(out / "validation.csv")])  # fmt: skip
    assert not out.exists() or not list(out.iterdir())
    assert "degenerate bbox" in capsys.readouterr().err  # the job log lists it too


def test_duplicate_annotation_id_keeps_the_first_copy(user_data) -> None:
    def duplicate(d):
        d["annotations"][1]["id"] = d["annotations"][0]["id"]

    edit(user_data["train"], duplicate)
    before = read_json(user_data["train"])["annotations"]
    train, _, report = validate_datasets(user_data["train"], user_data["val"], user_data["images"],
                                         settings("skip"), 2)  # fmt: skip
    assert list(report["reason"]) == ["duplicate annotation id"]
    assert train["annotations"] == [before[0], *before[2:]]


# -- structure before content: every record an object, integer ids, image sizes; reported, never a traceback


def _validate(user_data, mode: str, **kw):
    return validate_datasets(user_data["train"], user_data["val"], user_data["images"], settings(mode, **kw), 2)


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_a_record_that_is_not_an_object_is_reported(user_data, mode: str) -> None:
    edit(user_data["train"], lambda d: d["images"].append(5))
    position = len(read_json(user_data["train"])["images"]) - 1
    if mode == "fail":
        with pytest.raises(DatasetError, match=rf"image #{position}: record is 5 \(int\), not an object"):
            _validate(user_data, mode)
        return
    train, _, report = _validate(user_data, mode)
    assert report["record_id"].tolist() == [f"#{position}"]
    assert report["action"].tolist() == ["dropped the malformed record"]
    check_lvis(train, "repaired train")
    assert len(train["images"]) == position


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_category_ids_must_be_integers_in_both_modes(user_data, mode: str) -> None:
    edit(user_data["train"], lambda d: d["categories"][1].__setitem__("id", str(d["categories"][1]["id"])))
    bad = read_json(user_data["train"])["categories"][1]["id"]
    with pytest.raises(DatasetError, match=rf"category #1: id must be an integer, found '{bad}' \(str\)"):
        _validate(user_data, mode)


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_an_image_without_a_size_is_reported_not_a_keyerror(user_data, mode: str) -> None:
    edit(user_data["train"], lambda d: d["images"][0].pop("height"))
    image_id = read_json(user_data["train"])["images"][0]["id"]
    if mode == "fail":
        with pytest.raises(DatasetError, match=rf"image {image_id}: height must be a positive integer, found None"):
            _validate(user_data, mode)
        return
    train, _, report = _validate(user_data, mode)
    assert report["action"].str.startswith("dropped the image").all()
    assert image_id not in {img["id"] for img in train["images"]}
    check_lvis(train, "repaired train")


def test_an_id_of_the_wrong_type_shows_its_type(user_data) -> None:
    edit(user_data["train"], lambda d: first_ann(d).__setitem__("image_id", str(first_ann(d)["image_id"])))
    ann = first_ann(read_json(user_data["train"]))
    with pytest.raises(DatasetError, match=rf"annotation {ann['id']}: image_id must be an integer, found "
                                           rf"'{ann['image_id']}' \(str\)"):
        _validate(user_data, "fail")
    edit(user_data["train"], lambda d: first_ann(d).__setitem__("image_id", True))
    with pytest.raises(DatasetError, match=r"image_id must be an integer, found True \(bool\)"):
        _validate(user_data, "fail")


def _outside(user_data, tmp_path: Path, how: str) -> int:
    """Point train image 0 outside image_root: by ../, by an absolute path, or through a symlink."""
    image = read_json(user_data["train"])["images"][0]
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(user_data["images"] / image["file_name"], outside / "x.png")
    if how == "dotdot":
        name = "../../outside/x.png"
    elif how == "absolute":
        name = str(outside / "x.png")
    else:
        (user_data["images"] / "link").symlink_to(outside, target_is_directory=True)
        name = "link/x.png"
    edit(user_data["train"], lambda d: d["images"][0].__setitem__("file_name", name))
    return image["id"]


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_image_paths_must_stay_inside_image_root(user_data, tmp_path: Path, how: str) -> None:
    image_id = _outside(user_data, tmp_path, how)
    with pytest.raises(DatasetError, match=rf"image {image_id}: file_name .* (outside image_root|absolute path)"):
        _validate(user_data, "fail")
    train, _, report = _validate(user_data, "fail", allow_outside=True)  # the documented switch
    assert report.empty and image_id in {img["id"] for img in train["images"]}
