"""Interactive (plotly) views, written as self-contained HTML that opens offline (plotly.js and the
figure inside each file, gzip-compressed)."""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from latentstates.io import atomic_path
from latentstates.report.plots import curve_columns, graph_positions, state_palette
from latentstates.states.model import StateModel

HOVER_METRICS = ["l2", "spectral", "code_sparsity", "hessian_top_eig"]


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(round(c * 255)):02x}" for c in rgb)


# A page of one or more views: plotly.js once and each figure gzip-compressed inside it (base64, in
# the JSON block `packed`), unpacked by the browser's DecompressionStream (Chrome 80, Firefox 113,
# Safari 16.4 and later), then drawn by Plotly.react. A page of several views lists them in a menu
# (grouped by task) and unpacks a figure when it is chosen.
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
html, body {{ margin: 0; height: 100%; font-family: sans-serif; }}
body {{ display: flex; }}
#menu {{ flex: 0 0 15em; overflow-y: auto; border-right: 1px solid #ddd; padding: 0.5em; font-size: 14px; }}
#menu[hidden] {{ display: none; }}
#menu h4 {{ margin: 0.8em 0 0.2em; }}
#menu button {{ display: block; width: 100%; text-align: left; border: 0; background: none;
  padding: 0.3em 0.5em; cursor: pointer; font: inherit; }}
#menu button.shown {{ background: #e6edf7; font-weight: bold; }}
#view {{ flex: 1; height: 100%; min-width: 0; }}
</style>
</head><body><nav id="menu" hidden></nav><div id="view"></div>
<script>
async function unpack(b64) {{
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}}
window.addEventListener("DOMContentLoaded", async () => {{
  const packed = JSON.parse(document.getElementById("packed").textContent);
  (0, eval)(await unpack(packed.plotly));  // defines window.Plotly
  const menu = document.getElementById("menu"), buttons = [];
  async function show(i) {{
    const figure = JSON.parse(await unpack(packed.views[i].figure));
    buttons.forEach((b, j) => b.classList.toggle("shown", i === j));
    await Plotly.react("view", figure.data, figure.layout, {{responsive: true, displaylogo: false}});
  }}
  let group = null;
  packed.views.forEach((v, i) => {{
    if (v.group && v.group !== group) {{
      const h = menu.appendChild(document.createElement("h4"));
      h.textContent = group = v.group;
    }}
    const b = menu.appendChild(document.createElement("button"));
    b.textContent = v.label;
    b.onclick = () => show(i);
    buttons.push(b);
  }});
  menu.hidden = packed.views.length < 2;
  await show(0);
}});
</script>
<script id="packed" type="application/json">{packed}</script>
</body></html>
"""


@functools.cache
def _packed_plotly() -> str:
    """plotly.js as shipped with the plotly package, gzip-compressed and base64-encoded (4.8 MB →
    2.0 MB for plotly 7.1)."""
    from plotly.offline import get_plotlyjs

    return _pack(get_plotlyjs())


def _pack(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode("ascii")


def _write_page(path, title: str, views: list[dict]) -> None:
    """A page of `views` ({group, label, figure: packed}), the first shown on opening."""
    packed = json.dumps({"plotly": _packed_plotly(), "views": views}).replace("</", "<\\/")
    page = PAGE.format(title=html.escape(title), packed=packed)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")


def _views(path) -> list[dict]:
    """The packed views of a page written here ({group, label, figure})."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.index('<script id="packed" type="application/json">')
    block = text[text.index(">", start) + 1 : text.index("</script>", start)]
    return json.loads(block)["views"]


def read_figure(path, view: int = 0) -> dict:
    """The plotly figure (data, layout) of a page's `view` (its only one, for `save_html`'s)."""
    packed = _views(path)[view]["figure"]
    return json.loads(gzip.decompress(base64.b64decode(packed)).decode())


def save_html(fig: go.Figure, path) -> None:
    """Write a figure as one self-contained HTML file that opens offline: plotly.js and the figure
    inside it, gzip-compressed (a view of the default run: 2–3 MB instead of 6–8)."""
    title = (fig.layout.title.text if fig.layout.title else None) or "view"
    _write_page(path, title, [{"group": "", "label": title, "figure": _pack(fig.to_json())}])


