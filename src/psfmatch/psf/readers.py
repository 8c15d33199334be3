"""``read_psf(path, format=None)``: one entry point for PSF files, with a registry of formats.

Built-in formats, tried in this order when ``format`` is not given (each
identifier reads headers only):

``psfmatch``
    the PSF stored in an exposure file written by psfmatch (``PMFORMAT`` in the
    primary header, a ``PSF`` HDU).  Other files psfmatch writes (an exposure
    without a PSF, a matching kernel, a grid of kernel images) hold no PSF:
    :func:`read_psf` refuses them, saying so, instead of reading their first
    image as one (also with ``format="image"``).
``psfex``
    a PSFEx model (a ``PSF_DATA`` table / ``PSF_MASK`` column): :func:`~psfmatch.psf.psfex.read_psfex`.
``piff``
    a Piff file (a ``psf`` table with a ``type`` column): :class:`~psfmatch.psf.adapters.PiffPsf`
    (needs Piff; ``piff.read`` unpickles the file's WCS, so read trusted files only).
``image``
    any FITS image: :func:`~psfmatch.psf.image_io.read_image_psf`.  When the
    format is identified (not named), an image that does not look like a PSF
    (``require_psf_like=True``: 128 px or more along its larger side with less
    than half of its flux in its central box, as a science exposure) is refused;
    ``format="image"`` (``image:FILE`` on the command line) reads it anyway.

Other readers can be added with :func:`register_psf_reader`.
"""

from __future__ import annotations

import inspect
import os

from ..errors import InvalidInputError, UnsupportedFormatError
from .image_io import read_image_psf
from .psfex import read_psfex

__all__ = ["read_psf", "register_psf_reader", "identify_psf_format", "psf_formats"]

_REGISTRY = {}


def register_psf_reader(name, reader, identifier=None, *, overwrite=False) -> None:
    """Register a PSF reader under ``format=name``.

    Parameters
    ----------
    name : str
        The format name.
    reader : callable
        ``reader(path, **kwargs) -> PSF model``.  :func:`read_psf` refuses an
        option that its signature does not name (unless it takes ``**kwargs``).
    identifier : callable, optional
        ``identifier(path) -> bool``, used when no format is given; cheap and
        never raising.  Readers without one are used only when named.
    overwrite : bool
        Replace an existing registration.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"a format name must be a non-empty string; got {name!r}")
    if not callable(reader):
        raise InvalidInputError(f"the reader of PSF format {name!r} must be a callable, reader(path, **kwargs) -> PSF "
                                f"model; got {type(reader).__name__} {reader!r}")
    if identifier is not None and not callable(identifier):
        raise InvalidInputError(f"the identifier of PSF format {name!r} must be a callable, identifier(path) -> bool, "
                                f"or None (the format is then read only when named); got {type(identifier).__name__} "
                                f"{identifier!r}")
    if name in _REGISTRY and not overwrite:
        raise InvalidInputError(f"a PSF reader for format {name!r} is registered already; pass overwrite=True")
    _REGISTRY[name] = (reader, identifier)


def psf_formats() -> list:
    """The registered format names, in identification order."""
    return list(_REGISTRY)


def identify_psf_format(path) -> list:
    """The formats whose identifiers accept ``path`` (in registry order)."""
    out = []
    for name, (_, ident) in _REGISTRY.items():
        if ident is None:
            continue
        try:
            if ident(path):
                out.append(name)
        except Exception:  # an identifier must not break identification
            continue
    return out


def read_psf(path, format=None, **kwargs):
    """Read a PSF model from a file.

    Parameters
    ----------
    path : str or path-like
        The file.
    format : str, optional
        One of ``psf_formats`` (``"psfex"``, ``"image"``, ``"piff"``,
        ``"psfmatch"``, or a registered one).  Default: identified from the file.
    **kwargs
        Passed to the reader (e.g. ``origin=`` for PSFEx, ``pixel_scale=`` /
        ``target_pixel_scale=`` / ``hdu=`` for images, ``chipnum=`` for Piff).

    Returns
    -------
    PSF model

    Raises
    ------
    InvalidInputError
        If an option of ``kwargs`` is not one the format's reader takes (the
        message names the option, the format and the options it takes).
    MissingFileError
        If the file does not exist (a `FileNotFoundError`).
    UnsupportedFormatError
        If ``format`` is unknown, no reader recognizes the file, the path is a
        directory, or the file is one psfmatch wrote that holds no PSF (an
        exposure without one, a matching-kernel file), also when ``format``
        names a reader (``"image"``); or a psfmatch exposure with a PSF given
        with a ``format`` other than ``"psfmatch"``; or, when ``format`` is not
        given, an image identified as such that does not look like a PSF (a
        science exposure: see ``require_psf_like`` in
        :func:`~psfmatch.psf.image_io.read_image_psf`).
    CorruptFileError
        If the file is not readable FITS, or is damaged (from the format's reader).

    Examples
    --------
    >>> from psfmatch.psf import read_psf
    >>> psf = read_psf("model.psf")                       # doctest: +SKIP
    >>> psf = read_psf("irac_ch1.fits", format="image")   # doctest: +SKIP
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"read_psf needs a path; got {type(path).__name__}")
    from ..io.fits import check_input_file

    path = check_input_file(path, "PSF")
    identified = format is None
    if format is None:
        found = identify_psf_format(path)
        if not found:
            # CorruptFileError when it is not FITS at all (empty, text, damaged): say so
            _refuse_psfmatch_product(path, _headers(path)[0][2])
            raise UnsupportedFormatError(
                f"{path}: not recognized as any PSF format ({', '.join(_REGISTRY)}); pass format= (on the "
                "command line, prefix the file with the format: psfex:FILE, image:FILE, piff:FILE)")
        format = found[0]
    if format not in _REGISTRY:
        raise UnsupportedFormatError(f"unknown PSF format {format!r}; known: {', '.join(_REGISTRY)}")
    if format != "psfmatch":  # (the psfmatch reader refuses them itself, once it has looked for the PSF HDU)
        _refuse_as_format(path, format)
    reader, _ = _REGISTRY[format]
    if kwargs:
        _check_options(reader, format, kwargs)
    if identified and reader is read_image_psf:
        # any 2-d image is identified as one: refuse a science exposure (format="image" reads it anyway)
        kwargs = {"require_psf_like": True, **kwargs}
    return reader(path, **kwargs)


