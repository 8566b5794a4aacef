"""The version of cadence (also in pyproject.toml), recorded in what cadence writes."""

__version__ = "0.1.0"
