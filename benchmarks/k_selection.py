"""How often each model-selection criterion recovers a known number of states K.

Runs simulated from a Gaussian HMM (`latentstates.states.simulate`: left-to-right phases, a detour
some runs visit, many near-collinear features, every run z-scored on its own as the workflow does)
with K = 3, 5 and 7; each simulation goes through the HMM stage's own fits, and every criterion is
read off the same fits:

- the released rule and its kin on one 80/20 split of the runs (bic, aic, val_ll);
- BIC and AIC of the fits to every run (bic_train, aic_train);
- folds of runs, every run held out once (cv, cv_1se, cv_bic);

with the runs z-scored each on its own (the released procedure) or pooled (`--zscore`).

Prints one table: per criterion and true K, how often K was recovered and where it missed (the
chosen K minus the true one, with counts). Seeds: simulation s of K uses seed 1000 K + s.

    python benchmarks/k_selection.py                       # 10 simulations per K
    python benchmarks/k_selection.py --sims 4 --restarts 6 --ar 0.9 --jobs 2
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from latentstates.settings import HMMSettings

CRITERIA = ["bic", "aic", "val_ll", "bic_train", "aic_train", "cv", "cv_1se", "cv_bic"]


def choices(k: int, sim: int, args: argparse.Namespace) -> dict:
    """Every criterion's K for one simulation."""
    import torch

    from latentstates.states.criteria import FOLD_CRITERIA, cv_summary
    from latentstates.states.folds import fold_scores
    from latentstates.states.selection import choose_k, select_model, summarise_selection
    from latentstates.states.sequences import split_runs, zscore_runs
    from latentstates.states.simulate import Scenario, features, simulate

    torch.set_num_threads(1)
    scenario = Scenario(
        k=k, runs=args.runs, length=args.length, noise=args.noise, separation=args.separation, ar=args.ar
    )
    table, _ = simulate(scenario, 1000 * k + sim)
    seqs = zscore_runs(table, features(scenario), pooled=args.zscore == "pooled")
    settings = HMMSettings.defaults(
        features=features(scenario),
        max_states=args.max_states,
        restarts=args.restarts,
        cv_restarts=args.cv_restarts,
        cv_repeats=args.cv_repeats,
        splits=args.splits,
        max_iter=args.max_iter,
        tol=args.tol,
        seed=sim,
    )
    began = time.perf_counter()
    train, val = split_runs(seqs.runs, settings.val_fraction, settings.seed)
    split = summarise_selection(select_model(seqs, train, val, settings)[0])
    everyone = summarise_selection(select_model(seqs, list(seqs.runs), [], settings)[0])
    everyone = everyone.merge(
        cv_summary(fold_scores(seqs, settings), len(seqs.features), settings.covariance), on="k"
    )
    out = {"true_k": k, "sim": sim}
    for criterion in CRITERIA:
        source = everyone if criterion in FOLD_CRITERIA or criterion.endswith("_train") else split
        out[criterion] = choose_k(source, criterion)
    out["seconds"] = round(time.perf_counter() - began, 1)
    return out


def table(results: pd.DataFrame) -> pd.DataFrame:
    """Per criterion and true K: recovery rate and the misses (chosen − true: count)."""
    rows = []
    for criterion in CRITERIA:
        row = {"criterion": criterion}
        for k, group in results.groupby("true_k"):
            errors = Counter((group[criterion] - k).tolist())
            hits = errors.pop(0, 0)
            misses = ", ".join(f"{e:+d}: {c}" for e, c in sorted(errors.items()))
            row[f"K = {k}"] = f"{hits / len(group):.0%}" + (f" ({misses})" if misses else "")
        row["all"] = f"{(results[criterion] == results['true_k']).mean():.0%}"
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--sims", type=int, default=10, help="simulations per K")
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--length", type=int, default=150)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--separation", type=float, default=2.0)
    parser.add_argument("--ar", type=float, default=0.0, help="lag-1 autocorrelation within a state")
    defaults = HMMSettings.defaults()
    parser.add_argument(
        "--restarts", type=int, default=10, help="restarts of the single split's and the every-run fits"
    )
    parser.add_argument("--cv-restarts", type=int, default=defaults.cv_restarts, help="hmm.cv_restarts")
    parser.add_argument("--cv-repeats", type=int, default=defaults.cv_repeats, help="hmm.cv_repeats")
    parser.add_argument(
        "--splits", action=argparse.BooleanOptionalAction, default=defaults.splits, help="hmm.splits"
    )
    parser.add_argument(
        "--zscore",
        choices=["run", "pooled"],
        default="run",
        help="hmm.zscore: each run's own statistics, or pooled",
    )
    parser.add_argument("--max-states", type=int, default=defaults.max_states)
    parser.add_argument("--max-iter", type=int, default=32, help="EM iterations per fit (hmm.max_iter)")
    parser.add_argument("--tol", type=float, default=0.1, help="EM's stopping tolerance (hmm.tol)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=None, help="CSV of every simulation's choices")
    args = parser.parse_args()
    work = [(k, s) for k in args.ks for s in range(args.sims)]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = pd.DataFrame(list(pool.map(choices, *zip(*work), [args] * len(work))))
    if args.out:
        results.to_csv(args.out, index=False)
    print(
        f"{args.sims} simulations per K: {args.runs} runs x {args.length} checkpoints, 14 features of rank 4 "
        f"(noise {args.noise}), separation {args.separation}, AR {args.ar}, z-scores {args.zscore}, "
        f"{args.restarts} restarts ({args.cv_restarts} per fold, {args.cv_repeats} fold assignments)"
        f"{' and splits' if args.splits else ''}, K = 1..{args.max_states}; "
        f"{results['seconds'].sum():.0f} s of fits"
    )
    print(table(results).to_markdown(index=False))


if __name__ == "__main__":
    main()
