"""How a PSF model is stored in a psfmatch exposure file, and what round-trips.

The PSF goes into one HDU named ``PSF`` whose header card ``PMPSFTYP`` says
how to read it back:

- ``GaussianPsf``, ``DoubleGaussianPsf``, ``MoffatPsf``, ``VariableGaussianPsf``:
  a header-only HDU, the constructor parameters as JSON in the long-string card
  ``PMPARAMS``.  Round-trip: exact (an equal object; a subclass that redefines
  none of the model's methods reads back as the model).
- ``ImagePsf``: an image HDU with the (odd, unit-sum) array, ``PIXSCALE`` and
  ``PIXSCSTR`` (the pixel scale exactly, as a string: the float card holds
  about 15 digits; see :mod:`psfmatch.io.kernel_fits`).  Round-trip: exact.
- ``PsfexPsf``: the PSFEx ``PSF_DATA`` table (1-based contexts) plus the stamp
  size (``PMSTAMPW``/``PMSTAMPH``); the basis as float32 when float32 holds it
  exactly (a model read from a PSFEx file), else as float64.  Round-trip: exact
  (but for a model read with ``origin=0``, whose POLZERO is written plus 1 and
  read minus 1: exact where those sums are, else to their rounding, about
  1e-16 of POLZERO).
- A resized model (``psf.resized(w, h)`` of a model without its own
  ``resized``): the inner model plus ``PMRESIZW``/``PMRESIZH``.  Round-trip: as
  the inner model.
- Any other spatially constant model (a subclass of the models above that
  redefines their methods counts as another model): an ``ImagePsf`` of its
  kernel image at its average position (``PMORIGTY`` records the original
  type).  Round-trip: the same images; the class becomes ``ImagePsf``.
- Any other spatially varying model (GalSim factories, Piff, user objects): a
  degree-``d`` PSFEx-style polynomial fitted by least squares to its kernel
  images on an ``n x n`` grid over the exposure box (``PMAPPROX = T``, a logged
  warning).  Round-trip: approximate; the largest fit residual relative to the
  peak is in ``PMFITRES``; it reads back as a ``PsfexPsf``.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from ..errors import CorruptFileError, InvalidInputError
from ..geom import Box2I, Point2D
from ..psf.analytic import DoubleGaussianPsf, GaussianPsf, MoffatPsf, VariableGaussianPsf
from ..psf.base import _ResizedPsf, _overrides_model, pad_or_crop
from ..psf.image_psf import ImagePsf
from ..psf.psfex import MAX_STAMP_SIZE, PsfexPsf, psfex_terms, read_psfex
from .kernel_fits import read_exact_float, write_exact_float

__all__ = ["psf_to_hdus", "psf_from_hdul", "fit_polynomial_psf"]

log = logging.getLogger(__name__)

EXTNAME = "PSF"


def _params_hdu(kind, params):
    from astropy.io import fits

    hdu = fits.ImageHDU(name=EXTNAME)
    hdu.header["PMPSFTYP"] = (kind, "psfmatch PSF model")
    hdu.header["PMPARAMS"] = json.dumps(params, sort_keys=True)
    return hdu


def _analytic_params(psf):
    """(kind, params) for the analytic models (and their subclasses that redefine none of the model's methods:
    they draw the same images), or None."""
    if not isinstance(psf, (GaussianPsf, DoubleGaussianPsf, MoffatPsf, VariableGaussianPsf)) or \
            _overrides_model(type(psf)):
        return None
    if isinstance(psf, GaussianPsf):
        w, h = psf.getDimensions()
        return "GaussianPsf", {"width": w, "height": h, "sigma": psf.getSigma()}
    if isinstance(psf, DoubleGaussianPsf):
        w, h = psf.getDimensions()
        return "DoubleGaussianPsf", {"width": w, "height": h, "sigma1": psf.getSigma1(),
                                     "sigma2": psf.getSigma2(), "b": psf.getB()}
    if isinstance(psf, MoffatPsf):
        w, h = psf.getDimensions()
        return "MoffatPsf", {"width": w, "height": h, "fwhm": psf.getFwhm(), "beta": psf.getBeta()}
    if isinstance(psf, VariableGaussianPsf) and hasattr(psf, "_coeffs"):
        w, h = psf.getDimensions()
        return "VariableGaussianPsf", {"width": w, "height": h, "bbox": psf.getBBox().to_dict(),
                                       **{k: np.asarray(v).tolist() for k, v in psf._coeffs.items()}}
    return None


def _build_analytic(kind, p):
    if kind == "GaussianPsf":
        return GaussianPsf(p["width"], p["height"], p["sigma"])
    if kind == "DoubleGaussianPsf":
        return DoubleGaussianPsf(p["width"], p["height"], p["sigma1"], p["sigma2"], p["b"])
    if kind == "MoffatPsf":
        return MoffatPsf(p["width"], p["height"], p["fwhm"], p["beta"])
    b = p["bbox"]
    return VariableGaussianPsf(p["width"], p["height"], Box2I((b["x0"], b["y0"]), (b["width"], b["height"])),
                               p["sigma"], p["e1"], p["e2"])


def fit_polynomial_psf(psf, bbox, *, degree=2, ngrid=5) -> tuple:
    """Approximate a spatially varying PSF by a PSFEx-style polynomial of its kernel images.

    Kernel images at an ``ngrid x ngrid`` grid of positions spanning ``bbox``
    are fitted, pixel by pixel, by least squares with the PSFEx terms of degree
    ``degree`` in the position scaled to [-1, 1] over the box.

    Returns
    -------
    model : PsfexPsf
        ``PSF_SAMP = 1``; evaluates exactly to the fitted polynomial.
    residual : float
        Largest absolute residual of the fit at the grid positions, relative to
        the largest kernel-image peak.
    """
    if not isinstance(bbox, Box2I) or bbox.isEmpty():
        raise InvalidInputError(f"fit_polynomial_psf needs a non-empty Box2I; got {bbox!r}")
    nterms = (degree + 1) * (degree + 2) // 2
    ngrid = max(int(ngrid), degree + 1)
    xs = np.linspace(bbox.getMinX(), bbox.getMaxX(), ngrid)
    ys = np.linspace(bbox.getMinY(), bbox.getMaxY(), ngrid)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    stamps = [np.asarray(psf.computeKernelImage(Point2D(x, y)), dtype=np.float64) for x, y in zip(gx, gy)]
    h = max(s.shape[0] for s in stamps)
    w = max(s.shape[1] for s in stamps)
    stack = np.array([pad_or_crop(s, w, h) for s in stamps])
    centre = bbox.getCenter()
    half = (max(bbox.getWidth(), 2) / 2.0, max(bbox.getHeight(), 2) / 2.0)
    # PSFEx contexts are 1-based: POLZERO = centre + 1 (origin=1), POLSCAL = half-size
    polzero = (centre.x + 1.0, centre.y + 1.0)
    design = np.array([psfex_terms((x - centre.x) / half[0], (y - centre.y) / half[1], degree)
                       for x, y in zip(gx, gy)])
    coef, *_ = np.linalg.lstsq(design, stack.reshape(len(stack), -1), rcond=None)
    basis = coef.reshape(nterms, h, w)
    fit = (design @ coef).reshape(stack.shape)
    residual = float(np.abs(fit - stack).max() / np.abs(stack).max())
    model = PsfexPsf(basis, degree=degree, polzero=polzero, polscal=half, psf_samp=1.0, origin=1,
                     stamp_size=(w, h), source=f"polynomial fit to {type(psf).__name__}")
    return model, residual


def psf_to_hdus(psf, *, bbox=None, degree=2, ngrid=5) -> list:
    """The HDU(s) that store ``psf`` in an exposure file (see the module docstring).

    Parameters
    ----------
    psf : PSF model
    bbox : Box2I, optional
        The exposure's box, needed to approximate spatially varying models of
        unknown type.
    degree, ngrid : int
        Degree and grid of that approximation.
    """
    from astropy.io import fits

    resize = None
    inner = psf
    if isinstance(psf, _ResizedPsf):
        inner, resize = psf._psf, (psf._w, psf._h)
    analytic = _analytic_params(inner)
    if analytic is not None:
        hdu = _params_hdu(*analytic)
    elif isinstance(inner, ImagePsf) and not _overrides_model(type(inner)):
        hdu = fits.ImageHDU(np.asarray(inner.array, dtype=np.float64), name=EXTNAME)
        hdu.header["PMPSFTYP"] = ("ImagePsf", "psfmatch PSF model")
        if inner.pixel_scale is not None:
            write_exact_float(hdu.header, "PIXSCALE", inner.pixel_scale, "arcsec per pixel")
    elif isinstance(inner, PsfexPsf) and not _overrides_model(type(inner)):
        hdu = inner.to_hdu()
        hdu.name = EXTNAME
        hdu.header["PMPSFTYP"] = ("PsfexPsf", "psfmatch PSF model")
        w, h = inner.getDimensions()
        hdu.header["PMSTAMPW"] = (w, "kernel image width")
        hdu.header["PMSTAMPH"] = (h, "kernel image height")
    else:
        kind = type(inner).__name__
        varying = True
        fn = getattr(inner, "isSpatiallyVarying", None)
        if callable(fn):
            varying = bool(fn())
        if not varying or bbox is None:
            pos = inner.getAveragePosition() if callable(getattr(inner, "getAveragePosition", None)) else None
            img = psf.computeKernelImage(pos if pos is not None else Point2D(0, 0))
            if varying:
                log.warning("storing the spatially varying %s as one image at %s (no exposure box given)", kind, pos)
            hdu = fits.ImageHDU(np.asarray(img, dtype=np.float64), name=EXTNAME)
            hdu.header["PMPSFTYP"] = ("ImagePsf", "psfmatch PSF model")
            hdu.header["PMORIGTY"] = (kind[:60], "type of the model that was written")
            resize = None  # the image has the resized size already
        else:
            model, residual = fit_polynomial_psf(psf, bbox, degree=degree, ngrid=ngrid)
            log.warning("storing the spatially varying %s as a degree-%d polynomial of its kernel images "
                        "(largest residual %.2g of the peak); it reads back as a PsfexPsf", kind, degree, residual)
            hdu = model.to_hdu()
            hdu.name = EXTNAME
            hdu.header["PMPSFTYP"] = ("PsfexPsf", "psfmatch PSF model")
            w, h = model.getDimensions()
            hdu.header["PMSTAMPW"] = (w, "kernel image width")
            hdu.header["PMSTAMPH"] = (h, "kernel image height")
            hdu.header["PMAPPROX"] = (True, "a polynomial approximation")
            hdu.header["PMORIGTY"] = (kind[:60], "type of the model that was approximated")
            hdu.header["PMFITRES"] = (residual, "largest fit residual / peak")
            resize = None
    if resize is not None:
        hdu.header["PMRESIZW"] = (resize[0], "resized to this width")
        hdu.header["PMRESIZH"] = (resize[1], "resized to this height")
    return [hdu]


def _check_stamp(label, keys, values):
    """A stored stamp size must be a positive integer up to MAX_STAMP_SIZE: a bigger one is a damaged card,
    and evaluating the model would allocate gigabytes."""
    for key, v in zip(keys, values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not 1 <= v <= MAX_STAMP_SIZE:
            raise CorruptFileError(f"{label}: stamp size {key} = {v!r} is not an integer in 1..{MAX_STAMP_SIZE}; "
                                   "the card is damaged (pass psf= to read_exposure to give the PSF instead)")


def psf_from_hdul(hdul, where="<file>"):
    """The PSF stored in an exposure file's ``PSF`` HDU, or None when there is none.

    Raises
    ------
    CorruptFileError
        If the HDU's ``PMPSFTYP`` is unknown or its content cannot be decoded.
    """
    names = [h.name.upper() for h in hdul]
    if EXTNAME not in names:
        return None
    hdu = hdul[EXTNAME]
    h = hdu.header
    kind = str(h.get("PMPSFTYP", "")).strip()
    label = f"{where}[{EXTNAME}]"
    try:
        if kind in ("GaussianPsf", "DoubleGaussianPsf", "MoffatPsf", "VariableGaussianPsf"):
            params = json.loads(h["PMPARAMS"])
            _check_stamp(label, ("width", "height"), (params["width"], params["height"]))
            psf = _build_analytic(kind, params)
        elif kind == "ImagePsf":
            scale = read_exact_float(h, "PIXSCALE", label) if "PIXSCALE" in h else None
            # the stored unit-sum array as it is: normalizing it again changes its last bits
            psf = ImagePsf._from_unit_sum(np.asarray(hdu.data, dtype=np.float64), pixel_scale=scale)
        elif kind == "PsfexPsf":
            stamp = None
            if "PMSTAMPW" in h:
                _check_stamp(label, ("PMSTAMPW", "PMSTAMPH"), (h["PMSTAMPW"], h["PMSTAMPH"]))
                stamp = (int(h["PMSTAMPW"]), int(h["PMSTAMPH"]))
            psf = read_psfex(hdu, stamp_size=stamp)
            psf.source = f"{label}"
        else:
            raise CorruptFileError(f"{label}: PMPSFTYP = {kind!r} is not a PSF type psfmatch stores "
                                   "(GaussianPsf, DoubleGaussianPsf, MoffatPsf, VariableGaussianPsf, ImagePsf, "
                                   "PsfexPsf); was the file written by a newer psfmatch?")
    except CorruptFileError:
        raise
    except Exception as exc:
        raise CorruptFileError(f"{label}: the stored {kind or 'PSF'} cannot be decoded ({type(exc).__name__}: "
                               f"{exc})") from exc
    if "PMRESIZW" in h:
        try:
            size = (h["PMRESIZW"], h["PMRESIZH"])
        except KeyError as exc:
            raise CorruptFileError(f"{label}: PMRESIZW is given without PMRESIZH") from exc
        _check_stamp(label, ("PMRESIZW", "PMRESIZH"), size)
        psf = psf.resized(int(size[0]), int(size[1]))
    return psf
