"""Paper tables: one DataFrame written as CSV, Markdown and LaTeX."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from latentstates.io import atomic_path, write_csv


def _fmt(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v) or "–"
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table."""
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = [
        "| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |"
        for row in df.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body]) + "\n"


def _rst_text(v) -> str:
    """A cell's text with reStructuredText's inline markup characters escaped."""
    text = _fmt(v) or "–"
    for c in "\\*`|_":
        text = text.replace(c, "\\" + c)
    return text


def to_rst(df: pd.DataFrame, caption: str) -> str:
    """A reStructuredText list-table (the report's front page includes one)."""
    lines = [f".. list-table:: {caption}", "   :header-rows: 1", ""]
    for row in [list(df.columns), *df.itertuples(index=False)]:
        cells = [_rst_text(v) for v in row]
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {c}" for c in cells[1:]]
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, caption: str) -> str:
    """A booktabs LaTeX table."""
    esc = lambda s: (
        str(s)
        .replace("_", r"\_")
        .replace("%", r"\%")
        .replace("↑", r"$\uparrow$")
        .replace("↓", r"$\downarrow$")
        .replace("→", r"$\to$")
    )  # noqa: E731
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{esc(caption)}}}",
        r"\begin{tabular}{" + "l" * len(df.columns) + "}",
        r"\toprule",
        " & ".join(esc(c) for c in df.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(esc(_fmt(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    csv: str | Path,
    md: str | Path,
    tex: str | Path,
    caption: str,
    readable: pd.DataFrame | None = None,
) -> None:
    """Write the same table as CSV, Markdown and LaTeX (each atomically); with `readable`, the
    Markdown and LaTeX show that version for people (formatted numbers, plain headers) and the
    CSV keeps `df`'s full precision."""
    write_csv(df, csv)
    shown = df if readable is None else readable
    for path, text in ((md, to_markdown(shown)), (tex, to_latex(shown, caption))):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
