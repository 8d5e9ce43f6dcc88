# One metrics job per seed group (the groups of training): one process amortises start-up over
# the group's runs; every run's metrics are its own file.
for _task in TASKS:
    for _group in seed_groups(_task):

        rule:
            name:
                group_rule("metrics", _task, _group)
            input:
                checkpoints=[path("checkpoints", task=_task, seed=s) for s in _group],
                logs=[path("train_log", task=_task, seed=s) for s in _group],
            output:
                [path("run_metrics", task=_task, seed=s) for s in _group],
            log:
                log("metrics", (_task, _group)),
            benchmark:
                bench("metrics", (_task, _group))
            conda:
                "../envs/torch.yaml"
            threads: config["threads"]
            resources:
                gpu=gpu_jobs(),
                mem_mb=2000,
                runtime=120,
            params:
                code=code("metrics.py"),
                task=task_config(_task),
                seeds=_group,
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
        code=code("collate.py"),
        seeds=lambda wc: seeds(wc.task),
    script:
        "../workflow/scripts/collate.py"
