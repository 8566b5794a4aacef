"""Distortions of waveforms (PASE+'s "contaminations", Ravanelli et al., 2020), as feature stages.

PASE+ trains its encoder on distorted speech while its workers' targets come from the clean
signal, so the encoder learns what survives reverberation, noise and a bad channel. Here each
distortion is a feature stage registered in ``FEATURES``: listed in a recipe's ``features:``
section before the waveform transform, active in training mode only (the identity in
evaluation), so it is also plain data augmentation for any recipe.

| name | file | what it does to a chosen utterance |
| --- | --- | --- |
| ``reverb`` | :mod:`.reverb` | convolves it with a room impulse response: recorded (``rir_dir``) or simulated shoebox rooms (:mod:`.image_source`, cached on disk) |
| ``additive_noise`` | :mod:`.additive_noise` | adds noise at an SNR drawn from ``snr_db``: recorded (``noise_dir``) or another utterance of the batch (``source: batch``, babble) |
| ``band_drop`` | :mod:`.band_drop` | removes a random frequency band |
| ``clipping`` | :mod:`.clipping` | clips it at a random fraction of its peak |
| ``chop`` | :mod:`.chop` | zeroes a few short random segments |
| ``edge_trim`` | :mod:`.edge_trim` | silences the quiet starts and ends of its stretches of speech, as an aggressive endpointer would |
| ``downsample`` | :mod:`.downsample` | keeps only the band below a random lower sample rate's Nyquist frequency |

Shared by all (:class:`.common.Distortion`): ``p``, each utterance's own probability of being
distorted; the shape and the lengths are kept, and samples beyond each length stay 0; the
whole batch is processed at once on its device (FFT-domain filters, gathers); randomness
comes from torch's global CPU generator (or an explicit ``generator``), with a number of draws
that depends only on the batch size and the settings, so a seed reproduces the distortion and
a resumed run draws the same; float32, even under autocast. ``sample_rate`` is filled in from
the data when a recipe leaves it out.

A recipe with every family (the probabilities are examples, not PASE+'s; the folders are yours,
relative to the directory the run starts in)::

    features:
      - {name: reverb, p: 0.5}                                    # simulated rooms, cached
      - {name: additive_noise, p: 0.4, noise_dir: noises/, snr_db: [0, 15]}
      - {name: additive_noise, p: 0.3, source: batch, snr_db: [5, 20]}   # overlapping speech
      - {name: band_drop, p: 0.4}
      - {name: downsample, p: 0.3}
      - {name: clipping, p: 0.3}
      - {name: chop, p: 0.3}

>>> import torch
>>> from cadence.data.pipeline import FeaturePipeline
>>> distortions = FeaturePipeline([Clipping(p=1.0), Chop(p=1.0), BandDrop(p=1.0)])
>>> distorted, lengths = distortions(torch.randn(2, 800), torch.tensor([800, 500]))
>>> distorted.shape, lengths.tolist(), bool(distorted[1, 500:].eq(0).all())
(torch.Size([2, 800]), [800, 500], True)
"""

from cadence.data.distortions.additive_noise import AdditiveNoise
from cadence.data.distortions.band_drop import BandDrop
from cadence.data.distortions.chop import Chop
from cadence.data.distortions.clipping import Clipping
from cadence.data.distortions.common import Distortion
from cadence.data.distortions.downsample import Downsample
from cadence.data.distortions.edge_trim import EdgeTrim
from cadence.data.distortions.reverb import Reverb

__all__ = ["AdditiveNoise", "BandDrop", "Chop", "Clipping", "Distortion", "Downsample", "EdgeTrim", "Reverb"]
