"""Classification metrics against hand-computed numbers (sklearn conventions, zero_division=0)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from cadence.metrics import Accuracy, ClassificationMetric, ConfusionMatrix, F1Score, Precision, Recall
from cadence.registry import METRICS

# The registered classification metrics, by their recipe names.
CLASSIFICATION_METRICS = {
    name: METRICS.get(name) for name in METRICS.names() if issubclass(METRICS.get(name), ClassificationMetric)
}

# The 3-class example used throughout.
#
#   targets      0 0 0 0 | 1 1 1 | 2 2 2
#   predictions  0 0 0 1 | 1 1 2 | 2 0 1
#
# Confusion matrix (rows = target, columns = prediction):
#            p0 p1 p2   | actual (row sums)
#   t0    [[ 3, 1, 0],  | 4
#   t1     [ 0, 2, 1],  | 3
#   t2     [ 1, 1, 1]]  | 3
#   predicted (column sums): 4, 4, 2
#
# accuracy  = (3 + 2 + 1) / 10                  = 0.6
# precision = 3/4, 2/4, 1/2  = 0.75, 0.5, 0.5   -> macro 1.75 / 3         = 0.583333...
# recall    = 3/4, 2/3, 1/3                     -> macro 1.75 / 3         = 0.583333...
# f1 = 2tp / (predicted + actual)
#           = 6/8, 4/7, 2/5                     -> macro (3/4 + 4/7 + 2/5) / 3 = (241/140) / 3 = 241/420
# weighted by actual (4, 3, 3):
#   precision (0.75*4 + 0.5*3 + 0.5*3) / 10 = 0.6
#   recall    = accuracy                     = 0.6
#   f1        (3 + 12/7 + 6/5) / 10          = 207/350
# micro precision = recall = f1 = accuracy   = 0.6
TARGETS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
PREDICTIONS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 0, 1])
MATRIX = [[3, 1, 0], [0, 2, 1], [1, 1, 1]]
NAMES = ["zero", "one", "two"]


def one_hot_logits(indices: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """Scores whose argmax is ``indices``, with noise so they are not plain one-hot."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(len(indices), num_classes, generator=generator)
    scores[torch.arange(len(indices)), indices] = 2.0
    return scores


def assert_results(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-12), key


def test_confusion_matrix_hand_computed():
    metric = ConfusionMatrix(num_classes=3, class_names=NAMES, per_class=True)
    metric.update(PREDICTIONS, TARGETS)
    assert metric.matrix() == MATRIX
    assert all(type(value) is int for row in metric.matrix() for value in row)
    assert_results(
        metric.compute(),
        {
            "accuracy": 0.6,
            "precision_macro": 1.75 / 3,
            "recall_macro": 1.75 / 3,
            "f1_macro": 241 / 420,
            "precision/zero": 0.75,
            "precision/one": 0.5,
            "precision/two": 0.5,
            "recall/zero": 0.75,
            "recall/one": 2 / 3,
            "recall/two": 1 / 3,
            "f1/zero": 0.75,
            "f1/one": 4 / 7,
            "f1/two": 2 / 5,
        },
    )


@pytest.mark.parametrize(
    ("metric_class", "average", "expected"),
    [
        (Precision, "macro", {"precision_macro": 1.75 / 3}),
        (Precision, "weighted", {"precision_weighted": 0.6}),
        (Precision, "micro", {"precision_micro": 0.6}),
        (Recall, "macro", {"recall_macro": 1.75 / 3}),
        (Recall, "weighted", {"recall_weighted": 0.6}),
        (F1Score, "macro", {"f1_macro": 241 / 420}),
        (F1Score, "weighted", {"f1_weighted": 207 / 350}),
        (F1Score, "micro", {"f1_micro": 0.6}),
        (Accuracy, "micro", {"accuracy": 0.6}),
        (Accuracy, "macro", {"accuracy_macro": 1.75 / 3}),
    ],
)
def test_averages_hand_computed(metric_class, average, expected):
    metric = metric_class(num_classes=3, average=average)
    metric.update(PREDICTIONS, TARGETS)
    assert_results(metric.compute(), expected)


def test_per_class_keys_default_to_class_indices():
    metric = Recall(num_classes=3, per_class=True)
    metric.update(PREDICTIONS, TARGETS)
    assert_results(metric.compute(), {"recall_macro": 1.75 / 3, "recall/0": 0.75, "recall/1": 2 / 3, "recall/2": 1 / 3})


