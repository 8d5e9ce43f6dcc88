# The early forecast of convergence (src/latentstates/forecast/): evaluated on runs held out of the
# HMM fit, and its figure. The command line `latentstates forecast` forecasts a run
# still training from the same fitted HMM.
rule forecast:
    input:
        metrics=path("metrics"),
        model=path("model"),
    output:
        evaluation=path("table", table="forecast", ext="csv"),
        summary=reported(
            path("table", table="forecast_summary", ext="csv"),
            caption="forecast_table",
            subcategory="Forecast",
            result="forecast evaluation",
        ),
        summary_md=path("table", table="forecast_summary", ext="md"),
        summary_tex=path("table", table="forecast_summary", ext="tex"),
    log:
        log("forecast"),
    benchmark:
        bench("forecast")
    conda:
        "../envs/hmm.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code("forecast.py"),
        threshold=lambda wc: config["tasks"][wc.task]["convergence_threshold"],
        forecast=canonical(config["forecast"]),
        hmm=lambda wc: canonical(hmm_settings(wc.task)),
    script:
        "../workflow/scripts/forecast.py"


rule plot_forecast:
    input:
        summary=path("table", table="forecast_summary", ext="csv"),
        analysis=path("analysis_summary"),
    output:
        png=reported(
            path("figure", figure="forecast", ext="png"),
            caption="forecast",
            subcategory="Forecast",
            result="forecast error and coverage",
        ),
        svg=path("figure", figure="forecast", ext="svg"),
    log:
        log("plot_forecast"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        code=code("plot_forecast.py"),
        method=config["forecast"]["method"],
        level=config["forecast"]["level"],
    script:
        "../workflow/scripts/plot_forecast.py"
