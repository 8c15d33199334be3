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
METADATA    one-row table, column ``JSON``: the JSON text of the serializable ``metadata``
            entries, as ASCII bytes (``nB``; format 1 wrote an ``nA`` string, still read)
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
archive tables are not (pass ``psf=``).  Plain single-image files: the 2-d
image HDU named ``IMAGE`` or ``SCI``, else the first (or ``hdu=``); mask and variance come from other HDUs of the file,
other files or arrays, or the variance is estimated (a constant from the
robust scatter of the pixels, logged as a warning).

Writes are atomic (:func:`atomic_write`): the file appears complete or not at
all, and an existing file is never overwritten unless ``overwrite=True``
(:class:`~psfmatch.errors.OutputExistsError` otherwise); a directory that does
not accept the file is an :class:`~psfmatch.errors.OutputNotWritableError`.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import (CorruptFileError, InvalidInputError, MissingDependencyError, MissingFileError,
                      OutputExistsError, OutputNotWritableError, PsfMatchError, UnsupportedFormatError)
from ..image import Exposure, Mask, check_plane_name, plane_dtype
from ..parallel import catch_warnings

__all__ = ["as_path", "atomic_write", "same_file",
           "write_exposure", "read_exposure", "read_exposure_info", "ExposureFileInfo",
           "check_input_file", "open_fits", "read_guard", "prescan_fits",
           "FORMAT_NAME", "FORMAT_VERSION", "METADATA_HEADER_KEY"]

log = logging.getLogger(__name__)

FORMAT_NAME = "psfmatch-exposure"
FORMAT_VERSION = 2  # 2: the METADATA JSON as bytes (1: as a string)
#: ``metadata`` key holding the primary header cards (an `astropy.io.fits.Header`).
METADATA_HEADER_KEY = "fitsHeader"

#: Names of HDUs that hold a plane beside the science image (data quality, mask, error, variance, weight, context,
#: exposure time): :func:`read_exposure` never takes one of them for the image unless ``hdu=`` names it.
AUXILIARY_HDU_NAMES = ("DQ", "PIXELDQ", "GROUPDQ", "MASK", "MSK", "BPM", "FLAGS", "ERR", "ERROR", "SIGMA", "STD",
                       "VAR", "VARIANCE", "IVAR", "INVVAR", "WHT", "WEIGHT", "WGT", "CON", "CTX", "CONTEXT", "EXP",
                       "EXPTIME", "SAMP", "TIME", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")

_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "XTENSION", "EXTNAME", "EXTVER",
               "BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM", "INHERIT", "PMFORMAT", "PMVERS", "EXTTYPE",
               "ZIMAGE", "ZSIMPLE", "TFIELDS"}
#: File-name extensions by which astropy compresses what it writes (``.zip`` it cannot write).
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
_WCS_KEY = re.compile(r"^(WCSAXES|CRPIX\d|CRVAL\d|CDELT\d|CTYPE\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+|"
                      r"LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|WCSNAME|MJDREF|"
                      r"[AB]P?_\d+_\d+|[AB]P?_ORDER|[AB]_DMAX|LTV\d|LTM\d_\d)[A-Z]?$")
#: afw's pointers into an LSST exposure file's archive HDUs: its HDU (``AR_HDU``) and the archive ids of the
#: objects there (``PSF_ID``, ``SKYWCS_ID``..., newer ``ARCHIVE_ID_*``); stale in any other file.
_ARCHIVE_HDU_KEY = re.compile(r"^(AR_HDU|ARCHIVE_ID_.+)$")
_ARCHIVE_ID_KEY = re.compile(r"^(PSF|SKYWCS|WCS|PHOTOCALIB|CALIB|APCORR|AP_CORR_MAP|VALIDPOLYGON|VALID_POLYGON|"
                             r"TRANSMISSIONCURVE|TRANSMISSION_CURVE|DETECTOR|FILTER|FILTERLABEL|SUMMARYSTATS|"
                             r"SUMMARY_STATS|COADDINPUTS|COADD_INPUTS|VISITINFO|VISIT_INFO)_ID$")
#: Cards of a lookup-table distortion (Paper IV ``CPDISj``/``DPj.*``, ``CQDISj``/``DQj.*``; ``D2IMDISj``/``D2IMj.*``),
#: whose tables are in other HDUs (``WCSDVARR``, ``D2IMARR``).
_LOOKUP_KEY = re.compile(r"^(CPDIS\d|CQDIS\d|CPERR\d|CQERR\d|DP\d|DQ\d|D2IMDIS\d|D2IM\d|D2IMERR\d|D2IMEXT|NPOLEXT)"
                         r"(\..+)?$")


# ---------------------------------------------------------------------------
# atomic writes


def same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name the same file: the same path once symbolic links are
    resolved (also when neither exists yet), or the same file on disk (a hard link)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be read): not the same file
        return False


