"""The exception hierarchy of cevit.

Every error that the library raises on purpose derives from :class:`CevitError`, so callers can catch
one type. The CLI maps each class to an exit code and the HTTP service to a status code; the messages
are written for users: they name the file and say what is wrong.
"""

from __future__ import annotations

__all__ = [
    "CevitError",
    "ConfigError",
    "CheckpointError",
    "MediaError",
    "UnsupportedMediaError",
    "MediaTooLargeError",
    "FaceDetectionError",
    "ModelError",
]


class CevitError(Exception):
    """Base class of every error cevit raises deliberately."""


class ConfigError(CevitError, ValueError):
    """A configuration value or file is invalid (unknown key, wrong type, out of range)."""


class CheckpointError(CevitError):
    """A checkpoint file cannot be read, is not in a supported format, or does not fit the model."""


class MediaError(CevitError):
    """A media file cannot be read or decoded."""


class UnsupportedMediaError(MediaError):
    """The file is readable but is not an image or video format cevit supports."""


class MediaTooLargeError(MediaError):
    """The media exceeds a configured safety limit (pixel count, file size)."""


class FaceDetectionError(CevitError):
    """The face detector failed (not: found no face, which is a normal result)."""


class ModelError(CevitError):
    """A model cannot be built or used as asked (unknown preset, missing default weights, ...)."""