def combine_views(views: list[tuple[str, str, str | Path]], path, title: str = "Interactive views") -> None:
    """One page of several views written by `save_html`, given as (group, label, file): plotly.js
    once (a report that embeds this page instead of each view carries it once, not N times)."""
    _write_page(
        path,
        title,
        [
            {"group": group, "label": label, "figure": _views(file)[0]["figure"]}
            for group, label, file in views
        ],
    )


def training_curves(
    metrics: pd.DataFrame,
    states: pd.DataFrame,
    k: int,
    task: str,
    features: list[str] | None = None,
    names: dict[int, str] | None = None,
) -> go.Figure:
    """Eval loss (solid) and train loss (dashed) per run, or what `plots.curve_columns` shows where
    the runs have no losses; hover a point for run, step, state, metrics. `names` labels the runs
    (default 'seed N')."""
    columns, ylabel, log = curve_columns(metrics, features or [])
    colours = [_hex(c) for c in state_palette(k)]
    data = metrics.merge(states[["seed", "checkpoint", "state"]], on=["seed", "checkpoint"], how="left")
    data["state"] = data["state"].fillna(-1).astype(int)  # -1: run not decoded (left out of the HMM)
    extra = [m for m in HOVER_METRICS if m in data.columns]
    fig = go.Figure()
    for seed, run in data.sort_values(["seed", "step"]).groupby("seed"):
        group = names[seed] if names else f"seed {seed}"
        if len(columns) == 2:
            fig.add_trace(
                go.Scatter(
                    x=run["step"],
                    y=run[columns[0]],
                    mode="lines",
                    name=group,
                    legendgroup=group,
                    showlegend=False,
                    hoverinfo="skip",
                    line={"dash": "dash", "width": 1, "color": "#888"},
                )
            )
        custom = np.column_stack(
            [
                run["seed"],
                run["state"],
                run["train_loss"],
                run["eval_loss"],
                run["train_acc"],
                run["eval_acc"],
                *(run[m] for m in extra),
            ]
        )
        lines = [
            "%{fullData.name}",
            "step %{x}",
            "state %{customdata[1]}",
            "train loss %{customdata[2]:.4g}",
            "eval loss %{customdata[3]:.4g}",
            "train acc %{customdata[4]:.3f}",
            "eval acc %{customdata[5]:.3f}",
        ]
        lines += [f"{m} %{{customdata[{6 + i}]:.4g}}" for i, m in enumerate(extra)]
        fig.add_trace(
            go.Scatter(
                x=run["step"],
                y=run[columns[-1]],
                mode="lines+markers",
                name=group,
                legendgroup=group,
                line={"width": 1, "color": "#333"},
                marker={"size": 6, "color": [colours[s] if s >= 0 else "#bbbbbb" for s in run["state"]]},
                customdata=custom,
                hovertemplate="<br>".join(lines) + "<extra></extra>",
            )
        )
    for s in range(k):
        fig.add_trace(
            go.Scatter(
                x=[None], y=[None], mode="markers", name=f"state {s}", marker={"size": 9, "color": colours[s]}
            )
        )
    fig.update_layout(
        title=f"{task}: {ylabel} by latent state" + (" (dashed: train, solid: eval)" if log else ""),
        xaxis_title="training step",
        yaxis_title=ylabel,
        yaxis_type="log" if log else "linear",
        template="plotly_white",
        height=600,
    )
    return fig


