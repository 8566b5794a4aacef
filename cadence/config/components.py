"""Every built-in component and the name a recipe uses for it, in one place."""

from __future__ import annotations

from cadence.callbacks import EarlyStopping
from cadence.data.features import MFCC, LogMel, Spectrogram
from cadence.data.normalization import FeatureNormalization
from cadence.data.spec_augment import SpecAugment
from cadence.data.builders import fsdd, manifests
from cadence.metrics import METRICS as METRIC_CLASSES
from cadence.metrics import CharacterErrorRate, WordErrorRate
from cadence.models.cnn_classifier import CNNClassifier
from cadence.models.deepspeech2 import DeepSpeech2
from cadence.models.listen_attend_spell import ListenAttendSpell
from cadence.models.tds import TDSSeq2Seq
from cadence.optim import OPTIMIZER_FACTORIES, SCHEDULER_FACTORIES
from cadence.registry import CALLBACKS, DATASETS, FEATURES, METRICS, MODELS, OPTIMIZERS, SCHEDULERS, TASKS
from cadence.tasks import ClassificationTask, CTCTask, Seq2SeqTask

DATASETS.register("fsdd", fsdd)
DATASETS.register("manifests", manifests)
FEATURES.register("spectrogram", Spectrogram)
FEATURES.register("log_mel", LogMel)
FEATURES.register("mfcc", MFCC)
FEATURES.register("normalize", FeatureNormalization)
FEATURES.register("spec_augment", SpecAugment)
MODELS.register("cnn_classifier", CNNClassifier)
MODELS.register("deepspeech2", DeepSpeech2)
MODELS.register("listen_attend_spell", ListenAttendSpell)
MODELS.register("tds", TDSSeq2Seq)
TASKS.register("classification", ClassificationTask)
TASKS.register("ctc", CTCTask)
TASKS.register("seq2seq", Seq2SeqTask)
CALLBACKS.register("early_stopping", EarlyStopping)
for _name, _factory in OPTIMIZER_FACTORIES.items():
    OPTIMIZERS.register(_name, _factory)
for _name, _factory in SCHEDULER_FACTORIES.items():
    SCHEDULERS.register(_name, _factory)
for _name, _metric in METRIC_CLASSES.items():
    METRICS.register(_name, _metric)
METRICS.register("wer", WordErrorRate)
METRICS.register("cer", CharacterErrorRate)
