"""The built-in components, registered where they are defined (``@MODELS.register("tds")``,
as a user registers their own): importing their modules here is what puts every built-in
name into the registries before a recipe is resolved.

| registry | names |
| --- | --- |
| ``DATASETS`` | ``fsdd``, ``librispeech`` (:mod:`cadence.corpora.builders`), ``manifests`` (:mod:`cadence.data.builders`) |
| ``FEATURES`` | ``spectrogram``, ``log_mel``, ``mfcc``, ``normalize``, ``spec_augment``, ``speed_perturb``; distortions ``reverb``, ``additive_noise``, ``band_drop``, ``clipping``, ``chop``, ``downsample``, ``edge_trim`` (:mod:`cadence.data.distortions`) |
| ``MODELS`` | ``cnn_classifier``, ``deepspeech2``, ``listen_attend_spell``, ``pase_encoder``, ``encoder_classifier``, ``feature_frames``, ``tds``; PASE workers ``worker_mlp``, ``waveform_decoder`` |
| ``TASKS`` | ``classification``, ``ctc``, ``seq2seq``, ``framewise``, ``pase`` |
| ``OPTIMIZERS``, ``SCHEDULERS`` | ``sgd``, ``adam``, ``adamw``, ``per_module``; ``step``, ``exponential``, ``reduce_on_plateau``, ``phases``, ``per_module`` |
| ``METRICS`` | ``accuracy``, ``precision``, ``recall``, ``f1``, ``confusion_matrix``, ``wer``, ``cer``, ``frame_accuracy`` |
| ``CALLBACKS`` | ``early_stopping``, ``weight_noise`` |
| ``STAGE_FUNCTIONS`` | ``realign`` (:mod:`cadence.realignment`) |
| ``LOGGERS`` | ``csv``, ``mlflow`` (:mod:`cadence.loggers`; ``tensorboard`` in ``experiment.loggers`` is the experiment's own writer) |
| ``LABELLERS`` | ``waveform``, ``lps``, ``fbank``, ``mfcc``, ``gammatone`` (each also ``_long``), ``prosody`` (:mod:`cadence.data.labellers`); ``lim``, ``gim`` (:mod:`cadence.tasks.info_max`) |
"""

from __future__ import annotations

import cadence.callbacks.early_stopping  # noqa: F401
import cadence.callbacks.weight_noise  # noqa: F401
import cadence.corpora.builders  # noqa: F401
import cadence.data.builders  # noqa: F401
import cadence.data.distortions  # noqa: F401
import cadence.data.features  # noqa: F401
import cadence.data.labellers  # noqa: F401
import cadence.data.normalization  # noqa: F401
import cadence.data.spec_augment  # noqa: F401
import cadence.data.speed_perturbation  # noqa: F401
import cadence.loggers  # noqa: F401
import cadence.metrics  # noqa: F401
import cadence.models.cnn_classifier  # noqa: F401
import cadence.models.deepspeech2  # noqa: F401
import cadence.models.encoder_classifier  # noqa: F401
import cadence.models.listen_attend_spell  # noqa: F401
import cadence.models.pase  # noqa: F401
import cadence.models.tds  # noqa: F401
import cadence.models.workers  # noqa: F401
import cadence.optim  # noqa: F401
import cadence.realignment  # noqa: F401
import cadence.tasks  # noqa: F401
