"""The package's shape as tests: the import contracts (import-linter), one thin CLI per rule with its
declared config keys, the registries as the one list of each method axis, rerun triggers derived
from what each stage declares."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from stages.core.pseudo_labels import STUDENT_VARIANTS
from stages.core.smoothing import SMOOTHING
from stages.evaluation.lvis_eval import EVALUATORS
from stages.pipeline.declared import declared_hash, declared_keys
from stages.pipeline.registries import REGISTRY_KEYS, check_registered
from stages.utils.config import ConfigError, load_config, load_stage_config

REPO = Path(__file__).resolve().parents[2]
LIBRARY_PACKAGES = {"core", "data", "modeling", "evaluation", "retrieval", "reporting", "pipeline", "utils"}
PACKAGES = LIBRARY_PACKAGES | {"cli"}


def cli_modules() -> list[str]:
    return sorted(p.stem for p in (REPO / "stages" / "cli").glob("*.py") if p.stem != "__init__")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config", str(root / "pyproject.toml")],
                          cwd=root, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(root)})


def test_import_contracts_hold() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_contracts_cover_every_cli_and_every_library_package() -> None:
    """The CLIs are one package on top of the layers, each independent of the others (a wildcard, so a
    new CLI is covered without editing pyproject.toml), and every sub-package sits in a layer."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    by_type = {c["type"]: c for c in contracts if c["type"] != "forbidden"}
    assert by_type["independence"]["modules"] == ["stages.cli.*"]
    assert by_type["layers"]["layers"][0] == "cli"
    packages = {p.name for p in (REPO / "stages").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == PACKAGES
    layered = {name.strip() for layer in by_type["layers"]["layers"] for name in layer.split("|")}
    assert layered == packages
    assert not [p.name for p in (REPO / "stages").glob("*.py") if p.name != "__init__.py"], "CLIs live in stages/cli/"


def test_a_broken_contract_is_caught(tmp_path: Path) -> None:
    """The linter really reads the code: core importing detectron2, or a CLI importing a CLI, fails."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "stages", copy / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    smoothing = copy / "stages" / "core" / "smoothing.py"
    smoothing.write_text(smoothing.read_text() + "\nimport detectron2  # noqa\n")
    split = copy / "stages" / "cli" / "split.py"
    split.write_text(split.read_text() + "\nimport stages.cli.subsample  # noqa\n")
    done = lint_imports(copy)
    assert done.returncode != 0
    assert "1 kept, 2 broken" in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize("cli", cli_modules())
def test_every_cli_is_thin_and_declares_its_config_keys(cli: str) -> None:
    source = (REPO / "stages" / "cli" / f"{cli}.py").read_text()
    tree = ast.parse(source)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert "main" in functions and not classes, f"stages/cli/{cli}.py: a CLI holds main() and no library code"
    assert len(functions) <= 2, f"stages/cli/{cli}.py: {functions}; library code belongs in a sub-package"
    # every declared key exists in the config (load_stage_config refuses an unknown one)
    assert set(load_stage_config(REPO / "config.yaml", declared_keys(cli))) >= {k.split(".")[0] for k in declared_keys(cli)}


def test_a_stage_cannot_read_what_it_does_not_declare() -> None:
    config = load_stage_config(REPO / "config.yaml", ("teacher.gamma",))
    assert config["teacher"]["gamma"] == 1.5 and config["num_threads"] == 2  # declared, and an execution key
    with pytest.raises(KeyError, match="teacher.eps"):
        config["teacher"]["eps"]
    with pytest.raises(KeyError, match="'seed'"):
        config.get("seed")


def test_rerun_triggers_follow_declared_keys() -> None:
    """Changing `seed` reruns retrieve (it seeds the IVF training sample); changing teacher.eps does
    not rerun similarity (S' depends on gamma only) but does retrain the teacher."""
    config = load_config()
    reseeded = load_config() | {"seed": 1}
    other_eps = load_config()
    other_eps["teacher"]["eps"] = 0.2
    assert declared_hash(reseeded, "retrieve") != declared_hash(config, "retrieve")
    assert declared_hash(other_eps, "similarity") == declared_hash(config, "similarity")
    assert declared_hash(other_eps, "train_teacher") != declared_hash(config, "train_teacher")
    other_gamma = load_config()
    other_gamma["teacher"]["gamma"] = 0.5
    assert declared_hash(other_gamma, "similarity") != declared_hash(config, "similarity")


def test_registries_are_the_one_list_of_each_axis() -> None:
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def node(key: str) -> dict:
        out = schema
        for part in key.split("."):
            out = out["properties"][part]
        return out.get("items", out)

    for key in REGISTRY_KEYS:  # the schema leaves the names to the registry: a new variant is one file
        assert "enum" not in node(key), key
    # the paper's kinds are registered; a new one is added in its registry's file alone, not here
    assert {"onehot", "uniform", "similarity", "similarity_frequency"} <= set(SMOOTHING.names())
    assert {"labeled_only", "onehot", "soft", "soft_corrected"} <= set(STUDENT_VARIANTS.names())
    assert {"fast", "lvis"} <= set(EVALUATORS.names())
    config = load_config()
    check_registered(config)
    config["sweep"]["variants"] = ["onehot", "similarity_corrected"]
    config["evaluation"]["evaluator"] = "coco"
    with pytest.raises(ConfigError) as err:
        check_registered(config)
    assert "sweep.variants" in str(err.value) and "'similarity_corrected'" in str(err.value)
    assert "evaluation.evaluator" in str(err.value) and "'coco'" in str(err.value)


def test_no_two_rules_share_a_description() -> None:
    """`snakemake --list-rules` gives no two rules one description: a rule made by `use rule ... as
    ... with:` inherits its parent's docstring unless it states one."""
    done = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    entries = re.findall(r"^(\w+) \((.*?)\)$", done.stdout, re.M | re.S)
    assert {"bootstrap", "seed_bootstrap", "fig2_bootstrap"} <= {n for n, _ in entries}
    by_text: dict[str, list[str]] = {}
    for name, text in entries:
        by_text.setdefault(" ".join(text.split()), []).append(name)
    shared = [names for names in by_text.values() if len(names) > 1]
    assert not shared, f"rules sharing one docstring: {shared}"


def test_the_dag_picture_in_the_docs_is_current() -> None:
    sys.path.insert(0, str(REPO / "docs"))
    from rulegraph import BEGIN, END, mermaid

    done = subprocess.run([sys.executable, "-m", "snakemake", "--rulegraph", "mermaid-js", "--", "paper_tables"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    design = (REPO / "docs" / "design.md").read_text()
    committed = design[design.index(BEGIN) + len(BEGIN):design.index(END)].strip()
    assert committed == mermaid(done.stdout), "docs/design.md's DAG is stale: run `make dag`"


@pytest.mark.slow
def test_the_gpu_check_runs_in_its_cpu_dry_mode(tmp_path: Path) -> None:
    """benchmarks/gpu_check.py works before a GPU is there: every part runs on the CPU at tiny sizes."""
    out = tmp_path / "gpu.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    for part in ("| a | teacher", "| b | DDP over GLOO", "| c | student", "| e | GPU Faiss"):
        assert part in text, part
    assert "FAILED" not in text


def test_the_cost_sheet_follows_the_config_and_a_measured_gpu_table(tmp_path: Path) -> None:
    """benchmarks/cost_sheet.py counts the grids and seeds of the config it reads, and takes the
    teacher's s/iter from a GPU check's table once one exists (the paper's figure before)."""
    config = yaml.safe_load((REPO / "configs" / "lvis.yaml").read_text())
    # merged over config.yaml key by key, as Snakemake merges a --configfile: every grid axis is named
    config["tuning"] = {"teacher": {"eps": [0.1, 0.2], "gamma": [1.0, 1.5, 2.0]},
                        "student": {"lambda": [0.0, 2.0], "unlabeled_weight": [1.0], "select_on": ["teacher_score"]}}
    config["seeds"] = [0, 1]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))

    def sheet(gpu_md: Path) -> str:
        out = tmp_path / "sheet.md"
        subprocess.run([sys.executable, "-m", "benchmarks.cost_sheet", "--config", str(tmp_path / "cfg.yaml"),
                        "--gpu-md", str(gpu_md), "--out", str(out)], cwd=REPO, check=True, capture_output=True)
        return out.read_text()

    before = sheet(tmp_path / "absent.md")
    assert "| 6 teachers |" in before and "| 2 students |" in before and "1 x (teacher + 4 students)" in before
    assert "| train_teacher | 90,000 it x 0.40 s/it x 16 GPUs" in before  # the paper's 10 h on 16 V100s
    (tmp_path / "gpu.md").write_text("| part | what | s/iter |\n|---|---|---|\n| a | teacher | 0.50 |\n")
    after = sheet(tmp_path / "gpu.md")
    teacher_row = next(line for line in after.splitlines() if line.startswith("| train_teacher |"))
    assert "0.50 s/it" in teacher_row and "| 200 |" in teacher_row  # 90,000 x 0.5 s x 16 GPUs = 200 GPU-hours


def test_snakemake_lint_is_clean_besides_the_conda_lint(tmp_path: Path) -> None:
    """`snakemake --lint` (also `make lint`) reports nothing but the conda/container lint; a rule file
    that mixes a function with its rules is caught, so the check reads the real lints."""
    from tests.snakemake_lint import PENDING, lints, remaining

    found = lints(REPO)
    assert not remaining(found), remaining(found)
    for rule, title in PENDING:  # a pending lint that is gone must leave the list too
        assert any(where == rule and t.startswith(title) for where, t in found), (rule, title)
    copy = tmp_path / "repo"
    copy.mkdir()
    for part in ("Snakefile", "config.yaml", "workflow", "stages"):
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / part, copy / part)
    sweep = copy / "workflow" / "rules" / "sweep.smk"
    sweep.write_text(sweep.read_text() + "\n\ndef fractions_label(w):\n    return 'x'\n")
    assert (str(sweep.resolve()), "Mixed rules and functions in same snakefile.") in [
        (str(Path(w).resolve()), t) for w, t in remaining(lints(copy))]


def _where_a_change_goes() -> dict[str, tuple[list[str], list[str]]]:
    """docs/design.md's table: change -> (the files named in its files column, its config keys)."""
    design = (REPO / "docs" / "design.md").read_text()
    table = design.split("**Where a change goes**")[1].split("\n\n")[1]
    rows = {}
    for line in table.splitlines()[2:]:
        change, files, keys = (cell.strip() for cell in line.strip("|").split("|"))
        rows[change] = (re.findall(r"`([\w./<>-]+\.(?:py|smk|yaml))`", files), re.findall(r"`([\w.]+)`", keys))
    return rows


def test_where_a_change_goes_names_real_files_keys_and_registries() -> None:
    """The table in docs/design.md, kept honest where a test can: every file exists, every key is a
    key of config.yaml, each registry-backed change names the file that holds its registry, and the
    changes that need no code (an evaluation set, a Slurm partition) name none."""
    from detectron2.modeling import BACKBONE_REGISTRY

    import stages.modeling.backbones  # noqa: F401  (registers the backbones)
    from stages.retrieval.encoders import ENCODERS

    rows = _where_a_change_goes()
    config = load_config()
    for change, (files, keys) in rows.items():
        for name in files:
            path = REPO / name if "/" in name or name == "config.yaml" else REPO / "workflow" / "rules" / name
            assert "<" in name or path.exists(), (change, name)
        for key in keys:
            node = config
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, (change, key)
                node = node[part]

    def defined_in(entry) -> list[str]:
        function = getattr(entry, "targets", entry)  # a registry entry, or the registered function itself
        return [sys.modules[function.__module__].__file__.removeprefix(f"{REPO}/")]

    registered = {"a smoothing kind (eq. 3)": ("teacher.smoothing", config["teacher"]["smoothing"]),
                  "a student variant (a Table 1 row)": ("student.variants", config["student"]["variants"][-1]),
                  "an evaluator": ("evaluation.evaluator", config["evaluation"]["evaluator"])}
    for change, (key, name) in registered.items():
        assert rows[change] == (defined_in(REGISTRY_KEYS[key].get(name)), [key] if key != "teacher.smoothing"
                                else ["teacher.smoothing", "sweep.variants"]), change
    assert rows["a backbone"] == (defined_in(BACKBONE_REGISTRY.get(config["model"]["backbone"])), ["model.backbone"])
    assert rows["an image encoder (retrieval)"] == (defined_in(ENCODERS[config["embed"]["encoder"]]), ["embed.encoder"])
    assert rows["an evaluation set (Table 1 on your own LVIS json)"] == ([], ["evaluation.sets"])
    assert rows["a Slurm partition"] == ([], ["resources.default", "resources.rules"])


def test_a_job_gets_this_invocations_threads_not_its_older_config_files(tiny_config_file: Path) -> None:
    """`--config num_threads=1` after a run at 2 threads: nothing reruns (neither the config files nor
    the command text change), and a job that runs gets 1, which its stage loads over its older config
    file's 2 (and says so in its log)."""
    config = yaml.safe_load(tiny_config_file.read_text())
    run = Path(config["results_dir"]) / config["run"]
    target = run / "split" / "train85.json"

    def snakemake(threads: int, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(tiny_config_file),
                               "--config", f"num_threads={threads}", *args, "--", str(target)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return done.stdout + done.stderr

    snakemake(2)
    assert yaml.safe_load((run / "config" / "split.yaml").read_text())["num_threads"] == 2
    assert "Nothing to be done" in snakemake(1, "-n")
    snakemake(1, "--forcerun", "split")
    assert yaml.safe_load((run / "config" / "split.yaml").read_text())["num_threads"] == 2  # not rewritten
    log = (run / "logs" / "split.log").read_text()
    assert f"num_threads = 1 from STAGES_NUM_THREADS (this invocation's), over 2 in {run / 'config' / 'split.yaml'}" in log
    assert "data_workers" not in log  # unchanged: nothing to say
