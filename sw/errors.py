"""Exceptions. Every error zeroskip reports to a user derives from :class:`ZeroskipError`; the
command line prints its message on one line and exits with status 1."""

__all__ = ["ZeroskipError", "FormatError", "FitError"]


class ZeroskipError(Exception):
    """Base class of zeroskip's user-facing errors."""


class FormatError(ZeroskipError, ValueError):
    """A model file is malformed: bad magic, unknown version, truncated, CRC mismatch, index
    out of range, inconsistent shapes, or parameters the hardware cannot take. The message names
    the section and the problem."""


class FitError(FormatError):
    """A model does not fit the hardware parameters (too many layers, rows, entries...). The
    message names the limit."""
