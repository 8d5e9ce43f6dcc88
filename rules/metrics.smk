rule metrics:
    input:
        checkpoints=path("checkpoints"),
        log=path("train_log"),
    output:
        path("run_metrics"),
    log:
        log("metrics", per_seed=True),
    benchmark:
        bench("metrics", per_seed=True)
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=2000,
        runtime=60,
    params:
        task=lambda wc: task_config(wc.task),
        seed=lambda wc: int(wc.seed),
        hessian=canonical(config["metrics"]["hessian"]),
        device=config["device"],
    script:
        "../workflow/scripts/metrics.py"


rule collate:
    input:
        lambda wc: [path("run_metrics", task=wc.task, seed=s) for s in seeds(wc.task)],
    output:
        path("metrics"),
    log:
        log("collate"),
    benchmark:
        bench("collate")
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seeds=lambda wc: seeds(wc.task),
    script:
        "../workflow/scripts/collate.py"
