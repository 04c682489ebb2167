"""``method=classical``: scikit-learn models on the flattened inputs of the same splits, so
that every table shows what the transformer has to beat. The candidates, each chosen
among on the validation split (the test split is scored once, with the choice):

- a linear model, its regularisation strength from a fixed grid: multinomial logistic
  regression for classes; one logistic regression per label (one-vs-rest) for labels,
  scored by its decision function; ridge regression from the flattened input to the
  flattened field for fields. Inputs standardised per feature (training statistics), at
  most `max_train` training samples (a fixed random subset: ECG's 229k windows of 1,000
  values would take minutes per fit);
- for classes, gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``,
  learning rate 0.1, up to `tree_iterations` boosting iterations, on at most
  `max_tree_train` training samples), the number of iterations chosen on validation every
  10 iterations. Per label or per output value trees would cost minutes to hours, so
  labels and fields get the linear model only.

Metrics are the task's own (the same torchmetrics as the transformer runs, over whole
splits).
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from orca.errors import ConfigError
from orca.tasks import Splits, Task, inputs_of, labels_of

log = logging.getLogger(__name__)

MAX_FEATURES = 200_000  # values per sample: beyond this a dense linear model is not a quick baseline
GRIDS = {  # inverse regularisation C for logistic regression, alpha for ridge
    "classes": [1e-3, 1e-2, 1e-1, 1.0, 10.0],
    "multilabel": [1e-3, 1e-2, 1e-1, 1.0],
    "dense": [1e-2, 1.0, 1e2, 1e4],
}
STRENGTH_NAMES = {"classes": "C", "multilabel": "C", "dense": "alpha"}
TREE_CHECK_EVERY = 10  # boosting iterations between validation checks


def _model(kind: str, strength: float, seed: int, max_iter: int):
    if kind == "classes":
        return LogisticRegression(C=strength, max_iter=max_iter, random_state=seed)
    if kind == "multilabel":
        return OneVsRestClassifier(LogisticRegression(C=strength, max_iter=max_iter, random_state=seed))
    return Ridge(alpha=strength)


def _class_scores(classes: np.ndarray, proba: np.ndarray, num_outputs: int) -> torch.Tensor:
    """(n, K) log-probabilities of all K classes from those of the classes seen in training
    (the others get -inf)."""
    out = np.full((len(proba), num_outputs), -np.inf, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out[:, classes] = np.log(proba)
    return torch.as_tensor(out, dtype=torch.float32)


def _scores(model, kind: str, x: np.ndarray, num_outputs: int, target_shape) -> torch.Tensor:
    """The model's outputs in the shape the task's metrics take: (n, K) class log-probabilities
    (classes absent from training get -inf), (n, K) label scores, or (n, *field) values."""
    if kind == "classes":
        return _class_scores(model.classes_, model.predict_proba(x), num_outputs)
    if kind == "multilabel":
        return torch.as_tensor(model.decision_function(x), dtype=torch.float32)
    return torch.as_tensor(model.predict(x), dtype=torch.float32).reshape(len(x), *target_shape)


def evaluate(task: Task, outputs: torch.Tensor, dataset) -> dict[str, float]:
    """The task's metrics of `outputs` on a whole split, plus its `error`."""
    metrics = task.metrics()
    y, *rest = labels_of(dataset)
    metrics.update(outputs, y, **task.extras(rest))
    values = {k: float(v) for k, v in metrics.compute().items()}
    return task.scores(values)


def _staged_trees(task: Task, splits: Splits, x_train, y_train, x_val, seed: int, iterations: int):
    """Boosted trees fitted once; {iterations: (val metrics)} every TREE_CHECK_EVERY and at the end."""
    trees = HistGradientBoostingClassifier(learning_rate=0.1, max_iter=iterations, early_stopping=False,
                                           random_state=seed).fit(x_train, y_train)
    checked = {}
    for i, proba in enumerate(trees.staged_predict_proba(x_val), 1):
        if i % TREE_CHECK_EVERY == 0 or i == trees.n_iter_:
            checked[i] = evaluate(task, _class_scores(trees.classes_, proba, task.num_outputs), splits.val)
    return trees, checked


def _trees_at(trees, x: np.ndarray, iterations: int, num_outputs: int) -> torch.Tensor:
    """The first `iterations` boosting iterations' class scores."""
    for i, proba in enumerate(trees.staged_predict_proba(x), 1):
        if i == iterations:
            return _class_scores(trees.classes_, proba, num_outputs)
    raise ValueError(f"the trees have fewer than {iterations} iterations")


