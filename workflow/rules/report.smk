# The paper's Table 1 (with intervals), Figs. 3-5 and the run's per-job cost, one report per
# evaluation set {evalset} (report/<set>/), gathered in the Snakemake report.


rule report:
    input:
        config=stage_config("report"),
        metrics=lambda w: [f"{eval_dir(w.evalset, m)}/metrics.json" for m in MODELS],
        per_class=lambda w: [f"{eval_dir(w.evalset, m)}/per_class_ap.csv" for m in MODELS],
        reliability=lambda w: [f"{eval_dir(w.evalset, m)}/reliability.csv" for m in MODELS],
        categories=categories_file(TEACHER_LABELED),
        ccece=f"{RUN}/calibration/ccece.parquet",
        intervals=f"{RUN}/report/{{evalset}}/intervals.csv",
        dedup=f"{RUN}/retrieval/dedup_counts.json",
        ece=f"{RUN}/calibration/ece.json",
        benchmarks=lambda w: main_line_benchmarks(w.evalset),
    output:
        table_md=report(f"{RUN}/report/{{evalset}}/table1.md", category="Table 1", subcategory="{evalset}",
                        caption="../report/table1.rst"),
        table_csv=f"{RUN}/report/{{evalset}}/table1.csv",
        timings=report(f"{RUN}/report/{{evalset}}/timings.csv", category="Run cost", subcategory="{evalset}",
                       caption="../report/timings.rst"),
        fig3=report(f"{RUN}/report/{{evalset}}/fig3_reliability.png", category="Figures", subcategory="{evalset}",
                    caption="../report/fig3.rst"),
        fig4=report(f"{RUN}/report/{{evalset}}/fig4_per_class_ap.png", category="Figures", subcategory="{evalset}",
                    caption="../report/fig4.rst"),
        fig5=report(f"{RUN}/report/{{evalset}}/fig5_ccece.png", category="Figures", subcategory="{evalset}",
                    caption="../report/fig5.rst"),
        fig3_data=report(f"{RUN}/report/{{evalset}}/fig3_reliability.csv", category="Figure data",
                         subcategory="{evalset}", caption="../report/fig3.rst"),
        fig4_data=report(f"{RUN}/report/{{evalset}}/fig4_per_class_ap.csv", category="Figure data",
                         subcategory="{evalset}", caption="../report/fig4.rst"),
        fig5_data=report(f"{RUN}/report/{{evalset}}/fig5_ccece.csv", category="Figure data", subcategory="{evalset}",
                         caption="../report/fig5.rst"),
    wildcard_constraints:
        evalset="|".join(EVALSETS),
    params:
        models=MODELS,
        evalset=lambda w: w.evalset,
        eval_dir=lambda w, input: str(Path(input.metrics[0]).parent.parent),
        out_dir=output_dir("table_md"),
    resources:
        **rule_resources("report"),
    log:
        f"{RUN}/logs/report_{{evalset}}.log",
    shell:
        stage("report") + " --eval-dir {params.eval_dir:q} --models {params.models:q} --evalset {params.evalset:q}"
        " --categories {input.categories:q} --ccece {input.ccece:q} --intervals {input.intervals:q}"
        " --dedup {input.dedup:q} --holdout-ece {input.ece:q} --benchmarks {input.benchmarks:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