def test_per_class_accuracy_is_recall_of_each_class():
    metric = Accuracy(num_classes=3, class_names=NAMES, per_class=True)
    metric.update(PREDICTIONS, TARGETS)
    assert_results(metric.compute(), {"accuracy": 0.6, "accuracy/zero": 0.75, "accuracy/one": 2 / 3, "accuracy/two": 1 / 3})


@pytest.mark.parametrize("metric_class", list(CLASSIFICATION_METRICS.values()))
def test_logits_and_indices_give_the_same_counts(metric_class):
    from_indices = metric_class(num_classes=3)
    from_logits = metric_class(num_classes=3)
    from_indices.update(PREDICTIONS, TARGETS)
    from_logits.update(one_hot_logits(PREDICTIONS), TARGETS)
    assert from_logits.counts["matrix"].tolist() == MATRIX
    assert_results(from_logits.compute(), from_indices.compute())


def test_frame_level_predictions_with_leading_dimensions():
    # [batch=2, frames=5] targets and [2, 5, 3] scores count like the flat [10] case.
    metric = ConfusionMatrix(num_classes=3)
    metric.update(one_hot_logits(PREDICTIONS).reshape(2, 5, 3), TARGETS.reshape(2, 5))
    assert metric.matrix() == MATRIX


def test_small_integer_dtypes_do_not_overflow():
    # target * C + prediction would wrap around in uint8 with many classes.
    metric = ConfusionMatrix(num_classes=200)
    metric.update(torch.tensor([199], dtype=torch.uint8), torch.tensor([199], dtype=torch.uint8))
    assert metric.counts["matrix"][199, 199] == 1
    assert int(metric.counts["matrix"].sum()) == 1


def test_batches_accumulate_like_one_big_update():
    whole = F1Score(num_classes=3, per_class=True)
    whole.update(PREDICTIONS, TARGETS)
    batched = F1Score(num_classes=3, per_class=True)
    for start in range(0, len(TARGETS), 3):  # batches of 3, 3, 3, 1
        batched.update(PREDICTIONS[start : start + 3], TARGETS[start : start + 3])
    assert batched.counts["matrix"].tolist() == MATRIX
    assert_results(batched.compute(), whole.compute())


def test_reset_forgets_everything():
    metric = ConfusionMatrix(num_classes=3)
    metric.update(PREDICTIONS, TARGETS)
    metric.reset()
    assert metric.matrix() == [[0] * 3] * 3
    metric.update(TARGETS, TARGETS)
    assert metric.compute()["accuracy"] == 1.0


def test_state_dict_round_trip():
    metric = Precision(num_classes=3, per_class=True)
    metric.update(PREDICTIONS, TARGETS)
    state = metric.state_dict()
    assert set(state) == {"matrix"}
    assert state["matrix"].dtype == torch.int64 and state["matrix"].device.type == "cpu"
    restored = Precision(num_classes=3, per_class=True)
    restored.load_state_dict(state)
    assert_results(restored.compute(), metric.compute())
    # The state is a copy: changing it afterwards does not change the metric.
    state["matrix"].zero_()
    assert metric.counts["matrix"].tolist() == MATRIX


def test_summed_states_of_two_halves_equal_the_whole():
    # This is why metrics keep counts: the sum of the parts' states is the whole's state,
    # which is exactly what sync() computes with all_reduce(SUM).
    first, second, whole = (F1Score(num_classes=3, per_class=True) for _ in range(3))
    first.update(PREDICTIONS[:4], TARGETS[:4])
    second.update(PREDICTIONS[4:], TARGETS[4:])
    whole.update(PREDICTIONS, TARGETS)
    summed = F1Score(num_classes=3, per_class=True)
    summed.load_state_dict({key: first.state_dict()[key] + second.state_dict()[key] for key in first.counts})
    assert summed.counts["matrix"].tolist() == MATRIX
    assert_results(summed.compute(), whole.compute())
    # Whereas averaging the halves' macro F1 would be wrong here:
    halves_mean = (first.compute()["f1_macro"] + second.compute()["f1_macro"]) / 2
    assert halves_mean != pytest.approx(whole.compute()["f1_macro"])


def test_class_never_predicted_has_precision_zero():
    # targets 0 0 1 1, predictions 0 0 0 0, class 2 absent: matrix [[2,0,0],[2,0,0],[0,0,0]].
    # precision: class 0 = 2/4, class 1 = 0 (never predicted), class 2 = 0 (absent)
    # macro over the classes present {0, 1}: precision (0.5 + 0)/2 = 0.25, recall (1 + 0)/2 = 0.5,
    # f1 (2*2/(4+2) + 0)/2 = 1/3.  (sklearn, zero_division=0, gives the same.)
    metric = ConfusionMatrix(num_classes=3, per_class=True)
    metric.update(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 1, 1]))
    assert_results(
        metric.compute(),
        {
            "accuracy": 0.5,
            "precision_macro": 0.25,
            "recall_macro": 0.5,
            "f1_macro": 1 / 3,
            "precision/0": 0.5,
            "precision/1": 0.0,
            "precision/2": 0.0,
            "recall/0": 1.0,
            "recall/1": 0.0,
            "recall/2": 0.0,
            "f1/0": 2 / 3,
            "f1/1": 0.0,
            "f1/2": 0.0,
        },
    )


