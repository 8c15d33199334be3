"""PSF models sharing one protocol; see :mod:`psfmatch.psf.base`."""

from ..geom import Point2D
from ..moments import Quadrupole
from .analytic import DoubleGaussianPsf, GaussianPsf, MoffatPsf, VariableGaussianPsf
from .base import Psf, PsfAdapter, as_psf
from .adapters import GalSimPsf, PiffPsf
from .image_io import read_image_psf
from .image_psf import ImagePsf
from .psfex import PsfexPsf, read_psfex
from .readers import read_psf, register_psf_reader

__all__ = [
    "Psf",
    "PsfAdapter",
    "as_psf",
    "GaussianPsf",
    "DoubleGaussianPsf",
    "MoffatPsf",
    "VariableGaussianPsf",
    "ImagePsf",
    "PsfexPsf",
    "read_psf",
    "read_psfex",
    "read_image_psf",
    "register_psf_reader",
    "GalSimPsf",
    "PiffPsf",
    "Point2D",
    "Quadrupole",
]
