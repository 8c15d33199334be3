"""PSF models sharing one protocol (SPEC section 3); see :mod:`psfmatch.psf.base`."""

from ..geom import Point2D
from ..moments import Quadrupole
from .analytic import DoubleGaussianPsf, GaussianPsf, MoffatPsf, VariableGaussianPsf
from .base import Psf, PsfAdapter, as_psf
from .image_psf import ImagePsf

__all__ = [
    "Psf",
    "PsfAdapter",
    "as_psf",
    "GaussianPsf",
    "DoubleGaussianPsf",
    "MoffatPsf",
    "VariableGaussianPsf",
    "ImagePsf",
    "Point2D",
    "Quadrupole",
]