def _unwritable(path, directory, exc) -> OutputNotWritableError:
    """The error for an output that cannot be written in ``directory``: the user's path, why, and what to do."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        remedy = "free some space there or write the output into another directory"
    elif exc.errno == errno.EROFS:
        remedy = "write the output into a directory on a writable file system"
    else:
        remedy = "make it writable or write the output into another directory"
    return OutputNotWritableError(f"cannot write {path!r}: directory {directory!r} is not writable "
                             f"({exc.strerror or exc}); {remedy}")


def why_unwritable(folder) -> str:
    """Why no file can be created in the existing directory ``folder`` ('' when one can).

    Asks :func:`os.access` first, then creates and removes an empty temporary file there, which
    also catches what ``os.access`` cannot see as root (a read-only or special file system).
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        return "no write permission"
    try:
        fd, probe = tempfile.mkstemp(prefix=".psfmatch-probe.", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return ""


def as_path(value, what, example='"image.fits"') -> str:
    """``value`` as a file-name string, refusing anything that is not a path.

    Parameters
    ----------
    value : str, bytes or path-like
        The path a caller gave.
    what : str
        What it is, for the message (e.g. ``"read_exposure's path"``).
    example : str
        A file name the message gives as an example.

    Returns
    -------
    str
        ``os.fspath(value)``, decoded with :func:`os.fsdecode` when it is bytes.

    Raises
    ------
    InvalidInputError
        If ``value`` is not a str, bytes or `os.PathLike` (None, a number, a
        list...): the message names ``what``, the type and value given.

    Examples
    --------
    >>> import pathlib
    >>> as_path(pathlib.Path("a") / "b.fits", "the output path") == os.path.join("a", "b.fits")
    True
    >>> as_path(None, "read_exposure's path")
    Traceback (most recent call last):
    ...
    psfmatch.errors.InvalidInputError: read_exposure's path must be a file path (str or os.PathLike); got None...
    """
    path = None
    if isinstance(value, (str, bytes, os.PathLike)):
        try:
            path = os.fspath(value)
        except TypeError:  # a PathLike whose __fspath__ returns neither str nor bytes
            path = None
    if not isinstance(path, (str, bytes)):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        if value is not None:
            shown = f"{type(value).__name__} {shown}"
        raise InvalidInputError(f"{what} must be a file path (str or os.PathLike); got {shown}; pass the "
                                f"file's name, e.g. {example} or a pathlib.Path")
    return os.fsdecode(path) if isinstance(path, bytes) else path


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
    MissingFileError
        If the directory of ``path`` does not exist (a `FileNotFoundError`).
    InvalidInputError
        If ``path`` is not a path (None, a number...), is empty or names a directory.
    OutputNotWritableError
        If the temporary file cannot be created or opened in the directory of
        ``path`` (no permission, a read-only file system, no space left): the
        message names ``path``, the reason and the remedy (the `OSError` is
        chained).

    Notes
    -----
    On any exception inside the ``with`` block the temporary file is removed and
    ``path`` is untouched.  An `OSError` raised inside the block that names the
    temporary file becomes the :class:`~psfmatch.errors.OutputNotWritableError`
    above; other exceptions pass through unchanged.  The temporary name is
    ``.<name>.<random>.tmp``; for a compressed name (``.gz``, ``.bz2``,
    ``.xz``) the compression suffix is repeated at its end
    (``.<name>.<random>.tmp.gz``), so that writers choosing the compression by
    the extension (astropy) compress the file.  A gzip writer records the
    name it wrote to in the gzip header (``FNAME``, RFC 1952), which
    ``gunzip -N`` would restore: for a ``.gz`` name that field is removed
    before the file is moved into place, so the header names no file
    (``gunzip -N`` then names the output after the file, ``x.fits`` for
    ``x.fits.gz``).  bzip2 and xz files hold no file name.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(d, "out.txt")) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(os.path.join(d, "out.txt")).read()
    'done'
    """
    path = as_path(path, "the output path")
    if not path:
        raise InvalidInputError("the output path is empty; give a file name")
    if os.path.isdir(path) or path.endswith((os.sep, "/")):
        what = "is a directory" if os.path.isdir(path) else "names a directory (it ends in '/')"
        raise InvalidInputError(f"cannot write {path!r}: it {what}; give a file name (e.g. inside it)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise MissingFileError(f"cannot write {path!r}: directory {directory!r} does not exist")
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path} exists already; pass overwrite=True to replace it")
    # keep a compression suffix last: writers (astropy) compress by the file name's extension
    ext = os.path.splitext(path)[1]
    suffix = ".tmp" + (ext.lower() if ext.lower() in _COMPRESSED_SUFFIXES else "")
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=directory)
    except OSError as exc:
        raise _unwritable(path, directory, exc) from exc
    os.close(fd)
    os.unlink(tmp)  # writers (astropy) refuse to write onto an existing file
    try:
        try:
            yield tmp
        except OSError as exc:
            if isinstance(exc, PsfMatchError) or tmp not in (exc.filename, exc.filename2):
                raise
            raise _unwritable(path, directory, exc) from exc
        if not os.path.exists(tmp):
            raise OSError(f"nothing was written for {path!r}")
        if suffix == ".tmp.gz":
            try:
                _drop_gzip_name(tmp)
            except OSError as exc:
                raise _unwritable(path, directory, exc) from exc
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


_GZIP_FNAME = 0x08  # the FLG bit of a gzip member header (RFC 1952) telling that a file name follows


def _drop_gzip_name(path) -> None:
    """Remove the file name (``FNAME``) from the gzip header of ``path``, in place.

    Python's gzip module (which astropy writes ``.gz`` files with) records the
    name of the file it writes, here a temporary one.  A header with only that
    optional field (the fixed 10 bytes, the zero-terminated name, then the
    deflate data) is rewritten without it, the data moved up by the name's
    length; any other file (not gzip, other optional fields, truncated) is
    left as it is.
    """
    with open(path, "r+b") as fh:
        head = fh.read(10)
        if len(head) < 10 or head[:3] != b"\x1f\x8b\x08" or head[3] != _GZIP_FNAME:
            return
        end = -1
        while end < 0:  # the name's terminating zero byte
            chunk = fh.read(4096)
            if not chunk:
                return  # no terminator: not a header psfmatch's writers make; left alone
            if b"\0" in chunk:
                end = fh.tell() - len(chunk) + chunk.index(b"\0") + 1
        fh.seek(3)
        fh.write(b"\0")  # FLG: no optional field
        read_at, write_at = end, 10
        while True:
            fh.seek(read_at)
            block = fh.read(1 << 20)
            if not block:
                break
            fh.seek(write_at)
            fh.write(block)
            read_at += len(block)
            write_at += len(block)
        fh.truncate(write_at)


# ---------------------------------------------------------------------------
# reading files: one policy for missing, foreign and damaged files
#
# A missing input file raises MissingFileError (a FileNotFoundError) naming the path; a directory or
# other non-regular file raises UnsupportedFormatError; anything astropy or numpy raise while decoding
# a damaged, truncated or foreign file (OSError, ValueError, KeyError, TypeError, IndexError, astropy's
# VerifyError, and warnings that the caller's filters turned into errors) becomes CorruptFileError
# naming the file and, where known, the HDU.  psfmatch's own typed errors pass through unchanged.


def check_input_file(path, what) -> str:
    """``path`` as a string, once it is known to name an existing regular file.

    Raises
    ------
    InvalidInputError
        If ``path`` is not a path (None, a number...).
    MissingFileError
        If nothing exists at ``path`` (a `FileNotFoundError`).
    UnsupportedFormatError
        If ``path`` is a directory or another non-regular file.
    """
    path = as_path(path, f"the {what} file's path")
    if not os.path.exists(path):
        raise MissingFileError(f"{what} file {path!r} does not exist")
    if os.path.isdir(path):
        raise UnsupportedFormatError(f"{what} file {path!r} is a directory, not a FITS file")
    if not os.path.isfile(path):
        raise UnsupportedFormatError(f"{what} file {path!r} is not a regular file")
    return path


def _damage_types():
    from astropy.io.fits.verify import VerifyError

    # astropy validates some cards with ``assert`` (column names, for one)
    return (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError, EOFError,
            MemoryError, AssertionError, Warning, VerifyError)


def _short(exc, limit=300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class ReadGuard:
    """What :func:`read_guard` reports: the file, what it should hold, and the HDU being read (``hdu``)."""

    def __init__(self, path, what):
        self.path = path
        self.what = what
        self.hdu = None

    def where(self) -> str:
        return self.path if self.hdu in (None, "") else f"{self.path}[{self.hdu}]"


#: The starts of astropy's warnings about harmless quirks it repairs while it parses a file (reading then goes
#: on as without them): a non-ASCII byte in a header (read as "?"), zeros after the last HDU, a header block
#: padded with NULs instead of blanks, a ``BLANK`` card on floating-point data (ignored).
_REPAIR_WARNINGS = ("non-ASCII characters are present in the FITS file header",
                    "Unexpected extra padding at the end of the file",
                    "Header block contains null bytes instead of spaces",
                    "Invalid 'BLANK' keyword in header")


@contextlib.contextmanager
def _astropy_repairs(where):
    """Log astropy's repairs of harmless quirks (:data:`_REPAIR_WARNINGS`) instead of warning: also under ``-W error``.

    Reading works the same whatever the warning filters: these warnings are
    taken out of the filters' reach (recorded, then logged once each, naming
    the file).  Any other warning follows the caller's filters as before: an
    error under ``-W error`` (real damage, such as junk after the last HDU,
    still raises), else shown when the block ends.  The filters are changed
    with :func:`psfmatch.parallel.catch_warnings`, whose lock is held while
    the block runs: the block must not wait for another thread that takes it.
    """
    import warnings

    from astropy.utils.exceptions import AstropyWarning

    caught = []
    try:
        with catch_warnings(record=True) as caught:
            for start in _REPAIR_WARNINGS:
                warnings.filterwarnings("always", message=re.escape(start), category=AstropyWarning)
            yield
    finally:  # (once the caller's filters and display are back in place)
        repaired = []
        for w in caught:
            text = " ".join(str(w.message).split())
            if issubclass(w.category, AstropyWarning) and text.startswith(_REPAIR_WARNINGS):
                if text not in repaired:
                    repaired.append(text)
                    log.warning("%s: astropy repaired a non-standard file while reading it: %s", where, text)
            else:  # what the caller's filters let through: shown as it would have been
                warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


@contextlib.contextmanager
def read_guard(path, what):
    """Turn what a damaged file makes astropy or numpy raise into :class:`~psfmatch.errors.CorruptFileError`.

    Set ``guard.hdu`` inside the block to name the HDU being read in the message.
    psfmatch's typed errors pass through; programming errors (``NameError``...) are not masked.
    Harmless quirks astropy repairs as it parses (a non-ASCII byte in a header,
    zeros after the last HDU, a header padded with NULs, ``BLANK`` on float
    data) are logged as warnings and never raised, also with warnings turned
    into errors; every other warning follows the caller's filters (see
    ``_astropy_repairs``: the block holds psfmatch's warning-filter lock).

    Examples
    --------
    >>> with read_guard("x.fits", "exposure") as guard:  # doctest: +SKIP
    ...     guard.hdu = "IMAGE"
    ...     data = hdul["IMAGE"].data
    """
    guard = ReadGuard(os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path), what)
    try:
        with _astropy_repairs(guard.path):
            yield guard
    except PsfMatchError:
        raise
    except ImportError as exc:
        # astropy decompresses by the file's first bytes: LZW ('.Z') needs an optional package -- or the bytes
        # of a damaged file happen to look like its signature
        raise MissingDependencyError(
            f"{guard.where()}: cannot read the {what}: {exc} (its first bytes say it is compressed; if it is not, "
            "the file is damaged)") from exc
    except Exception as exc:
        if not isinstance(exc, _damage_types()):
            raise
        raise CorruptFileError(f"{guard.where()}: cannot read the {what}: the file is damaged, truncated or not "
                               f"what it claims to be ({_short(exc)})") from exc


_BLOCK = 2880
_BITPIX = (8, 16, 32, 64, -32, -64)
#: Header cards checked by :func:`prescan_fits` before astropy sees the file.
_STRUCTURE_KEYS = re.compile(rb"^(SIMPLE|XTENSION|EXTNAME|BITPIX|NAXIS\d{0,3}|PCOUNT|GCOUNT|GROUPS|TFIELDS|"
                             rb"TFORM\d{1,3}|ZIMAGE|ZBITPIX|ZNAXIS\d{0,3}) *$")

#: Largest image a tile-compressed HDU may decompress to (bytes).  The compressed data can be
#: tiny (a constant plane compresses a thousandfold), so the decompressed size is checked on its
#: own: 64 GiB, beyond any exposure this package handles, refuses "decompression bombs".
MAX_DECOMPRESSED_BYTES = 64 * 2 ** 30


def _card_value(raw):
    """The value of a FITS card's value field (bytes after ``= ``): int, float, bool, str or None."""
    text = raw.decode("ascii", "replace")
    if text.lstrip().startswith("'"):
        body = text.lstrip()[1:]
        return body.split("'", 1)[0].strip()
    text = text.split("/", 1)[0].strip()
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text.replace("D", "E"))
    except ValueError:
        return None


