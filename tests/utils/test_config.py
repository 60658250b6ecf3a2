"""The config is refused, naming the key, when a value is not a finite number -- for every numeric key
of the schema, in the stages' loader and in the Snakefile -- and when a path holds control characters."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.utils.config import SCHEMA_PATH, ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[2]


def numeric_keys(schema: dict, node: dict | None = None, prefix: str = "",
                 kinds: tuple[str, ...] = ("number", "integer")) -> list[str]:
    """Every dotted key of the schema whose value is one of ``kinds`` (or a list of them: key[0])."""
    node = schema if node is None else node
    definitions = schema.get("definitions", {})

    def resolve(sub: dict) -> dict:
        ref = sub.get("$ref")
        return {**definitions[ref.split("/")[-1]], **{k: v for k, v in sub.items() if k != "$ref"}} if ref else sub

    keys = []
    for name, sub in node.get("properties", {}).items():
        sub = resolve(sub)
        types = sub.get("type", [])
        types = types if isinstance(types, list) else [types]
        if "object" in types:
            keys += numeric_keys(schema, sub, f"{prefix}{name}.", kinds)
        elif "array" in types and resolve(sub.get("items", {})).get("type") in kinds:
            keys.append(f"{prefix}{name}[0]")
        elif set(kinds) & set(types) or any(resolve(a).get("type") in kinds for a in sub.get("anyOf", [])):
            keys.append(f"{prefix}{name}")
    return keys


def _with(config: dict, key: str, value: float) -> dict:
    config = copy.deepcopy(config)
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node.setdefault(part, {})
    name, _, index = last.partition("[")
    if index:
        node[name] = [value] + list(node.get(name) or [])[1:]
    else:
        node[name] = value
    return config


KEYS = numeric_keys(yaml.safe_load(SCHEMA_PATH.read_text()))


def test_the_schema_walk_finds_the_numeric_keys() -> None:
    assert {"seed", "teacher.eps", "student.lambda", "dedup.near_duplicate_cosine", "sweep.fractions[0]",
            "student.ignore_threshold", "evaluation.interval_level"} <= set(KEYS)
    assert len(KEYS) > 50


@pytest.mark.fault_injection
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_every_numeric_key_refuses_non_finite_values(value: float) -> None:
    config = load_config()
    for key in KEYS:
        with pytest.raises(ConfigError) as err:
            validate_config(_with(config, key, value))
        assert f"config key '{key}'" in str(err.value), key


INTEGER_KEYS = numeric_keys(yaml.safe_load(SCHEMA_PATH.read_text()), kinds=("integer",))


@pytest.mark.fault_injection
def test_every_integer_key_refuses_a_float_naming_the_key() -> None:
    """JSON Schema counts 3000.0 as an integer; range() and detectron2's MAX_ITER do not: a YAML
    `iterations: 3000.0` (or a tuned choice written as a float) stops at validation, by key."""
    assert {"teacher.iterations", "student.iterations", "seeds[0]", "retrieve.k", "num_threads"} <= set(INTEGER_KEYS)
    config = load_config()
    for key in INTEGER_KEYS:
        value = 8.0  # an integral float, inside every integer key's range
        with pytest.raises(ConfigError) as err:
            validate_config(_with(config, key, value))
        # "is not of type 'integer'", or for a key that is an integer or null (anyOf) "is not valid under any ..."
        assert f"config key '{key.replace('[', '.').rstrip(']')}': 8.0 is not " in str(err.value), key
    validate_config(_with(config, "student.iterations", 8))  # the int itself passes


@pytest.mark.fault_injection
def test_the_snakefile_refuses_nan_naming_the_key(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["dedup"]["near_duplicate_cosine"] = float("nan")  # would silently turn dedup off
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--cores", "1", "--configfile", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "config key 'dedup.near_duplicate_cosine': nan is not a finite number" in done.stdout + done.stderr


def test_tuning_grids_are_every_combination_and_refuse_bad_points() -> None:
    from stages.pipeline.experiments import grid_points, point_name, student_grid

    config = load_config(REPO / "config.yaml")
    config["tuning"]["student"] = {"lambda": [0.0, 2.0], "select_on": ["teacher_score", "corrected_score"],
                                   "unlabeled_weight": []}  # an empty list keeps the configured value
    points = grid_points(config, "student")
    assert points == [{"lambda": 0.0, "select_on": "teacher_score"}, {"lambda": 0.0, "select_on": "corrected_score"},
                      {"lambda": 2.0, "select_on": "teacher_score"}, {"lambda": 2.0, "select_on": "corrected_score"}]
    assert point_name("student", points[1]) == "student_lambda0_select_oncorrected_score"
    assert len({e.name for e in student_grid(config)}) == 4

    config["tuning"]["student"] = {"lamda": [1.0]}
    with pytest.raises(ConfigError, match="lamda"):
        grid_points(config, "student")
    config["tuning"]["student"] = {"select_on": ["teacher_score", "best_score"]}
    with pytest.raises(ConfigError, match="tuning.student.*best_score"):
        grid_points(config, "student")


def test_table1_comparisons_cover_teacher_control_and_each_ladder_step() -> None:
    from stages.pipeline.experiments import table1_comparisons

    models = ["teacher", "student_labeled_only", "student_onehot", "student_soft", "student_soft_corrected"]
    pairs = table1_comparisons(models)
    assert ("student_soft_corrected", "teacher") in pairs and ("student_onehot", "student_labeled_only") in pairs
    assert ("student_soft", "student_onehot") in pairs and ("student_soft_corrected", "student_soft") in pairs
    assert len(pairs) == len(set(pairs)) == 4 + 3 + 2
    # without a one-hot row the ladder starts at soft; without a control, no control differences
    assert table1_comparisons(["teacher", "student_soft", "student_soft_corrected"]) == [
        ("student_soft", "teacher"), ("student_soft_corrected", "teacher"), ("student_soft_corrected", "student_soft")]


def test_fig2_compares_every_smoothing_kind_with_one_hot_and_uniform_at_each_fraction() -> None:
    from stages.pipeline.experiments import fraction_name, sweep_comparisons, sweep_experiments

    config = load_config()
    assert config["sweep"]["variants"][:2] == ["onehot", "uniform"]  # the two baselines of the paper's claim
    pairs = sweep_comparisons(config)
    assert {("similarity", "onehot"), ("similarity", "uniform"), ("similarity_frequency", "onehot"),
            ("similarity_frequency", "uniform"), ("similarity_frequency", "similarity"), ("uniform", "onehot")} == set(pairs)
    assert len(pairs) == 6
    config["sweep"]["variants"] = ["similarity_frequency", "onehot"]
    assert sweep_comparisons(config) == [("onehot", "similarity_frequency")]  # listed order decides the sign
    names = {e.name for e in sweep_experiments(config)}
    assert {f"sweep_onehot_frac{fraction_name(f)}" for f in config["sweep"]["fractions"]} <= names
    assert [fraction_name(f) for f in (0.1, 0.25, 1.0, 1)] == ["0.1", "0.25", "1", "1"]


# ---------------------------------------------------------------- defaults in one place: config.yaml

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
CONFIG_YAML = yaml.safe_load((REPO / "config.yaml").read_text())
OVERLAY = yaml.safe_load((REPO / "configs" / "lvis.yaml").read_text())


def _schema_leaves(node: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """(dotted key, schema node) of every key the schema declares, sections included."""
    out = []
    for name, sub in node.get("properties", {}).items():
        out.append((f"{prefix}{name}", sub))
        out += _schema_leaves(sub, f"{prefix}{name}.")
    return out


def _at(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("section", list(SCHEMA["properties"]))
def test_a_schema_default_equals_config_yaml(section: str) -> None:
    """config.yaml is the defaults; a `default:` left in the schema must say the same."""
    differ = [(key, sub["default"], _at(CONFIG_YAML, key)) for key, sub in _schema_leaves(SCHEMA)
              if key.split(".")[0] == section and "default" in sub and sub["default"] != _at(CONFIG_YAML, key)]
    assert not differ, differ


def test_config_yaml_sets_every_key_the_schema_declares() -> None:
    missing = []
    for key, _ in _schema_leaves(SCHEMA):
        try:
            _at(CONFIG_YAML, key)
        except KeyError:
            missing.append(key)
    assert not missing, f"config.yaml is the defaults: it must set {missing}"


def test_a_left_out_key_comes_from_config_yaml_merged_as_snakemake_merges() -> None:
    from snakemake.utils import update_config  # the merge of --configfile over config.yaml

    partial = {"run": "r", "student": {"lambda": 0.5}, "tuning": {"student": {"unlabeled_weight": [1.0, 2.0]}}}
    expected = copy.deepcopy(CONFIG_YAML)
    update_config(expected, copy.deepcopy(partial))
    got = validate_config(copy.deepcopy(partial))
    assert got == expected and list(got) == list(expected)
    assert got["student"]["correction_scope"] == "detected_class"  # config.yaml's, the holdout15 choice
    assert got["tuning"]["student"] == {"lambda": [0.0, 0.5, 1.0, 2.0], "select_on": ["teacher_score", "corrected_score"],
                                        "unlabeled_weight": [1.0, 2.0]}  # a grid's axes merge, as in Snakemake


def _leaves(node: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in node.items():
        out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]
    return out


def test_the_paper_scale_overlay_holds_only_what_differs_and_validates() -> None:
    """configs/lvis.yaml is merged over config.yaml (README: --configfile configs/lvis.yaml): none of
    its values repeats config.yaml's, every one is commented, and the merge is a valid config."""
    from snakemake.utils import update_config

    from stages.pipeline.registries import check_registered

    def default(key: str):
        try:
            return _at(CONFIG_YAML, key)
        except KeyError:
            return KeyError

    same = [key for key, value in _leaves(OVERLAY) if default(key) == value]
    assert not same, f"configs/lvis.yaml repeats config.yaml's values of {same}"
    merged = copy.deepcopy(CONFIG_YAML)
    update_config(merged, copy.deepcopy(OVERLAY))
    config = validate_config(merged)
    check_registered(config)
    assert config["student"]["correction_scope"] == "detected_class"  # no paper-scale exception to the holdout choice
    assert config == load_config(REPO / "configs" / "lvis.yaml")  # the stages' loader merges alike

    # every value line is commented: on the line, by the comment lines right above it, or on a parent's line
    uncommented, parents, above = [], [], False  # parents: (indent, commented) of the enclosing sections
    for number, line in enumerate((REPO / "configs" / "lvis.yaml").read_text().splitlines(), 1):
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            above = True
            continue
        if not stripped:
            above = False
            continue
        parents = [(i, c) for i, c in parents if i < indent]
        commented = " #" in line or above or any(c for _, c in parents)
        if stripped.endswith(":") or (stripped.split(" #")[0].rstrip().endswith(":")):
            parents.append((indent, commented))
        elif not commented:
            uncommented.append(number)
        above = False
    assert not uncommented, f"configs/lvis.yaml lines without a reason: {uncommented}"


