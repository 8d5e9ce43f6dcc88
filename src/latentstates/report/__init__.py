"""Report: figures, interactive views and tables.

Modules:
    plots        figures: one function per figure, one palette and one set of labels
    interactive  plotly views as self-contained HTML that opens offline
    comparisons  figures and tables of recipe comparisons
    tables       a DataFrame written as CSV, Markdown and LaTeX
"""

from latentstates._lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "training_curves": ".plots",
        "transition_graph": ".plots",
        "model_selection": ".plots",
        "convergence_regression": ".plots",
        "stability": ".plots",
        "save": ".plots",
        "write_table": ".tables",
    },
)
