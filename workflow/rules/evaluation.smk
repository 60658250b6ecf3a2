# Stage 8: predictions on val, LVIS metrics + ECE per model, and the report (Table 1, Fig. 3, Fig. 4).


rule predict_val:
    input:
        weights=model_weights,
        images=VAL_JSON,
    output:
        f"{RUN}/eval/{{model}}/detections.json",
    params:
        cfg=section_hash("model", "evaluation", "device"),
        root=IMAGE_ROOT,
        phase=lambda w: "teacher" if w.model == "teacher" else "student",
    threads: config["num_threads"]
    localrule: is_local("predict_val")
    resources:
        **rule_resources("predict_val"),
    log:
        f"{RUN}/logs/predict_val_{{model}}.log",
    shell:
        stage("predict") + " --weights {input.weights} --images-json {input.images} --image-root {params.root}"
        " --phase {params.phase} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        detections=rules.predict_val.output[0],
        gt=VAL_JSON,
    output:
        metrics=f"{RUN}/eval/{{model}}/metrics.json",
        per_class=f"{RUN}/eval/{{model}}/per_class_ap.csv",
        reliability=f"{RUN}/eval/{{model}}/reliability.csv",
    params:
        cfg=section_hash("evaluation", "calibration"),
    localrule: is_local("evaluate")
    resources:
        **rule_resources("evaluate"),
    log:
        f"{RUN}/logs/evaluate_{{model}}.log",
    shell:
        stage("evaluate") + " --gt {input.gt} --detections {input.detections} --out-metrics {output.metrics}"
        " --out-per-class {output.per_class} --out-reliability {output.reliability} > {log} 2>&1"
