"""README's figure: one task's state-coloured training curves beside its transition graph, from a
finished run's figures.

    python docs/images/readme_figure.py results modular_addition docs/images/default_run.png
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results: str, task: str, out: str) -> None:
    figures = Path(results) / task / "figures"
    images = [plt.imread(figures / f"{name}.png") for name in ("training_curves", "transition_graph")]
    widths = [im.shape[1] / im.shape[0] for im in images]
    fig, axes = plt.subplots(1, 2, figsize=(11, 11 / sum(widths)), gridspec_kw={"width_ratios": widths})
    for ax, im in zip(axes, images):
        ax.imshow(im)
        ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0, wspace=0.02)
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
