rule hmm:
    input:
        path("metrics"),
    output:
        selection=reported(
            path("selection"),
            caption="selection_table",
            subcategory="HMM",
            result="model selection table",
        ),
        restarts=path("restarts"),
        model=path("model"),
        models=path("models"),
        states=path("states"),
        excluded=reported(
            path("excluded"),
            caption="excluded_runs",
            subcategory="HMM",
            result="runs left out of the HMM",
        ),
    log:
        log("hmm"),
    benchmark:
        bench("hmm")
    priority: lambda wc: task_priority(wc.task)
    conda:
        "../envs/hmm.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code("hmm.py"),
        hmm=lambda wc: canonical(hmm_settings(wc.task)),
    script:
        "../workflow/scripts/hmm.py"


# K chosen on each seed set of a task with `replicates` alone: do the sets agree?
rule replication:
    input:
        models=[path("model", task=s) for t in SEED_SETS for s in SEED_SETS[t]],
    output:
        csv=reported(
            path("replication", ext="csv"),
            caption="replication",
            category="Summary",
            result="K across seed sets",
        ),
        md=path("replication", ext="md"),
        tex=path("replication", ext="tex"),
    log:
        f"{RESULTS}/logs/replication.log",
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        runtime=5,
    params:
        code=code("replication.py"),
        sets=canonical(SEED_SETS),
        seeds=canonical({s: seeds(s) for t in SEED_SETS for s in SEED_SETS[t]}),
    script:
        "../workflow/scripts/replication.py"
