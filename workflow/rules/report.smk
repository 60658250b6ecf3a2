# The paper's Table 1 (with intervals), Figs. 1, 3-5, the picture galleries (retrieval, pseudo-labels),
# the training curves and the run's per-job cost, gathered in the Snakemake report (each figure with
# its data file, under a category of its own; its caption states its selection rule).

# Fig. 5 and the pseudo-label gallery compare the teacher with Table 1's last row (the paper's method,
# soft + correction, in the default ladder).
SHOWN_STUDENT = MODELS[-1]


def main_line_benchmarks():
    """The benchmark files of the jobs `all` runs (the tuning grids' jobs are experiments)."""
    bench = f"{RUN}/benchmarks"
    names = ["make_minilvis" if MINILVIS else "import_lvis", "split", "embed_crops", "retrieve", "dedup",
             "predict_holdout", "ccece", "bootstrap", "premise", "prototypes", "similarity",
             "fig5", "retrieval_gallery", "pseudo_label_gallery", "training_curves"]
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
        fig1=report(f"{RUN}/report/fig1_ap_apr.png", category="Fig. 1: AP and APr", caption="../report/fig1.rst"),
        fig1_data=report(f"{RUN}/report/fig1_ap_apr.csv", category="Fig. 1: AP and APr", caption="../report/fig1.rst"),
        timings=report(f"{RUN}/report/timings.csv", category="Run cost", caption="../report/timings.rst"),
        fig3=report(f"{RUN}/report/fig3_reliability.png", category="Figures", caption="../report/fig3.rst"),
        fig4=report(f"{RUN}/report/fig4_per_class_ap.png", category="Figures", caption="../report/fig4.rst"),
        figS1=report(f"{RUN}/report/figS1_ccece.png", category="Figures", caption="../report/figS1.rst"),
        fig3_data=report(f"{RUN}/report/fig3_reliability.csv", category="Figure data", caption="../report/fig3.rst"),
        fig4_data=report(f"{RUN}/report/fig4_per_class_ap.csv", category="Figure data", caption="../report/fig4.rst"),
        figS1_data=report(f"{RUN}/report/figS1_ccece.csv", category="Figure data", caption="../report/figS1.rst"),
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


rule fig5:
    """The paper's Fig. 5: val images with rare classes, the teacher's and the student's top detections."""
    input:
        config=stage_config("fig5"),
        val=VAL_JSON,
        teacher=f"{RUN}/eval/teacher/detections.json",
        student=f"{RUN}/eval/{SHOWN_STUDENT}/detections.json",
    output:
        png=report(f"{RUN}/report/fig5_examples.png", category="Fig. 5: qualitative examples",
                   caption="../report/fig5.rst"),
        csv=report(f"{RUN}/report/fig5_examples.csv", category="Fig. 5: qualitative examples",
                   caption="../report/fig5.rst"),
    params:
        root=IMAGE_ROOT,
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
        categories=f"{prototypes_dir(TEACHER_SPLIT)}/categories.parquet",
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


def training_logs(wildcards=None):
    """MODEL=metrics.json of the teacher and every student: detectron2's writer keeps it (and the
    TensorBoard event files) in the checkpoint directory beside the final weights."""
    weights = {"teacher": final_teacher_weights()} | {m: f"{RUN}/student/{m.removeprefix('student_')}/model_final.pth"
                                                      for m in MODELS if m != "teacher"}
    return [f"{m}={Path(w).parent / 'checkpoints' / 'metrics.json'}" for m, w in weights.items()]


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
