"""Signal labellers: the targets PASE+'s workers learn to predict, computed from the clean batch.

A labeller (registered in :data:`cadence.registry.LABELLERS`, built by the ``pase`` task with
the encoder's ``sample_rate`` and ``stride``) maps ``(waveforms [B, S], lengths [B])`` to
``(targets [B, size, T], target_lengths [B])``, on the device, in float32 even under autocast,
never precomputed on disk: so the targets follow whatever the data pipeline hands the task
(chunks, speed changes of the clean signal) at no storage cost. ``rate`` says what ``T`` counts:

- ``"frames"``: ``T = S // stride``, one column per encoder frame, column ``t`` describing the
  signal around sample ``t * stride + stride // 2``, the centre of the encoder's frame ``t``;
  ``target_lengths = lengths // stride``.
- ``"samples"``: ``T = (S // stride) * stride`` samples (only ``waveform``).

The families, one module each:

- :mod:`~cadence.data.labellers.waveform`: ``waveform``, the clean signal.
- :mod:`~cadence.data.labellers.spectral`: ``lps``, ``fbank``, ``mfcc``, ``gammatone`` and
  their 200 ms ``*_long`` twins.
- :mod:`~cadence.data.labellers.prosody`: ``prosody`` (log f0, voicing, log energy,
  zero-crossing rate).

Samples beyond each length are silence, targets beyond ``target_lengths`` are 0, and an
utterance gets the same targets alone or in any padded batch (:mod:`~cadence.data.labellers.framing`).
PASE+'s LIM and GIM discriminators read the encoder's output instead; they live with the task
(:mod:`cadence.tasks.info_max`).

>>> import torch
>>> from cadence.registry import LABELLERS
>>> lps = LABELLERS.get("lps")(sample_rate=16000, stride=160)  # as the pase task builds it
>>> targets, target_lengths = lps(torch.randn(2, 16000), torch.tensor([16000, 8000]))
>>> lps.rate, lps.size, targets.shape, target_lengths.tolist()  # 100 frames of 10 ms
('frames', 257, torch.Size([2, 257, 100]), [100, 50])
"""

from cadence.data.labellers.framing import Labeller, Normalization, standardize
from cadence.data.labellers.prosody import Prosody
from cadence.data.labellers.spectral import (
    GammatoneFilterbank,
    LogMelFilterbank,
    LogPowerSpectrum,
    LongGammatoneFilterbank,
    LongLogMelFilterbank,
    LongLogPowerSpectrum,
    LongMelCepstrum,
    MelCepstrum,
)
from cadence.data.labellers.waveform import CleanWaveform

__all__ = [
    "CleanWaveform",
    "GammatoneFilterbank",
    "Labeller",
    "LogMelFilterbank",
    "LogPowerSpectrum",
    "LongGammatoneFilterbank",
    "LongLogMelFilterbank",
    "LongLogPowerSpectrum",
    "LongMelCepstrum",
    "MelCepstrum",
    "Normalization",
    "Prosody",
    "standardize",
]
