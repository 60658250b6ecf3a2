# Stage 7: teacher-student distillation with calibration-corrected soft pseudo-labels (eq. 5).


rule train_student:
    input:
        config=STUDENT_CONFIG,
        labeled=labeled_json(TEACHER_LABELED),
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
        teacher=final_teacher_weights,
        ccece=f"{RUN}/calibration/ccece.parquet",
    output:
        f"{RUN}/student/{{variant}}/model_final.pth",
    wildcard_constraints:
        variant="|".join(config["student"]["variants"]),
    params:
        variant=lambda w: w.variant,
        root=IMAGE_ROOT,
        checkpoints=output_sibling("checkpoints"),
    threads: config["num_threads"]
    resources:
        **training_resources("train_student", "student"),
    log:
        f"{RUN}/logs/train_student_{{variant}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_student_{{variant}}.tsv",
    shell:
        training_stage("train_student", "student", "train_student") + " --variant {params.variant:q}"
        " --labeled-json {input.labeled:q} --unlabeled-json {input.unlabeled:q} --image-root {params.root:q}"
        " --teacher {input.teacher:q} --ccece {input.ccece:q} --out {output:q}"
        " --checkpoint-dir {params.checkpoints:q} > {log:q} 2>&1"
