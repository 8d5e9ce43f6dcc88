rule train:
    output:
        checkpoints=(
            temp(directory(path("checkpoints")))
            if config["temp_checkpoints"]
            else directory(path("checkpoints"))
        ),
        log=path("train_log"),
    params:
        task=lambda wc: task_config(wc.task),
        seed=lambda wc: int(wc.seed),
        device=config["device"],
    log:
        log("train"),
    benchmark:
        bench("train")
    threads: config["threads"]
    resources:
        gpu=gpu_jobs(),
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/train.py"
