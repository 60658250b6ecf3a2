# Stage 8: every model's predictions and LVIS metrics + ECE on every evaluation set {evalset}, and
# Table 1's paired intervals per set. A set of evaluation.sets with its own json is imported on its
# own (import_evalset), so adding or changing one set reruns only that set's jobs.


rule import_evalset:
    """An evaluation set's json, checked and matched to the training categories (stages.data.evalsets).
    Its files are named in the config, not inputs (the job graph builds before any data exists); the
    params are the rerun trigger of this set alone."""
    input:
        config=stage_config("import_evalset"),
        train=TRAIN_JSON,
    output:
        json=f"{DATA}/evalsets/{{evalset}}.json",
        report=f"{DATA}/evalsets/{{evalset}}_validation.csv",
    wildcard_constraints:
        evalset="|".join(s for s in EVALSETS if config["evaluation"]["sets"][s]["json"] is not None) or "^$",
    params:
        json=lambda w: config["evaluation"]["sets"][w.evalset]["json"],
        root=lambda w: evalset_image_root(w.evalset),
        categories=lambda w: config["evaluation"]["sets"][w.evalset]["categories"],
        train_root=IMAGE_ROOT,
    resources:
        **rule_resources("import_evalset"),
    log:
        f"{RUN}/logs/import_evalset_{{evalset}}.log",
    benchmark:
        f"{RUN}/benchmarks/import_evalset_{{evalset}}.tsv",
    shell:
        stage("import_evalset") + " --json {params.json:q} --image-root {params.root:q} --categories {params.categories:q}"
        " --train-json {input.train:q} --train-image-root {params.train_root:q} --out {output.json:q}"
        " --out-report {output.report:q} > {log:q} 2>&1"


rule predict:
    input:
        config=stage_config("predict"),
        weights=model_weights,
        categories=categories_file(TEACHER_LABELED),
        images=lambda w: evalset_json(w.evalset),
    output:
        f"{RUN}/eval/{{evalset}}/{{model}}/detections.json",
    wildcard_constraints:
        evalset="|".join(EVALSETS),
        model="|".join(MODELS),
    params:
        root=lambda w: evalset_image_root(w.evalset),
    threads: config["num_threads"]
    resources:
        **rule_resources("predict"),
    log:
        f"{RUN}/logs/predict_{{evalset}}_{{model}}.log",
    benchmark:
        f"{RUN}/benchmarks/predict_{{evalset}}_{{model}}.tsv",
    shell:
        stage("predict") + " --weights {input.weights:q} --categories {input.categories:q} --images-json {input.images:q}"
        " --image-root {params.root:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        config=stage_config("evaluate"),
        detections=f"{RUN}/eval/{{evalset}}/{{model}}/detections.json",
        gt=lambda w: evalset_json(w.evalset),
    output:
        metrics=f"{RUN}/eval/{{evalset}}/{{model}}/metrics.json",
        per_class=f"{RUN}/eval/{{evalset}}/{{model}}/per_class_ap.csv",
        reliability=f"{RUN}/eval/{{evalset}}/{{model}}/reliability.csv",
    wildcard_constraints:
        evalset="|".join(EVALSETS),
        model="|".join(MODELS),
    resources:
        **rule_resources("evaluate"),
    log:
        f"{RUN}/logs/evaluate_{{evalset}}_{{model}}.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate_{{evalset}}_{{model}}.tsv",
    shell:
        stage("evaluate") + " --gt {input.gt:q} --detections {input.detections:q} --out-metrics {output.metrics:q}"
        " --out-per-class {output.per_class:q} --out-reliability {output.reliability:q} > {log:q} 2>&1"


rule bootstrap:
    """Table 1's intervals on one evaluation set: a paired image-level bootstrap over its images."""
    input:
        config=stage_config("bootstrap"),
        gt=lambda w: evalset_json(w.evalset),
        detections=lambda w: [f"{eval_dir(w.evalset, m)}/detections.json" for m in MODELS],
    output:
        f"{RUN}/report/{{evalset}}/intervals.csv",
    wildcard_constraints:
        evalset="|".join(EVALSETS),
    params:
        detections=lambda w: [f"{m}={eval_dir(w.evalset, m)}/detections.json" for m in MODELS],
        compare=TABLE1_COMPARE,
    resources:
        **rule_resources("bootstrap"),
    log:
        f"{RUN}/logs/bootstrap_{{evalset}}.log",
    benchmark:
        f"{RUN}/benchmarks/bootstrap_{{evalset}}.tsv",
    shell:
        stage("bootstrap") + " --gt {input.gt:q} --detections {params.detections:q} --compare {params.compare:q}"
        " --out {output:q} > {log:q} 2>&1"
