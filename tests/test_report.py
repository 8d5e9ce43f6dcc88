"""The HTML report and the interactive views, opened in a real headless Chromium."""

import os
import shutil

import pytest

from conftest import snakemake

pytestmark = pytest.mark.slow
TASKS = ["modular_addition", "sparse_parity"]
FIGURES = [
    "model_selection",
    "training_curves",
    "transition_graph",
    "convergence_regression",
    "forecast",
    "stability",
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium on this machine (install Debian's chromium to run this test)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, path, ready: str | None = None):
    """Open a local file; return the page and the console errors / page errors it raised.

    `ready` is a JavaScript condition to wait for (up to 5 minutes: a loaded CI machine renders
    slowly); scripts get a further 1.5 s to raise errors.
    """
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load", timeout=300_000)
    if ready is not None:
        page.wait_for_function(ready, timeout=300_000)
    page.wait_for_timeout(1500)
    return page, errors


@pytest.fixture(scope="module")
def report(tiny_run):
    out = tiny_run / "results" / "report.html"
    snakemake(tiny_run, "--report", str(out))
    return out


def test_report_holds_every_figure_and_table(report):
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000
    assert "Where to start" in html  # the front page (workflow/report/workflow.rst)
    # ... opens with the run's summary table (results/summary.rst), a real table, one row per task.
    assert "What each task" in html and "System Message" not in html
    front = html[html.index("What each task") :]
    front = front[: front.index("Where to start")]
    assert front.count("<tr") == 1 + len(TASKS) and all(t in front for t in TASKS)
    for task in TASKS:
        assert task in html
        for fig in FIGURES:
            assert f"{fig}.png" in html
    # The interactive views through one page that carries plotly.js once, not each view's file.
    assert '"filename": "interactive.html"' in html
    assert (
        '"filename": "training_curves.html"' not in html and '"filename": "transition_graph.html"' not in html
    )
    for name in [
        "summary.csv",
        "edges.csv",
        "regression.csv",
        "runs.csv",
        "model_selection.csv",
        "excluded_runs.csv",
        "forecast_summary.csv",
        "k.csv",
        "states.csv",
        "comparisons.csv",
        "tests.csv",
        "convergence.csv",
        "occupancy.png",
    ]:
        assert name in html
    assert "Comparisons" in html and "both" in html


def test_report_opens_without_script_errors(browser, report):
    page, errors = _open(browser, report)
    assert errors == []
    text = page.inner_text("body")
    for task in TASKS:
        assert task in text
    page.close()


@pytest.mark.parametrize("task", [*TASKS, "comparisons/both"])
@pytest.mark.parametrize("view", ["training_curves", "transition_graph"])
def test_interactive_views_render_offline(browser, tiny_run, task, view):
    path = tiny_run / "results" / task / "figures" / f"{view}.html"
    plot = "document.querySelector('.js-plotly-plot')"
    page, errors = _open(browser, path, ready=f"{plot} !== null && {plot}.data !== undefined")
    assert errors == []
    assert page.locator(".js-plotly-plot").count() == 1
    n_traces = page.evaluate("document.querySelector('.js-plotly-plot').data.length")
    assert n_traces > 1
    # Hover text is attached to the data: every trace that shows a hover carries it.
    hover = page.evaluate(
        "Array.from(document.querySelector('.js-plotly-plot').data)"
        ".map(t => t.hovertemplate || (t.hovertext || []).join(' ')).join(' ')"
    )
    assert ("state" in hover) and (
        ("step" in hover) if view == "training_curves" else ("probability" in hover)
    )
    page.close()


def test_the_page_of_every_view_shows_each_one(browser, tiny_run):
    """results/interactive.html (the report's interactive page): a menu of every task's and
    comparison's views, each drawn when chosen, no script errors."""
    from latentstates.report.interactive import read_figure

    path = tiny_run / "results" / "interactive.html"
    plot = "document.querySelector('.js-plotly-plot')"
    page, errors = _open(browser, path, ready=f"{plot} !== null && {plot}.data !== undefined")
    buttons = page.locator("#menu button")
    labels = buttons.all_inner_texts()
    groups = page.locator("#menu h4").all_inner_texts()
    assert groups == ["modular_addition", "sparse_parity", "comparison both"]  # the tasks' order
    assert labels.count("training curves") == 3 and labels.count("transition graph") == 3
    assert "local learning coefficient" in labels  # sparse_parity estimates the LLC
    for i in range(len(labels)):
        buttons.nth(i).click()
        expected = read_figure(path, i)["layout"]["title"]["text"]
        page.wait_for_function(f"{plot}.layout.title.text === {expected!r}", timeout=60_000)
        assert page.evaluate(f"{plot}.data.length") == len(read_figure(path, i)["data"])
    assert errors == []
    # The page's figures are the views' own.
    assert read_figure(path, 0) == read_figure(
        tiny_run / "results" / TASKS[0] / "figures" / "training_curves.html"
    )
    page.close()


def test_a_page_of_views_is_smaller_than_its_views(tmp_path):
    """combine_views keeps each figure and plotly.js once."""
    import plotly.graph_objects as go

    from latentstates.report.interactive import combine_views, read_figure, save_html

    views = []
    for i in range(3):
        fig = go.Figure(go.Scatter(x=list(range(100)), y=[i] * 100, name=f"seed {i}"))
        fig.update_layout(title=f"view {i}")
        save_html(fig, tmp_path / f"{i}.html")
        views.append(("task", f"view {i}", tmp_path / f"{i}.html"))
    combine_views(views, tmp_path / "all.html")
    assert [read_figure(tmp_path / "all.html", i)["layout"]["title"]["text"] for i in range(3)] == [
        "view 0",
        "view 1",
        "view 2",
    ]
    one = (tmp_path / "0.html").stat().st_size
    assert (tmp_path / "all.html").stat().st_size < 1.1 * one


def test_a_view_carries_its_figure_and_plotly_compressed(tmp_path):
    """`save_html` packs plotly.js and the figure gzip-compressed; `read_figure` gets it back."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    from latentstates.report.interactive import read_figure, save_html

    fig = go.Figure(go.Scatter(x=list(range(500)), y=[i % 7 for i in range(500)], name="seed 3"))
    fig.update_layout(title="task: a view")
    save_html(fig, tmp_path / "view.html")
    back = read_figure(tmp_path / "view.html")
    assert back["data"][0]["name"] == "seed 3" and back["data"][0]["y"][:8] == [0, 1, 2, 3, 4, 5, 6, 0]
    assert back["layout"]["title"]["text"] == "task: a view"
    size = (tmp_path / "view.html").stat().st_size
    assert size < 0.5 * len(get_plotlyjs())  # plotly.js alone, uncompressed
