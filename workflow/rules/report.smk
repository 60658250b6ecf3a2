# The paper's Table 1, Fig. 3 and Fig. 4 from the runs of this config, gathered in the Snakemake report.


rule report:
    input:
        config=ancient(RESOLVED_CONFIG),
        metrics=expand(f"{RUN}/eval/{{model}}/metrics.json", model=MODELS),
        per_class=expand(f"{RUN}/eval/{{model}}/per_class_ap.csv", model=MODELS),
        reliability=expand(f"{RUN}/eval/{{model}}/reliability.csv", model=MODELS),
        categories=f"{prototypes_dir(TEACHER_SPLIT)}/categories.parquet",
        dedup=f"{RUN}/retrieval/dedup_counts.json",
        ece=f"{RUN}/calibration/ece.json",
    output:
        table_md=report(f"{RUN}/report/table1.md", category="Table 1", caption="../report/table1.rst"),
        table_csv=f"{RUN}/report/table1.csv",
        fig3=report(f"{RUN}/report/fig3_reliability.png", category="Figures", caption="../report/fig3.rst"),
        fig4=report(f"{RUN}/report/fig4_per_class_ap.png", category="Figures", caption="../report/fig4.rst"),
        fig3_data=report(f"{RUN}/report/fig3_reliability.csv", category="Figure data", caption="../report/fig3.rst"),
        fig4_data=report(f"{RUN}/report/fig4_per_class_ap.csv", category="Figure data", caption="../report/fig4.rst"),
    params:
        cfg=trigger("report"),
        models=MODELS,
        eval_dir=f"{RUN}/eval",
        out_dir=f"{RUN}/report",
    resources:
        **rule_resources("report"),
    log:
        f"{RUN}/logs/report.log",
    shell:
        stage("report") + " --eval-dir {params.eval_dir:q} --models {params.models:q} --categories {input.categories:q}"
        " --dedup {input.dedup:q} --holdout-ece {input.ece:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
