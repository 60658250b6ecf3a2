# Stages 1-2: crop embeddings of rare-class objects, Faiss k-NN in the pool, de-duplication.


rule embed_crops:
    input:
        TRAIN_JSON,
    output:
        npy=f"{RUN}/retrieval/crops.npy",
        index=f"{RUN}/retrieval/crops.parquet",
    params:
        cfg=section_hash("embed", "device"),
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    localrule: is_local("embed_crops")
    resources:
        **rule_resources("embed_crops"),
    log:
        f"{RUN}/logs/embed_crops.log",
    shell:
        stage("embed_crops") + " --train-json {input} --image-root {params.root}"
        " --out-npy {output.npy} --out-index {output.index} > {log} 2>&1"


rule embed_images:
    input:
        lambda w: {"pool": POOL_JSON, "train": TRAIN_JSON, "val": VAL_JSON}[w.images],
    output:
        npy=f"{RUN}/retrieval/images_{{images}}.npy",
        index=f"{RUN}/retrieval/images_{{images}}.parquet",
        report=f"{RUN}/retrieval/images_{{images}}_report.json",
    wildcard_constraints:
        images="pool|train|val",
    params:
        cfg=section_hash("embed", "device"),
        root=IMAGE_ROOT,
        # finished shards survive a killed job (not an output, so Snakemake does not delete them)
        shards=f"{RUN}/retrieval/shards_{{images}}",
    threads: config["num_threads"]
    localrule: is_local("embed_images")
    resources:
        **rule_resources("embed_images"),
    log:
        f"{RUN}/logs/embed_images_{{images}}.log",
    shell:
        stage("embed_images") + " --images-json {input} --image-root {params.root}"
        " --out-npy {output.npy} --out-index {output.index} --out-report {output.report}"
        " --shard-dir {params.shards} > {log} 2>&1"


rule retrieve:
    input:
        queries=rules.embed_crops.output.npy,
        query_index=rules.embed_crops.output.index,
        pool=f"{RUN}/retrieval/images_pool.npy",
        pool_index=f"{RUN}/retrieval/images_pool.parquet",
    output:
        f"{RUN}/retrieval/neighbours.parquet",
    params:
        cfg=section_hash("retrieve"),
    localrule: is_local("retrieve")
    resources:
        **rule_resources("retrieve"),
    log:
        f"{RUN}/logs/retrieve.log",
    shell:
        stage("retrieve") + " --queries {input.queries} --query-index {input.query_index}"
        " --pool {input.pool} --pool-index {input.pool_index} --out {output} > {log} 2>&1"


rule dedup:
    input:
        neighbours=rules.retrieve.output[0],
        pool_json=POOL_JSON,
        pool=f"{RUN}/retrieval/images_pool.npy",
        pool_index=f"{RUN}/retrieval/images_pool.parquet",
        train=f"{RUN}/retrieval/images_train.npy",
        train_index=f"{RUN}/retrieval/images_train.parquet",
        val=f"{RUN}/retrieval/images_val.npy",
        val_index=f"{RUN}/retrieval/images_val.parquet",
    output:
        unlabeled=f"{RUN}/retrieval/unlabeled.json",
        counts=f"{RUN}/retrieval/dedup_counts.json",
    params:
        cfg=section_hash("dedup"),
    localrule: is_local("dedup")
    resources:
        **rule_resources("dedup"),
    log:
        f"{RUN}/logs/dedup.log",
    shell:
        stage("dedup") + " --neighbours {input.neighbours} --pool-json {input.pool_json}"
        " --pool-npy {input.pool} --pool-index {input.pool_index}"
        " --labeled-npy {input.train} --labeled-index {input.train_index}"
        " --labeled-npy {input.val} --labeled-index {input.val_index}"
        " --out {output.unlabeled} --out-counts {output.counts} > {log} 2>&1"
