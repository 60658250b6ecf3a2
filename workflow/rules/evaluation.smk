# Stage 8: predictions on val, LVIS metrics + ECE per model, and the report (Table 1, Fig. 3, Fig. 4).


rule predict_val:
    input:
        config=ancient(RESOLVED_CONFIG),
        weights=model_weights,
        images=VAL_JSON,
    output:
        f"{RUN}/eval/{{model}}/detections.json",
    wildcard_constraints:
        model="|".join(MODELS),
    params:
        cfg=trigger("predict"),
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    resources:
        **rule_resources("predict_val"),
    log:
        f"{RUN}/logs/predict_val_{{model}}.log",
    shell:
        stage("predict") + " --weights {input.weights:q} --images-json {input.images:q}"
        " --image-root {params.root:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        config=ancient(RESOLVED_CONFIG),
        detections=rules.predict_val.output[0],
        gt=VAL_JSON,
    output:
        metrics=f"{RUN}/eval/{{model}}/metrics.json",
        per_class=f"{RUN}/eval/{{model}}/per_class_ap.csv",
        reliability=f"{RUN}/eval/{{model}}/reliability.csv",
    wildcard_constraints:
        model="|".join(MODELS),
    params:
        cfg=trigger("evaluate"),
    resources:
        **rule_resources("evaluate"),
    log:
        f"{RUN}/logs/evaluate_{{model}}.log",
    shell:
        stage("evaluate") + " --gt {input.gt:q} --detections {input.detections:q} --out-metrics {output.metrics:q}"
        " --out-per-class {output.per_class:q} --out-reliability {output.reliability:q} > {log:q} 2>&1"