def prescan_fits(fh, path):
    """Check the structure of a FITS file before astropy parses it.

    astropy trusts the structural cards: ``NAXIS = 99999999999`` makes it
    loop for hours, and ``NAXISn`` values promising gigabytes make it allocate
    them before finding the file short.  This walks the headers (reading only
    their blocks) and raises :class:`~psfmatch.errors.CorruptFileError`,
    naming the file and the HDU, when an HDU (or what astropy would parse as
    one: it reads any bytes up to an ``END`` card as a header, junk included,
    and a negative ``NAXISn`` there sends it round in circles) has ``NAXIS``/``TFIELDS``/
    ``ZNAXIS`` outside 0..999, a ``BITPIX`` (or ``ZBITPIX``) that is not a FITS
    type, negative sizes, promises more data than the file holds, or a
    tile-compressed image larger than :data:`MAX_DECOMPRESSED_BYTES` once
    decompressed, or when the file ends
    inside a header (a truncated file: astropy would drop the last HDUs with
    a warning, and a reader would silently miss them).
    Files that do not start with ``SIMPLE`` (compressed, text...) are left
    to astropy.  The file position is restored.
    """
    start = fh.tell()
    try:
        size = os.fstat(fh.fileno()).st_size
    except (AttributeError, OSError):  # not a real file: nothing to check cheaply
        return
    try:
        if fh.read(10) != b"SIMPLE  = ":
            return  # not FITS (text, compressed...): astropy says why
        pos, index = 0, 0
        while pos < size:
            fh.seek(pos)
            extension = fh.read(8) == b"XTENSION"
            fh.seek(pos)
            cards, end, nread = {}, False, 0
            while not end:
                block = fh.read(_BLOCK)
                for i in range(0, len(block) - 79, 80):
                    key = block[i:i + 8].rstrip()
                    if key == b"END":
                        end = True
                        break
                    if block[i + 8:i + 10] == b"= " and _STRUCTURE_KEYS.match(key) and key not in cards:
                        cards[key] = _card_value(block[i + 10:i + 80])
                nread += len(block)
                name = cards.get(b"EXTNAME")
                label = f"{path}[HDU {index}{f' {name}' if isinstance(name, str) and name else ''}]"
                if not end and len(block) < _BLOCK:
                    if index > 0 and not extension:
                        return  # bytes after the last HDU (padding, junk) with no header in them: astropy warns
                    # astropy would drop this HDU (and any after it) with a warning: data would be lost silently
                    raise CorruptFileError(f"{label}: the file ends inside this HDU's header (no END card): it is "
                                           "truncated")
            if index == 0 and cards.get(b"SIMPLE") is None:
                return
            header_end = pos + nread

            def integer(key, lo, hi=None, default=None):
                v = cards.get(key, default)
                if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                    allowed = f"an integer in {lo}..{hi}" if hi is not None else "a non-negative integer"
                    raise CorruptFileError(f"{label}: {key.decode()} = {v!r} is not {allowed}: the header is damaged")
                return v

            bitpix = cards.get(b"BITPIX")
            if bitpix not in _BITPIX or isinstance(bitpix, bool):
                raise CorruptFileError(f"{label}: BITPIX = {bitpix!r} is not a FITS data type {_BITPIX}: "
                                       "the header is damaged")
            naxis = integer(b"NAXIS", 0, 999)
            axes = [integer(b"NAXIS%d" % (i + 1), 0) for i in range(naxis)]
            pcount = integer(b"PCOUNT", 0, default=0)
            gcount = integer(b"GCOUNT", 0, default=1)
            if b"TFIELDS" in cards or str(cards.get(b"XTENSION", "")).strip() in ("BINTABLE", "TABLE"):
                tfields = integer(b"TFIELDS", 0, 999)
                missing = [f"TFORM{i}" for i in range(1, tfields + 1) if b"TFORM%d" % i not in cards]
                if missing:  # astropy fails with an internal error (UnboundLocalError) on these
                    raise CorruptFileError(f"{label}: the table header lacks {', '.join(missing[:5])}: the header is "
                                           "damaged")
            if cards.get(b"ZIMAGE") is True:
                znaxis = integer(b"ZNAXIS", 0, 999)
                zaxes = [integer(b"ZNAXIS%d" % (i + 1), 0) for i in range(znaxis)]
                zbitpix = cards.get(b"ZBITPIX")
                if zbitpix not in _BITPIX or isinstance(zbitpix, bool):
                    raise CorruptFileError(f"{label}: ZBITPIX = {zbitpix!r} is not a FITS data type {_BITPIX}: "
                                           "the compressed image's header is damaged")
                zbytes = abs(zbitpix) // 8
                for a in zaxes:
                    zbytes *= a
                if znaxis and zbytes > MAX_DECOMPRESSED_BYTES:
                    raise CorruptFileError(
                        f"{label}: the compressed image would decompress to {zbytes} bytes (ZBITPIX = {zbitpix}, "
                        f"ZNAXISn = {zaxes}), more than the {MAX_DECOMPRESSED_BYTES} this reader accepts: the "
                        "header is damaged or the file is not an image psfmatch can handle")
            if cards.get(b"GROUPS") is True and axes and axes[0] == 0:
                axes = axes[1:]
            nbytes = 0
            if naxis > 0:
                n = 1
                for a in axes:
                    n *= a
                nbytes = abs(bitpix) // 8 * gcount * (pcount + n)
            left = max(size - header_end, 0)
            if nbytes > left:
                raise CorruptFileError(
                    f"{label}: the header promises {nbytes} bytes of data (BITPIX = {bitpix}, NAXISn = {axes}) but "
                    f"only {left} follow: the file is truncated or its header damaged")
            pos = header_end + -(-nbytes // _BLOCK) * _BLOCK
            index += 1
    finally:
        fh.seek(start)


@contextlib.contextmanager
def open_fits(path, what, hint=""):
    """Open a FITS file for reading under :func:`read_guard`; yields ``(hdul, guard)``.

    The file handle is opened here and closed on every path out (astropy may
    leave it open when it fails half-way through ``fits.open``).

    Raises
    ------
    MissingFileError, UnsupportedFormatError
        See :func:`check_input_file`.
    CorruptFileError
        ``not a readable FITS file`` when astropy cannot open it (empty, text, garbage),
        or a damaged HDU later on.
    """
    from astropy.io import fits

    path = check_input_file(path, what)
    with read_guard(path, what) as guard, open(path, "rb") as fh:
        prescan_fits(fh, path)
        try:
            hdul = fits.open(fh, memmap=False)
        except Exception as exc:
            if not isinstance(exc, _damage_types()):
                raise
            raise CorruptFileError(f"{path}: not a readable FITS file ({_short(exc)}){hint}") from exc
        with hdul:
            yield hdul, guard


# ---------------------------------------------------------------------------
# helpers


def _header_key(name):
    key = f"MP_{name}"
    return key if len(key) <= 8 and re.fullmatch(r"[A-Z0-9_-]+", key) else f"HIERARCH {key}"


def _mask_planes_to_header(header, planes):
    from astropy.io import fits

    for name in planes:  # names the header cannot store are refused before anything is written
        check_plane_name(name, planes)
    for name, bit in sorted(planes.items(), key=lambda kv: kv[1]):
        key = _header_key(name)
        comment = "mask plane bit"
        # a long HIERARCH name leaves no room for the comment (astropy would truncate it, with a warning)
        if key.startswith("HIERARCH ") and len(f"{key} = {int(bit)} / {comment}") > 80:
            comment = ""
        header.append(fits.Card(key, int(bit), comment), end=True)


def _mask_planes_from_header(header, where="MASK"):
    """The plane registry of the ``MP_<name> = bit`` cards (afw's), or None without any.

    A second name for a bit already named (an alias some writers add) is left
    out, with a warning: one bit holds one plane in psfmatch's masks.
    """
    planes, names_of, aliases = {}, {}, []
    for key in header.keys():
        k = key[9:] if key.upper().startswith("HIERARCH ") else key
        if k.upper().startswith("MP_"):
            try:
                bit = int(header[key])
            except (TypeError, ValueError):
                continue
            if bit in names_of:
                aliases.append(f"{k[3:]} (bit {bit}, also {names_of[bit]})")
                continue
            planes[k[3:]] = bit
            names_of[bit] = k[3:]
    if aliases:
        log.warning("%s: mask planes %s name a bit another plane has; they are left out (one plane a bit)", where,
                    ", ".join(aliases))
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


#: IRAF's physical-to-image transformation matrix and its identity value.
_LTM_IDENTITY = {"LTM1_1": 1.0, "LTM2_2": 1.0, "LTM1_2": 0.0, "LTM2_1": 0.0}


def _alternate_matrix(header) -> np.ndarray:
    """The pixel-to-parent matrix of the alternate linear WCS ``A``: ``CDi_jA`` where any is given, else
    ``PCi_jA`` scaled by ``CDELTiA`` (FITS Paper I defaults: the identity, unit steps)."""
    def card(name, default):
        return float(header.get(name, default))

    if any(f"CD{i}_{j}A" in header for i in (1, 2) for j in (1, 2)):
        return np.array([[card(f"CD{i}_{j}A", 0.0) for j in (1, 2)] for i in (1, 2)])
    pc = np.array([[card(f"PC{i}_{j}A", float(i == j)) for j in (1, 2)] for i in (1, 2)])
    return pc * np.array([[card("CDELT1A", 1.0)], [card("CDELT2A", 1.0)]])


def _xy0_from_header(header, where, error=CorruptFileError):
    """The image origin ``(x0, y0)`` a header records, or ``(0, 0)``.

    psfmatch's and LSST's alternate linear WCS ``A`` (``CRVAL1A``...) first, else
    IRAF's ``LTV1``/``LTV2`` (``x0 = -LTV1``).  Each gives the origin only when its
    matrix (``CDi_jA``, or ``PCi_jA`` and ``CDELTiA``; ``LTMi_j``) is absent or the
    identity: a binned or rotated section's pixels are not the parent pixel grid
    of the exposure, so its origin is ``(0, 0)`` (logged).  ``header`` is a FITS
    header or a mapping with upper-case keys; ``error`` is the exception raised
    for unusable cards.
    """
    remedy = "; pass xy0= to give the origin"
    try:
        if "CRVAL1A" in header and "CRVAL2A" in header and str(header.get("CTYPE1A", "")).strip().upper() == "LINEAR":
            matrix = _alternate_matrix(header)
            if not np.array_equal(matrix, np.eye(2)):
                log.info("%s: CRVAL1A/CRVAL2A are not taken as the image origin: the alternate WCS's matrix %s is not "
                         "the identity (a binned or transformed section); xy0 = (0, 0)%s", where, matrix.tolist(),
                         remedy)
                return (0, 0)
            x = float(header["CRVAL1A"]) - (float(header.get("CRPIX1A", 1.0)) - 1.0)
            y = float(header["CRVAL2A"]) - (float(header.get("CRPIX2A", 1.0)) - 1.0)
            source = "CRVAL1A/CRVAL2A"
        elif "LTV1" in header or "LTV2" in header:
            ltm = {k: float(header[k]) for k in _LTM_IDENTITY if k in header}
            if any(v != _LTM_IDENTITY[k] for k, v in ltm.items()):
                log.info("%s: LTV1/LTV2 are not taken as the image origin: the LTM matrix %s is not the identity "
                         "(a binned or transformed section); xy0 = (0, 0)%s", where, ltm, remedy)
                return (0, 0)
            x, y = -float(header.get("LTV1", 0.0)), -float(header.get("LTV2", 0.0))
            source = "LTV1/LTV2"
        else:
            return (0, 0)
    except (TypeError, ValueError):
        raise error(f"{where}: the origin cards (CRVAL1A/CRVAL2A and their matrix, LTV1/LTV2 or LTMi_j) are not "
                    f"numbers{remedy}") \
            from None
    if not (np.isfinite(x) and np.isfinite(y)) or x != int(x) or y != int(y):
        raise error(f"{where}: the image origin ({x}, {y}) from {source} is not integral{remedy}")
    return (int(x), int(y))


def _wcs_from_header(header, hdul=None, where=None):
    """The WCS ``header`` describes, or None (none there, or unreadable: logged).

    ``hdul`` is the file's `~astropy.io.fits.HDUList`, where astropy finds the
    tables of a lookup-table distortion (Paper IV ``CPDISj``/``DPj`` cards and
    ``WCSDVARR`` extensions, ``D2IMDISj`` and ``D2IMARR``, as HST's files have).
    When that distortion cannot be read (no ``hdul``, a table missing), the WCS
    is read without it and a warning says so.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    if not any(_WCS_KEY.match(k) and not k.startswith(("LTV", "LTM")) and not k.endswith("A")
               for k in header.keys()):
        return None
    label = f"{where}: " if where else ""
    with catch_warnings("ignore"):
        try:
            hdr = header.copy()
            for k in ("NAXIS1", "NAXIS2"):
                hdr.remove(k, ignore_missing=True)
            try:
                wcs = WCS(hdr, fobj=hdul, naxis=2)
            except Exception as exc:
                lookup = list(dict.fromkeys(k.split(".")[0] for k in hdr.keys() if _LOOKUP_KEY.match(k)))
                if not lookup:
                    raise
                wcs = WCS(fits.Header([copy.copy(c) for c in hdr.cards if not _LOOKUP_KEY.match(c.keyword)]),
                          naxis=2)
                log.warning("%sthe WCS's lookup-table distortion (%s) cannot be read (%s): it is left out, the rest "
                            "of the WCS is kept", label, ", ".join(lookup),
                            _short(exc, 120))
        except Exception as exc:  # a broken WCS should not stop the pixels from being read
            log.warning("%signoring an unreadable WCS (%s: %s)", label, type(exc).__name__, exc)
            return None
    if not any(str(c).strip() for c in wcs.wcs.ctype):
        return None
    return wcs


def _defines_wcs(header) -> bool:
    """Whether ``header`` has a (primary) celestial or linear WCS: a non-blank ``CTYPEn`` card."""
    return any(re.fullmatch(r"CTYPE\d", k) and str(header[k]).strip() for k in header.keys())


def _image_wcs(hdul, img_hdu, where):
    """The WCS of ``img_hdu`` and whether the primary header's cards were needed for it.

    An image extension without a WCS of its own takes the primary header's
    when it says ``INHERIT = T`` (the FITS inheritance convention: without the
    card nothing is inherited, as a binned thumbnail's extension must not take
    the full image's WCS); its own WCS cards take precedence over the primary's.
    The WCS's ``pixel_shape`` is the image's ``(NAXIS1, NAXIS2)``, as
    ``WCS(header)`` of an image HDU has it (``calc_footprint`` needs it).
    """
    wcs, inherited = _image_wcs_cards(hdul, img_hdu, where)
    if wcs is not None:
        shape = tuple(img_hdu.header.get(f"NAXIS{i}") for i in (1, 2))
        if all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            wcs.pixel_shape = shape
    return wcs, inherited


def _image_wcs_cards(hdul, img_hdu, where):
    """:func:`_image_wcs` before its ``pixel_shape`` is set."""
    from astropy.io import fits

    header = img_hdu.header
    wcs = _wcs_from_header(header, hdul, where)
    primary = hdul[0]
    if wcs is not None or img_hdu is primary or header.get("INHERIT") is not True or not _defines_wcs(primary.header):
        return wcs, False
    try:
        merged = fits.Header([copy.copy(card) for card in primary.header.cards if _WCS_KEY.match(card.keyword)])
        for card in header.cards:
            if _WCS_KEY.match(card.keyword):
                merged[card.keyword] = (card.value, card.comment)
    except Exception as exc:  # a broken WCS should not stop the pixels from being read
        log.warning("%s: ignoring the primary header's unreadable WCS (%s)", where, _short(exc))
        return None, False
    wcs = _wcs_from_header(merged, hdul, where)
    if wcs is not None:
        log.info("%s: no WCS in the image's header; using the primary header's (FITS INHERIT convention)", where)
    return wcs, wcs is not None


def _primary_cards(header, *, wcs=False, origin=False):
    """A copy of ``header`` without structural cards and psfmatch's own (``PMFORMAT``, ``PMVERS``).

    Parameters
    ----------
    header : astropy.io.fits.Header
    wcs : bool
        Also leave out the WCS cards: ``header`` is the one the WCS was read from
        (or will be written to).  Elsewhere ``EQUINOX``, ``EPOCH`` or ``MJDREF``
        may describe something else (a target's coordinates, a time series).
    origin : bool
        Also leave out the image origin and ``BUNIT`` (``header`` is the image's):
        IRAF's ``LTVn``/``LTMi_j`` and the alternate ``A`` WCS when it is a
        linear one (:func:`_alternate_is_origin`; a sky one is kept).
    """
    from astropy.io import fits

    out = fits.Header()
    alternate = _alternate_is_origin(header)  # (a sky alternate WCS A is the image's, kept with the others)
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or key.startswith("NAXIS"):
            continue
        if wcs and _LOOKUP_KEY.match(key):
            continue
        if _WCS_KEY.match(key):
            is_origin = _is_origin_key(key, alternate)
            if (origin and is_origin) or (wcs and not is_origin):
                continue
        if origin and key == "BUNIT":
            continue
        out.append(copy.copy(card), end=True)  # a card of its own: setting a value changes the card in place
    return out


def _drop_archive_pointers(header, where, afw=False):
    """Remove afw's archive pointers from ``header`` (a copy the caller owns): they would point at wrong HDUs.

    ``AR_HDU`` and ``ARCHIVE_ID_*`` always; the older ``<COMPONENT>_ID`` cards
    (``PSF_ID``, ``SKYWCS_ID``, ``PHOTOCALIB_ID``...) with an integer value
    when the header is an afw file's (``afw``, or ``AR_HDU`` is there), as afw
    itself strips them on reading.
    """
    from astropy.io.fits.verify import VerifyError

    def archive_id(card):
        try:
            return isinstance(card.value, int) and not isinstance(card.value, bool)
        except (VerifyError, ValueError):  # not an integer afw wrote
            return False

    afw = afw or "AR_HDU" in header
    drop = [i for i, card in enumerate(header.cards) if _ARCHIVE_HDU_KEY.match(card.keyword)
            or (afw and _ARCHIVE_ID_KEY.match(card.keyword) and archive_id(card))]
    if drop:
        log.info("%s: leaving out the LSST archive pointers %s (no such archive in psfmatch's files)", where,
                 [header.cards[i].keyword for i in drop])
    for i in reversed(drop):
        del header[i]
    return header


def _is_origin_key(key, alternate=True) -> bool:
    """Whether ``key`` records the image origin: IRAF's ``LTVn``/``LTMi_j``, or (``alternate``) the alternate
    ``A`` WCS (see :func:`_alternate_is_origin`)."""
    key = key.upper()
    return bool(_WCS_KEY.match(key)) and (key.startswith(("LTV", "LTM")) or (alternate and key.endswith("A")))


def _alternate_is_origin(cards) -> bool:
    """Whether the alternate WCS ``A`` of ``cards`` (a Header, or a mapping blind to case) is an image origin, as
    LSST and psfmatch write it and :func:`_xy0_from_header` reads it: ``CTYPE1A = 'LINEAR'`` (any case).  Any
    other (a sky one, an HST file's earlier astrometric solution, ``CTYPE1A = 'RA---TAN'``; one without
    ``CTYPE1A``, whose units are unknown) is a WCS of the image's own, kept with its other cards."""
    from astropy.io import fits

    if isinstance(cards, fits.Header):
        ctype = cards.get("CTYPE1A")
    else:
        ctype = next((v for k, v in cards.items() if isinstance(k, str) and k.upper() == "CTYPE1A"), None)
    return ctype is not None and str(ctype).strip().upper() == "LINEAR"


def _exposure_cards(hdul, img_hdu, has_wcs, inherited):
    """The header cards an exposure read from ``img_hdu`` of ``hdul`` keeps (``metadata["fitsHeader"]``).

    The primary header's cards, then those of the image's own header that the
    primary lacks (and its ``COMMENT`` and ``HISTORY``), without structural
    cards, psfmatch's own, and the image's origin, ``BUNIT`` and WCS (from the
    headers the WCS was read from: the image's, and the primary's when
    ``inherited``).
    """
    primary = hdul[0]
    if img_hdu is primary:
        return _primary_cards(primary.header, wcs=has_wcs, origin=True)
    cards = _primary_cards(primary.header, wcs=inherited)
    in_primary = set(cards.keys())  # (not the growing list: a keyword repeated in the image's header keeps all)
    for card in _primary_cards(img_hdu.header, wcs=has_wcs, origin=True).cards:
        if card.keyword not in in_primary or card.keyword in ("COMMENT", "HISTORY", ""):
            cards.append(card, end=True)
    return cards


def _stored_dtype(header) -> np.dtype:
    """The dtype astropy gives the data of an image HDU with ``header`` (before psfmatch converts it).

    astropy scales integers with ``BSCALE``/``BZERO`` (or ``BLANK``) to float32 (8 and 16 bits) or
    float64 (32 and 64 bits), except the unsigned-integer convention (``BSCALE = 1`` and ``BZERO =
    2**(bits-1)``, or -128 for signed bytes), which stays an integer.
    """
    bitpix = int(header.get("ZBITPIX", header.get("BITPIX")))
    if bitpix < 0:
        return np.dtype(np.float64 if bitpix == -64 else np.float32)
    bscale, bzero = header.get("BSCALE", 1), header.get("BZERO", 0)
    raw = np.dtype(f">i{bitpix // 8}") if bitpix > 8 else np.dtype(np.uint8)
    if bscale == 1 and bzero == 0:
        if "BLANK" not in header:
            return raw
    elif bscale == 1 and ((bitpix == 8 and bzero == -128) or (bitpix > 8 and bzero == 1 << (bitpix - 1))):
        return np.dtype(np.int8) if bitpix == 8 else np.dtype(f"u{bitpix // 8}")
    return np.dtype(np.float64 if bitpix > 16 else np.float32)


def _card_text(card):
    """The text ``card`` is written from (a copy is formatted; ``card`` itself is left as it is).

    An unchanged card read from a file: its text as read (``card.image`` would
    repair a non-standard card in place, with a warning; the caller repairs a
    new card made from this text).  A card whose value or comment was set
    since (astropy marks it modified but keeps the old text): made anew from
    its keyword, value and comment (one whose old value cannot be parsed: its
    text as read).  A card never formatted: its image.
    """
    raw = getattr(card, "_image", None)
    if not raw:
        return card.image
    if not getattr(card, "_modified", False):
        return raw
    from astropy.io.fits.verify import VerifyError

    try:  # parse what is still to be parsed from the old text, then format a copy without it
        card.keyword, card.value, card.comment  # noqa: B018
    except (VerifyError, ValueError):
        return raw  # a value astropy cannot parse (only its comment was set): repaired from the text as read
    fresh = copy.copy(card)
    fresh._image = None
    return fresh.image


def _user_cards_for_writing(user, where):
    """The cards of the caller's header ``user`` as new cards the FITS writer accepts.

    Non-standard cards (a lower-case keyword, an unquoted string) are repaired as
    astropy's ``verify("fix")`` does, and logged; a card that cannot be repaired
    is left out with a warning.  ``user`` is not modified.
    """
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyError

    out, fixed, dropped = [], [], []
    for card in user.cards:
        # on copies; repairs are told by verify's outcome, not by warnings (the process-wide filters would
        # also catch, and hide, other threads' warnings)
        try:
            raw = _card_text(card)
            new = fits.Card.fromstring(raw)
            try:
                new.verify("exception")
            except VerifyError:
                new = fits.Card.fromstring(raw)
                new.verify("silentfix")  # astropy's repair: keyword upper-cased, value quoted...
                new = fits.Card.fromstring(new.image)
                new.verify("exception")  # what the repair could not mend
                fixed.append(new.keyword)
            out.append(new)
        except (VerifyError, ValueError, TypeError) as exc:
            dropped.append(f"{card.keyword} ({_short(exc, 80)})")
    if fixed:
        log.warning("%s: header cards %s are not standard FITS and were repaired on writing (e.g. keyword upper-cased, "
                    "value quoted)", where, fixed)
    if dropped:
        log.warning("%s: header cards %s are not valid FITS and cannot be repaired: they are not written", where,
                    dropped)
    return out


def _json_default(value):
    """numpy scalars and arrays as their Python equivalents; anything else is not serializable."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _non_string_key(key, value):
    """Path (e.g. ``stats[1] (int)``) of the first non-string mapping key in the metadata entry ``key``, or None.

    Looks into nested dicts, lists, tuples and object arrays, as JSON writes them; walks them iteratively and
    visits each container once, so a deep or self-referencing value cannot exhaust the stack here.
    """
    nested = (dict, list, tuple, np.ndarray)
    stack, seen = [(key, value)], set()
    while stack:
        path, item = stack.pop()
        if id(item) in seen:
            continue
        if isinstance(item, dict):
            seen.add(id(item))
            for k in item:
                if not isinstance(k, str):
                    return f"{path}[{k!r}] ({type(k).__name__})"
            stack.extend((f"{path}[{k!r}]", v) for k, v in item.items() if isinstance(v, nested))
        elif isinstance(item, (list, tuple)):
            seen.add(id(item))
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item) if isinstance(v, nested))
        elif isinstance(item, np.ndarray) and item.dtype == object:  # (numeric arrays hold no mappings)
            seen.add(id(item))
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item.ravel()) if isinstance(v, nested))
    return None


def _metadata_to_hdu(metadata):
    from astropy.io import fits

    kept, dropped, not_str = {}, [], []
    for key, value in metadata.items():
        if key == METADATA_HEADER_KEY:
            continue
        if not isinstance(key, str):  # JSON would make it a string: 1 and "1" would collide, 1 come back as "1"
            not_str.append(f"{key!r} ({type(key).__name__})")
            continue
        bad_key = _non_string_key(key, value)  # the same one level or more down
        if bad_key is not None:
            not_str.append(bad_key)
            continue
        try:  # the entry's text as the whole is written (what passes here cannot fail below)
            kept[key] = json.dumps({key: value}, ensure_ascii=True, allow_nan=True, sort_keys=True,
                                   default=_json_default)
        except (TypeError, ValueError, RecursionError):
            dropped.append(str(key))
    if dropped:
        log.warning("metadata entries %s are not JSON-serializable and are not written", sorted(dropped))
    if not_str:
        log.warning("metadata entries whose keys are not strings are not written (a stored key is a string: they "
                    "would come back under another key, or replace an entry): %s; use string keys",
                    ", ".join(not_str))
    # the entries' texts, in key order: json.dumps(kept, sort_keys=True) of the values, without encoding them again
    text = "{" + ", ".join(kept[key][1:-1] for key in sorted(kept)) + "}"
    # the text's bytes (uint8), not a string column: astropy strips a string cell of trailing blanks
    # character by character on writing, a second for 300 kB of QA metadata
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    col = fits.Column(name="JSON", format=f"{max(raw.size, 1)}B", array=raw[None, :])
    return fits.BinTableHDU.from_columns([col], name="METADATA")


def _metadata_from_hdu(hdu, where):
    try:
        text = hdu.data["JSON"][0]
        if isinstance(text, np.ndarray):  # format 2: the text's bytes
            text = text.astype(np.uint8).tobytes()
        if isinstance(text, bytes):  # (format 1 wrote a string column)
            text = text.decode("ascii")
        value = json.loads(text)
    except Exception as exc:
        raise CorruptFileError(f"{where}[METADATA]: the JSON column cannot be decoded ({exc})") from exc
    if not isinstance(value, dict):
        raise CorruptFileError(f"{where}[METADATA]: the JSON column is not a mapping")
    return value


# ---------------------------------------------------------------------------
# writing


def lossless_compressed_hdu(data, header, name):
    """A tile-compressed image HDU (``CompImageHDU``) that reads back bit for bit.

    Floats are compressed with ``GZIP_2`` (which shuffles their bytes first) and no quantization,
    integers with ``RICE_1``.
    """
    from astropy.io import fits

    kind = ("GZIP_2", {"quantize_level": 0.0}) if np.dtype(data.dtype).kind == "f" else ("RICE_1", {})
    return fits.CompImageHDU(data, header, name=name, compression_type=kind[0], **kind[1])


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
    OutputNotWritableError
        If the directory of ``path`` does not accept the file (no permission,
        a read-only or full file system); an ``OSError`` naming the output.
    InvalidInputError
        If ``path`` is not a path (None, a number...), is empty or a directory,
        or a mask plane name cannot be stored in a FITS header (see ``psfmatch.image.check_plane_name``).

    Notes
    -----
    The PSF is stored as :mod:`psfmatch.io.psf_persist` describes (analytic
    models by their parameters, images and PSFEx models exactly, other models
    approximated).  Metadata entries that are not JSON-serializable, or
    holding a key that is not a string (theirs, or one nested in their
    dicts and lists), are skipped with a logged warning (naming the key,
    e.g. ``stats[1]``), except ``metadata["fitsHeader"]`` whose
    cards go into the primary header: non-standard cards (a lower-case
    keyword, an unquoted string) are repaired as astropy's ``verify("fix")``
    does and those that cannot be are left out, each with a logged warning;
    a WCS there is left out (the IMAGE extension carries the exposure's), and
    so are an LSST file's archive pointers (``AR_HDU``, ``PSF_ID``...: this
    file has no such archive).  A card changed since it was read is written
    with its new value and comment.

    The WCS is written as the primary description (an alternate one,
    ``WCS(header, key="B")``, too).  A lookup-table distortion (``CPDISj``/
    ``D2IMDISj`` with ``WCSDVARR``/``D2IMARR`` tables, as in HST files) cannot
    be stored: it is left out, with a logged warning, and the rest of the WCS
    (SIP polynomials included) is written.

    A name ending in ``.gz``, ``.bz2`` or ``.xz`` gives a compressed file; one
    ending in ``.fz`` (fpack's) a file whose image, mask, variance and image PSF
    HDUs are tile-compressed losslessly (``CompImageHDU``: floats with
    ``GZIP_2`` and no quantization, the mask with ``RICE_1``), read back bit for
    bit.

    Examples
    --------
    A round trip through a file: image, mask planes, variance, origin, PSF and
    metadata come back as written.

    >>> import os, tempfile
    >>> import numpy as np
    >>> from psfmatch import Exposure
    >>> from psfmatch.io import read_exposure, write_exposure
    >>> from psfmatch.psf import GaussianPsf
    >>> exposure = Exposure(np.ones((40, 50), dtype=np.float32), variance=np.full((40, 50), 4.0),
    ...                     psf=GaussianPsf(15, 15, 2.0), xy0=(100, 200), metadata={"filter": "r"})
    >>> exposure.mask[5, 7] |= exposure.getMask().getPlaneBitMask("SAT")
    >>> path = os.path.join(tempfile.mkdtemp(), "exposure.fits")
    >>> write_exposure(exposure, path)
    >>> back = read_exposure(path)
    >>> back.getBBox(), back.getPsf(), back.metadata["filter"]
    (Box2I(minimum=(100, 200), dimensions=(50, 40)), GaussianPsf(15, 15, sigma=2.0), 'r')
    >>> bool(np.array_equal(back.image, exposure.image)), int(back.mask[5, 7]) == back.getMask().getPlaneBitMask("SAT")
    (True, True)
    """
    from astropy.io import fits

    from .psf_persist import psf_to_hdus

    if not isinstance(exposure, Exposure):
        raise InvalidInputError(f"write_exposure needs an Exposure; got {type(exposure).__name__}")
    path = as_path(path, "write_exposure's path")
    primary = fits.PrimaryHDU()
    user = exposure.metadata.get(METADATA_HEADER_KEY)
    if user is not None:
        if not isinstance(user, fits.Header):
            try:
                user = fits.Header(user)
            except Exception:
                raise InvalidInputError(f"metadata[{METADATA_HEADER_KEY!r}] must be an astropy Header or a "
                                        f"mapping of FITS cards; got {type(user).__name__}") from None
        # a WCS there would be inherited by the extensions (INHERIT = T): the IMAGE header carries the exposure's
        kept = _drop_archive_pointers(_primary_cards(user, wcs=_defines_wcs(user)), path)
        for card in _user_cards_for_writing(kept, path):
            primary.header.append(card, end=True)
    primary.header["PMFORMAT"] = (FORMAT_NAME, "written by psfmatch")
    primary.header["PMVERS"] = (FORMAT_VERSION, "psfmatch exposure format version")
    # a sky alternate WCS A kept among the caller's cards has a matrix the planes' origin WCS A (INHERIT = T) would
    # inherit from the primary header in readers that merge them: the planes then state their identity matrix
    alternate_matrix = any(f"{kind}{i}_{j}A" in primary.header for kind in ("CD", "PC") for i in (1, 2)
                           for j in (1, 2)) or any(f"CDELT{i}A" in primary.header for i in (1, 2))

    wcs_header = None
    wcs = exposure.getWcs()
    if wcs is not None:
        try:
            with catch_warnings("ignore"):
                # as the primary description (key " "): an alternate one (CTYPE1B...) would be read back as no WCS
                wcs_header = wcs.to_header(relax=True, key=" ")
        except Exception as exc:
            raise InvalidInputError(f"the exposure's WCS cannot be written to FITS: {exc}") from exc
        lookup = [name for name in ("cpdis1", "cpdis2", "det2im1", "det2im2") if getattr(wcs, name, None) is not None]
        if lookup:
            log.warning("%s: the WCS's lookup-table distortion (%s) is not written (psfmatch's files do not store "
                        "WCSDVARR/D2IMARR tables): the file's WCS is the rest of it (e.g. its SIP polynomials)",
                        path, ", ".join(lookup))

    compressed = path.lower().endswith(".fz")

    def plane_hdu(data, header, name):
        """An image HDU; tile-compressed, losslessly, for an fpack name (``.fz``)."""
        if not compressed:
            return fits.ImageHDU(data, header, name=name)
        return lossless_compressed_hdu(data, header, name)

    def image_hdu(data, name):
        hdu = plane_hdu(data, None, name)
        hdu.header["EXTTYPE"] = name
        hdu.header["INHERIT"] = True
        if wcs_header is not None:
            hdu.header.update(wcs_header)
        _xy0_to_header(hdu.header, exposure.getXY0())
        if alternate_matrix:
            for i in (1, 2):
                for j in (1, 2):
                    hdu.header[f"CD{i}_{j}A"] = (float(i == j), "parent pixel coordinates (identity)")
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
        for hdu in psf_to_hdus(exposure.getPsf(), bbox=exposure.getBBox()):
            if compressed and type(hdu) is fits.ImageHDU and hdu.data is not None:
                hdu = plane_hdu(hdu.data, hdu.header, hdu.name)
            hdus.append(hdu)
    hdus.append(_metadata_to_hdu(exposure.metadata))
    with atomic_write(path, overwrite=overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp, output_verify="exception", checksum=True)


# ---------------------------------------------------------------------------
# reading


def _load_plane(spec, hdul, path, what, image_hdu=None):
    """An array from ``spec``: an array, an HDU index/name in ``hdul`` (or an ``(EXTNAME, EXTVER)`` pair of it), a
    path, or ``(path, hdu)``.

    A bare name that several HDUs of ``hdul`` carry (one per chip: ``SCI,1``, ``SCI,2``...) is the one with the
    image HDU's ``EXTVER`` (``image_hdu``); without one of that version it is refused as ambiguous.
    """
    if isinstance(spec, np.ndarray):
        return np.array(spec), f"<{what} array>"
    in_file = (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)
               and isinstance(spec[1], (int, np.integer)) and not isinstance(spec[1], bool)
               and not os.path.exists(spec[0]) and not _looks_like_fits_name(spec[0])
               and spec[0].upper() in [h.name.upper() for h in hdul])
    if in_file or isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and not os.path.exists(spec)
                                                           and not _looks_like_fits_name(spec)):
        key = (spec[0], int(spec[1])) if in_file else spec
        if isinstance(spec, str):
            same = [h for h in hdul if h.name.upper() == spec.upper()]
            if len(same) > 1:
                ver = getattr(image_hdu, "ver", None)
                match = [h for h in same if ver is not None and h.ver == ver]
                if len(match) != 1:
                    index = [i for i, h in enumerate(hdul) if h.name.upper() == spec.upper()]
                    versions = sorted({h.ver for h in same})
                    why = (f"none has the image's EXTVER {ver}" if not match else
                           f"{len(match)} of them have the image's EXTVER {ver}")
                    remedy = (f"give the {what} as ({spec!r}, EXTVER)" if len(versions) == len(same) else
                              f"give the {what} by its HDU index ({' or '.join(map(str, index))})")
                    raise UnsupportedFormatError(
                        f"{path}: {len(same)} HDUs are named {spec!r} (at indices {index}, EXTVER "
                        f"{[h.ver for h in same]}) and {why}; {remedy}")
                key = (spec, ver)
        try:
            hdu = hdul[key]
        except (KeyError, IndexError):
            raise UnsupportedFormatError(
                f"{path}: no HDU {key!r} for the {what}; the file has "
                f"{[(h.name, h.ver) if h.ver != 1 else h.name for h in hdul]}") from None
        label = f"{key[0]},{key[1]}" if isinstance(key, tuple) else key
        if hdu.data is None:
            raise UnsupportedFormatError(f"{path}[{label}]: the {what} HDU holds no data")
        return np.array(hdu.data), f"{path}[{label}]"
    other, ext = (spec if isinstance(spec, tuple) else (spec, None))
    with open_fits(other, what) as (h2, _):
        other = os.fspath(other)
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


def _looks_like_fits_name(name) -> bool:
    """Whether ``name`` ends like a FITS file name (so that it is read as a path, not an HDU name)."""
    return str(name).lower().endswith((".fits", ".fit", ".fts", ".fz", ".gz", ".bz2", ".xz"))


def no_image_remedy(hdul) -> str:
    """What to do with a FITS file in which no 2-d image HDU was found: the remedy for an error message.

    A PSFEx or Piff model (a table of PSF coefficients) is named as such with the way to read it.
    Otherwise there is no HDU that ``hdu=`` could choose, so the remedy is another file.
    """
    from astropy.io import fits

    from ..psf.psfex import is_psfex

    def columns(h):
        n = int(h.header.get("TFIELDS", 0))
        return [str(h.header.get(f"TTYPE{i}", "")).strip().upper() for i in range(1, n + 1)]

    tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
    if is_psfex(hdul):
        return ("it is a PSFEx PSF model (a PSF_DATA table), not an image: read it with read_psf or read_psfex "
                "(on the command line, as the PSF psfex:FILE)")
    if any(h.name.upper() == "PSF" and "TYPE" in columns(h) for h in tables):
        return ("it is a Piff PSF model (a PSF table), not an image: read it with read_psf (on the command line, "
                "as the PSF piff:FILE)")
    images = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    others = [f"{h.name or i} ({h.header.get('NAXIS', 0)}-d)" for i, h in enumerate(hdul)
              if isinstance(h, images) and int(h.header.get("NAXIS", 0)) > 0]
    if others:
        return f"its image HDUs are {', '.join(others)}, none 2-d: give a file with a 2-d image"
    return "it holds no image (only tables or empty headers): give the file holding the image"


def _say_unread_planes(hdul, img_hdu, shape, where, mask, variance):
    """Warn about a plain image's other 2-d HDUs of its shape that neither ``mask`` nor ``variance`` names.

    (DES's MSK and WGT, say: a plain image's other planes are not guessed, but said.)  Headers
    only: the other HDUs' pixels are not read (a file of 60 CCDs would be decompressed whole).
    """
    from astropy.io import fits

    named = []
    for spec in (mask, variance):
        if isinstance(spec, (int, np.integer, str)):
            try:
                named.append(hdul[spec])
            except (KeyError, IndexError):
                pass
    unread = []
    for i, h in enumerate(hdul):
        if h is img_hdu or any(h is n for n in named):
            continue
        if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and tuple(h.shape) == tuple(shape):
            unread.append(h.name or str(i))
    if not unread:
        return
    missing = [what for what, spec in (("mask", mask), ("variance", variance)) if spec is None]
    options = " ".join({"mask": "--mask HDU", "variance": "--variance HDU --variance-kind KIND"}[m] for m in missing)
    log.warning("%s: HDU(s) %s, of the image's shape, are not read: give the %s as %s (%s), or psfmatch run %s",
                where, ", ".join(unread), " and the ".join(missing), " and ".join(f"{m}=" for m in missing),
                "variance_kind='invvar' for a weight map, 'stddev' for an error plane" if "variance" in missing
                else "an HDU name or index", options)


def _estimate_variance(image, where, remedy="Pass variance= (an HDU, a file or an array; psfmatch run --variance)"):
    """A constant variance from the robust scatter of ``image``'s finite pixels, with a logged warning.

    ``where`` names the source and ``remedy`` the way to give a real variance.
    """
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        raise CorruptFileError(f"{where}: the image has no finite pixel; cannot estimate a variance")
    with np.errstate(over="ignore", invalid="ignore"):
        mad = np.median(np.abs(finite - np.median(finite)))
        sigma = 1.4826 * mad
        var = sigma ** 2
    if not (np.isfinite(var) and var <= np.finfo(image.dtype).max):
        raise CorruptFileError(f"{where}: the pixels' scatter overflows {image.dtype} (values up to "
                               f"{np.abs(finite).max():.3g}); cannot estimate a variance. {remedy}")
    log.warning("%s: no variance plane given; using a constant variance %.6g estimated from the robust scatter "
                "(1.4826 MAD) of the pixels. %s for a real one.", where, var, remedy)
    return np.full(image.shape, var, dtype=image.dtype)


def _as_variance(arr, kind, where):
    arr = np.asarray(arr, dtype=np.float64)
    if kind == "variance":
        out = arr
    elif kind == "stddev":
        if np.any(arr < 0):  # (squared, they would pass for a valid variance)
            raise CorruptFileError(f"{where}: the standard deviation has negative values; check variance_kind "
                                   f"({kind!r})")
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
    """A new array of the plane type :func:`~psfmatch.image.plane_dtype` gives (one conversion)."""
    return arr.astype(plane_dtype(arr.dtype), copy=True)


def _layout(hdul):
    names = [h.name.upper() for h in hdul]
    if str(hdul[0].header.get("PMFORMAT", "")).strip() == FORMAT_NAME:
        return "psfmatch"
    if "IMAGE" in names and ("MASK" in names or "VARIANCE" in names):
        return "lsst"
    return "image"


def unread_psf_note(path) -> str:
    """Why an exposure file read without a PSF may still hold one: ``" (an LSST-style file: ...)"``, or ``""``.

    An LSST-style file (``IMAGE`` with ``MASK`` or ``VARIANCE``) keeps its PSF in afw's archive tables, which
    psfmatch does not read; a user told the file "carries no PSF model" would look for the wrong mistake.
    """
    from astropy.io import fits

    try:
        with catch_warnings("ignore"), fits.open(os.fspath(path), lazy_load_hdus=True) as hdul:
            if _layout(hdul) != "lsst":
                return ""
    except Exception:  # (unreadable here: the reader has said why already, or will)
        return ""
    return (" psfmatch reads (an LSST-style file: its own PSF, in afw's archive tables, is not read; give the "
            "PSFEx or Piff model it was made from, or an image of it)")


def header_unit(header):
    """``BUNIT`` of an image header as psfmatch takes it: the stripped text, None when absent or blank."""
    text = str(header.get("BUNIT", "")).strip()
    return text or None


@dataclass(frozen=True)
class ExposureFileInfo:
    """What an exposure file holds besides its pixels (:func:`read_exposure_info`).

    Attributes
    ----------
    path : str
    layout : {"psfmatch", "lsst"}
    shape : (int, int)
        ``(height, width)`` of the image, mask and variance planes.
    xy0 : (int, int)
        Parent coordinates of the first pixel.
    dtype : numpy.dtype
        The image's pixel type once read (float32 or float64).
    wcs : astropy.wcs.WCS or None
    mask_planes : dict
        Plane name to bit number (the default planes when the file names none).
    psf : PSF model or None
        The stored PSF (psfmatch layout; None when not read or not stored).
    unit : str or None
        ``BUNIT`` of the image.
    metadata : dict
        The stored metadata (psfmatch layout, when asked for), else empty.
    calibration : dict
        The photometric calibration cards of its primary and image headers
        (:data:`psfmatch.calib.CALIBRATION_CARDS`: ``MAGZERO``, ``FLUXMAG0``...), by name.
    calibration_header : astropy.io.fits.Header or None
        The same cards as the exposure read from the file keeps them, a repeated
        keyword's every card (:func:`psfmatch.calib.calibration_header`).
    """

    path: str
    layout: str
    shape: tuple
    xy0: tuple
    dtype: np.dtype
    wcs: object
    mask_planes: dict
    psf: object = None
    unit: str | None = None
    metadata: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    calibration_header: object = None

    def getBBox(self):
        """The exposure's box in parent coordinates."""
        from ..geom import Box2I

        return Box2I(self.xy0, (self.shape[1], self.shape[0]))


def read_exposure_info(path, *, psf=True, metadata=False) -> ExposureFileInfo:
    """The geometry, WCS, mask planes, PSF and metadata of an exposure file, without reading its pixels.

    For the files :func:`write_exposure` writes and LSST-style ones (``IMAGE``,
    ``MASK`` and ``VARIANCE`` extensions): only the headers are read, plus the
    PSF's extensions when ``psf`` is True and the ``METADATA`` table when
    ``metadata`` is True.  A coadd checks its inputs' grids this way before
    reading any pixel.

    Raises
    ------
    InvalidInputError
        If ``path`` is not a path (None, a number...).
    MissingFileError
        If the file does not exist.
    UnsupportedFormatError
        If it lacks an ``IMAGE``, ``MASK`` or ``VARIANCE`` extension (a plain
        image: read it with :func:`read_exposure`).
    CorruptFileError
        If it is not readable FITS, a plane is not 2-d, the planes differ in
        shape, or a stored structure cannot be decoded.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from psfmatch import Exposure
    >>> from psfmatch.psf import GaussianPsf
    >>> path = os.path.join(tempfile.mkdtemp(), "e.fits")
    >>> Exposure(np.zeros((40, 50), np.float32), psf=GaussianPsf(15, 15, 2.0), xy0=(100, 200)).writeFits(path)
    >>> info = read_exposure_info(path)
    >>> info.shape, info.getBBox().getMin(), info.psf
    ((40, 50), Point2I(x=100, y=200), GaussianPsf(15, 15, sigma=2.0))
    """
    from ..calib import calibration_cards, calibration_header

    path = as_path(path, "read_exposure_info's path")
    with open_fits(path, "exposure") as (hdul, guard):
        names = [h.name.upper() for h in hdul]
        missing = [n for n in ("IMAGE", "MASK", "VARIANCE") if n not in names]
        if missing:
            raise UnsupportedFormatError(
                f"{path}: no {', '.join(missing)} HDU(s) (HDUs: {names}); not a psfmatch or LSST-style exposure "
                "file (read a plain image with read_exposure)")
        layout = _layout(hdul)
        shapes = {}
        for n in ("IMAGE", "MASK", "VARIANCE"):
            guard.hdu = n
            h = hdul[n].header
            if int(h.get("NAXIS", 0)) != 2:
                raise CorruptFileError(f"{path}[{n}]: not a 2-d image (NAXIS = {h.get('NAXIS')})")
            shapes[n] = (int(h["NAXIS2"]), int(h["NAXIS1"]))
        if len(set(shapes.values())) != 1:
            raise CorruptFileError(f"{path}: the planes differ in shape: {shapes}")
        guard.hdu = "IMAGE"
        himg = hdul["IMAGE"].header
        planes = _mask_planes_from_header(hdul["MASK"].header, f"{path}[MASK]")
        if planes is None:
            from ..image import DEFAULT_MASK_PLANES

            planes = dict(DEFAULT_MASK_PLANES)
        stored_psf, md = None, {}
        if psf and "PSF" in names:
            from .psf_persist import psf_from_hdul

            guard.hdu = "PSF"
            stored_psf = psf_from_hdul(hdul, path)
        if metadata and layout == "psfmatch" and "METADATA" in names:
            guard.hdu = "METADATA"
            md = _metadata_from_hdu(hdul["METADATA"], path)
        guard.hdu = "IMAGE"
        cal = calibration_header(hdul[0].header, himg)
        return ExposureFileInfo(
            path=path, layout=layout, shape=shapes["IMAGE"], xy0=tuple(_xy0_from_header(himg, f"{path}[IMAGE]")),
            dtype=plane_dtype(_stored_dtype(himg)), wcs=_image_wcs(hdul, hdul["IMAGE"], f"{path}[IMAGE]")[0],
            mask_planes=planes, psf=stored_psf,
            unit=header_unit(himg), metadata=md, calibration=calibration_cards(cal), calibration_header=cal)


def read_exposure(path, *, layout=None, hdu=None, mask=None, variance=None, variance_kind="variance",
                  psf=None, xy0=None, mask_plane="BAD") -> Exposure:
    """Read an exposure from a FITS file.

    Parameters
    ----------
    path : str or path-like
        The file.
    layout : {"psfmatch", "lsst", "image"}, optional
        Force a layout; by default it is sniffed: psfmatch's (``PMFORMAT`` in
        the primary header), LSST-style (an ``IMAGE`` extension with a ``MASK``
        or ``VARIANCE`` one), else a plain image.
    hdu : int, str or (str, int), optional
        For the plain-image layout: the HDU holding the image, by index, name
        or ``(EXTNAME, EXTVER)`` (default the HDU named ``IMAGE`` or ``SCI``,
        which must be 2-d, else the first 2-d HDU not named as a data-quality,
        mask, error, variance or weight plane: :data:`AUXILIARY_HDU_NAMES`).
        For the psfmatch and LSST layouts only their ``IMAGE`` HDU may be named.
    mask, variance : int, str, (str, int), path, (path, hdu) or ndarray, optional
        For the plain-image layout (and to replace a missing plane in the
        others): an HDU of the same file (an index, a name, or an ``(EXTNAME,
        EXTVER)`` pair; a bare name that several HDUs carry, one per chip, is
        the one with the image's ``EXTVER``), another file, or an array.  An
        integer mask is taken as bit planes (default plane names); a boolean
        array sets ``mask_plane``.  Without a variance one is estimated (a
        constant from the robust pixel scatter) and a warning is logged; a
        plain image's other 2-d HDUs of the image's shape that neither names
        (DES's MSK and WGT, say) are listed in a logged warning, with the
        remedy.
    variance_kind : {"variance", "stddev", "invvar"}
        What the ``variance`` plane given holds (an ERR plane is ``"stddev"``,
        a weight map ``"invvar"``; zero or negative weight gives infinite
        variance, a negative variance or standard deviation is refused).
    psf : PSF model or path, optional
        The exposure's PSF; a path is read with :func:`psfmatch.psf.read_psf`.
        Overrides a PSF stored in a psfmatch file.
    xy0 : (int, int), optional
        The image origin; overrides the file's (psfmatch's and LSST's ``CRVAL1A``/
        ``CRVAL2A``, else IRAF's ``-LTV1``/``-LTV2`` when ``LTMi_j`` is absent or
        the identity; a binned section's origin is ``(0, 0)``).
    mask_plane : str
        Plane set by a boolean ``mask`` array.

    Returns
    -------
    Exposure
        ``metadata["fitsHeader"]`` holds the primary header's cards and those
        the image's own header adds, less the structural ones and those
        describing the image's WCS, origin and unit (``metadata["unit"]``).  An
        image extension without a WCS takes the primary header's (``INHERIT``),
        and without ``BUNIT`` the primary's when it inherits (``INHERIT = T``).

    Raises
    ------
    MissingFileError
        If a file does not exist (a `FileNotFoundError`).
    InvalidInputError
        If ``path`` is not a path (None, a number...), ``layout`` is unknown,
        ``hdu`` names anything but the ``IMAGE`` HDU of a psfmatch or
        LSST-style file, or a ``mask`` or ``variance`` given has another shape
        than the image (the message names where it came from).
    UnsupportedFormatError
        If no image can be found (the HDU named ``IMAGE`` or ``SCI`` is not
        2-d, or only auxiliary planes are), a named HDU is missing or ambiguous
        (several of one name, none with the image's ``EXTVER``), the mask holds
        no integers, the path is a directory, or the file is a psfmatch
        matching-kernel file.
    CorruptFileError
        If the file is not readable FITS, is truncated (or lacks an HDU every
        psfmatch exposure file has) or damaged, the planes disagree in shape,
        the image is not 2-d, a variance or standard deviation is negative, or
        a stored structure cannot be decoded.  The
        message names the file and, where known, the HDU.
    """
    from astropy.io import fits

    path = as_path(path, "read_exposure's path")
    with open_fits(path, "exposure") as (hdul, guard):
        from .kernel_fits import KERNEL_FORMAT, KERNEL_GRID_FORMAT

        try:
            product = str(hdul[0].header.get("PMFORMAT", "")).strip()
        except Exception:  # a damaged card: not recognized as psfmatch's
            product = ""
        if product in (KERNEL_FORMAT, KERNEL_GRID_FORMAT):
            raise UnsupportedFormatError(
                f"{path}: a psfmatch matching-kernel file (PMFORMAT = {product!r}), not an exposure; read it with "
                "psfmatch.io.read_kernel, and give the exposure's own file")
        layout = layout or _layout(hdul)
        if layout not in ("psfmatch", "lsst", "image"):
            raise InvalidInputError(f"layout must be 'psfmatch', 'lsst' or 'image'; got {layout!r}")
        if hdu is not None and layout != "image":
            names = [h.name.upper() for h in hdul]
            is_image = (isinstance(hdu, str) and hdu.strip().upper() == "IMAGE") or (
                isinstance(hdu, (int, np.integer)) and 0 <= int(hdu) < len(names) and names[int(hdu)] == "IMAGE")
            if not is_image:
                raise InvalidInputError(
                    f"{path}: hdu={hdu!r} chooses the image of a plain FITS file; this is a {layout} exposure file, "
                    "whose image is its IMAGE HDU (leave hdu out, or read it as a plain image with layout='image')")
        metadata = {}
        stored_psf = None
        mask_planes = None
        if layout in ("psfmatch", "lsst"):
            names = [h.name.upper() for h in hdul]
            if "IMAGE" not in names:
                raise UnsupportedFormatError(f"{path}: no IMAGE extension for the {layout!r} layout "
                                             f"(HDUs: {names})")
            if layout == "psfmatch":  # write_exposure writes all of them: a missing one means a truncated file
                lost = [n for n, given in (("MASK", mask), ("VARIANCE", variance), ("METADATA", None))
                        if given is None and n not in names]
                if lost:
                    raise CorruptFileError(f"{path}: the {', '.join(lost)} HDU(s) of a psfmatch exposure file are "
                                           f"missing (HDUs: {names}); the file is truncated or damaged")
            guard.hdu = "IMAGE"
            img_hdu = hdul["IMAGE"]
            if img_hdu.data is None or img_hdu.data.ndim != 2:
                raise CorruptFileError(f"{path}[IMAGE]: the image must be 2-d; got "
                                       f"{None if img_hdu.data is None else img_hdu.data.shape}")
            image = _image_dtype(img_hdu.data)
            header = img_hdu.header
            where = f"{path}[IMAGE]"
            mask_arr = variance_arr = None
            guard.hdu = "MASK"
            if mask is None and "MASK" in names and hdul["MASK"].data is not None:
                mask_arr = np.asarray(hdul["MASK"].data)  # converted (copied) to native int32 below
                mask_planes = _mask_planes_from_header(hdul["MASK"].header, f"{path}[MASK]")
            guard.hdu = "VARIANCE"
            if variance is None and "VARIANCE" in names and hdul["VARIANCE"].data is not None:
                variance_arr = _image_dtype(hdul["VARIANCE"].data)
            if layout == "psfmatch":
                guard.hdu = "METADATA"
                if "METADATA" in names:
                    metadata.update(_metadata_from_hdu(hdul["METADATA"], path))
                if psf is None:
                    from .psf_persist import psf_from_hdul

                    guard.hdu = "PSF"
                    stored_psf = psf_from_hdul(hdul, path)
            elif psf is None:
                log.info("%s: LSST-style file; its PSF (in the archive tables) is not read: pass psf=", path)
        else:
            if hdu is None:
                with_data = [h for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
                             and h.data is not None]
                named = next((h for h in with_data if h.name.upper() in ("IMAGE", "SCI")), None)
                if named is not None and named.data.ndim != 2:
                    # (another HDU, a DQ plane, must not be read as the science image in its place)
                    raise UnsupportedFormatError(
                        f"{path}[{named.name}]: the science image is {named.data.ndim}-d, shape {named.data.shape}; "
                        "psfmatch matches 2-d images: write one plane of it to a file (or pass it as an array to "
                        "Exposure), or give hdu= for another 2-d image HDU")
                images = [h for h in with_data if h.data.ndim == 2]
                # the HDU named for the science image (IMAGE, SCI) before any other 2-d HDU, and never one named
                # as a data-quality, mask, error or weight plane
                img_hdu = named or next((h for h in images if h.name.upper() not in AUXILIARY_HDU_NAMES), None)
                if img_hdu is None:
                    aux = [h.name for h in images]
                    raise UnsupportedFormatError(
                        f"{path}: no 2-d image HDU (HDUs: {[h.name for h in hdul]}); "
                        + (f"{aux} are named as data-quality, mask, error or weight planes: give hdu= to read one "
                           "as the image" if aux else no_image_remedy(hdul)))
            else:
                try:
                    img_hdu = hdul[hdu]
                except (KeyError, IndexError):
                    raise UnsupportedFormatError(f"{path}: no HDU {hdu!r}; the file has "
                                                 f"{[h.name for h in hdul]}") from None
                if img_hdu.data is None or getattr(img_hdu.data, "ndim", 0) != 2:
                    raise UnsupportedFormatError(f"{path}[{hdu}]: not a 2-d image HDU")
            guard.hdu = img_hdu.name or 0
            image = _image_dtype(img_hdu.data)
            header = img_hdu.header
            where = f"{path}[{img_hdu.name or 0}]"
            mask_arr = variance_arr = None
            if mask is None or variance is None:
                _say_unread_planes(hdul, img_hdu, image.shape, where, mask, variance)
        guard.hdu = img_hdu.name or 0
        wcs, inherited = _image_wcs(hdul, img_hdu, where)
        guard.hdu = "PRIMARY"
        metadata[METADATA_HEADER_KEY] = _exposure_cards(hdul, img_hdu, wcs is not None, inherited)
        if layout == "lsst":
            _drop_archive_pointers(metadata[METADATA_HEADER_KEY], path, afw=True)
        guard.hdu = None
        mwhere = vwhere = None
        if mask is not None:
            mask_arr, mwhere = _load_plane(mask, hdul, path, "mask", img_hdu)
        if variance is not None:
            raw, vwhere = _load_plane(variance, hdul, path, "variance", img_hdu)
            variance_arr = _as_variance(raw, variance_kind, vwhere)
        for name, arr, src in (("mask", mask_arr, mwhere), ("variance", variance_arr, vwhere)):
            if arr is not None and arr.shape != image.shape:
                given = f" ({src})" if src else ""
                raise InvalidInputError(
                    f"{where}: the {name} plane{given} has shape {arr.shape}, the image {image.shape}; give the "
                    f"{name} plane of this image ({name}=)")
        if variance_arr is None:
            variance_arr = _estimate_variance(image, where)
        if mask_arr is not None:
            if mask_arr.dtype == bool:
                m = Mask.from_bool(mask_arr, mask_plane, planes=mask_planes)
            elif np.issubdtype(mask_arr.dtype, np.integer):
                try:  # copied into a new native int32 array (the caller's, when mask= is an array)
                    m = Mask(mask_arr, planes=mask_planes)
                except InvalidInputError as exc:
                    raise UnsupportedFormatError(f"{path}: {exc}") from None
            else:
                raise UnsupportedFormatError(
                    f"{mwhere or path}: the mask must hold integer bits; got dtype {mask_arr.dtype}: pass mask= as an "
                    "array of booleans (e.g. data != 0) or of integers (data.astype(int)) if its values are bits")
        else:
            m = Mask(shape=image.shape, planes=mask_planes)
        if header_unit(header) is not None:
            metadata.setdefault("unit", header_unit(header))
        elif header.get("INHERIT") is True and img_hdu is not hdul[0] and header_unit(hdul[0].header) is not None:
            # (an extension that inherits the primary's cards has the primary's unit: the image's, not a card of
            # the exposure's header to carry along)
            metadata.setdefault("unit", header_unit(hdul[0].header))
            cards = metadata.get(METADATA_HEADER_KEY)
            if cards is not None and "BUNIT" in cards:
                del cards["BUNIT"]
        origin = _xy0_from_header(header, where) if xy0 is None else xy0
    if psf is not None and isinstance(psf, (str, os.PathLike)):
        from ..psf.readers import read_psf

        psf = read_psf(psf)
    # every plane is a new array by now (read, converted or estimated): handed over, not copied again
    exp = Exposure(image, m, variance_arr.astype(image.dtype, copy=False), psf=psf if psf is not None else stored_psf,
                   wcs=wcs, xy0=origin, metadata=metadata, mask_planes=mask_planes, copy=False)
    return exp

