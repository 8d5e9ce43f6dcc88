rule plot_model_selection:
    input:
        selection=path("selection"),
    output:
        png=report(
            path("figure", figure="model_selection", ext="png"),
            caption="../workflow/report/model_selection.rst",
            category="{task}",
            subcategory="HMM",
            labels={"task": "{task}", "result": "model selection"},
        ),
        svg=path("figure", figure="model_selection", ext="svg"),
    log:
        log("plot_model_selection"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code("plot_model_selection.py"),
        criterion=lambda wc: hmm_settings(wc.task)["criterion"],
    script:
        "../workflow/scripts/plot_model_selection.py"


rule plot_training_curves:
    input:
        metrics=path("metrics"),
        states=path("states"),
        model=path("model"),
    output:
        png=report(
            path("figure", figure="training_curves", ext="png"),
            caption="../workflow/report/training_curves.rst",
            category="{task}",
            subcategory="Training",
            labels={"task": "{task}", "result": "training curves by state"},
        ),
        svg=path("figure", figure="training_curves", ext="svg"),
    log:
        log("plot_training_curves"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code("plot_training_curves.py"),
        max_runs=config["plots"]["max_runs"],
    script:
        "../workflow/scripts/plot_training_curves.py"


rule plot_analysis:
    input:
        edges=path("table", table="edges", ext="csv"),
        runs=path("table", table="runs", ext="csv"),
        summary=path("analysis_summary"),
    output:
        graph_png=report(
            path("figure", figure="transition_graph", ext="png"),
            caption="../workflow/report/transition_graph.rst",
            category="{task}",
            subcategory="Transitions",
            labels={"task": "{task}", "result": "transition graph"},
        ),
        graph_svg=path("figure", figure="transition_graph", ext="svg"),
        regression_png=report(
            path("figure", figure="convergence_regression", ext="png"),
            caption="../workflow/report/convergence_regression.rst",
            category="{task}",
            subcategory="Convergence",
            labels={"task": "{task}", "result": "convergence regression"},
        ),
        regression_svg=path("figure", figure="convergence_regression", ext="svg"),
    log:
        log("plot_analysis"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code("plot_analysis.py"),
    script:
        "../workflow/scripts/plot_analysis.py"


rule interactive:
    input:
        metrics=path("metrics"),
        states=path("states"),
        model=path("model"),
        edges=path("table", table="edges", ext="csv"),
        summary=path("analysis_summary"),
    output:
        curves=report(
            path("figure", figure="training_curves", ext="html"),
            caption="../workflow/report/interactive_curves.rst",
            category="{task}",
            subcategory="Interactive",
            labels={"task": "{task}", "result": "training curves (interactive)"},
        ),
        graph=report(
            path("figure", figure="transition_graph", ext="html"),
            caption="../workflow/report/interactive_graph.rst",
            category="{task}",
            subcategory="Interactive",
            labels={"task": "{task}", "result": "transition graph (interactive)"},
        ),
    log:
        log("interactive"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code("interactive.py"),
    script:
        "../workflow/scripts/interactive.py"