def fit_classical(task: Task, splits: Splits, seed: int = 0, max_iter: int = 300, max_train: int = 50_000,
                  max_tree_train: int = 20_000, tree_iterations: int = 200):
    """Fit every candidate on train, choose on validation, score the choice on test.

    Returns (val metrics, test metrics, record, parameter counts); the record names the
    chosen model and setting and each candidate's validation error."""
    kind = task.output_kind
    if task.extras(labels_of(splits.train)[1:]).get("mask") is not None:
        raise ConfigError(f"method=classical does not handle task {task.name!r}: its targets carry a mask")
    features = int(np.prod(task.input_shape))
    if features > MAX_FEATURES:
        raise ConfigError(f"method=classical: task {task.name!r} has {features} input values a sample, more than "
                          f"{MAX_FEATURES} for a linear baseline on the raw inputs")
    y_train = labels_of(splits.train)[0].numpy()
    keep = slice(None)
    if len(y_train) > max_train:  # a fixed random subset, chosen before any input is materialised
        keep = np.sort(np.random.default_rng(seed).permutation(len(y_train))[:max_train])
        y_train = y_train[keep]
    raw = {name: inputs_of(getattr(splits, name), keep if name == "train" else slice(None)).flatten(1).numpy()
           for name in ("train", "val", "test")}
    scaler = StandardScaler().fit(raw["train"])  # once, shared by every strength of the grid
    flat = {name: scaler.transform(x) for name, x in raw.items()}
    target_shape = tuple(labels_of(splits.train)[0].shape[1:])
    if kind == "dense":
        y_train = y_train.reshape(len(y_train), -1)
    candidates, val_errors = {}, {}  # name -> (model, val metrics, test scores later)
    for strength in GRIDS[kind]:
        model = _model(kind, strength, seed, max_iter)
        with warnings.catch_warnings():  # a weakly regularised model may stop at max_iter: still a baseline
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(flat["train"], y_train)
        val = evaluate(task, _scores(model, kind, flat["val"], task.num_outputs, target_shape), splits.val)
        name = f"{type(model).__name__} {STRENGTH_NAMES[kind]}={strength:g}"
        candidates[name] = (model, val, lambda m=model: _scores(m, kind, flat["test"], task.num_outputs, target_shape))
        val_errors[name] = val["error"]
        log.info("classical %s: val error %.4g", name, val["error"])
    tree_samples = None
    if kind == "classes":
        subset = np.sort(np.random.default_rng(seed).permutation(len(y_train))[:max_tree_train])
        tree_samples = len(subset)
        trees, checked = _staged_trees(task, splits, raw["train"][subset], y_train[subset], raw["val"], seed,
                                       tree_iterations)
        for iterations, val in checked.items():
            name = f"HistGradientBoostingClassifier iterations={iterations}"
            candidates[name] = (trees, val, lambda i=iterations: _trees_at(trees, raw["test"], i, task.num_outputs))
            val_errors[name] = val["error"]
        best_trees = min((n for n in val_errors if n.startswith("HistGradient")), key=val_errors.get)
        log.info("classical %s (the best tree count): val error %.4g", best_trees, val_errors[best_trees])
    chosen = min(val_errors, key=val_errors.get)
    model, val_metrics, test_scores = candidates[chosen]
    test_metrics = evaluate(task, test_scores(), splits.test)
    record = {"model": chosen.split()[0], "chosen": chosen, "train_samples": len(y_train),
              "tree_train_samples": tree_samples, "val_errors": val_errors}
    params = _parameters(model, kind, chosen)
    return val_metrics, test_metrics, record, {"total": params, "trainable": params}


def _parameters(model, kind: str, chosen: str) -> int:
    """Coefficients of a linear model; for trees, the nodes of the chosen iterations' trees
    (thresholds and leaf values)."""
    if isinstance(model, HistGradientBoostingClassifier):
        iterations = int(chosen.split("=")[1])
        return int(sum(len(tree.nodes) for stage in model._predictors[:iterations] for tree in stage))
    coefs = model.estimators_ if kind == "multilabel" else [model]
    return int(sum(e.coef_.size + np.size(e.intercept_) for e in coefs))
