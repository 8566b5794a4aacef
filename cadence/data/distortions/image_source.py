"""Room impulse responses of shoebox rooms by the image-source method (Allen and Berkley, 1979),
in numpy, simulated once per set of settings and cached on disk.

A sound source in a rectangular room, heard at a microphone, arrives along the direct path
and along every path reflected by the walls. Each reflected path is the straight line from
a mirror image of the source: along one axis of a room of size ``L``, the source at ``s``
has images at ``(1 - 2q) s + 2 n L`` (``q`` in {0, 1}, ``n`` any integer) that have met
``|n - q| + |n|`` walls. An image at distance ``d`` that met ``k`` walls contributes
``beta^k / (4 pi d)`` (spherical spreading) at the delay ``d / c``, with the walls' pressure
reflection coefficient ``beta = sqrt(1 - absorption)`` (``absorption``: the share of energy a
wall absorbs, the same for all six). Delays fall between samples: each arrival is a
Hann-windowed sinc of :data:`LEAD_SAMPLES` taps on each side (fractional delay).

Every arrival is positive, so late in the response, where thousands of arrivals overlap in
each sample, they pile up into a slowly varying offset that real rooms do not have (and that
makes the energy decay far slower than Sabine's formula says). As Allen and Berkley did, the
response goes through a high-pass filter: two first-order DC blockers at :data:`HIGH_PASS_HZ`,
causal, so nothing moves before the direct path.

The response starts :data:`LEAD_SAMPLES` before the direct path (the propagation delay of
the direct path is left out, so the direct path is at index :data:`LEAD_SAMPLES`) and lasts
``duration_s``. Only images that arrive within it are summed; the cost grows with the
cube of ``duration_s`` and falls with the room's volume.

:func:`room_responses` draws rooms (size, absorption, source and microphone positions, all
within :class:`RoomSettings`) from a numpy generator seeded by the settings, never from
torch's generator (a cache hit and a miss leave the training RNG where it was), and keeps
the result in ``<cache_dir>/image-source-<key>.npy``, the key a hash of every setting.

>>> rir = image_source_rir((5.0, 4.0, 3.0), (1.0, 1.0, 1.5), (3.0, 2.5, 1.2), absorption=0.5,
...                        sample_rate=8000, duration_s=0.1)
>>> rir.shape, int(abs(rir).argmax()) == LEAD_SAMPLES  # the direct path is the strongest arrival
((800,), True)
>>> round(sabine_rt60((5.0, 4.0, 3.0), 0.5), 3)  # seconds
0.206
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from cadence.errors import ConfigError
from cadence.runtime.files import cache_dir, write_bytes_atomic

__all__ = [
    "HIGH_PASS_HZ", "LEAD_SAMPLES", "SPEED_OF_SOUND", "RoomSettings", "default_cache_dir", "draw_rooms", "image_source_rir",
    "room_responses", "sabine_rt60", "simulate_rooms",
]

logger = logging.getLogger("cadence")

SPEED_OF_SOUND = 343.0  # m/s, dry air at 20 °C
LEAD_SAMPLES = 8  # half-width of the fractional-delay kernel, and where the direct path lands
HIGH_PASS_HZ = 50.0  # below speech's lowest fundamentals; removes the offset of the summed arrivals
# Bump when the simulation changes, so that responses cached by the old one are simulated again.
_FORMAT_VERSION = 1
# Positions are redrawn until source and microphone are far enough apart; this many times at most.
_MAX_POSITION_TRIES = 1000


@dataclasses.dataclass(frozen=True)
class RoomSettings:
    """What the simulated rooms are drawn from: each a ``(low, high)`` range, uniform.

    ``wall_distance_m``: the least distance of the source and the microphone from any wall;
    ``min_distance_m``: the least distance between them; ``seed``: the numpy generator's.
    """

    rooms: int
    sample_rate: int
    duration_s: float
    length_m: tuple[float, float]
    width_m: tuple[float, float]
    height_m: tuple[float, float]
    absorption: tuple[float, float]
    wall_distance_m: float
    min_distance_m: float
    seed: int

    def cache_key(self) -> str:
        """A hash of every setting, the simulator's version and its constants."""
        described = {
            **dataclasses.asdict(self), "format_version": _FORMAT_VERSION, "speed_of_sound": SPEED_OF_SOUND,
            "lead_samples": LEAD_SAMPLES, "high_pass_hz": HIGH_PASS_HZ,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    """``room-impulse-responses`` in cadence's cache (:func:`cadence.runtime.files.cache_dir`)."""
    return cache_dir("room-impulse-responses")


def sabine_rt60(room_m: tuple[float, float, float], absorption: float) -> float:
    """Sabine's reverberation time (seconds for a 60 dB decay): ``24 ln(10) V / (c S absorption)``."""
    length, width, height = room_m
    volume = length * width * height
    surface = 2.0 * (length * width + length * height + width * height)
    return 24.0 * math.log(10.0) * volume / (SPEED_OF_SOUND * surface * absorption)


def image_source_rir(
    room_m: tuple[float, float, float],
    source_m: tuple[float, float, float],
    microphone_m: tuple[float, float, float],
    absorption: float,
    sample_rate: int,
    duration_s: float,
) -> np.ndarray:
    """The impulse response ``[round(duration_s * sample_rate)]`` float64 from ``source_m`` to
    ``microphone_m`` (metres, inside the room) in a shoebox room of ``room_m``, the direct path
    at index :data:`LEAD_SAMPLES` with amplitude ``1 / (4 pi distance)``, high-passed."""
    room, source, microphone = (np.asarray(point, dtype=np.float64) for point in (room_m, source_m, microphone_m))
    for point in (source, microphone):
        if not (np.all(point > 0.0) and np.all(point < room)):
            raise ValueError(f"source {source.tolist()} and microphone {microphone.tolist()} must lie inside the room {room.tolist()}")
    if not 0.0 <= absorption <= 1.0:
        raise ValueError(f"absorption must be in [0, 1], got {absorption}")
    size = round(duration_s * sample_rate)
    direct = float(np.linalg.norm(source - microphone))
    if direct <= 0.0:
        raise ValueError("the source and the microphone must not be at the same place")
    reflection = math.sqrt(1.0 - absorption)
    # The farthest image whose arrival (its kernel's first tap) still falls inside the response.
    reach = direct + size / sample_rate * SPEED_OF_SOUND
    axes = [_images_along_axis(*values, reach) for values in zip(room, source, microphone)]  # (offsets, walls) each
    (x_offsets, x_walls), (y_offsets, y_walls), (z_offsets, z_walls) = axes
    yz_squared = (y_offsets[:, None] ** 2 + z_offsets[None, :] ** 2).ravel()  # [Y Z]
    yz_walls = (y_walls[:, None] + z_walls[None, :]).ravel()  # [Y Z]
    taps = np.arange(-LEAD_SAMPLES + 1, LEAD_SAMPLES + 1)  # [2 LEAD]
    response = np.zeros(size, dtype=np.float64)
    for x_offset, x_wall_count in zip(x_offsets, x_walls):  # one plane of images at a time: bounded memory
        distance = np.sqrt(x_offset**2 + yz_squared)  # [Y Z]
        kept = distance <= reach
        distance, walls = distance[kept], yz_walls[kept] + x_wall_count
        delay = (distance - direct) / SPEED_OF_SOUND * sample_rate + LEAD_SAMPLES  # samples, >= LEAD
        amplitude = reflection**walls / (4.0 * math.pi * distance)
        indices = np.floor(delay).astype(np.int64)[:, None] + taps  # [images, 2 LEAD]
        offsets = indices - delay[:, None]
        window = 0.5 + 0.5 * np.cos(math.pi * offsets / (LEAD_SAMPLES + 1))
        weights = amplitude[:, None] * np.sinc(offsets) * window
        inside = indices < size
        response += np.bincount(indices[inside], weights[inside], minlength=size)[:size]
    return _high_pass(response, sample_rate)


def _high_pass(response: np.ndarray, sample_rate: int) -> np.ndarray:
    """``response`` through two first-order DC blockers ``H(z) = (1 - 1/z) / (1 - R/z)`` at
    :data:`HIGH_PASS_HZ`: a convolution with their impulse response, cut where it falls below 1e-9."""
    pole = math.exp(-2.0 * math.pi * HIGH_PASS_HZ / sample_rate)
    taps = np.arange(math.ceil(math.log(1e-9) / math.log(pole)) + 1)
    blocker = np.where(taps == 0, 1.0, -(1.0 - pole) * pole ** np.maximum(taps - 1, 0))  # h[0] = 1, h[k] = -(1 - R) R^(k-1)
    kernel = np.convolve(blocker, blocker)[: len(taps)]  # the two in cascade
    size = len(response) + len(kernel)
    filtered = np.fft.irfft(np.fft.rfft(response, size) * np.fft.rfft(kernel, size), size)
    return filtered[: len(response)]


def _images_along_axis(length: float, source: float, microphone: float, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis: each image's offset from the microphone and the number of walls it met."""
    largest = math.ceil(reach / (2.0 * length)) + 1
    n = np.arange(-largest, largest + 1)
    offsets, walls = [], []
    for q in (0, 1):
        offsets.append((1 - 2 * q) * source + 2.0 * n * length - microphone)
        walls.append(np.abs(n - q) + np.abs(n))
    offsets, walls = np.concatenate(offsets), np.concatenate(walls)
    near = np.abs(offsets) <= reach
    return offsets[near], walls[near]


def draw_rooms(settings: RoomSettings) -> list[dict[str, object]]:
    """``settings.rooms`` rooms ``{room_m, source_m, microphone_m, absorption}`` drawn uniformly
    within the settings from a numpy generator seeded by ``settings.seed``."""
    rng = np.random.default_rng(settings.seed)
    rooms = []
    for _ in range(settings.rooms):
        room = np.array([rng.uniform(*settings.length_m), rng.uniform(*settings.width_m), rng.uniform(*settings.height_m)])
        absorption = rng.uniform(*settings.absorption)
        margin = settings.wall_distance_m
        for _ in range(_MAX_POSITION_TRIES):
            source, microphone = rng.uniform(margin, room - margin), rng.uniform(margin, room - margin)
            if np.linalg.norm(source - microphone) >= settings.min_distance_m:
                break
        else:
            raise ConfigError(
                f"reverb: no source and microphone {settings.min_distance_m:g} m apart found in a room of "
                f"{room.round(2).tolist()} m, {margin:g} m from the walls; lower min_distance_m or wall_distance_m, "
                "or make the rooms larger"
            )
        rooms.append({"room_m": tuple(room), "source_m": tuple(source), "microphone_m": tuple(microphone),
                      "absorption": float(absorption)})
    return rooms


def simulate_rooms(settings: RoomSettings) -> np.ndarray:
    """``[rooms, round(duration_s * sample_rate)]`` float32: the response of each drawn room."""
    responses = [
        image_source_rir(**room, sample_rate=settings.sample_rate, duration_s=settings.duration_s)
        for room in draw_rooms(settings)
    ]
    return np.stack(responses).astype(np.float32)


def room_responses(settings: RoomSettings, cache_dir: str | Path | None = None) -> np.ndarray:
    """:func:`simulate_rooms`, read from ``<cache_dir>/image-source-<key>.npy`` when an earlier call
    wrote it (``cache_dir`` defaults to :func:`default_cache_dir`). A cached file that cannot be read
    or does not hold what the settings describe is simulated again and replaced."""
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"image-source-{settings.cache_key()}.npy"
    expected_shape = (settings.rooms, round(settings.duration_s * settings.sample_rate))
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == expected_shape and cached.dtype == np.float32 and np.isfinite(cached).all():
                return cached
            problem = f"it holds {cached.dtype} {cached.shape}, not float32 {expected_shape}"
        except (OSError, ValueError) as error:
            problem = str(error)
        logger.warning("reverb: simulating the rooms again: the cached responses %s are unusable (%s)", path, problem)
    logger.info("reverb: simulating %d rooms (image-source method), cached in %s", settings.rooms, path)
    responses = simulate_rooms(settings)
    buffer = io.BytesIO()
    np.save(buffer, responses, allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue())  # atomic: a concurrent reader sees no half-written file
    return responses
