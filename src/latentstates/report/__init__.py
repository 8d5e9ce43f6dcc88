"""Report: figures, interactive views and tables.

Modules:
    plots        figures: one function per figure, one palette and one set of labels
    interactive  plotly views as self-contained HTML that opens offline
    comparisons  figures and tables of recipe comparisons
    tables       a DataFrame written as CSV, Markdown and LaTeX
"""
