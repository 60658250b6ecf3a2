# Stages 1-2: crop embeddings of rare-class objects, Faiss k-NN in the pool, de-duplication.


rule embed_crops:
    input:
        config=stage_config("embed_crops"),
        train=TRAIN_JSON,
    output:
        npy=f"{RUN}/retrieval/crops.npy",
        index=f"{RUN}/retrieval/crops.parquet",
    params:
        root=IMAGE_ROOT,
    threads: config["num_threads"]
    resources:
        **rule_resources("embed_crops"),
    log:
        f"{RUN}/logs/embed_crops.log",
    benchmark:
        f"{RUN}/benchmarks/embed_crops.tsv",
    shell:
        stage("embed_crops") + " --train-json {input.train:q} --image-root {params.root:q}"
        " --out-npy {output.npy:q} --out-index {output.index:q} > {log:q} 2>&1"


rule embed_images:
    input:
        config=stage_config("embed_images"),
        images=lambda w: {"pool": POOL_JSON, "train": TRAIN_JSON, "val": VAL_JSON}[w.images],
    output:
        npy=f"{RUN}/retrieval/images_{{images}}.npy",
        index=f"{RUN}/retrieval/images_{{images}}.parquet",
        report=f"{RUN}/retrieval/images_{{images}}_report.json",
    wildcard_constraints:
        images="pool|train|val",
    params:
        root=IMAGE_ROOT,
        # finished shards survive a killed job (not an output, so Snakemake does not delete them)
        shards=f"{RUN}/retrieval/shards_{{images}}",
    threads: config["num_threads"]
    resources:
        **rule_resources("embed_images"),
    log:
        f"{RUN}/logs/embed_images_{{images}}.log",
    benchmark:
        f"{RUN}/benchmarks/embed_images_{{images}}.tsv",
    shell:
        stage("embed_images") + " --images-json {input.images:q} --image-root {params.root:q}"
        " --out-npy {output.npy:q} --out-index {output.index:q} --out-report {output.report:q}"
        " --shard-dir {params.shards:q} > {log:q} 2>&1"


rule retrieve:
    input:
        config=stage_config("retrieve"),
        queries=rules.embed_crops.output.npy,
        query_index=rules.embed_crops.output.index,
        pool=f"{RUN}/retrieval/images_pool.npy",
        pool_index=f"{RUN}/retrieval/images_pool.parquet",
    output:
        f"{RUN}/retrieval/neighbours.parquet",
    params:
    resources:
        **rule_resources("retrieve"),
    log:
        f"{RUN}/logs/retrieve.log",
    benchmark:
        f"{RUN}/benchmarks/retrieve.tsv",
    shell:
        stage("retrieve") + " --queries {input.queries:q} --query-index {input.query_index:q}"
        " --pool {input.pool:q} --pool-index {input.pool_index:q} --out {output:q} > {log:q} 2>&1"


rule dedup:
    input:
        config=stage_config("dedup"),
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
        decisions=f"{RUN}/retrieval/dedup_decisions.parquet",
    params:
    resources:
        **rule_resources("dedup"),
    log:
        f"{RUN}/logs/dedup.log",
    benchmark:
        f"{RUN}/benchmarks/dedup.tsv",
    shell:
        stage("dedup") + " --neighbours {input.neighbours:q} --pool-json {input.pool_json:q}"
        " --pool-npy {input.pool:q} --pool-index {input.pool_index:q}"
        " --labeled-npy {input.train:q} --labeled-index {input.train_index:q}"
        " --labeled-npy {input.val:q} --labeled-index {input.val_index:q}"
        " --out {output.unlabeled:q} --out-counts {output.counts:q} --out-decisions {output.decisions:q}"
        " > {log:q} 2>&1"
