# One metrics job per seed group (the groups of training or import): one process amortises
# start-up over the group's runs; every run's metrics are its own file. It reads only the run
# contract (run.json, the performance log, the checkpoints run.json lists).
for _task in RUN_TASKS:
    for _group in seed_groups(_task):

        rule:
            name:
                group_rule("metrics", _task, _group)
            input:
                runs=[path("run", task=_task, seed=s) for s in _group],
                logs=[path("train_log", task=_task, seed=s) for s in _group],
                checkpoints=[
                    path("checkpoints", task=_task, seed=s)
                    for s in _group
                    if SOURCE[_task] == "train"
                ],
            output:
                [path("run_metrics", task=_task, seed=s) for s in _group],
            log:
                log("metrics", (_task, _group)),
            benchmark:
                bench("metrics", (_task, _group))
            priority: task_priority(_task)
            conda:
                "../envs/torch.yaml"
            threads: config["threads"]
            resources:
                gpu=gpu_jobs(),
                mem_mb=2000,
                runtime=120,
            params:
                code=code("metrics.py"),
                plugins=plugin_digest(
                    [e["function"] for e in config["metrics"]["custom"]]
                ),
                seeds=_group,
                hessian=canonical(task_hessian(config, _task)),
                llc=canonical(task_llc(config, _task)),
                extra=config["metrics"]["extra"],
                per_layer=config["metrics"]["per_layer"] or "",
                custom=canonical(config["metrics"]["custom"]),
                device=config["device"],
            message:
                # A Hub series streamed through this job: what it downloads, one by one.
                hub_message(_task, _group) if streamed(_task) else None
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
    wildcard_constraints:
        task="|".join(RUN_TASKS) or "^$",
    priority: lambda wc: task_priority(wc.task)
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=code("collate.py"),
        seeds=lambda wc: seeds(wc.task),
    script:
        "../workflow/scripts/collate.py"
