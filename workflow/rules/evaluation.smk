# Stage 8: predictions on val, LVIS metrics + ECE per model, and the report (Table 1, Fig. 3, Fig. 4).


rule predict_val:
    input:
        config=stage_config("predict"),
        weights=model_weights,
        images=VAL_JSON,
    output:
        f"{RUN}/eval/{{model}}/detections.json",
    wildcard_constraints:
        model="|".join(MODELS),
    params:
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    resources:
        **rule_resources("predict_val"),
    log:
        f"{RUN}/logs/predict_val_{{model}}.log",
    benchmark:
        f"{RUN}/benchmarks/predict_val_{{model}}.tsv",
    shell:
        stage("predict") + " --weights {input.weights:q} --images-json {input.images:q}"
        " --image-root {params.root:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        config=stage_config("evaluate"),
        detections=rules.predict_val.output[0],
        gt=VAL_JSON,
    output:
        metrics=f"{RUN}/eval/{{model}}/metrics.json",
        per_class=f"{RUN}/eval/{{model}}/per_class_ap.csv",
        reliability=f"{RUN}/eval/{{model}}/reliability.csv",
    wildcard_constraints:
        model="|".join(MODELS),
    params:
    resources:
        **rule_resources("evaluate"),
    log:
        f"{RUN}/logs/evaluate_{{model}}.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate_{{model}}.tsv",
    shell:
        stage("evaluate") + " --gt {input.gt:q} --detections {input.detections:q} --out-metrics {output.metrics:q}"
        " --out-per-class {output.per_class:q} --out-reliability {output.reliability:q} > {log:q} 2>&1"


rule bootstrap:
    """Table 1's intervals: a paired image-level bootstrap over the val images."""
    input:
        config=stage_config("bootstrap"),
        gt=VAL_JSON,
        detections=expand(f"{RUN}/eval/{{model}}/detections.json", model=MODELS),
    output:
        f"{RUN}/report/intervals.csv",
    params:
        detections=[f"{m}={RUN}/eval/{m}/detections.json" for m in MODELS],
        compare=TABLE1_COMPARE,
    resources:
        **rule_resources("bootstrap"),
    log:
        f"{RUN}/logs/bootstrap.log",
    benchmark:
        f"{RUN}/benchmarks/bootstrap.tsv",
    shell:
        stage("bootstrap") + " --gt {input.gt:q} --detections {params.detections:q} --compare {params.compare:q}"
        " --out {output:q} > {log:q} 2>&1"
