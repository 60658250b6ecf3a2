# Paths and helpers shared by all rules: the one place that knows the layout of results/<run>/.
import hashlib
import os
import json
import sys
from pathlib import Path

import yaml

RUN = f"{config['results_dir']}/{config['run']}"
PYTHON = sys.executable
RESOLVED_CONFIG = f"{RUN}/config.yaml"


def _write_resolved_config():
    """The validated config (defaults filled) that every stage CLI reads; rewritten only on change."""
    text = yaml.safe_dump(config, sort_keys=True)
    path = Path(RESOLVED_CONFIG)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


_write_resolved_config()


def section_hash(*keys):
    """Rerun trigger: a rule's params carry the hash of the config sections it depends on."""
    payload = json.dumps({k: config.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def rule_resources(name):
    """Slurm resources of a rule: resources.default merged with resources.rules[name]."""
    res = dict(config["resources"]["default"])
    res.update(config["resources"]["rules"].get(name, {}))
    return res


def is_local(name):
    """Light rules run on the submitting machine, not as Slurm jobs (resources.local_rules)."""
    return name in config["resources"]["local_rules"]


def stage(name):
    return f"{PYTHON} -m stages.{name} --config {RESOLVED_CONFIG}"


def machines(phase):
    return config["distributed"][f"{phase}_machines"]


def training_resources(name, phase):
    """A training rule's resources; on several machines one Slurm task per node, started by the
    rule's own srun (see training_stage). The 'mpi' flag tells the Slurm plugin not to wrap the
    job in `srun -n1`, and tasks_per_gpu=0 keeps it from turning `tasks` into --ntasks-per-gpu."""
    res = rule_resources(name)
    if machines(phase) > 1:
        res.update(nodes=machines(phase), tasks=machines(phase), tasks_per_gpu=0, mpi="srun")
    return res


def training_stage(name, phase, rule):
    """stage(name), started once per node under srun when the phase spans several machines:
    each node's task launches distributed.processes_per_machine processes (stages.distributed),
    with the job's CPUs and the rule's GPUs of its node."""
    n = machines(phase)
    if n == 1:
        return stage(name)
    gres = rule_resources(rule).get("gres")
    srun = (f"srun --nodes={n} --ntasks={n} --ntasks-per-node=1 --kill-on-bad-exit=1"
            + " --cpus-per-task=${{SLURM_CPUS_PER_TASK:-1}}" + (f" --gres={gres}" if gres else ""))
    return f"{srun} {stage(name)}"


MINILVIS = config["dataset"]["source"] == "minilvis"
DATA = f"{RUN}/data"
TRAIN_JSON = f"{DATA}/train.json"
VAL_JSON = f"{DATA}/val.json"
POOL_JSON = f"{DATA}/pool.json"
IMAGE_ROOT = f"{DATA}/images" if MINILVIS else config["dataset"]["image_root"]
TEACHER_SPLIT = "full" if config["teacher"]["retrain_full"] else "train85"


def teacher_train_json(split):
    return TRAIN_JSON if split == "full" else f"{RUN}/split/train85.json"


def prototypes_dir(split):
    # The contract's prototypes/ holds the train85 teacher's; a retrained full teacher has its own.
    return f"{RUN}/prototypes" if split == "train85" else f"{RUN}/prototypes/full"


EXP = f"{RUN}/experiments"


def experiment_name(trainset, fraction, smoothing, eps, gamma):
    return f"teacher_{trainset}_frac{float(fraction):g}_{smoothing}_eps{float(eps):g}_gamma{float(gamma):g}"


def student_experiment_name(variant, lam, weight):
    return f"student_{variant}_lam{float(lam):g}_w{float(weight):g}"


def student_hyperparams(wildcards=None):
    """lambda and unlabeled weight of the main-line students: tuned on holdout15 or from the config."""
    if config["student"]["use_tuned"]:
        with open(checkpoints.tune_student.get().output.choice) as fh:
            choice = json.load(fh)
        return f"--lam {choice['lambda']} --unlabeled-weight {choice['unlabeled_weight']}"
    return ""


def _tuned_teacher(trainset):
    with open(checkpoints.tune_teacher.get().output.choice) as fh:
        choice = json.load(fh)
    return f"{EXP}/{experiment_name(trainset, 1.0, 'similarity', choice['eps'], choice['gamma'])}/model_final.pth"


def holdout_teacher_weights(wildcards=None):
    """The train85 teacher whose holdout15 detections give CCECE (tuned values when use_tuned)."""
    if config["teacher"]["use_tuned"]:
        return _tuned_teacher("train85")
    return f"{RUN}/teacher/train85/model_final.pth"


def final_teacher_weights(wildcards=None):
    """The teacher of Table 1 and of the students: the train85 one, or retrained on full train."""
    if not config["teacher"]["retrain_full"]:
        return holdout_teacher_weights()
    if config["teacher"]["use_tuned"]:
        return _tuned_teacher("full")
    return f"{RUN}/teacher/full/model_final.pth"


MODELS = ["teacher"] + [f"student_{v}" for v in config["student"]["variants"]]


def model_weights(wildcards):
    if wildcards.model == "teacher":
        return final_teacher_weights(wildcards)
    return f"{RUN}/student/{wildcards.model.removeprefix('student_')}/model_final.pth"


def report_outputs():
    return [f"{RUN}/report/table1.md", f"{RUN}/report/table1.csv", f"{RUN}/report/fig3_reliability.png",
            f"{RUN}/report/fig4_per_class_ap.png", f"{RUN}/report/fig3_reliability.csv",
            f"{RUN}/report/fig4_per_class_ap.csv"]
