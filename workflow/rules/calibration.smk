# Stage 6: the train85 teacher's detections on holdout15 -> CCECE (eq. 4) and ECE; the same on
# holdout15's half a, the Delta of the student's tuning grid (which is chosen on half b).


rule predict_holdout:
    input:
        config=stage_config("predict"),
        weights=holdout_teacher_weights,
        categories=categories_file("train85"),
        images=HOLDOUT_JSON,
    output:
        f"{RUN}/calibration/holdout_detections.parquet",
    params:
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    resources:
        **rule_resources("predict_holdout"),
    log:
        f"{RUN}/logs/predict_holdout.log",
    benchmark:
        f"{RUN}/benchmarks/predict_holdout.tsv",
    shell:
        stage("predict") + " --weights {input.weights:q} --categories {input.categories:q} --images-json {input.images:q}"
        " --image-root {params.root:q} --out {output:q} > {log:q} 2>&1"


rule ccece:
    input:
        config=stage_config("ccece"),
        detections=rules.predict_holdout.output[0],
        gt=HOLDOUT_JSON,
    output:
        ccece=f"{RUN}/calibration/ccece.parquet",
        ece=f"{RUN}/calibration/ece.json",
        reliability=f"{RUN}/calibration/reliability.csv",
    resources:
        **rule_resources("ccece"),
    log:
        f"{RUN}/logs/ccece.log",
    benchmark:
        f"{RUN}/benchmarks/ccece.tsv",
    shell:
        stage("ccece") + " --detections {input.detections:q} --gt {input.gt:q} --out {output.ccece:q}"
        " --ece-json {output.ece:q} --reliability {output.reliability:q} > {log:q} 2>&1"


use rule ccece as ccece_holdout_a with:
    input:
        config=stage_config("ccece"),
        detections=rules.predict_holdout.output[0],
        gt=HOLDOUT_A_JSON,
    output:
        ccece=f"{RUN}/calibration/holdout15_a/ccece.parquet",
        ece=f"{RUN}/calibration/holdout15_a/ece.json",
        reliability=f"{RUN}/calibration/holdout15_a/reliability.csv",
    log:
        f"{RUN}/logs/ccece_holdout15_a.log",
    benchmark:
        f"{RUN}/benchmarks/ccece_holdout15_a.tsv",
