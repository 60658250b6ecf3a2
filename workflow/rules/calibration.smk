# Stage 6: the train85 teacher's detections on holdout15 -> CCECE (eq. 4) and ECE.


rule predict_holdout:
    input:
        weights=holdout_teacher_weights,
        images=f"{RUN}/split/holdout15.json",
    output:
        f"{RUN}/calibration/holdout_detections.parquet",
    params:
        cfg=section_hash("model", "evaluation", "device"),
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    localrule: is_local("predict_holdout")
    resources:
        **rule_resources("predict_holdout"),
    log:
        f"{RUN}/logs/predict_holdout.log",
    shell:
        stage("predict") + " --weights {input.weights} --images-json {input.images} --image-root {params.root}"
        " --out {output} > {log} 2>&1"


rule ccece:
    input:
        detections=rules.predict_holdout.output[0],
        gt=f"{RUN}/split/holdout15.json",
    output:
        ccece=f"{RUN}/calibration/ccece.parquet",
        ece=f"{RUN}/calibration/ece.json",
        reliability=f"{RUN}/calibration/reliability.csv",
    params:
        cfg=section_hash("calibration"),
    localrule: is_local("ccece")
    resources:
        **rule_resources("ccece"),
    log:
        f"{RUN}/logs/ccece.log",
    shell:
        stage("ccece") + " --detections {input.detections} --gt {input.gt} --out {output.ccece}"
        " --ece-json {output.ece} --reliability {output.reliability} > {log} 2>&1"