def test_class_only_predicted_counts_in_macro_but_not_in_balanced_accuracy():
    # targets 0 0, predictions 0 2: class 2 appears only in the predictions.
    # macro over {0, 2}: precision (1 + 0)/2 = 0.5, recall (1/2 + 0)/2 = 0.25.
    # balanced accuracy averages over target classes {0} only: 1/2.
    predictions, targets = torch.tensor([0, 2]), torch.tensor([0, 0])
    results = {}
    for metric in (Precision(3), Recall(3), Accuracy(3, average="macro")):
        metric.update(predictions, targets)
        results.update(metric.compute())
    assert_results(results, {"precision_macro": 0.5, "recall_macro": 0.25, "accuracy_macro": 0.5})


@pytest.mark.parametrize("metric_class", list(CLASSIFICATION_METRICS.values()))
def test_nothing_updated_gives_nan_under_the_usual_keys(metric_class):
    metric = metric_class(num_classes=3, per_class=True)
    metric.update(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))  # an empty batch counts nothing
    empty = metric.compute()
    metric.update(PREDICTIONS, TARGETS)
    counted = metric.compute()
    assert list(empty) == list(counted)
    assert all(math.isnan(value) for value in empty.values())
    assert not any(math.isnan(value) for value in counted.values())


@pytest.mark.parametrize(
    ("predictions", "targets", "message"),
    [
        (torch.tensor([0, 1]), torch.tensor([0, 3]), r"targets must be class indices in \[0, 3\), got values from 0 to 3"),
        (torch.tensor([0, 1]), torch.tensor([-1, 0]), r"targets must be class indices in \[0, 3\)"),
        (torch.tensor([0, 5]), torch.tensor([0, 1]), r"predictions must be class indices in \[0, 3\)"),
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1]), r"predictions must have shape \(2,\).*got \(3,\)"),
        (torch.rand(2, 4), torch.tensor([0, 1]), r"predictions must have shape.*\(2, 3\) \(scores\), got \(2, 4\)"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), r"must be integer class indices, got dtype torch.float32"),
        (torch.tensor([0, 1]), torch.tensor([0.0, 1.0]), r"targets must be integer class indices"),
        ([0, 1], torch.tensor([0, 1]), r"must be tensors, got list"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_metric(predictions, targets, message):
    metric = F1Score(num_classes=3)
    with pytest.raises(ValueError, match=r"^F1Score: .*" + message):
        metric.update(predictions, targets)
    assert int(metric.counts["matrix"].sum()) == 0  # nothing half-counted


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Accuracy(num_classes=0), "num_classes must be an integer >= 1, got 0"),
        (lambda: Accuracy(num_classes=2.0), "num_classes must be an integer >= 1"),
        (lambda: Recall(num_classes=3, class_names=["a", "b"]), "class_names has 2 names but num_classes is 3"),
        (lambda: Recall(num_classes=2, class_names=["a", "a"]), "class_names must be distinct"),
        (lambda: Precision(num_classes=2, average="samples"), r"average must be one of \['macro', 'micro', 'weighted'\]"),
        (lambda: Accuracy(num_classes=2, average="weighted"), r"average must be one of \['micro', 'macro'\]"),
    ],
)
def test_bad_options_raise_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_load_state_dict_rejects_another_number_of_classes():
    metric = ConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match=r"ConfusionMatrix.load_state_dict: 'matrix' has shape \(2, 2\), expected \(3, 3\)"):
        metric.load_state_dict(ConfusionMatrix(num_classes=2).state_dict())


@pytest.mark.parametrize(("name", "metric_class"), list(CLASSIFICATION_METRICS.items()))
def test_registry_constructors_are_plain_typed_keywords(name, metric_class):
    # The config layer derives a schema from these signatures.
    assert metric_class.name == name
    parameters = list(inspect.signature(metric_class).parameters.values())
    assert [parameter.name for parameter in parameters[:2]] == ["num_classes", "class_names"]
    for parameter in parameters:
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert parameter.annotation is not inspect.Parameter.empty, parameter.name
        assert parameter.default is not inspect.Parameter.empty or parameter.name == "num_classes"