def transition_graph(
    model: StateModel, edges: pd.DataFrame, detours: list[int], task: str, ringed: str = "detour"
) -> go.Figure:
    """States as nodes (hover: mean feature values), edges as arrows (hover: probability, runs,
    changes); the `detours` ringed red, described as `ringed`."""
    k = model.k
    if k == 0:
        fig = go.Figure()
        fig.update_layout(
            title=f"{task}: no run could be fitted by the HMM (see hmm/excluded_runs.csv)",
            template="plotly_white",
            xaxis={"visible": False},
            yaxis={"visible": False},
        )
        return fig
    pos = graph_positions(k)
    colours = [_hex(c) for c in state_palette(k)]
    features, means = model.features, model.hmm.means
    fig = go.Figure()
    for e in edges.itertuples():
        (x0, y0), (x1, y1) = pos[e.source], pos[e.target]
        # Bend each edge to the left of its direction, so i→j and j→i do not overlap.
        mx, my = (x0 + x1) / 2 - 0.15 * (y1 - y0), (y0 + y1) / 2 + 0.15 * (x1 - x0)
        fig.add_annotation(
            x=x1,
            y=y1,
            ax=mx,
            ay=my,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=3,
            arrowsize=1.2,
            arrowwidth=1.5,
            standoff=18,
            arrowcolor="#555",
        )
        fig.add_trace(
            go.Scatter(
                x=[x0, mx],
                y=[y0, my],
                mode="lines",
                hoverinfo="skip",
                line={"color": "#555", "width": 1.5},
                showlegend=False,
            )
        )
        text = (
            f"{e.source} → {e.target}<br>probability {e.probability:.3f}<br>"
            f"runs {e.n_runs} of {e.n_total_runs}"
        )
        if hasattr(e, "summary"):
            text += f"<br>{e.summary}"
        fig.add_trace(
            go.Scatter(
                x=[mx],
                y=[my],
                mode="markers+text",
                text=[f"{e.n_runs}/{e.n_total_runs}"],
                textposition="top center",
                marker={"size": 10, "color": "rgba(0,0,0,0.15)"},
                hovertext=[text],
                hoverinfo="text",
                showlegend=False,
            )
        )
    node_text = [
        f"state {s}{f' ({ringed})' if s in detours else ''}<br>"
        + "<br>".join(f"{f}: {means[s][i]:+.2f}" for i, f in enumerate(features))
        for s in range(k)
    ]
    fig.add_trace(
        go.Scatter(
            x=[pos[s][0] for s in range(k)],
            y=[pos[s][1] for s in range(k)],
            mode="markers+text",
            text=[str(s) for s in range(k)],
            textfont={"color": "white", "size": 14},
            marker={
                "size": 34,
                "color": colours,
                "line": {
                    "width": [4 if s in detours else 1 for s in range(k)],
                    "color": ["#d62728" if s in detours else "#333" for s in range(k)],
                },
            },
            hovertext=node_text,
            hoverinfo="text",
            showlegend=False,
        )
    )
    fig.update_layout(
        title=f"{task}: latent-state transitions (hover states and edges; red ring: {ringed})",
        template="plotly_white",
        height=550,
        xaxis={"visible": False},
        yaxis={"visible": False, "scaleanchor": "x"},
    )
    return fig


def llc_curves(data: pd.DataFrame, k: int, task: str) -> go.Figure:
    """Every run's local learning coefficient against step, points coloured by state, error bars
    of ±1 standard error; hover for run, step, state, LLC."""
    colours = [_hex(c) for c in state_palette(k)]
    fig = go.Figure()
    for seed, run in data[data["llc"].notna()].groupby("seed"):
        fig.add_trace(
            go.Scatter(
                x=run["step"],
                y=run["llc"],
                error_y={"type": "data", "array": run["llc_se"], "visible": True, "thickness": 0.8},
                mode="lines+markers",
                name=f"seed {seed}",
                line={"width": 1, "color": "#555"},
                marker={"size": 6, "color": [colours[int(s)] for s in run["state"]]},
                customdata=np.column_stack([run["state"], run["llc_se"]]),
                hovertemplate="%{fullData.name}<br>step %{x}<br>state %{customdata[0]}<br>"
                "LLC %{y:.4g} ± %{customdata[1]:.2g}<extra></extra>",
            )
        )
    for s in range(k):
        fig.add_trace(
            go.Scatter(
                x=[None], y=[None], mode="markers", name=f"state {s}", marker={"size": 9, "color": colours[s]}
            )
        )
    fig.update_layout(
        title=f"{task}: local learning coefficient by latent state",
        xaxis_title="training step",
        yaxis_title="LLC",
        template="plotly_white",
        height=600,
    )
    return fig
