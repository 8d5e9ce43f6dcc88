rule plot_model_selection:
    input:
        selection=path("selection"),
    output:
        png=reported(
            path("figure", figure="model_selection", ext="png"),
            caption="model_selection",
            subcategory="HMM",
            result="model selection",
        ),
        svg=path("figure", figure="model_selection", ext="svg"),
    log:
        log("plot_model_selection"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
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
        png=reported(
            path("figure", figure="training_curves", ext="png"),
            caption="training_curves",
            subcategory="Training",
            result="training curves by state",
        ),
        svg=path("figure", figure="training_curves", ext="svg"),
    log:
        log("plot_training_curves"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
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
        graph_png=reported(
            path("figure", figure="transition_graph", ext="png"),
            caption="transition_graph",
            subcategory="Transitions",
            result="transition graph",
        ),
        graph_svg=path("figure", figure="transition_graph", ext="svg"),
        regression_png=reported(
            path("figure", figure="convergence_regression", ext="png"),
            caption="convergence_regression",
            subcategory="Convergence",
            result="convergence regression",
        ),
        regression_svg=path("figure", figure="convergence_regression", ext="svg"),
    log:
        log("plot_analysis"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
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
        curves=reported(
            path("figure", figure="training_curves", ext="html"),
            caption="interactive_curves",
            subcategory="Interactive",
            result="training curves (interactive)",
        ),
        graph=reported(
            path("figure", figure="transition_graph", ext="html"),
            caption="interactive_graph",
            subcategory="Interactive",
            result="transition graph (interactive)",
        ),
    log:
        log("interactive"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("interactive.py"),
    script:
        "../workflow/scripts/interactive.py"
