"""The local learning coefficient of a seed group's checkpoints: ours batched against one chain at
a time as devinterp runs it.

Usage: python benchmarks/llc.py [--task digits_mlp] [--seeds 8] [--chains 4] [--draws 200]
                                [--burn-in 100] [--device cpu] [--baseline devinterp|loop]

A seed group of the default config's task is trained here (its recipe, a few epochs), and the
LLC of every run's last checkpoint is estimated both ways with the same settings (the task's
metrics.llc with the options' chains and draws), at equal draws:

- baseline `devinterp` (the default where devinterp 1.3 is installed, as by `make setup`):
  devinterp's own `estimate_learning_coeff_with_summary` per run, its SGLD with the same ε, γ,
  nβ, chains, burn-in and draws, a shuffled DataLoader over the run's training set and L_n(w*)
  given (the run's whole training set, as ours): each chain a deep copy of the model, one forward
  and backward pass per step on that one model, its SGLD parameter by parameter;
- baseline `loop`: the same loop written out here without devinterp (no callbacks, progress bar
  or per-step bookkeeping: a lower bound on devinterp's cost), for machines without devinterp;
- ours: the metrics stage's `group_llcs`: every run's every chain one replica of a stacked model,
  one batched gradient per step for all.

Prints seconds per checkpoint (the whole seed group's), the ratio, and both estimates per run
(they differ by sampling: different random streams) with their standard errors.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.config import load_config  # noqa: E402
from latentstates.device import configure_torch, resolve_device  # noqa: E402
from latentstates.measure.llc import default_nbeta  # noqa: E402
from latentstates.measure.llc_runs import group_llcs  # noqa: E402
from latentstates.runs.contract import trained_run  # noqa: E402
from latentstates.runs.runtime import build_run  # noqa: E402
from latentstates.runs.train import train_group  # noqa: E402
from latentstates.runs.weights import load_into  # noqa: E402
from latentstates.settings import LLCSettings, TaskSpec  # noqa: E402


def checkpoint_and_loader(run: dict, path: Path, llc: LLCSettings, device: torch.device, seed: int):
    """What both baselines start from: the run's task kind, its model at the checkpoint `path`,
    nβ, L_n(w*) over the whole training set, and a shuffled loader of its minibatches (seeded)."""
    kind, split, model = build_run(run["spec"], run["seed"])
    model.to(device).eval()
    load_into(model, path, run["format"])
    x, y = split.x_train.to(device), split.y_train.to(device)
    n = len(x)
    nbeta = llc.nbeta or default_nbeta(n)
    batch = llc.batch_size if 0 < llc.batch_size < n else n
    with torch.no_grad():
        init = float(kind.loss(model(x), y))
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True
    )
    return kind, model, nbeta, init, loader


def one_chain_at_a_time(
    run: dict, path: Path, llc: LLCSettings, device: torch.device, seed: int
) -> list[float]:
    """Each chain's λ̂ for one run's checkpoint, one chain after another (devinterp's way)."""
    kind, model, nbeta, init, loader = checkpoint_and_loader(run, path, llc, device, seed)
    out = []
    for _ in range(llc.chains):
        chain = copy.deepcopy(model)
        anchor = [p.detach().clone() for p in chain.parameters()]
        losses = []
        it = iter(loader)
        for _ in range(llc.burn_in + llc.draws):
            try:
                xb, yb = next(it)
            except StopIteration:
                it = iter(loader)
                xb, yb = next(it)
            chain.zero_grad()
            loss = kind.loss(chain(xb), yb)
            loss.backward()
            losses.append(loss.item())
            with torch.no_grad():
                for p, w0 in zip(chain.parameters(), anchor):
                    dw = p.grad * nbeta
                    dw.add_(p - w0, alpha=llc.gamma)
                    p.add_(dw, alpha=-0.5 * llc.epsilon)
                    p.add_(torch.normal(0.0, 1.0, size=p.shape, device=device), alpha=math.sqrt(llc.epsilon))
        out.append(nbeta * (np.mean(losses[llc.burn_in :]) - init))
    return out


def devinterp_chains(run: dict, path: Path, llc: LLCSettings, device: torch.device, seed: int) -> list[float]:
    """Each chain's λ̂ for one run's checkpoint by devinterp's `estimate_learning_coeff_with_summary`."""
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    kind, model, nbeta, init, loader = checkpoint_and_loader(run, path, llc, device, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # devinterp's deprecation and seeding notices
        out = estimate_learning_coeff_with_summary(
            model,
            loader,
            evaluate=lambda m, data: kind.loss(m(data[0]), data[1]),
            sampling_method=SGLD,
            optimizer_kwargs=dict(lr=llc.epsilon, localization=llc.gamma, nbeta=nbeta),
            num_chains=llc.chains,
            num_draws=llc.draws,
            num_burnin_steps=llc.burn_in,
            init_loss=init,
            seed=seed,
            device=device,
            verbose=False,
        )
    return [out[f"llc-chain/{c}"] for c in range(llc.chains)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="digits_mlp")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the seed group")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--burn-in", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--baseline",
        choices=["devinterp", "loop"],
        default="devinterp" if importlib.util.find_spec("devinterp") else "loop",
        help="devinterp's estimator (default where installed) or the same loop written out here",
    )
    args = parser.parse_args()
    dev = resolve_device(args.device)
    configure_torch(1, dev)
    config = load_config(REPO / "config.yaml")
    task = copy.deepcopy(config["tasks"][args.task])
    task["train"]["epochs"] = args.epochs
    llc = LLCSettings.from_dict(
        {
            **config["metrics"]["llc"],
            **task.get("llc", {}),
            "enabled": True,
            "chains": args.chains,
            "draws": args.draws,
            "burn_in": args.burn_in,
            "stride": 1,
        }
    )
    seeds = list(range(args.seeds))
    print(f"torch {torch.__version__}, {dev}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(
        f"{args.task}: {len(seeds)} runs x {llc.chains} chains x ({llc.burn_in} + {llc.draws}) steps, "
        f"batch {llc.batch_size}, epsilon {llc.epsilon}, gamma {llc.gamma}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / f"seed{s}" for s in seeds]
        logs = train_group(TaskSpec.from_dict(task), seeds, dirs, device=args.device, progress=False)
        runs = [trained_run(TaskSpec.from_dict(task), s, d, log) for s, d, log in zip(seeds, dirs, logs)]
        last = len(runs[0]["checkpoints"]) - 1
        for run in runs:  # the last checkpoint only
            run["checkpoints"] = run["checkpoints"][last:]
        files = [d / "run.json" for d in dirs]
        start = time.perf_counter()
        ours = group_llcs(runs, files, llc, device=args.device, progress=False)
        t_ours = time.perf_counter() - start
        baseline = devinterp_chains if args.baseline == "devinterp" else one_chain_at_a_time
        start = time.perf_counter()
        base = [
            baseline(run, d / run["checkpoints"][0]["path"], llc, dev, seed=s)
            for run, d, s in zip(runs, dirs, seeds)
        ]
        t_base = time.perf_counter() - start
    print(
        f"baseline ({args.baseline}, one chain at a time): {t_base:.2f} s; ours (batched): {t_ours:.2f} s; "
        f"ratio {t_base / t_ours:.1f}x (goal >= 5x on the CPU)"
    )
    print("run  ours llc ± se        baseline llc ± se")
    for s, found, chains in zip(seeds, ours, base):
        est = next(iter(found.values()))
        se = np.std(chains, ddof=1) / math.sqrt(len(chains))
        flag = " (not a minimum)" if est.not_minimum else ""
        print(
            f"{s:>3}  {np.mean(est.chains):8.3f} ± {est.se if est.se == est.se else 0:.3f}{flag}   "
            f"{np.mean(chains):8.3f} ± {se:.3f}"
        )


if __name__ == "__main__":
    main()
