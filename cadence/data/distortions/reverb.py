"""Reverberation: each chosen utterance convolved with a room impulse response (RIR) drawn from a set.

The set comes from one of two sources:

- ``rir_dir``: a folder of RIR recordings (WAV, FLAC, OGG, subfolders included), read with
  :func:`cadence.data.audio.load_audio` (mono, resampled to ``sample_rate`` with soxr);
- otherwise, ``simulated_rooms`` shoebox rooms simulated by the image-source method
  (:mod:`cadence.data.distortions.image_source`): sizes, wall absorption, source and
  microphone positions drawn within the settings from ``simulation_seed``, simulated once and
  cached on disk under ``cache_dir`` (default: ``~/.cache/cadence/room-impulse-responses``,
  see :func:`~cadence.data.distortions.image_source.default_cache_dir`), the file named by a
  hash of every simulation setting, so another setting is another file and the same ones are
  read back, never simulated again.

Each RIR keeps at most ``rir_duration_s`` after its direct path, taken as its strongest peak
(a recorded RIR's leading silence is cut), and is scaled to unit energy, so the reverberant
utterance is about as loud as the dry one. The output is aligned on the direct path: it is
not delayed by the source's distance, so sample ``t`` of the output is the direct sound of
sample ``t`` of the input plus the reflections of earlier ones; what rings on after the
utterance's end is cut (the length is kept).

The convolution runs in the FFT domain for the whole batch at once; one draw per utterance
picks its RIR.

Example (the default 50 rooms take about 20 s to simulate, once; later runs read the cache):

    >>> import tempfile
    >>> reverb = Reverb(simulated_rooms=2, rir_duration_s=0.05, cache_dir=tempfile.mkdtemp(), p=1.0)
    >>> reverb.responses.shape  # [rooms, samples]: 0.05 s at 8 kHz
    torch.Size([2, 400])
    >>> impulse = torch.zeros(1, 800)
    >>> impulse[0, 100] = 1.0
    >>> wet, lengths = reverb(impulse, torch.tensor([800]))
    >>> int(wet[0].abs().argmax())  # the direct path stays where the impulse was
    100
"""

from __future__ import annotations

import torch

from cadence.bounds import PositiveFloat, PositiveInt, Probability, Seed
from cadence.data.distortions.common import Distortion, checked_range, checked_value, fast_fft_size, load_audio_folder
from cadence.data.distortions.image_source import LEAD_SAMPLES, RoomSettings, room_responses
from cadence.errors import ConfigError
from cadence.registry import FEATURES

__all__ = ["Reverb"]