# -- combinations of valid values that cannot work: refused with the schema, before the DAG runs, naming the key


def _default() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_a_holdout_too_small_to_halve_is_refused_naming_the_key() -> None:
    """Before: split.holdout_fraction 0.01 on a small set passed the schema and snakemake -n, and split
    died with "cannot split 1 image(s) into train and holdout", naming no key."""
    config = _default()
    config["minilvis"]["preset"] = "shapes"
    config["minilvis"]["shapes"]["train_images"] = 60
    config["split"]["holdout_fraction"] = 0.01
    with pytest.raises(ConfigError, match=r"config key 'split.holdout_fraction': 0.01 of 60 train image\(s\) is a holdout "
                                          r"of 1 image\(s\); the split cuts the holdout into two halves .* use at least "
                                          r"0.0333"):
        validate_config(config)
    config["split"]["holdout_fraction"] = 0.0333
    validate_config(config)  # 2 images: halved into 1 + 1


@pytest.mark.parametrize("section, key, machines", [("teacher", "batch_size", "teacher_machines"),
                                                    ("student", "unlabeled_batch_size", "student_machines")])
def test_batches_that_do_not_split_over_the_processes_are_refused(section: str, key: str, machines: str) -> None:
    config = _default()
    config["distributed"].update(processes_per_machine=2, **{machines: 2})
    config[section][key] = 6
    with pytest.raises(ConfigError, match=rf"config key '{section}.{key}': 6 images per step do not split over 4 "
                                          rf"training processes .* use a multiple of 4"):
        validate_config(config)


