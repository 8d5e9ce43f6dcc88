"""States: metric sequences, the Gaussian HMM and its analyses. Tables in, tables out: nothing
here imports torch models or checkpoints.

Modules:
    sequences              runs → z-scored arrays, the seeded train/held-out split and folds
    model                  GaussianHMM: the parameters and all of the model's mathematics
                           (densities, likelihood, Viterbi, filter, the feature gradient);
                           StateModel: a fitted model with what it was fitted on (model.json)
    baum_welch             the EM that runs: many fits at once, a leading dimension over fits
    pomegranate_reference  pomegranate's DenseHMM with the covariance prior and floor: the
                           reference the batched EM is tested against
    starts                 where EM starts: k-means, time segments, a warm start, a split of a smaller fit
    fit                    batches of fits, restarts and splits, and the best of them
    criteria               how K is scored: parameters, information criteria, the fold criteria
    folds                  the fold criteria's fits: every run held out once per fold assignment
    selection              the HMM stage of a task (and of a comparison's pooled runs): K, decoding, tables
    analysis               transitions, feature changes per edge, convergence regression, detours
    outliers               atypical runs: each run under the HMM without it, its worst stretch, its path
    stability              each finding across resampled runs, refitted
    k_stability            K chosen afresh under perturbations that keep the runs' information
    simulate               runs simulated from an HMM with a known K, planted outliers among them
                           (the criteria's and the outlier rule's outside check)
    comparison             recipes compared through one shared HMM: its runs and permutation tests
    llc                    the local learning coefficient per state
"""

from latentstates._lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "GaussianHMM": ".model",
        "StateModel": ".model",
        "ZScores": ".model",
        "read_kept_fits": ".model",
        "zscore_runs": ".sequences",
        "Sequences": ".sequences",
        "fit_hmm": ".fit",
        "FittedHMM": ".fit",
        "select_model": ".selection",
        "fit_task": ".selection",
        "TaskFit": ".selection",
        "analyse_task": ".analysis",
        "TaskAnalysis": ".analysis",
        "stability_of_task": ".stability",
        "choose_k_afresh": ".k_stability",
        "Scenario": ".simulate",
        "fit_shared": ".selection",
    },
)
