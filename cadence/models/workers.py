"""The small networks a self-supervised encoder's workers put on top of it (PASE+).

A worker reads the encoder's frames ``[B, input_size, T]`` and predicts its labeller's target
(see :mod:`cadence.tasks.pase`). Both models here take ``input_size`` and ``output_size``,
which the task fills in (the encoder's output size and the labeller's target size); the
waveform decoder also takes the encoder's ``stride``.

- ``worker_mlp``: the same small MLP on every frame (1x1 convolutions): ``hidden`` units,
  PReLU, ``layers`` hidden layers. PASE+'s regressors and its LIM/GIM discriminators
  (which read two frames side by side: ``[N, 2 D, 1]``).
- ``waveform_decoder``: frames back to samples, ``[B, input_size, T] -> [B, output_size,
  T * stride]``: transposed convolutions that each multiply the frame rate by one of
  ``upsampling`` (whose product must be the stride), each followed by a PReLU and a
  smoothing convolution, then a 1x1 convolution to the output.

>>> mlp = WorkerMLP(input_size=16, output_size=4)
>>> mlp(torch.randn(2, 16, 7)).shape
torch.Size([2, 4, 7])
>>> decoder = WaveformDecoder(input_size=16, output_size=1, stride=160, upsampling=[4, 4, 10], channels=8)
>>> decoder(torch.randn(2, 16, 7)).shape
torch.Size([2, 1, 1120])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cadence.bounds import NonNegativeInt, OddInt, PositiveInt
from cadence.errors import ConfigError
from cadence.registry import MODELS

__all__ = ["WaveformDecoder", "WorkerMLP"]


@MODELS.register("worker_mlp")
class WorkerMLP(nn.Module):
    """``[B, input_size, T] -> [B, output_size, T]``: one MLP applied to every frame."""

    def __init__(self, input_size: PositiveInt, output_size: PositiveInt, hidden: PositiveInt = 256, layers: NonNegativeInt = 1):
        super().__init__()
        stack: list[nn.Module] = []
        width = input_size
        for _ in range(layers):
            stack += [nn.Conv1d(width, hidden, 1), nn.PReLU(hidden)]
            width = hidden
        stack.append(nn.Conv1d(width, output_size, 1))
        self.layers = nn.Sequential(*stack)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.layers(frames)


@MODELS.register("waveform_decoder")
class WaveformDecoder(nn.Module):
    """``[B, input_size, T] -> [B, output_size, T * stride]``: transposed convolutions up to the sample rate."""

    def __init__(
        self,
        input_size: PositiveInt,
        output_size: PositiveInt,
        stride: PositiveInt,
        upsampling: list[PositiveInt] = (4, 4, 10),
        channels: PositiveInt = 64,
        kernel_size: OddInt = 11,
    ):
        super().__init__()
        upsampling = list(upsampling)
        if math.prod(upsampling) != stride:
            raise ConfigError(f"waveform_decoder.upsampling {upsampling} multiplies the frame rate by {math.prod(upsampling)}, "
                              f"but the encoder's stride is {stride} samples a frame; give factors whose product is {stride}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"waveform_decoder.kernel_size must be odd (so samples stay aligned), got {kernel_size}")
        stages: list[nn.Module] = []
        width = input_size
        for factor in upsampling:
            # Kernel = stride: each frame becomes `factor` samples with no overlap; the smoothing
            # convolution after it joins neighbours (no checkerboard from overlapping kernels).
            stages += [
                nn.ConvTranspose1d(width, channels, factor, stride=factor),
                nn.PReLU(channels),
                nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2),
                nn.PReLU(channels),
            ]
            width = channels
        stages.append(nn.Conv1d(width, output_size, 1))
        self.layers = nn.Sequential(*stages)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.layers(frames)
