# One training job per seed group of each task: the group's seeds are trained together, stacked
# (see src/latentstates/train.py), and every seed's outputs are its own files.
for _task in TASKS:
    for _group in seed_groups(_task):

        rule:
            name:
                group_rule("train", _task, _group)
            output:
                checkpoints=[checkpoints_output(_task, s) for s in _group],
                logs=[path("train_log", task=_task, seed=s) for s in _group],
            log:
                log("train", (_task, _group)),
            benchmark:
                bench("train", (_task, _group))
            conda:
                "../envs/torch.yaml"
            threads: config["threads"]
            resources:
                gpu=gpu_jobs(),
                mem_mb=2000,
                runtime=120,
            params:
                code=code("train.py"),
                task=task_config(_task),
                seeds=_group,
                device=config["device"],
            script:
                "../workflow/scripts/train.py"
