"""The package's exceptions: one root, ``NASError``, and a subclass per kind of failure.

The CLI turns any ``NASError`` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "ArchitectureError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatabaseError",
    "ExportError",
    "MeasurementError",
    "MissingDependencyError",
    "NASError",
    "NotFittedError",
    "TrainingError",
    "UnknownNameError",
]


class NASError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(NASError, ValueError):
    """A configuration file or option has a bad value."""


class UnknownNameError(NASError, KeyError):
    """A name (space, device, proxy, ...) is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ArchitectureError(NASError, ValueError):
    """An architecture does not belong to its search space."""


class CheckpointError(NASError):
    """A checkpoint is missing, truncated, or belongs to another space."""


class ExportError(NASError):
    """Export or its verification failed."""


class DataError(NASError):
    """A dataset is missing, empty or malformed."""


class NotFittedError(NASError, ValueError, AttributeError):
    """``predict`` was called before ``fit``; the same bases as scikit-learn's NotFittedError."""


class DatabaseError(NASError):
    """The latency database cannot be opened or written: corrupt, locked, unreachable, or of a
    newer schema version than this code knows."""


class MeasurementError(NASError, ValueError):
    """A measurement or predictor record has a bad value (latency, status, source, ...)."""


class MissingDependencyError(NASError, ImportError):
    """An optional package is needed for this feature; the message says what to install."""


class TrainingError(NASError):
    """Training cannot go on: the loss became NaN or infinite, or a worker failed. The message
    names the last good checkpoint, which is kept."""
