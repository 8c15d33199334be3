"""Exposures in FITS files: psfmatch's own layout, LSST-style files and plain images.

psfmatch's layout (written by :func:`write_exposure`, read back exactly)
------------------------------------------------------------------------
==========  ==========================================================================
HDU         content
==========  ==========================================================================
PRIMARY     no data; the caller's primary header cards (``metadata["fitsHeader"]``),
            ``PMFORMAT = 'psfmatch-exposure'``, ``PMVERS``
IMAGE       the image (float32 or float64), the WCS, ``BUNIT``, the origin ``xy0``
            (``LTV1 = -x0``, ``LTV2 = -y0`` and the ``A`` linear WCS ``CRVAL1A = x0``)
MASK        int32 bit planes; one card ``MP_<NAME> = bit`` per plane (LSST's convention,
            ``HIERARCH`` for long names)
VARIANCE    the variance, same dtype as the image
PSF         the PSF (see :mod:`psfmatch.io.psf_persist`); absent when there is none
METADATA    one-row table, column ``JSON``: the JSON-serializable ``metadata`` entries
==========  ==========================================================================

WCS convention: ``Exposure.wcs`` is an `astropy.wcs.WCS` of the *array*
(pixel ``(0, 0)`` is ``image[0, 0]``), exactly the WCS in the IMAGE header, as
astropy's NDData uses it.  For a parent position ``(x, y)`` use
``wcs.pixel_to_world(x - x0, y - y0)``.

Other layouts read by :func:`read_exposure`
-------------------------------------------
LSST-style exposure files (``IMAGE``/``MASK``/``VARIANCE`` extensions, mask
plane names in ``MP_*`` cards, metadata in the primary header): image, mask,
variance, WCS, origin and primary header are read; LSST's PSF and other
archive tables are not (pass ``psf=``).  Plain single-image files: the first
image HDU (or ``hdu=``); mask and variance come from other HDUs of the file,
other files or arrays, or the variance is estimated (a constant from the
robust scatter of the pixels, logged as a warning).

Writes are atomic (:func:`atomic_write`): the file appears complete or not at
all, and an existing file is never overwritten unless ``overwrite=True``
(:class:`~psfmatch.errors.OutputExistsError` otherwise).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import warnings

import numpy as np

from ..errors import CorruptFileError, InvalidInputError, OutputExistsError, UnsupportedFormatError
from ..image import Exposure, Mask

__all__ = ["atomic_write", "write_exposure", "read_exposure", "FORMAT_NAME", "FORMAT_VERSION",
           "METADATA_HEADER_KEY"]

log = logging.getLogger(__name__)

FORMAT_NAME = "psfmatch-exposure"
FORMAT_VERSION = 1
#: ``metadata`` key holding the primary header cards (an `astropy.io.fits.Header`).
METADATA_HEADER_KEY = "fitsHeader"

_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "XTENSION", "EXTNAME", "EXTVER",
               "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM", "INHERIT", "PMFORMAT", "PMVERS", "EXTTYPE",
               "ZIMAGE", "ZSIMPLE", "TFIELDS"}
_WCS_KEY = re.compile(r"^(WCSAXES|CRPIX\d|CRVAL\d|CDELT\d|CTYPE\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+|"
                      r"LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|WCSNAME|MJDREF|"
                      r"[AB]P?_\d+_\d+|[AB]P?_ORDER|[AB]_DMAX|LTV\d|LTM\d_\d)[A-Z]?$")


# ---------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_write(path, overwrite=False):
    """Write a file atomically: yield a temporary path beside ``path``, then move it into place.

    Parameters
    ----------
    path : str or path-like
        The final file name.
    overwrite : bool
        Replace an existing ``path``.  If False (default) an existing file is
        left alone and :class:`~psfmatch.errors.OutputExistsError` is raised,
        before anything is written and again (atomically, with a hard link
        where the filesystem supports it) at the moment of moving into place.

    Yields
    ------
    str
        A temporary file name in the same directory; write the whole output to it.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False (a `FileExistsError`).
    FileNotFoundError
        If the directory of ``path`` does not exist.

    Notes
    -----
    On any exception inside the ``with`` block the temporary file is removed and
    ``path`` is untouched.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(d, "out.txt")) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(os.path.join(d, "out.txt")).read()
    'done'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path} exists already; pass overwrite=True to replace it")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    os.unlink(tmp)  # writers (astropy) refuse to write onto an existing file
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise OSError(f"nothing was written for {path!r}")
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: no clobbering
            except FileExistsError:
                raise OutputExistsError(f"{path} exists already; pass overwrite=True to replace it") from None
            except OSError:  # no hard links on this filesystem
                if os.path.lexists(path):
                    raise OutputExistsError(f"{path} exists already; pass overwrite=True to replace it") from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------
