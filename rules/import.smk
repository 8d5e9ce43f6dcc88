# Runs from elsewhere, under the run contract (latentstates.runs.contract): checkpoint
# directories or Hugging Face model directories are read where they are
# (src/latentstates/runs/sources.py), one job per seed group writing each seed's run.json and
# performance log; a Hub series' revisions are streamed through the metrics job (downloaded,
# measured, evicted: src/latentstates/runs/hub_stream.py), or with `hub.keep_cache` first found in
# the Hugging Face cache or downloaded into it (src/latentstates/runs/hub.py). A metrics table goes
# straight to the HMM.
for _task in RUN_TASKS:
    for _group in seed_groups(_task):
        if SOURCE[_task] != "train":
            if config["tasks"][_task].get("hub") and not streamed(_task):

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
                    performance=performance_param(_task),
                    # Reruns the import when an input changes, also to an older time.
                    inputs=lambda wc, t=_task, g=_group: import_fingerprint(t, g),
                    seeds=_group,
                    device=config["device"],
                script:
                    "../workflow/scripts/import_runs.py"


# A metrics table from elsewhere goes straight to the HMM, in the collated layout; so do a
# tracker's logs, read as one (src/latentstates/runs/trackers.py).
rule import_table:
    input:
        lambda wc: table_inputs(wc.task),
    output:
        path("metrics"),
    log:
        log("import_table"),
    benchmark:
        bench("import_table")
    wildcard_constraints:
        task="|".join(TABLE_TASKS) or "^$",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=code("import_table.py"),
        task=lambda wc: canonical(config["tasks"][wc.task]),
        features=lambda wc: hmm_settings(wc.task)["features"],
        # Reruns the import when the table (or an event file) changes, also to an older time.
        table=lambda wc: discovery.fingerprint(table_inputs(wc.task)),
    script:
        "../workflow/scripts/import_table.py"
