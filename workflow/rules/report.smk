# The paper's Table 1 (with intervals), Figs. 1, 3, 4 and S1 and the run's per-job cost, one report per
# evaluation set {evalset} (report/<set>/); the premise, Fig. 5, the picture galleries (retrieval,
# pseudo-labels) and the training curves once per run (report/). All gathered in the Snakemake report,
# each figure with its data file under a category of its own; its caption states its selection rule.


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
        fig1=report(f"{RUN}/report/{{evalset}}/fig1_ap_apr.png", category="Fig. 1: AP and APr", subcategory="{evalset}",
                    caption="../report/fig1.rst"),
        fig1_data=report(f"{RUN}/report/{{evalset}}/fig1_ap_apr.csv", category="Fig. 1: AP and APr",
                         subcategory="{evalset}", caption="../report/fig1.rst"),
        figS1=report(f"{RUN}/report/{{evalset}}/figS1_ccece.png", category="Figures", subcategory="{evalset}",
                     caption="../report/figS1.rst"),
        fig3_data=report(f"{RUN}/report/{{evalset}}/fig3_reliability.csv", category="Figure data",
                         subcategory="{evalset}", caption="../report/fig3.rst"),
        fig4_data=report(f"{RUN}/report/{{evalset}}/fig4_per_class_ap.csv", category="Figure data",
                         subcategory="{evalset}", caption="../report/fig4.rst"),
        figS1_data=report(f"{RUN}/report/{{evalset}}/figS1_ccece.csv", category="Figure data",
                          subcategory="{evalset}", caption="../report/figS1.rst"),
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


rule premise:
    """The paper's premise measured on this run (P1-P4, stages/reporting/premise.py), on the main
    evaluation set."""
    input:
        config=stage_config("premise"),
        val_gt=evalset_json(MAIN_EVALSET),
        teacher=f"{eval_dir(MAIN_EVALSET, 'teacher')}/detections.json",
        intervals=f"{RUN}/report/{MAIN_EVALSET}/intervals.csv",
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
        " --intervals {input.intervals:q} --holdout-gt {input.holdout_gt:q} --holdout-detections {input.holdout:q}"
        " --unlabeled {input.unlabeled:q}"
        " --pool {input.pool:q} {params.truth:q} --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule fig5:
    """The paper's Fig. 5: val images with rare classes, the teacher's and the student's top detections."""
    input:
        config=stage_config("fig5"),
        val=evalset_json(MAIN_EVALSET),
        teacher=f"{eval_dir(MAIN_EVALSET, 'teacher')}/detections.json",
        student=f"{eval_dir(MAIN_EVALSET, SHOWN_STUDENT)}/detections.json",
    output:
        png=report(f"{RUN}/report/fig5_examples.png", category="Fig. 5: qualitative examples",
                   caption="../report/fig5.rst"),
        csv=report(f"{RUN}/report/fig5_examples.csv", category="Fig. 5: qualitative examples",
                   caption="../report/fig5.rst"),
    params:
        root=evalset_image_root(MAIN_EVALSET),
        student=SHOWN_STUDENT,
    resources:
        **rule_resources("fig5"),
    log:
        f"{RUN}/logs/fig5.log",
    benchmark:
        f"{RUN}/benchmarks/fig5.tsv",
    shell:
        stage("fig5") + " --val-json {input.val:q} --image-root {params.root:q} --teacher {input.teacher:q}"
        " --student {input.student:q} --student-name {params.student:q} --out-png {output.png:q}"
        " --out-csv {output.csv:q} > {log:q} 2>&1"


rule retrieval_gallery:
    """Rare-class query crops, their nearest pool images and dedup's decisions."""
    input:
        config=stage_config("retrieval_gallery"),
        train=TRAIN_JSON,
        pool=POOL_JSON,
        crops=f"{RUN}/retrieval/crops.parquet",
        neighbours=f"{RUN}/retrieval/neighbours.parquet",
        decisions=f"{RUN}/retrieval/dedup_decisions.parquet",
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
    output:
        png=report(f"{RUN}/report/retrieval_gallery.png", category="Retrieval gallery",
                   caption="../report/retrieval_gallery.rst"),
        csv=report(f"{RUN}/report/retrieval_gallery.csv", category="Retrieval gallery",
                   caption="../report/retrieval_gallery.rst"),
    params:
        root=IMAGE_ROOT,
    resources:
        **rule_resources("retrieval_gallery"),
    log:
        f"{RUN}/logs/retrieval_gallery.log",
    benchmark:
        f"{RUN}/benchmarks/retrieval_gallery.tsv",
    shell:
        stage("retrieval_gallery") + " --train-json {input.train:q} --pool-json {input.pool:q}"
        " --image-root {params.root:q} --crops {input.crops:q} --neighbours {input.neighbours:q}"
        " --decisions {input.decisions:q} --unlabeled {input.unlabeled:q} --out-png {output.png:q}"
        " --out-csv {output.csv:q} > {log:q} 2>&1"


rule pseudo_label_gallery:
    """The teacher's detections on unlabeled images: kept, ignored, dropped; the targets of each variant."""
    input:
        config=stage_config("pseudo_label_gallery"),
        teacher=final_teacher_weights,
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
        categories=categories_file(TEACHER_LABELED),
        ccece=f"{RUN}/calibration/ccece.parquet",
    output:
        png=report(f"{RUN}/report/pseudo_label_gallery.png", category="Pseudo-label gallery",
                   caption="../report/pseudo_label_gallery.rst"),
        json=report(f"{RUN}/report/pseudo_label_gallery.json", category="Pseudo-label gallery",
                    caption="../report/pseudo_label_gallery.rst"),
    params:
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    resources:
        **rule_resources("pseudo_label_gallery"),
    log:
        f"{RUN}/logs/pseudo_label_gallery.log",
    benchmark:
        f"{RUN}/benchmarks/pseudo_label_gallery.tsv",
    shell:
        stage("pseudo_label_gallery") + " --teacher {input.teacher:q} --unlabeled {input.unlabeled:q}"
        " --image-root {params.root:q} --categories {input.categories:q} --ccece {input.ccece:q}"
        " --out-png {output.png:q} --out-json {output.json:q} > {log:q} 2>&1"


rule training_curves:
    """Loss terms and learning rate against the iteration, teacher and students."""
    input:
        config=stage_config("training_curves"),
        teacher=final_teacher_weights,
        students=[f"{RUN}/student/{m.removeprefix('student_')}/model_final.pth" for m in MODELS if m != "teacher"],
    output:
        png=report(f"{RUN}/report/training_curves.png", category="Training curves",
                   caption="../report/training_curves.rst"),
        csv=report(f"{RUN}/report/training_curves.csv", category="Training curves",
                   caption="../report/training_curves.rst"),
    params:
        logs=training_logs,
    resources:
        **rule_resources("training_curves"),
    log:
        f"{RUN}/logs/training_curves.log",
    benchmark:
        f"{RUN}/benchmarks/training_curves.tsv",
    shell:
        stage("training_curves") + " --logs {params.logs:q} --out-png {output.png:q} --out-csv {output.csv:q}"
        " > {log:q} 2>&1"