# helpers


def _header_key(name):
    key = f"MP_{name}"
    return key if len(key) <= 8 and re.fullmatch(r"[A-Z0-9_-]+", key) else f"HIERARCH {key}"


def _mask_planes_to_header(header, planes):
    for name, bit in sorted(planes.items(), key=lambda kv: kv[1]):
        header[_header_key(name)] = (int(bit), "mask plane bit")


def _mask_planes_from_header(header):
    planes = {}
    for key in header.keys():
        k = key[9:] if key.upper().startswith("HIERARCH ") else key
        if k.upper().startswith("MP_"):
            try:
                planes[k[3:]] = int(header[key])
            except (TypeError, ValueError):
                continue
    return planes or None


def _xy0_to_header(header, xy0):
    x0, y0 = int(xy0[0]), int(xy0[1])
    header["LTV1"] = (-x0, "image origin: -x0 (IRAF)")
    header["LTV2"] = (-y0, "image origin: -y0 (IRAF)")
    header["CRPIX1A"] = (1.0, "parent pixel coordinates")
    header["CRPIX2A"] = (1.0, "parent pixel coordinates")
    header["CRVAL1A"] = (float(x0), "x0: parent x of the first column")
    header["CRVAL2A"] = (float(y0), "y0: parent y of the first row")
    header["CTYPE1A"] = ("LINEAR", "parent pixel coordinates")
    header["CTYPE2A"] = ("LINEAR", "parent pixel coordinates")
    header["CUNIT1A"] = ("PIXEL", "")
    header["CUNIT2A"] = ("PIXEL", "")
    header["WCSNAMEA"] = ("PARENT", "0-based parent pixel coordinates")


def _xy0_from_header(header, where):
    try:
        if "CRVAL1A" in header and "CRVAL2A" in header and str(header.get("CTYPE1A", "")).strip() == "LINEAR":
            x = float(header["CRVAL1A"]) - (float(header.get("CRPIX1A", 1.0)) - 1.0)
            y = float(header["CRVAL2A"]) - (float(header.get("CRPIX2A", 1.0)) - 1.0)
        elif "LTV1" in header or "LTV2" in header:
            x, y = -float(header.get("LTV1", 0.0)), -float(header.get("LTV2", 0.0))
        else:
            return (0, 0)
    except (TypeError, ValueError):
        raise CorruptFileError(f"{where}: the origin cards (CRVAL1A/CRVAL2A or LTV1/LTV2) are not numbers") from None
    if x != int(x) or y != int(y):
        raise CorruptFileError(f"{where}: the image origin ({x}, {y}) from CRVAL1A/CRVAL2A or LTV1/LTV2 is not "
                               "integral")
    return (int(x), int(y))


def _wcs_from_header(header):
    from astropy.wcs import WCS

    if not any(_WCS_KEY.match(k) and not k.startswith(("LTV", "LTM")) and not k.endswith("A")
               for k in header.keys()):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hdr = header.copy()
            for k in ("NAXIS1", "NAXIS2"):
                hdr.remove(k, ignore_missing=True)
            wcs = WCS(hdr, naxis=2)
        except Exception as exc:  # a broken WCS should not stop the pixels from being read
            log.warning("ignoring an unreadable WCS (%s: %s)", type(exc).__name__, exc)
            return None
    if not any(str(c).strip() for c in wcs.wcs.ctype):
        return None
    return wcs


def _primary_cards(header):
    """A copy of ``header`` without structural, WCS and psfmatch bookkeeping cards."""
    from astropy.io import fits

    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or key.startswith("NAXIS") or _WCS_KEY.match(key) or key == "BUNIT":
            continue
        if key.startswith("MP_") or key.startswith("PM"):
            continue
        out.append(card, end=True)
    return out


