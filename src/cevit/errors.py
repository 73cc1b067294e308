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
    "ResourceLimitError",
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


class ResourceLimitError(MediaError):
    """Analysing the item would exceed a limit of the resource policy (time, faces, memory, size, duration).

    The message names the file, the limit's setting and its value. The subclass :class:`MediaTooLargeError` is
    raised for the limits on the media's size (pixels, frame pixels, duration, estimated memory); this class
    itself for the limits on the work (wall time, faces per frame).
    """


class MediaTooLargeError(ResourceLimitError):
    """The media exceeds a configured size limit (pixel count, frame size, duration, estimated memory)."""


class FaceDetectionError(CevitError):
    """The face detector failed (not: found no face, which is a normal result)."""


class ModelError(CevitError):
    """A model cannot be built or used as asked (unknown preset, missing default weights, ...)."""
