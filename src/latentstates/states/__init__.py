"""States: metric sequences, the Gaussian HMM, its analyses and the forecast. Tables in, tables
out: nothing here imports torch models or checkpoints.

    sequences   runs → z-scored arrays, the seeded train/held-out split, model-selection criteria
    model       GaussianHMM: the parameters and all of the model's mathematics (densities,
                likelihood, Viterbi, filter, the feature gradient, model.json)
    em          pomegranate's EM with a covariance prior and floor, and a padded E-step
    starts      where EM starts: k-means, time segments, a warm start, a split of a smaller fit
    fit         one fit, batches of fits, and the best of restarts and splits (`fit_restarts`)
    selection   the HMM stage of a task: K by the criterion, decoding, the tables it writes
    analysis    transitions, feature changes per edge, convergence regression, detour states
    forecast    a run's convergence forecast from its first checkpoints (`Forecaster`)
    evaluation  the forecast cross-validated over runs held out of the fit
"""
