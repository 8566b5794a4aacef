"""Every built-in component and the name a recipe uses for it, in one place."""

from __future__ import annotations

from cadence.callbacks import EarlyStopping
from cadence.data.features import MFCC, LogMel, Spectrogram
from cadence.data.normalization import FeatureNormalization
from cadence.data.spec_augment import SpecAugment
from cadence.data.builders import fsdd, manifests
from cadence.metrics import METRICS as METRIC_CLASSES
from cadence.models.cnn_classifier import CNNClassifier
from cadence.optim import OPTIMIZER_FACTORIES, SCHEDULER_FACTORIES
from cadence.registry import CALLBACKS, DATASETS, FEATURES, METRICS, MODELS, OPTIMIZERS, SCHEDULERS, TASKS
from cadence.tasks import ClassificationTask

DATASETS.register("fsdd", fsdd)
DATASETS.register("manifests", manifests)
FEATURES.register("spectrogram", Spectrogram)
FEATURES.register("log_mel", LogMel)
FEATURES.register("mfcc", MFCC)
FEATURES.register("normalize", FeatureNormalization)
FEATURES.register("spec_augment", SpecAugment)
MODELS.register("cnn_classifier", CNNClassifier)
TASKS.register("classification", ClassificationTask)
CALLBACKS.register("early_stopping", EarlyStopping)
for _name, _factory in OPTIMIZER_FACTORIES.items():
    OPTIMIZERS.register(_name, _factory)
for _name, _factory in SCHEDULER_FACTORIES.items():
    SCHEDULERS.register(_name, _factory)
for _name, _metric in METRIC_CLASSES.items():
    METRICS.register(_name, _metric)