def _json_default(value):
    """numpy scalars and arrays as their Python equivalents; anything else is not serializable."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _metadata_to_hdu(metadata):
    from astropy.io import fits

    kept, dropped = {}, []
    for key, value in metadata.items():
        if key == METADATA_HEADER_KEY:
            continue
        try:
            json.dumps(value, allow_nan=True, default=_json_default)
        except (TypeError, ValueError):
            dropped.append(str(key))
            continue
        kept[str(key)] = value
    if dropped:
        log.warning("metadata entries %s are not JSON-serializable and are not written", sorted(dropped))
    text = json.dumps(kept, ensure_ascii=True, allow_nan=True, sort_keys=True, default=_json_default)
    col = fits.Column(name="JSON", format=f"{max(len(text), 1)}A", array=np.array([text]))
    return fits.BinTableHDU.from_columns([col], name="METADATA")


def _metadata_from_hdu(hdu, where):
    try:
        text = hdu.data["JSON"][0]
        if isinstance(text, bytes):
            text = text.decode("ascii")
        value = json.loads(text)
    except Exception as exc:
        raise CorruptFileError(f"{where}[METADATA]: the JSON column cannot be decoded ({exc})") from exc
    if not isinstance(value, dict):
        raise CorruptFileError(f"{where}[METADATA]: the JSON column is not a mapping")
    return value


# ---------------------------------------------------------------------------
# writing


def write_exposure(exposure, path, *, overwrite=False) -> None:
    """Write an :class:`~psfmatch.Exposure` to a multi-extension FITS file (psfmatch's layout).

    Parameters
    ----------
    exposure : Exposure
        What to write (not modified).
    path : str or path-like
        Output file name.
    overwrite : bool
        Replace an existing file (default False).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.

    Notes
    -----
    The PSF is stored as :mod:`psfmatch.io.psf_persist` describes (analytic
    models by their parameters, images and PSFEx models exactly, other models
    approximated).  Metadata entries that are not JSON-serializable are
    skipped with a logged warning, except ``metadata["fitsHeader"]`` whose
    cards go into the primary header.
    """
    from astropy.io import fits

    from .psf_persist import psf_to_hdus

    if not isinstance(exposure, Exposure):
        raise InvalidInputError(f"write_exposure needs an Exposure; got {type(exposure).__name__}")
    primary = fits.PrimaryHDU()
    user = exposure.metadata.get(METADATA_HEADER_KEY)
    if user is not None:
        if not isinstance(user, fits.Header):
            try:
                user = fits.Header(user)
            except Exception:
                raise InvalidInputError(f"metadata[{METADATA_HEADER_KEY!r}] must be an astropy Header or a "
                                        f"mapping of FITS cards; got {type(user).__name__}") from None
        for card in _primary_cards(user).cards:
            primary.header.append(card, end=True)
    primary.header["PMFORMAT"] = (FORMAT_NAME, "written by psfmatch")
    primary.header["PMVERS"] = (FORMAT_VERSION, "psfmatch exposure format version")

    wcs_header = None
    wcs = exposure.getWcs()
    if wcs is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs_header = wcs.to_header(relax=True)
        except Exception as exc:
            raise InvalidInputError(f"the exposure's WCS cannot be written to FITS: {exc}") from exc

    def image_hdu(data, name):
        hdu = fits.ImageHDU(data, name=name)
        hdu.header["EXTTYPE"] = name
        hdu.header["INHERIT"] = True
        if wcs_header is not None:
            hdu.header.update(wcs_header)
        _xy0_to_header(hdu.header, exposure.getXY0())
        return hdu

    img = image_hdu(exposure.image, "IMAGE")
    unit = exposure.metadata.get("unit")
    if unit is not None:
        img.header["BUNIT"] = str(unit)
    msk = image_hdu(exposure.mask.astype(np.int32, copy=False), "MASK")
    _mask_planes_to_header(msk.header, exposure.getMask().getMaskPlaneDict())
    var = image_hdu(exposure.variance, "VARIANCE")
    hdus = [primary, img, msk, var]
    if exposure.getPsf() is not None:
        hdus.extend(psf_to_hdus(exposure.getPsf(), bbox=exposure.getBBox()))
    hdus.append(_metadata_to_hdu(exposure.metadata))
    with atomic_write(path, overwrite=overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp, output_verify="exception", checksum=True)


# ---------------------------------------------------------------------------
# reading


def _load_plane(spec, hdul, path, what):
    """An array from ``spec``: an array, an HDU index/name in ``hdul``, a path, or ``(path, hdu)``."""
    from astropy.io import fits

    if isinstance(spec, np.ndarray):
        return np.array(spec), f"<{what} array>"
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and not os.path.exists(spec)
                                                and not spec.lower().endswith((".fits", ".fit", ".fz", ".gz"))):
        try:
            hdu = hdul[spec]
        except (KeyError, IndexError):
            raise UnsupportedFormatError(
                f"{path}: no HDU {spec!r} for the {what}; the file has {[h.name for h in hdul]}") from None
        if hdu.data is None:
            raise UnsupportedFormatError(f"{path}[{spec}]: the {what} HDU holds no data")
        return np.array(hdu.data), f"{path}[{spec}]"
    other, ext = (spec if isinstance(spec, tuple) else (spec, None))
    other = os.fspath(other)
    if not os.path.exists(other):
        raise FileNotFoundError(f"{what} file {other!r} does not exist")
    with fits.open(other, memmap=False) as h2:
        if ext is None:
            hdu = next((h for h in h2 if getattr(h, "data", None) is not None and getattr(h.data, "ndim", 0) == 2),
                       None)
            if hdu is None:
                raise UnsupportedFormatError(f"{other}: no 2-d image for the {what}")
        else:
            try:
                hdu = h2[ext]
            except (KeyError, IndexError):
                raise UnsupportedFormatError(f"{other}: no HDU {ext!r} for the {what}") from None
        return np.array(hdu.data), f"{other}[{ext if ext is not None else hdu.name}]"


def _estimate_variance(image, where):
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        raise CorruptFileError(f"{where}: the image has no finite pixel; cannot estimate a variance")
    mad = np.median(np.abs(finite - np.median(finite)))
    sigma = 1.4826 * mad
    log.warning("%s: no variance plane given; using a constant variance %.6g estimated from the robust scatter "
                "(1.4826 MAD) of the pixels. Pass variance= (an HDU, a file or an array) for a real one.",
                where, sigma ** 2)
    return np.full(image.shape, sigma ** 2, dtype=image.dtype)


def _as_variance(arr, kind, where):
    arr = np.asarray(arr, dtype=np.float64)
    if kind == "variance":
        out = arr
    elif kind == "stddev":
        out = arr ** 2
    elif kind == "invvar":
        with np.errstate(divide="ignore"):
            out = np.where(arr > 0, 1.0 / np.where(arr > 0, arr, 1.0), np.inf)
    else:
        raise InvalidInputError(f"variance_kind must be 'variance', 'stddev' or 'invvar'; got {kind!r}")
    if np.any(out < 0):
        raise CorruptFileError(f"{where}: the variance has negative values; check variance_kind ({kind!r})")
    return out


def _image_dtype(arr):
    """Native byte order; float32 and float64 kept, anything else float32."""
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32)


def _layout(hdul):
    names = [h.name.upper() for h in hdul]
    if str(hdul[0].header.get("PMFORMAT", "")).strip() == FORMAT_NAME:
        return "psfmatch"
    if "IMAGE" in names:
        return "lsst"
    return "image"


def read_exposure(path, *, layout=None, hdu=None, mask=None, variance=None, variance_kind="variance",
                  psf=None, xy0=None, mask_plane="BAD") -> Exposure:
    """Read an exposure from a FITS file.

    Parameters
    ----------
    path : str or path-like
        The file.
    layout : {"psfmatch", "lsst", "image"}, optional
        Force a layout; by default it is sniffed: psfmatch's (``PMFORMAT`` in
        the primary header), LSST-style (an ``IMAGE`` extension), else a plain image.
    hdu : int or str, optional
        For the plain-image layout: the HDU holding the image (default the
        first image HDU with 2-d data).
    mask, variance : int, str, path, (path, hdu) or ndarray, optional
        For the plain-image layout (and to replace a missing plane in the
        others): an HDU of the same file, another file, or an array.  An
        integer mask is taken as bit planes (default plane names); a boolean
        array sets ``mask_plane``.  Without a variance one is estimated (a
        constant from the robust pixel scatter) and a warning is logged.
    variance_kind : {"variance", "stddev", "invvar"}
        What the ``variance`` plane given holds (an ERR plane is ``"stddev"``,
        a weight map ``"invvar"``; zero weight gives infinite variance).
    psf : PSF model or path, optional
        The exposure's PSF; a path is read with :func:`psfmatch.psf.read_psf`.
        Overrides a PSF stored in a psfmatch file.
    xy0 : (int, int), optional
        The image origin; overrides the file's.
    mask_plane : str
        Plane set by a boolean ``mask`` array.

    Returns
    -------
    Exposure

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    UnsupportedFormatError
        If no image can be found, or a named HDU is missing.
    CorruptFileError
        If the planes disagree in shape, the image is not 2-d, or a stored
        structure cannot be decoded.
    """
    from astropy.io import fits

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"exposure file {path!r} does not exist")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise CorruptFileError(f"{path}: not a readable FITS file ({exc})") from exc
    with hdul:
        layout = layout or _layout(hdul)
        if layout not in ("psfmatch", "lsst", "image"):
            raise InvalidInputError(f"layout must be 'psfmatch', 'lsst' or 'image'; got {layout!r}")
        metadata = {}
        stored_psf = None
        mask_planes = None
        if layout in ("psfmatch", "lsst"):
            names = [h.name.upper() for h in hdul]
            if "IMAGE" not in names:
                raise UnsupportedFormatError(f"{path}: no IMAGE extension for the {layout!r} layout "
                                             f"(HDUs: {names})")
            img_hdu = hdul["IMAGE"]
            if img_hdu.data is None or img_hdu.data.ndim != 2:
                raise CorruptFileError(f"{path}[IMAGE]: the image must be 2-d; got "
                                       f"{None if img_hdu.data is None else img_hdu.data.shape}")
            image = _image_dtype(np.array(img_hdu.data))
            header = img_hdu.header
            where = f"{path}[IMAGE]"
            mask_arr = variance_arr = None
            if mask is None and "MASK" in names and hdul["MASK"].data is not None:
                mask_arr = np.array(hdul["MASK"].data)
                mask_planes = _mask_planes_from_header(hdul["MASK"].header)
            if variance is None and "VARIANCE" in names and hdul["VARIANCE"].data is not None:
                variance_arr = np.array(hdul["VARIANCE"].data, dtype=np.float64)
            metadata[METADATA_HEADER_KEY] = _primary_cards(hdul[0].header)
            if layout == "psfmatch":
                if "METADATA" in names:
                    metadata.update(_metadata_from_hdu(hdul["METADATA"], path))
                if psf is None:
                    from .psf_persist import psf_from_hdul

                    stored_psf = psf_from_hdul(hdul, path)
            elif psf is None:
                log.info("%s: LSST-style file; its PSF (in the archive tables) is not read: pass psf=", path)
        else:
            if hdu is None:
                img_hdu = next((h for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU,
                                                                   fits.CompImageHDU))
                                and h.data is not None and h.data.ndim == 2), None)
                if img_hdu is None:
                    raise UnsupportedFormatError(f"{path}: no 2-d image HDU (HDUs: {[h.name for h in hdul]}); "
                                                 "pass hdu=")
            else:
                try:
                    img_hdu = hdul[hdu]
                except (KeyError, IndexError):
                    raise UnsupportedFormatError(f"{path}: no HDU {hdu!r}; the file has "
                                                 f"{[h.name for h in hdul]}") from None
                if img_hdu.data is None or getattr(img_hdu.data, "ndim", 0) != 2:
                    raise UnsupportedFormatError(f"{path}[{hdu}]: not a 2-d image HDU")
            image = _image_dtype(np.array(img_hdu.data))
            header = img_hdu.header
            where = f"{path}[{img_hdu.name or 0}]"
            mask_arr = variance_arr = None
            cards = _primary_cards(hdul[0].header)
            if img_hdu is not hdul[0]:
                for card in _primary_cards(header).cards:
                    if card.keyword not in cards or card.keyword in ("COMMENT", "HISTORY", ""):
                        cards.append(card, end=True)
            metadata[METADATA_HEADER_KEY] = cards
        if mask is not None:
            mask_arr, mwhere = _load_plane(mask, hdul, path, "mask")
        if variance is not None:
            raw, vwhere = _load_plane(variance, hdul, path, "variance")
            variance_arr = _as_variance(raw, variance_kind, vwhere)
        for name, arr in (("mask", mask_arr), ("variance", variance_arr)):
            if arr is not None and arr.shape != image.shape:
                raise CorruptFileError(f"{path}: the {name} plane has shape {arr.shape}, the image {image.shape}")
        if variance_arr is None:
            variance_arr = _estimate_variance(image, where)
        if mask_arr is not None:
            if mask_arr.dtype == bool:
                m = Mask.from_bool(mask_arr, mask_plane, planes=mask_planes)
            elif np.issubdtype(mask_arr.dtype, np.integer):
                m = Mask(mask_arr.astype(np.int32), planes=mask_planes)
            else:
                raise CorruptFileError(f"{path}: the mask must hold integers; got dtype {mask_arr.dtype}")
        else:
            m = Mask(shape=image.shape, planes=mask_planes)
        if "BUNIT" in header and str(header["BUNIT"]).strip():
            metadata.setdefault("unit", str(header["BUNIT"]).strip())
        wcs = _wcs_from_header(header)
        origin = _xy0_from_header(header, where) if xy0 is None else xy0
    if psf is not None and isinstance(psf, (str, os.PathLike)):
        from ..psf.readers import read_psf

        psf = read_psf(psf)
    exp = Exposure(image, m, variance_arr.astype(image.dtype), psf=psf if psf is not None else stored_psf,
                   wcs=wcs, xy0=origin, metadata=metadata, mask_planes=mask_planes)
    return exp