def _reader_options(reader):
    """The keyword options ``reader(path, **options)`` takes: a list of names, or None when it takes any.

    The first parameter, the path, is no option.  A reader whose signature
    cannot be read is taken to accept anything.
    """
    try:
        sig = inspect.signature(reader)
    except (TypeError, ValueError):
        return None
    P = inspect.Parameter
    params = list(sig.parameters.values())
    if any(q.kind is P.VAR_KEYWORD for q in params):
        return None
    if params and params[0].kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
        params = params[1:]  # the path
    return [q.name for q in params if q.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)]


def _check_options(reader, format, kwargs) -> None:
    """Raise InvalidInputError for an option of ``kwargs`` that the ``format`` reader does not take."""
    allowed = _reader_options(reader)
    if allowed is None:
        return
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes no options"
        raise InvalidInputError(
            f"read_psf: the {format!r} PSF reader does not take the option(s) {', '.join(unknown)}; {takes}")


# ---------------------------------------------------------------------------
# built-in formats


def _headers(path):
    from ..io.fits import open_fits

    with open_fits(path, "PSF") as (hdul, _):
        return [(h.name.upper(), type(h).__name__, h.header.copy()) for h in hdul]


def _pmformat(header) -> str:
    """The ``PMFORMAT`` card of a primary header ('' when there is none or it cannot be parsed)."""
    from astropy.io.fits.verify import VerifyError

    try:
        return str(header.get("PMFORMAT", "")).strip()
    except (VerifyError, ValueError):  # a damaged card: the file is not recognized as psfmatch's
        return ""


