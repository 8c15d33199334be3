"""psfmatch: PSF-match astronomical exposures to a model PSF.

A standalone implementation of LSST's ``ModelPsfMatchTask``::

    from psfmatch import ModelPsfMatchTask, ModelPsfMatchConfig, Exposure
    result = ModelPsfMatchTask(config=ModelPsfMatchConfig()).run(exposure, referencePsfModel)
    result.psfMatchedExposure, result.psfMatchingKernel, result.kernelCellSet, result.metadata
"""

from .cells import CandidateStatus, KernelCandidate, SpatialCell, SpatialCellSet
from .config import ModelPsfMatchConfig, PsfMatchConfigAL, PsfMatchConfigDF
from . import errors as _errors
from .errors import *  # noqa: F401,F403  (every error and warning, listed once in errors.__all__)
from .geom import Box2D, Box2I, Point2D, Point2I
from .image import Exposure, Mask, MaskedImage
from .kernel import LinearCombinationKernel
from .task import ModelPsfMatchTask, PsfMatchResult

__version__ = "0.1.0"

__all__ = [
    "ModelPsfMatchTask",
    "ModelPsfMatchConfig",
    "PsfMatchConfigAL",
    "PsfMatchConfigDF",
    "PsfMatchResult",
    "Exposure",
    "MaskedImage",
    "Mask",
    "Box2I",
    "Box2D",
    "Point2D",
    "Point2I",
    "LinearCombinationKernel",
    "SpatialCellSet",
    "SpatialCell",
    "KernelCandidate",
    "CandidateStatus",
    "__version__",
] + _errors.__all__
