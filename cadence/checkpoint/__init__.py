"""Checkpoints: the pickle-free format, the folder that holds them, what is kept, what a
Trainer's checkpoint contains, and the random generators.

| module | what |
| --- | --- |
| ``format`` | one checkpoint folder: safetensors + JSON + a manifest of sha256s, written last |
| ``checkpointer`` | a ``checkpoints/`` folder: save, list, delete, set aside; find the newest or best valid one |
| ``retention`` | when to save and which checkpoints to keep (:class:`CheckpointPolicy`) |
| ``snapshot`` | a Trainer's whole state as one dict of ``state_dict()`` s, and putting it back |
| ``rng`` | seeding and capturing every random generator |
"""

from cadence.checkpoint.checkpointer import Checkpointer, find_best_checkpoint, find_checkpoint
from cadence.checkpoint.format import load_checkpoint, read_metadata, save_checkpoint, verify_checkpoint
from cadence.checkpoint.retention import CheckpointPolicy

__all__ = [
    "CheckpointPolicy", "Checkpointer", "find_best_checkpoint", "find_checkpoint", "load_checkpoint", "read_metadata",
    "save_checkpoint", "verify_checkpoint",
]