def _refuse_psfmatch_product(path, primary_header) -> None:
    """Raise UnsupportedFormatError for a file psfmatch wrote that holds no PSF (an exposure without
    one, a matching kernel, a kernel-image grid); do nothing for any other file."""
    from ..io.fits import FORMAT_NAME
    from ..io.kernel_fits import KERNEL_FORMAT, KERNEL_GRID_FORMAT

    fmt = _pmformat(primary_header)
    if fmt == FORMAT_NAME:
        raise UnsupportedFormatError(
            f"{path}: a psfmatch exposure file written without a PSF (no PSF HDU): it holds no PSF to read; "
            "give the PSF as its own file (PSFEx, image, Piff) or as a SPEC such as gaussian:fwhm=F")
    if fmt in (KERNEL_FORMAT, KERNEL_GRID_FORMAT):
        read_it = ("read it with psfmatch.io.read_kernel" if fmt == KERNEL_FORMAT
                   else "its planes are images of one, for inspection")
        raise UnsupportedFormatError(
            f"{path}: a psfmatch matching-kernel file (PMFORMAT = {fmt!r}), not a PSF: it maps one PSF onto "
            f"another; {read_it}, and give the PSF itself (PSFEx, image, Piff or a SPEC)")
    if fmt.startswith("psfmatch"):
        raise UnsupportedFormatError(f"{path}: a file psfmatch wrote as {fmt!r}, which holds no PSF")


def _refuse_as_format(path, format) -> None:
    """Refuse a file psfmatch wrote, named with a format other than ``psfmatch`` (``image:FILE``,
    ``format="image"``): its first image (an exposure's science image, a kernel) is no PSF.

    A psfmatch exposure that holds a PSF is refused too, pointing to ``format="psfmatch"``.  A file
    that is not FITS is left to the format's reader (a registered reader may read other files).
    """
    from ..errors import PsfMatchError
    from ..io.fits import FORMAT_NAME

    try:
        heads = _headers(path)
    except (PsfMatchError, OSError):  # not FITS, or damaged: the reader says what it makes of it
        return
    if _pmformat(heads[0][2]) == FORMAT_NAME and any(name == "PSF" for name, _, _ in heads):
        raise UnsupportedFormatError(
            f"{path}: a psfmatch exposure file; read its PSF as format 'psfmatch' (the SPEC psfmatch:FILE, or "
            f"the file name alone), not as {format!r}, which would take the exposure's image for a PSF")
    _refuse_psfmatch_product(path, heads[0][2])


def _is_psfmatch(path):
    from ..io.fits import FORMAT_NAME

    heads = _headers(path)
    return _pmformat(heads[0][2]) == FORMAT_NAME and any(n == "PSF" for n, _, _ in heads)


def _read_psfmatch(path):
    from ..io.fits import FORMAT_NAME, open_fits
    from ..io.psf_persist import psf_from_hdul

    with open_fits(path, "PSF") as (hdul, guard):
        primary = hdul[0].header.copy()
        guard.hdu = "PSF"
        psf = psf_from_hdul(hdul, path)
    if psf is None:
        _refuse_psfmatch_product(path, primary)
        if _pmformat(primary) != FORMAT_NAME:
            raise UnsupportedFormatError(
                f"{path}: not a psfmatch exposure file (no PMFORMAT = {FORMAT_NAME!r} card): read it as its own "
                "format (psfex:FILE, image:FILE, piff:FILE on the command line, or format= in read_psf)")
        raise UnsupportedFormatError(f"{path}: the psfmatch file holds no PSF HDU")
    return psf


def _is_psfex(path):
    from .psfex import is_psfex

    return is_psfex(path)


def _is_piff(path):
    for name, kind, header in _headers(path):
        if name == "PSF" and kind == "BinTableHDU":
            cols = [str(header.get(f"TTYPE{i}", "")).strip().lower() for i in range(1, header.get("TFIELDS", 0) + 1)]
            if "type" in cols:
                return True
    return False


def _read_piff(path, **kwargs):
    from .adapters import PiffPsf

    return PiffPsf(path, **kwargs)


def _is_image(path):
    heads = _headers(path)
    if _pmformat(heads[0][2]).startswith("psfmatch"):
        return False  # an exposure's science image or a kernel cube is not a PSF image
    for _, kind, header in heads:
        if kind in ("PrimaryHDU", "ImageHDU", "CompImageHDU") and int(header.get("NAXIS", 0)) >= 2:
            return True
    return False


register_psf_reader("psfmatch", _read_psfmatch, _is_psfmatch)
register_psf_reader("psfex", read_psfex, _is_psfex)
register_psf_reader("piff", _read_piff, _is_piff)
register_psf_reader("image", read_image_psf, _is_image)
