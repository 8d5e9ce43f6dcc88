# Runs trained here, under the run contract (latentstates.runs.contract): per seed, checkpoints,
# run.json and the performance log, written by one job per seed group whose seeds are trained
# together, stacked (src/latentstates/runs/train.py). Runs from elsewhere: rules/import.smk.
for _task in RUN_TASKS:
    for _group in seed_groups(_task):
        if SOURCE[_task] == "train":

            rule:
                name:
                    group_rule("train", _task, _group)
                input:
                    data_inputs(_task),
                output:
                    checkpoints=[checkpoints_output(_task, s) for s in _group],
                    logs=[path("train_log", task=_task, seed=s) for s in _group],
                    runs=[path("run", task=_task, seed=s) for s in _group],
                log:
                    log("train", (_task, _group)),
                benchmark:
                    bench("train", (_task, _group))
                priority: task_priority(_task)
                conda:
                    "../envs/torch.yaml"
                threads: config["threads"]
                resources:
                    gpu=gpu_jobs(),
                    mem_mb=2000,
                    runtime=120,
                params:
                    code=code("train.py"),
                    name=_task,
                    task=task_config(_task),
                    seeds=_group,
                    device=config["device"],
                script:
                    "../workflow/scripts/train.py"
