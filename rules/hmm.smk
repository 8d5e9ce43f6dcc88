rule hmm:
    input:
        path("metrics"),
    output:
        selection=path("selection"),
        restarts=path("restarts"),
        model=path("model"),
        states=path("states"),
    params:
        hmm=lambda wc: canonical(hmm_config(wc.task)),
    log:
        log("hmm"),
    benchmark:
        bench("hmm")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/hmm.yaml"
    script:
        "../workflow/scripts/hmm.py"
