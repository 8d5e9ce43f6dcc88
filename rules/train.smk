rule train:
    output:
        checkpoints=(
            temp(directory(path("checkpoints")))
            if config["temp_checkpoints"]
            else directory(path("checkpoints"))
        ),
        log=path("train_log"),
    log:
        log("train", per_seed=True),
    benchmark:
        bench("train", per_seed=True)
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
        device=config["device"],
    script:
        "../workflow/scripts/train.py"
