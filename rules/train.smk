# Runs, under the run contract (latentstates.runs.contract): per seed, run.json and the performance log,
# written by one job per seed group. Trained here: the group's seeds are trained together,
# stacked (src/latentstates/runs/train.py). Imported: checkpoint directories or Hugging Face model
# directories are read where they are (src/latentstates/runs/sources.py); a Hub series' revisions
# are first found in the Hugging Face cache or downloaded into it (src/latentstates/runs/hub.py).
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

        else:
            if config["tasks"][_task].get("hub"):

                rule:
                    name:
                        group_rule("fetch", _task, _group)
                    output:
                        path("hub", task=_task, group=group_label(_group)),
                    log:
                        log("fetch", (_task, _group)),
                    conda:
                        "../envs/hub.yaml"
                    threads: 1
                    resources:
                        mem_mb=1000,
                        runtime=600,
                    params:
                        code=code("fetch_hub.py"),
                        # A function: the repository and revision patterns are not wildcards.
                        hub=lambda wc, h=canonical(config["tasks"][_task]["hub"]): h,
                        seeds=_group,
                    message:
                        hub_message(_task, _group)
                    script:
                        "../workflow/scripts/fetch_hub.py"

            rule:
                name:
                    group_rule("import", _task, _group)
                input:
                    import_inputs(_task, _group),
                    data_inputs(_task),
                output:
                    logs=[path("train_log", task=_task, seed=s) for s in _group],
                    runs=[path("run", task=_task, seed=s) for s in _group],
                log:
                    log("import", (_task, _group)),
                benchmark:
                    bench("import", (_task, _group))
                priority: task_priority(_task)
                conda:
                    "../envs/torch.yaml"
                threads: config["threads"]
                resources:
                    gpu=gpu_jobs(),
                    mem_mb=2000,
                    runtime=120,
                params:
                    code=code("import_runs.py"),
                    name=_task,
                    # A function: the path patterns' {seed} and {step} are not wildcards.
                    task=lambda wc, t=task_config(_task): t,
                    performance=config["tasks"][_task]["performance"],
                    # Reruns the import when an input changes, also to an older time.
                    inputs=lambda wc, t=_task, g=_group: import_fingerprint(t, g),
                    seeds=_group,
                    device=config["device"],
                script:
                    "../workflow/scripts/import_runs.py"
