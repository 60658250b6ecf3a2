# Stage 7: teacher-student distillation with calibration-corrected soft pseudo-labels (eq. 5).


rule train_student:
    input:
        labeled=teacher_train_json(TEACHER_SPLIT),
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
        teacher=final_teacher_weights,
        ccece=f"{RUN}/calibration/ccece.parquet",
        # the tuned lambda / unlabeled weight (a checkpoint's output, read by params.hyperparams)
        tuned=lambda w: [f"{RUN}/tuning/student_choice.json"] if config["student"]["use_tuned"] else [],
    output:
        f"{RUN}/student/{{variant}}/model_final.pth",
    wildcard_constraints:
        variant="onehot|soft|soft_corrected",
    params:
        cfg=section_hash("model", "student", "seed", "device"),
        root=IMAGE_ROOT,
        checkpoints=lambda w: f"{RUN}/student/{w.variant}/checkpoints",
        hyperparams=student_hyperparams,
    threads: config["num_threads"]
    localrule: is_local("train_student")
    resources:
        **training_resources("train_student", "student"),
    log:
        f"{RUN}/logs/train_student_{{variant}}.log",
    shell:
        training_stage("train_student", "student", "train_student") + " --variant {wildcards.variant} --labeled-json {input.labeled}"
        " --unlabeled-json {input.unlabeled} --image-root {params.root} --teacher {input.teacher}"
        " --ccece {input.ccece} {params.hyperparams} --out {output} --checkpoint-dir {params.checkpoints} > {log} 2>&1"
