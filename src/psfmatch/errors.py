"""The psfmatch exception and warning hierarchy.

Every error psfmatch raises on purpose derives from :class:`PsfMatchError` and
also from the builtin a generic ``except`` would expect (``ValueError`` for bad
input, ``RuntimeError`` for failures of the algorithm, ``OSError`` for files),
so that ``except ValueError`` in a caller's code keeps working.  Messages name
the offending value and the remedy.
"""

from __future__ import annotations

import math

__all__ = [
    "PsfMatchError",
    "InvalidConfigError",
    "InvalidInputError",
    "GridMismatchError",
    "MissingPsfError",
    "KernelTooBigError",
    "PsfComputeShapeError",
    "PsfEvaluationError",
    "NoKernelCandidatesError",
    "IllPosedMatchError",
    "UnsupportedFormatError",
    "CorruptFileError",
    "MissingFileError",
    "MemoryLimitError",
    "OutputExistsError",
    "OutputNotWritableError",
    "MissingDependencyError",
    "SchedulerUnreachableError",
    "PsfMatchWarning",
    "IllPosedMatchWarning",
    "KernelQualityWarning",
    "TruncatedPsfWarning",
]


class PsfMatchError(Exception):
    """Base class of every error raised on purpose by psfmatch."""


class InvalidConfigError(PsfMatchError, ValueError):
    """A configuration field was given a value of the wrong type or out of range."""


class InvalidInputError(PsfMatchError, ValueError):
    """An array, exposure or PSF handed to psfmatch breaks a documented contract."""


class GridMismatchError(InvalidInputError):
    """Exposures to be coadded are not on one pixel grid (shape, origin ``xy0`` or WCS differ)."""


class MissingPsfError(PsfMatchError, RuntimeError):
    """The exposure to be matched carries no PSF model."""


class KernelTooBigError(PsfMatchError, ValueError):
    """The matching kernel does not fit inside the (padded) PSF stamps."""


class PsfEvaluationError(PsfMatchError, RuntimeError):
    """A PSF model could not be evaluated (it raised, or returned a bad stamp)."""


def _where(x, y) -> str:
    """``(x, y)`` exactly, as short as it reads (``(2047.5, 4095.5)``, ``(0, 0)``)."""
    return "({}, {})".format(*(f"{v:.0f}" if math.isfinite(v) and v == int(v) and abs(v) < 1e15 else repr(v)
                               for v in (x, y)))


class PsfComputeShapeError(PsfEvaluationError):
    """The adaptive second moments of a PSF could not be measured.

    Parameters
    ----------
    position : tuple of float
        The (x, y) parent position where the evaluation failed.
    message : str, optional
        What went wrong.
    """

    def __init__(self, position, message=None):
        x, y = (float(position[0]), float(position[1]))
        self.position = (x, y)
        text = f"Unable to evaluate Psf at {_where(x, y)}"
        if message:
            text += f": {message}"
        super().__init__(text)

    def __reduce__(self):
        text = str(self)
        prefix = f"Unable to evaluate Psf at {_where(*self.position)}"
        message = text[len(prefix) + 2:] if text.startswith(prefix + ": ") else None
        return (type(self), (self.position, message))

    @property
    def metadata(self):
        """The failure position as a mapping, as LSST's error carries it."""
        return {"position": {"x": self.position[0], "y": self.position[1]}}


class NoKernelCandidatesError(PsfMatchError, RuntimeError):
    """Too few usable kernel candidates remain to solve for the kernel."""


class IllPosedMatchError(PsfMatchError, ValueError):
    """The reference PSF is narrower than the science PSF: matching would deconvolve."""


class UnsupportedFormatError(PsfMatchError, ValueError):
    """A file or object is of a kind psfmatch cannot read."""


class CorruptFileError(PsfMatchError, OSError):
    """A file could not be read because its content is damaged or inconsistent."""


class MissingFileError(PsfMatchError, FileNotFoundError):
    """An input file (or the folder of an output file) does not exist; the message names the path.

    Also a `FileNotFoundError`, so ``except FileNotFoundError`` and ``except OSError`` keep working.
    """


class MemoryLimitError(PsfMatchError, MemoryError):
    """An operation would allocate more memory than the configured limit allows."""


class OutputExistsError(PsfMatchError, FileExistsError):
    """An output file exists already and overwriting it was not asked for (pass ``overwrite=True``)."""


class OutputNotWritableError(PsfMatchError, OSError):
    """An output file cannot be created where asked (no permission, a read-only or full file system).

    The message names the output, its directory, the reason and the remedy; an ``OSError``, so
    ``except OSError`` keeps working.
    """


class MissingDependencyError(PsfMatchError, ImportError):
    """An optional dependency (GalSim, Piff, ...) is needed and not installed; the message says how to install it."""


class SchedulerUnreachableError(PsfMatchError, ConnectionError):
    """The Dask scheduler named by its address (``psfmatch batch --scheduler``, ``client=``) could not be reached."""


class PsfMatchWarning(UserWarning):
    """Base class of psfmatch's warnings about the quality of a match."""


class IllPosedMatchWarning(PsfMatchWarning):
    """Part of the field needs a deconvolution to reach the reference PSF."""


class KernelQualityWarning(PsfMatchWarning):
    """The matching kernel or the matched PSF exceeds a documented quality threshold."""


class TruncatedPsfWarning(PsfMatchWarning):
    """A PSF has significant flux at the edge of its stamp (its wings are cut off)."""