def test_an_lvis_source_without_its_files_is_refused() -> None:
    config = _default()
    config["dataset"].update(source="lvis", train_json="/data/train.json")
    with pytest.raises(ConfigError) as raised:
        validate_config(config)
    for key in ("val_json", "image_root", "unlabeled_dir"):
        assert f"config key 'dataset.{key}' is required when dataset.source is 'lvis'" in str(raised.value)


def test_snakemake_refuses_the_small_holdout_before_any_job(tmp_path: Path) -> None:
    config = _default()
    config.update(results_dir=str(tmp_path / "results"))
    config["minilvis"]["preset"] = "shapes"
    config["minilvis"]["shapes"]["train_images"] = 60
    config["split"]["holdout_fraction"] = 0.01
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path), "--cores", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "config key 'split.holdout_fraction'" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()


def test_the_environment_sets_the_execution_keys_over_an_older_config_file(tmp_path: Path) -> None:
    # a stage's config file is rewritten only when a declared value changes, so it may hold an earlier
    # invocation's num_threads; the rule's command sets the current one in the environment
    from stages.utils.config import execution_environment, execution_variable, load_stage_config, write_config

    path = tmp_path / "train_teacher.yaml"
    write_config(load_config() | {"num_threads": 2, "data_workers": 3}, path)
    as_written = load_stage_config(path, ("teacher.gamma",), environ={})
    assert (as_written["num_threads"], as_written["data_workers"]) == (2, 3)
    now = load_stage_config(path, ("teacher.gamma",), environ={execution_variable("num_threads"): "1"})
    assert (now["num_threads"], now["data_workers"], now["teacher"]["gamma"]) == (1, 3, as_written["teacher"]["gamma"])
    # what the workflow exports is what the loader reads back
    assert load_stage_config(path, ("teacher.gamma",), environ=execution_environment(
        load_config() | {"num_threads": 4, "data_workers": 1}))["data_workers"] == 1
    with pytest.raises(ConfigError, match=r"train_teacher.yaml: environment variable STAGES_NUM_THREADS='two'"):
        load_stage_config(path, ("teacher.gamma",), environ={"STAGES_NUM_THREADS": "two"})
    with pytest.raises(ConfigError, match=r"(?s)STAGES_NUM_THREADS=0.*num_threads.*minimum"):  # the schema's bound still holds
        load_stage_config(path, ("teacher.gamma",), environ={"STAGES_NUM_THREADS": "0"})
