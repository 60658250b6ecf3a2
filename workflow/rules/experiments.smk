# Teacher experiments outside the main line: the Fig. 2 labeled-fraction sweep per smoothing
# variant, and the eps/gamma grid tuned on holdout15 (section 4.1 of the paper). Every
# experiment teacher is named by its settings:
#   experiments/teacher_<trainset>_frac<f>_<smoothing>_eps<e>_gamma<g>/

# Fig. 2's variants -> (smoothing, eps, gamma); eps/gamma of the smoothed ones from the config.
SWEEP_VARIANTS = {
    "onehot": ("onehot", 0.0, 0.0),
    "uniform": ("uniform", config["teacher"]["eps"], 0.0),
    "similarity": ("similarity", config["teacher"]["eps"], 0.0),
    "similarity_corrected": ("similarity", config["teacher"]["eps"], config["teacher"]["gamma"]),
}


wildcard_constraints:
    trainset="train85|full",
    fraction=r"[0-9.]+",
    eps=r"[0-9.]+",
    gamma=r"[0-9.]+",
    smoothing="onehot|uniform|similarity",
    evalset="val|holdout15",
    experiment=r"(teacher|student)_[^/]+",
    lam=r"[0-9.]+",
    weight=r"[0-9.]+",


rule subsample:
    input:
        lambda w: teacher_train_json(w.trainset),
    output:
        f"{EXP}/data/{{trainset}}_frac{{fraction}}.json",
    params:
        cfg=section_hash("seed"),
    localrule: is_local("subsample")
    resources:
        **rule_resources("subsample"),
    log:
        f"{RUN}/logs/subsample_{{trainset}}_{{fraction}}.log",
    shell:
        stage("subsample") + " --train-json {input} --fraction {wildcards.fraction} --out {output} > {log} 2>&1"


use rule prototypes as experiment_prototypes with:
    input:
        f"{EXP}/data/{{trainset}}_frac{{fraction}}.json",
    output:
        categories=f"{EXP}/prototypes/{{trainset}}_frac{{fraction}}/categories.parquet",
        prototypes=f"{EXP}/prototypes/{{trainset}}_frac{{fraction}}/prototypes.npy",
    localrule: is_local("experiment_prototypes")
    resources:
        **rule_resources("experiment_prototypes"),
    log:
        f"{RUN}/logs/prototypes_{{trainset}}_{{fraction}}.log",


rule experiment_similarity:
    input:
        categories=f"{EXP}/prototypes/{{trainset}}_frac{{fraction}}/categories.parquet",
        prototypes=f"{EXP}/prototypes/{{trainset}}_frac{{fraction}}/prototypes.npy",
    output:
        f"{EXP}/prototypes/{{trainset}}_frac{{fraction}}/similarity_gamma{{gamma}}.npy",
    localrule: is_local("experiment_similarity")
    resources:
        **rule_resources("experiment_similarity"),
    log:
        f"{RUN}/logs/similarity_{{trainset}}_{{fraction}}_{{gamma}}.log",
    shell:
        stage("similarity") + " --prototypes {input.prototypes} --categories {input.categories}"
        " --gamma {wildcards.gamma} --out {output} > {log} 2>&1"


rule experiment_teacher:
    input:
        train=f"{EXP}/data/{{trainset}}_frac{{fraction}}.json",
        similarity=f"{EXP}/prototypes/{{trainset}}_frac{{fraction}}/similarity_gamma{{gamma}}.npy",
    output:
        f"{EXP}/teacher_{{trainset}}_frac{{fraction}}_{{smoothing}}_eps{{eps}}_gamma{{gamma}}/model_final.pth",
    params:
        cfg=section_hash("model", "teacher", "seed", "device"),
        root=IMAGE_ROOT,
        checkpoints=lambda w, output: str(Path(output[0]).parent / "checkpoints"),
    threads: config["num_threads"]
    localrule: is_local("experiment_teacher")
    resources:
        **training_resources("experiment_teacher", "teacher"),
    log:
        f"{RUN}/logs/experiment_teacher_{{trainset}}_{{fraction}}_{{smoothing}}_{{eps}}_{{gamma}}.log",
    shell:
        training_stage("train_teacher", "teacher", "experiment_teacher") + " --train-json {input.train} --image-root {params.root}"
        " --similarity {input.similarity} --smoothing {wildcards.smoothing} --eps {wildcards.eps}"
        " --out {output} --checkpoint-dir {params.checkpoints} > {log} 2>&1"


rule experiment_predict:
    input:
        weights=f"{EXP}/{{experiment}}/model_final.pth",
        images=lambda w: VAL_JSON if w.evalset == "val" else f"{RUN}/split/holdout15.json",
    output:
        f"{EXP}/{{experiment}}/eval_{{evalset}}/detections.json",
    params:
        cfg=section_hash("model", "evaluation", "device"),
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    localrule: is_local("experiment_predict")
    resources:
        **rule_resources("experiment_predict"),
    log:
        f"{RUN}/logs/experiment_predict_{{experiment}}_{{evalset}}.log",
    shell:
        stage("predict") + " --weights {input.weights} --images-json {input.images} --image-root {params.root}"
        " --out {output} > {log} 2>&1"


