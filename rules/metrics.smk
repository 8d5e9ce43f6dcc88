rule metrics:
    input:
        checkpoints=path("checkpoints"),
        log=path("train_log"),
    output:
        path("run_metrics"),
    params:
        task=lambda wc: task_config(wc.task),
        seed=lambda wc: int(wc.seed),
        hessian=canonical(config["metrics"]["hessian"]),
        device=config["device"],
    log:
        log("metrics"),
    benchmark:
        bench("metrics")
    threads: config["threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/metrics.py"


rule collate:
    input:
        lambda wc: [path("run_metrics", task=wc.task, seed=s) for s in seeds(wc.task)],
    output:
        path("metrics"),
    params:
        seeds=lambda wc: seeds(wc.task),
    log:
        log("collate"),
    benchmark:
        bench("collate")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/collate.py"
