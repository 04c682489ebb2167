"""``method=classical``: a scikit-learn model on the flattened inputs of the same splits,
so that every table shows what the transformer has to beat.

- classes: multinomial logistic regression;
- labels (multi-label): one logistic regression per label (one-vs-rest), scored by its
  decision function;
- fields (dense): ridge regression from the flattened input to the flattened field.

Inputs are standardised per feature (statistics of the training split). At most
`max_train` training samples are used (a fixed random subset: ECG's 229k windows of 1,000
values would take minutes per fit). The regularisation strength is chosen on the
validation split from a fixed grid; the test split is scored once, with the chosen
model. Metrics are the task's own (the same torchmetrics as the transformer runs, over
whole splits).
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
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


def _model(kind: str, strength: float, seed: int, max_iter: int):
    if kind == "classes":
        return LogisticRegression(C=strength, max_iter=max_iter, random_state=seed)
    if kind == "multilabel":
        return OneVsRestClassifier(LogisticRegression(C=strength, max_iter=max_iter, random_state=seed))
    return Ridge(alpha=strength)


def _scores(model, kind: str, x: np.ndarray, num_outputs: int, target_shape) -> torch.Tensor:
    """The model's outputs in the shape the task's metrics take: (n, K) class log-probabilities
    (classes absent from training get -inf), (n, K) label scores, or (n, *field) values."""
    if kind == "classes":
        out = np.full((len(x), num_outputs), -np.inf, dtype=np.float64)
        out[:, model.classes_] = model.predict_log_proba(x)
        return torch.as_tensor(out, dtype=torch.float32)
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


def fit_classical(task: Task, splits: Splits, seed: int = 0, max_iter: int = 300, max_train: int = 50_000):
    """Fit the grid on train, choose on validation, score the choice on test.

    Returns (val metrics, test metrics, record, parameter counts); the record names the
    model, the chosen strength and each strength's validation error."""
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
    flat = {name: inputs_of(getattr(splits, name), keep if name == "train" else slice(None)).flatten(1).numpy()
            for name in ("train", "val", "test")}
    scaler = StandardScaler().fit(flat["train"])  # once, shared by every strength of the grid
    flat = {name: scaler.transform(x) for name, x in flat.items()}
    target_shape = tuple(labels_of(splits.train)[0].shape[1:])
    if kind == "dense":
        y_train = y_train.reshape(len(y_train), -1)
    fitted, val_errors = {}, {}
    for strength in GRIDS[kind]:
        model = _model(kind, strength, seed, max_iter)
        with warnings.catch_warnings():  # a weakly regularised model may stop at max_iter: still a baseline
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(flat["train"], y_train)
        val = evaluate(task, _scores(model, kind, flat["val"], task.num_outputs, target_shape), splits.val)
        fitted[strength], val_errors[strength] = (model, val), val["error"]
        log.info("classical %s strength %g: val error %.4g", kind, strength, val["error"])
    chosen = min(val_errors, key=val_errors.get)
    model, val_metrics = fitted[chosen]
    test_metrics = evaluate(task, _scores(model, kind, flat["test"], task.num_outputs, target_shape), splits.test)
    coefs = model.estimators_ if kind == "multilabel" else [model]
    params = sum(e.coef_.size + np.size(e.intercept_) for e in coefs)
    record = {"model": type(model).__name__ + (f"({type(coefs[0]).__name__})" if kind == "multilabel" else ""),
              "strength_name": "alpha" if kind == "dense" else "C", "chosen": chosen, "train_samples": len(y_train),
              "val_errors": {str(k): v for k, v in val_errors.items()}}
    return val_metrics, test_metrics, record, {"total": int(params), "trainable": int(params)}