@FEATURES.register("reverb")
class Reverb(Distortion):
    """Convolve each chosen utterance (probability ``p``) with a RIR drawn uniformly from the set.

    ``rir_dir`` set: the RIRs of that folder (the simulation settings are then unused).
    Otherwise, simulated: ``simulated_rooms`` rooms of ``room_length_m`` x ``room_width_m`` x
    ``room_height_m`` (each a ``[low, high]`` range in metres), walls absorbing a share of energy
    in ``absorption`` (one value for the six walls of a room), source and microphone at least
    ``wall_distance_m`` from every wall and ``min_distance_m`` from each other, each RIR
    ``rir_duration_s`` long, drawn from ``simulation_seed``. ``sample_rate``: the data's (filled
    in from the data when a recipe leaves it out).
    """

    registered_as = "reverb"

    def __init__(
        self,
        sample_rate: PositiveInt = 8000,
        p: Probability = 0.5,
        rir_dir: str | None = None,
        simulated_rooms: PositiveInt = 50,
        room_length_m: tuple[PositiveFloat, PositiveFloat] = (3.0, 10.0),
        room_width_m: tuple[PositiveFloat, PositiveFloat] = (3.0, 8.0),
        room_height_m: tuple[PositiveFloat, PositiveFloat] = (2.5, 4.0),
        absorption: tuple[Probability, Probability] = (0.2, 0.8),
        wall_distance_m: PositiveFloat = 0.5,
        min_distance_m: PositiveFloat = 1.0,
        rir_duration_s: PositiveFloat = 0.5,
        simulation_seed: Seed = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(p, draws_per_utterance=1)
        name = self.registered_as
        self.sample_rate = checked_value(name, "sample_rate", sample_rate, above=0, integer=True)
        self.rir_duration_s = checked_value(name, "rir_duration_s", rir_duration_s, above=0)
        self.rir_dir = rir_dir
        if round(self.rir_duration_s * self.sample_rate) <= 2 * LEAD_SAMPLES:
            raise ConfigError(f"{name}: rir_duration_s={rir_duration_s:g} s is {2 * LEAD_SAMPLES} samples or fewer at "
                              f"{sample_rate} Hz; give a longer response (0.5 s is usual)")
        if rir_dir is None:
            self.settings = _room_settings(
                self.sample_rate, self.rir_duration_s, simulated_rooms, room_length_m, room_width_m, room_height_m,
                absorption, wall_distance_m, min_distance_m, simulation_seed,
            )
            responses = list(torch.from_numpy(room_responses(self.settings, cache_dir)))
        else:
            self.settings = None
            responses = load_audio_folder(rir_dir, self.sample_rate, name, "rir_dir")
        bank, onsets = _response_bank(responses, round(self.rir_duration_s * self.sample_rate))
        # Derived from the settings (and the files): moved with .to(device), never saved in checkpoints.
        self.register_buffer("responses", bank, persistent=False)  # [R, K], unit energy
        self.register_buffer("onsets", onsets, persistent=False)  # [R]: where each direct path is

    def distort(self, waveforms: torch.Tensor, lengths: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        count, taps = self.responses.shape
        which = (draws[:, 0] * count).to(torch.int64).clamp(max=count - 1)  # [B]
        responses = self.responses[which].to(waveforms.dtype)  # [B, K]
        samples = waveforms.shape[-1]
        size = fast_fft_size(samples + taps - 1)  # a linear, not circular, convolution
        spectrum = torch.fft.rfft(waveforms, n=size) * torch.fft.rfft(responses, n=size)
        wet = torch.fft.irfft(spectrum, n=size)  # [B, size]
        # Output sample t reads the convolution at t + onset: the direct path lands on t.
        positions = self.onsets[which][:, None] + torch.arange(samples, device=waveforms.device)[None, :]  # [B, S]
        return wet.gather(1, positions)

    def extra_repr(self) -> str:
        source = f"rir_dir={self.rir_dir!r}" if self.rir_dir is not None else f"simulated_rooms={self.responses.shape[0]}"
        return f"sample_rate={self.sample_rate}, p={self.p}, {source}, rir_duration_s={self.rir_duration_s}"


def _room_settings(
    sample_rate: int, duration_s: float, rooms: int, length_m, width_m, height_m, absorption, wall_distance_m: float,
    min_distance_m: float, seed: int,
) -> RoomSettings:
    """The simulation settings, each checked, with an error naming it."""
    name = Reverb.registered_as
    sizes = {
        "room_length_m": checked_range(name, "room_length_m", length_m, above=0),
        "room_width_m": checked_range(name, "room_width_m", width_m, above=0),
        "room_height_m": checked_range(name, "room_height_m", height_m, above=0),
    }
    wall_distance_m = checked_value(name, "wall_distance_m", wall_distance_m, above=0)
    smallest = min(low for low, _ in sizes.values())
    if 2 * wall_distance_m >= smallest:
        raise ConfigError(f"{name}: wall_distance_m={wall_distance_m:g} leaves no room for the source and the microphone "
                          f"in the smallest room ({smallest:g} m); lower it below {smallest / 2:g} m or make the rooms larger")
    return RoomSettings(
        rooms=checked_value(name, "simulated_rooms", rooms, above=0, integer=True),
        sample_rate=sample_rate,
        duration_s=duration_s,
        length_m=sizes["room_length_m"],
        width_m=sizes["room_width_m"],
        height_m=sizes["room_height_m"],
        absorption=checked_range(name, "absorption", absorption, above=0, at_most=1),
        wall_distance_m=wall_distance_m,
        min_distance_m=checked_value(name, "min_distance_m", min_distance_m, above=0),
        seed=checked_value(name, "simulation_seed", seed, at_least=0, integer=True),
    )


def _response_bank(responses: list[torch.Tensor], longest: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``([R, K] float32, [R] int64)``: each RIR from ``LEAD_SAMPLES`` before its strongest peak
    (the direct path) to ``longest`` samples after it, scaled to unit energy, zero padded to
    the longest; and where its direct path is."""
    kept, onsets = [], []
    for response in responses:
        response = response.to(torch.float64)
        peak = int(response.abs().argmax())
        start = max(0, peak - LEAD_SAMPLES)
        response = response[start : peak + longest]
        kept.append(response / response.norm())
        onsets.append(peak - start)
    bank = torch.zeros(len(kept), max(len(response) for response in kept), dtype=torch.float32)
    for row, response in enumerate(kept):
        bank[row, : len(response)] = response.float()
    return bank, torch.tensor(onsets, dtype=torch.int64)
