"""Where a model's weights start, and which of them train: the recipe's ``initialization:``,
``preload:`` and ``freeze:`` sections, as plain functions on any ``nn.Module``.

Apply them in this order, after the task is built and the run seeded, before the optimizer:

1. :func:`initialize_parameters`: rules by name pattern, first match wins (:mod:`.initialization`);
2. :func:`preload_from_files`: weights from checkpoints or ``.safetensors`` files, overwriting
   the initialisation for what they hold (:mod:`.preload`), logged with :func:`describe_report`;
3. :func:`freeze_parameters`: ``requires_grad = False`` by name pattern (:mod:`.freezing`).

Names are the module's own (``named_parameters()``; ``state_dict()`` for preload): for a task,
``model.*`` and ``features.*``. Patterns are globs where ``*`` crosses dots.

>>> import torch
>>> task = torch.nn.ModuleDict({"model": torch.nn.Linear(4, 2)})
>>> initialize_parameters(task, [{"params": "model.bias", "init": "constant", "value": 0.0}])
{'model.bias': 'initialization.0: constant 0.0'}
>>> print(freeze_parameters(task, ["model.weight"]))
2 trainable parameters, 8 frozen
"""

from cadence.weights.freezing import FreezePatterns, ParameterCounts, count_parameters, freeze_parameters
from cadence.weights.initialization import InitRule, initialize_parameters
from cadence.weights.preload import PreloadReport, PreloadSource, SourceReport, describe_report, preload_from_files, read_source

__all__ = [
    "FreezePatterns", "InitRule", "ParameterCounts", "PreloadReport", "PreloadSource", "SourceReport", "count_parameters",
    "describe_report", "freeze_parameters", "initialize_parameters", "preload_from_files", "read_source",
]
