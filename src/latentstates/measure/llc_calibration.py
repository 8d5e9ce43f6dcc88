"""Calibrate the local learning coefficient's SGLD for one task: a sweep of the step size ε and the
inverse temperature nβ on one run's last checkpoint (devinterp's procedure for its grokking
example), then the chosen pair held fixed for every checkpoint of every run (`tasks.<task>.llc`).

Usage:
    latentstates llc-calibration --task digits_mlp [--config config.yaml] [--seed 0]
        [--epsilons 1e-5 3e-5 1e-4 3e-4 1e-3] [--nbeta-factors 0.3 1 3] [--out calibration]

Reads the run's checkpoints from the workflow's results (results/<task>/runs/seed<seed>/run.json:
run the workflow, or at least its training, first). Writes `<out>/<task>_llc_calibration.csv`
(per ε and nβ: λ̂, its standard error, whether flagged as not a minimum, and the drift of the
chains' losses between the second and last quarter of the draws in standard errors) and
`<out>/<task>_llc_calibration.png` (every chain's loss trace per ε, a panel per nβ), and prints
the table with the suggestion: the largest ε whose chains are stationary (drift within 2), not
flagged, and whose λ̂ is within 25 % of the next smaller ε's (where the estimate plateaus in ε:
a step small enough that the estimate no longer depends much on it, large enough to mix).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from latentstates.config import load_config
from latentstates.settings import LLCSettings

EPSILONS = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
NBETA_FACTORS = [0.3, 1.0, 3.0]
PLATEAU = 0.25  # successive ε 3x apart: λ̂ moving by less than a quarter is on the plateau


def drift(trace: np.ndarray, burn_in: int) -> float:
    """How far the chains' mean loss moves from the second to the last quarter of the draws, in
    standard errors of that difference over chains (stationary chains: within ~2)."""
    draws = trace[:, burn_in:]
    q = draws.shape[1] // 4
    if q < 1 or len(draws) < 2:
        return np.nan
    diff = draws[:, -q:].mean(axis=1) - draws[:, q : 2 * q].mean(axis=1)
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    return float(diff.mean() / se) if se > 0 else np.nan


def sweep(run: dict, run_file: Path, llc: LLCSettings, epsilons, nbetas, device: str = "cpu") -> pd.DataFrame:
    """λ̂ of the run's last checkpoint for every (ε, nβ); the chains' traces kept for the figure."""
    from latentstates.measure.llc_runs import group_llcs

    last = dict(run, checkpoints=run["checkpoints"][-1:])
    rows = []
    for nbeta in nbetas:
        for eps in epsilons:
            settings = dataclasses.replace(llc, enabled=True, epsilon=eps, nbeta=nbeta, stride=1)
            (found,) = group_llcs([last], [run_file], settings, device=device, progress=False)
            est = next(iter(found.values()))
            rows.append(
                {
                    "epsilon": eps,
                    "nbeta": nbeta,
                    "llc": est.llc,
                    "llc_se": est.se,
                    "raw_llc": float(np.mean(est.chains)),
                    "not_minimum": est.not_minimum,
                    "drift": drift(est.trace, llc.burn_in),
                    "init_loss": est.init_loss,
                    "trace": est.trace,
                }
            )
    return pd.DataFrame(rows)


def suggest(table: pd.DataFrame) -> pd.Series | None:
    """Per the module's rule: the largest stable ε at the default nβ (or the first nβ swept)."""
    nbetas = sorted(table["nbeta"].unique())
    nbeta = nbetas[len(nbetas) // 2]
    rows = table[table["nbeta"] == nbeta].sort_values("epsilon").reset_index(drop=True)
    best = None
    for i in range(1, len(rows)):
        row, smaller = rows.loc[i], rows.loc[i - 1]
        stable = not row["not_minimum"] and np.isfinite(row["llc"]) and abs(row["drift"]) <= 2
        agrees = np.isfinite(smaller["llc"]) and abs(row["llc"] - smaller["llc"]) <= PLATEAU * abs(
            smaller["llc"]
        )
        if stable and agrees:
            best = row
    return best


def figure(table: pd.DataFrame, task: str, burn_in: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nbetas = sorted(table["nbeta"].unique())
    fig, axes = plt.subplots(1, len(nbetas), figsize=(5 * len(nbetas), 4), squeeze=False, sharey=False)
    colours = plt.cm.viridis(np.linspace(0, 0.9, table["epsilon"].nunique()))
    for ax, nbeta in zip(axes[0], nbetas):
        rows = table[table["nbeta"] == nbeta].sort_values("epsilon")
        for colour, (_, row) in zip(colours, rows.iterrows()):
            for c, chain in enumerate(row["trace"]):
                ax.plot(
                    chain, color=colour, lw=0.6, alpha=0.8, label=f"ε {row['epsilon']:g}" if c == 0 else None
                )
        ax.axhline(rows["init_loss"].iloc[0], color="k", ls="--", lw=0.8, label="L_n(w*)")
        ax.axvline(burn_in, color="#999", ls=":", lw=0.8)
        ax.set_title(f"nβ = {nbeta:.4g}")
        ax.set_xlabel("SGLD step")
        ax.set_ylabel("minibatch loss")
        ax.legend(fontsize=7)
    fig.suptitle(f"{task}: SGLD loss traces on the last checkpoint (burn-in left of the dotted line)")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    from latentstates.measure.llc import default_nbeta
    from latentstates.runs.contract import read_run
    from latentstates.runs.runtime import build_run

    parser = argparse.ArgumentParser(
        prog="latentstates llc-calibration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--task", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilons", type=float, nargs="+", default=EPSILONS)
    parser.add_argument("--nbeta-factors", type=float, nargs="+", default=NBETA_FACTORS)
    parser.add_argument("--chains", type=int, help="override the task's metrics.llc.chains")
    parser.add_argument("--draws", type=int, help="override the task's metrics.llc.draws")
    parser.add_argument("--burn-in", type=int, help="override the task's metrics.llc.burn_in")
    parser.add_argument("--batch-size", type=int, help="override the task's metrics.llc.batch_size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="calibration")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.task not in config["tasks"] or not config["tasks"][args.task].get("kind"):
        print(f"--task {args.task}: not a task of {args.config} with a registered model", file=sys.stderr)
        return 2
    run_file = Path(config["results"]) / args.task / "runs" / f"seed{args.seed}" / "run.json"
    if not run_file.exists():
        print(f"{run_file}: no such run; train it first (snakemake {run_file})", file=sys.stderr)
        return 2
    run = read_run(run_file)
    llc = LLCSettings.of_task(config, args.task)
    overrides = {
        "chains": args.chains,
        "draws": args.draws,
        "burn_in": args.burn_in,
        "batch_size": args.batch_size,
    }
    llc = dataclasses.replace(llc, **{k: v for k, v in overrides.items() if v is not None})
    n = len(build_run(run["spec"], run["seed"]).split.x_train)
    nbetas = [f * (llc.nbeta or default_nbeta(n)) for f in args.nbeta_factors]
    table = sweep(run, run_file, llc, args.epsilons, nbetas, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.drop(columns="trace").to_csv(out / f"{args.task}_llc_calibration.csv", index=False)
    figure(table, args.task, llc.burn_in).savefig(out / f"{args.task}_llc_calibration.png", dpi=120)
    with pd.option_context("display.width", 120):
        print(
            table.drop(columns=["trace", "init_loss"]).to_string(
                index=False, float_format=lambda v: f"{v:.4g}"
            )
        )
    best = suggest(table)
    if best is None:
        print(
            "no ε passes (stationary, not flagged, within 25 % of the next smaller):"
            " widen the sweep or lengthen the chains"
        )
    else:
        print(
            f"suggested: tasks.{args.task}.llc: {{epsilon: {best['epsilon']:g}, nbeta: {best['nbeta']:.6g}}} "
            f"(λ̂ {best['llc']:.4g} ± {best['llc_se']:.2g})"
        )
    print(f"written: {out / f'{args.task}_llc_calibration.csv'}, {out / f'{args.task}_llc_calibration.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
