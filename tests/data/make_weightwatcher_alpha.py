"""weightwatcher's power-law exponent alpha of a few weight matrices: the reference that
tests/test_custom_metrics.py checks `metrics.extra: [alpha]` against (weightwatcher_alpha.json).

The matrices are built here from seeded numpy draws (`matrices()`, which the test calls too);
weightwatcher itself is not a dependency of the project. To remake the file:

    pip install --target /tmp/wwlib --no-deps weightwatcher==0.7.7 powerlaw matplotlib-inline mpmath
    PYTHONPATH=/tmp/wwlib .venv/bin/python tests/data/make_weightwatcher_alpha.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("weightwatcher_alpha.json")


def matrices() -> dict[str, np.ndarray]:
    """(out, in) weight matrices with heavy-tailed, Marchenko-Pastur, low-rank and small spectra."""
    rng = np.random.default_rng(2026)
    low = rng.normal(size=(100, 30)) @ rng.normal(size=(30, 80)) / 10
    return {
        "student_t3_200x100": rng.standard_t(3, size=(200, 100)) / 10,
        "student_t2.5_256x128": rng.standard_t(2.5, size=(256, 128)) / 10,
        "gaussian_300x150": rng.normal(size=(300, 150)) / np.sqrt(300),
        "wide_t4_64x320": rng.standard_t(4, size=(64, 320)) / 10,
        "rank30_100x80": low + 1e-6 * rng.normal(size=low.shape),  # 50 eigenvalues below 1e-5
        "small_t3_40x12": rng.standard_t(3, size=(40, 12)) / 10,  # 12 eigenvalues: the small-n fit
    }


def main() -> None:
    import torch
    import weightwatcher

    layers = {}
    for name, w in matrices().items():
        layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(w))
        layers[name] = layer
    model = torch.nn.Sequential(*layers.values())
    details = weightwatcher.WeightWatcher(model=model).analyze(min_evals=8)
    alphas = dict(zip(layers, details["alpha"].astype(float).tolist()))
    OUT.write_text(json.dumps({"weightwatcher": weightwatcher.__version__, "alpha": alphas}, indent=2) + "\n")
    print(json.dumps(alphas, indent=2))


if __name__ == "__main__":
    main()
