"""What any part of cadence may use: atomic files, devices, torch.distributed facts,
logging, signals and provenance. Nothing here imports the rest of cadence (errors aside)."""
