# The paper's Table 1 (with intervals), Figs. 3-5 and the run's per-job cost, gathered in the
# Snakemake report.


def main_line_benchmarks():
    """The benchmark files of the jobs `all` runs (the tuning grids' jobs are experiments)."""
    bench = f"{RUN}/benchmarks"
    names = ["make_minilvis" if MINILVIS else "import_lvis", "split", "embed_crops", "retrieve", "dedup",
             "predict_holdout", "ccece", "bootstrap", "premise", "prototypes", "similarity"]
    names += [f"embed_images_{s}" for s in ("pool", "train", "val")]
    names += [f"train_student_{v}" for v in config["student"]["variants"]]
    names += [f"{rule}_{m}" for m in MODELS for rule in ("predict_val", "evaluate")]
    if not config["teacher"]["use_tuned"]:
        names += ["train_teacher_train85"] + (["train_teacher_full"] if config["teacher"]["retrain_full"] else [])
    if config["teacher"]["retrain_full"]:
        names += ["prototypes/full", "similarity/full"]
    return [f"{bench}/{name}.tsv" for name in sorted(names)]


rule premise:
    """The paper's premise measured on this run (P1-P4, stages/reporting/premise.py)."""
    input:
        config=stage_config("premise"),
        val_gt=VAL_JSON,
        teacher=f"{RUN}/eval/teacher/detections.json",
        holdout_gt=HOLDOUT_JSON,
        holdout=rules.predict_holdout.output[0],
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
        pool=POOL_JSON,
        truth=[f"{DATA}/pool_truth.json"] if MINILVIS else [],
    output:
        csv=f"{RUN}/report/premise.csv",
        md=report(f"{RUN}/report/premise.md", category="Premise", caption="../report/premise.rst"),
    params:
        truth=lambda w, input: ["--pool-truth", input.truth[0]] if input.truth else [],
    resources:
        **rule_resources("premise"),
    log:
        f"{RUN}/logs/premise.log",
    benchmark:
        f"{RUN}/benchmarks/premise.tsv",
    shell:
        stage("premise") + " --val-gt {input.val_gt:q} --teacher-detections {input.teacher:q}"
        " --holdout-gt {input.holdout_gt:q} --holdout-detections {input.holdout:q} --unlabeled {input.unlabeled:q}"
        " --pool {input.pool:q} {params.truth:q} --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule report:
    input:
        config=stage_config("report"),
        metrics=expand(f"{RUN}/eval/{{model}}/metrics.json", model=MODELS),
        per_class=expand(f"{RUN}/eval/{{model}}/per_class_ap.csv", model=MODELS),
        reliability=expand(f"{RUN}/eval/{{model}}/reliability.csv", model=MODELS),
        categories=f"{prototypes_dir(TEACHER_SPLIT)}/categories.parquet",
        ccece=f"{RUN}/calibration/ccece.parquet",
        intervals=rules.bootstrap.output[0],
        dedup=f"{RUN}/retrieval/dedup_counts.json",
        ece=f"{RUN}/calibration/ece.json",
        benchmarks=main_line_benchmarks(),
    output:
        table_md=report(f"{RUN}/report/table1.md", category="Table 1", caption="../report/table1.rst"),
        table_csv=f"{RUN}/report/table1.csv",
        timings=report(f"{RUN}/report/timings.csv", category="Run cost", caption="../report/timings.rst"),
        fig3=report(f"{RUN}/report/fig3_reliability.png", category="Figures", caption="../report/fig3.rst"),
        fig4=report(f"{RUN}/report/fig4_per_class_ap.png", category="Figures", caption="../report/fig4.rst"),
        fig5=report(f"{RUN}/report/fig5_ccece.png", category="Figures", caption="../report/fig5.rst"),
        fig3_data=report(f"{RUN}/report/fig3_reliability.csv", category="Figure data", caption="../report/fig3.rst"),
        fig4_data=report(f"{RUN}/report/fig4_per_class_ap.csv", category="Figure data", caption="../report/fig4.rst"),
        fig5_data=report(f"{RUN}/report/fig5_ccece.csv", category="Figure data", caption="../report/fig5.rst"),
    params:
        models=MODELS,
        eval_dir=f"{RUN}/eval",
        out_dir=f"{RUN}/report",
    resources:
        **rule_resources("report"),
    log:
        f"{RUN}/logs/report.log",
    shell:
        stage("report") + " --eval-dir {params.eval_dir:q} --models {params.models:q} --categories {input.categories:q}"
        " --ccece {input.ccece:q} --intervals {input.intervals:q} --dedup {input.dedup:q} --holdout-ece {input.ece:q}"
        " --benchmarks {input.benchmarks:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