use rule evaluate as experiment_evaluate with:
    input:
        detections=f"{EXP}/{{experiment}}/eval_{{evalset}}/detections.json",
        gt=lambda w: VAL_JSON if w.evalset == "val" else f"{RUN}/split/holdout15.json",
    output:
        metrics=f"{EXP}/{{experiment}}/eval_{{evalset}}/metrics.json",
        per_class=f"{EXP}/{{experiment}}/eval_{{evalset}}/per_class_ap.csv",
        reliability=f"{EXP}/{{experiment}}/eval_{{evalset}}/reliability.csv",
    localrule: is_local("experiment_evaluate")
    resources:
        **rule_resources("experiment_evaluate"),
    log:
        f"{RUN}/logs/experiment_evaluate_{{experiment}}_{{evalset}}.log",


def sweep_runs():
    runs = []
    for variant in config["sweep"]["variants"]:
        smoothing, eps, gamma = SWEEP_VARIANTS[variant]
        for fraction in config["sweep"]["fractions"]:
            runs.append((variant, fraction, experiment_name("full", fraction, smoothing, eps, gamma)))
    return runs


rule fig2:
    """Fig. 2: teacher AP and APr against the labeled fraction, per smoothing variant."""
    input:
        [f"{EXP}/{name}/eval_val/metrics.json" for _, _, name in sweep_runs()],
    output:
        table=f"{RUN}/report/fig2_fraction_sweep.csv",
        figure=report(f"{RUN}/report/fig2_fraction_sweep.png", category="Figures", caption="../report/fig2.rst"),
    params:
        runs=[f"{v}:{f}:{EXP}/{n}/eval_val/metrics.json" for v, f, n in sweep_runs()],
    localrule: True
    resources:
        **rule_resources("fig2"),
    log:
        f"{RUN}/logs/fig2.log",
    shell:
        stage("sweep_report") + " --runs {params.runs} --out-table {output.table} --out-figure {output.figure}"
        " > {log} 2>&1"


def teacher_grid():
    eps_values = config["tuning"]["teacher_eps"] or [config["teacher"]["eps"]]
    gamma_values = config["tuning"]["teacher_gamma"] or [config["teacher"]["gamma"]]
    return [(e, g, experiment_name("train85", 1.0, "similarity", e, g)) for e in eps_values for g in gamma_values]


checkpoint tune_teacher:
    """eps/gamma grid: train85 teachers evaluated on holdout15; writes the chosen values."""
    input:
        [f"{EXP}/{name}/eval_holdout15/metrics.json" for _, _, name in teacher_grid()],
    output:
        # the choice first: rules that read it through the checkpoint name it as their input
        choice=f"{RUN}/tuning/teacher_choice.json",
        table=f"{RUN}/tuning/teacher_grid.csv",
    params:
        runs=[f"eps={e},gamma={g}:{EXP}/{n}/eval_holdout15/metrics.json" for e, g, n in teacher_grid()],
    localrule: True
    resources:
        **rule_resources("tune_teacher"),
    log:
        f"{RUN}/logs/tune_teacher.log",
    shell:
        stage("choose") + " --runs {params.runs} --out-table {output.table} --out-choice {output.choice} > {log} 2>&1"



rule experiment_student:
    input:
        labeled=f"{RUN}/split/train85.json",
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
        teacher=holdout_teacher_weights,
        ccece=f"{RUN}/calibration/ccece.parquet",
    output:
        f"{EXP}/student_{{variant}}_lam{{lam}}_w{{weight}}/model_final.pth",
    params:
        cfg=section_hash("model", "student", "seed", "device"),
        root=IMAGE_ROOT,
        checkpoints=lambda w, output: str(Path(output[0]).parent / "checkpoints"),
    threads: config["num_threads"]
    localrule: is_local("experiment_student")
    resources:
        **training_resources("experiment_student", "student"),
    log:
        f"{RUN}/logs/experiment_student_{{variant}}_{{lam}}_{{weight}}.log",
    shell:
        training_stage("train_student", "student", "experiment_student") + " --variant {wildcards.variant} --labeled-json {input.labeled}"
        " --unlabeled-json {input.unlabeled} --image-root {params.root} --teacher {input.teacher}"
        " --ccece {input.ccece} --lam {wildcards.lam} --unlabeled-weight {wildcards.weight}"
        " --out {output} --checkpoint-dir {params.checkpoints} > {log} 2>&1"


def student_grid():
    lams = config["tuning"]["student_lambda"] or [config["student"]["lambda"]]
    weights = config["tuning"]["student_unlabeled_weight"] or [config["student"]["unlabeled_weight"]]
    return [(lam, w, student_experiment_name("soft_corrected", lam, w)) for lam in lams for w in weights]


checkpoint tune_student:
    """lambda x unlabeled-weight grid: students on train85 + unlabeled, evaluated on holdout15."""
    input:
        [f"{EXP}/{name}/eval_holdout15/metrics.json" for _, _, name in student_grid()],
    output:
        # the choice first: rules that read it through the checkpoint name it as their input
        choice=f"{RUN}/tuning/student_choice.json",
        table=f"{RUN}/tuning/student_grid.csv",
    params:
        runs=[f"lambda={lam},unlabeled_weight={w}:{EXP}/{n}/eval_holdout15/metrics.json" for lam, w, n in student_grid()],
    localrule: True
    log:
        f"{RUN}/logs/tune_student.log",
    shell:
        stage("choose") + " --runs {params.runs} --out-table {output.table} --out-choice {output.choice} > {log} 2>&1"
