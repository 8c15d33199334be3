"""The matching kernel in FITS: save it, load it, and export its images on a grid.

Kernel file layout (``PMFORMAT = 'psfmatch-kernel'``)
-----------------------------------------------------
==========  =====================================================================
HDU         content
==========  =====================================================================
PRIMARY     no data; ``KSUM`` (kernelSum) and ``KSUMSTR`` (the same, exactly),
            ``BASKIND`` (basis kind), ``KSIZE``,
            ``NBASIS``, ``NSPATIAL``, the spatial function (``SPKIND``,
            ``SPORDER`` and its box ``SPMINX``..``SPMAXY``, pixel edges), the
            fitted box (``BBX0``, ``BBY0``, ``BBW``, ``BBH``), ``CONVENTN``
BASIS       float64 cube ``(n_basis, k, k)``; the basis description as JSON in
            the long-string card ``DESCRIPT``
COEFFS      float64 ``(n_basis, n_spatial)``: the spatial coefficients theta
==========  =====================================================================

Loading gives back a :class:`~psfmatch.kernel.kernel.LinearCombinationKernel`
whose images equal the saved one's bit for bit.

Exact floating-point cards: astropy writes a float card's value in at most 20
characters (13 to 17 significant digits), fewer than a float64 can need.
Beside such a card (``KSUM`` here and in a kernel-image grid, ``PIXSCALE`` of
a stored ``ImagePsf``) psfmatch writes the value's shortest exact decimal form
(Python's ``repr``, e.g. ``KSUMSTR = '1.2345678901234568e-05'``) as a string
card (``KSUMSTR``, ``PIXSCSTR``), which reading prefers; files without it read
the float card.  A string card that does not parse as a finite number, or
whose value, cut off or rounded to the digits the float card holds, is not the
float card's value (one of the two was edited), is a
:class:`~psfmatch.errors.CorruptFileError` naming the keyword.

Kernel images are for a *convolution* (``matched = science (*) K``); an
image-grid export with ``lsst=True`` flips them for LSST's afw, which applies
kernels as correlations.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import math
import numbers
import re

import numpy as np

from ..errors import (CorruptFileError, InvalidConfigError, InvalidInputError, MemoryLimitError,
                      UnsupportedFormatError)
from ..geom import Box2D, Box2I
from ..kernel.basis import KernelBasis
from ..kernel.kernel import LinearCombinationKernel, _describe, _positions
from ..kernel.spatial import SpatialFunction
from .fits import as_path, atomic_write, open_fits

__all__ = ["write_kernel", "read_kernel", "kernel_image_grid", "write_kernel_image_grid", "KERNEL_FORMAT"]

KERNEL_FORMAT = "psfmatch-kernel"
#: The kernel file format version :func:`write_kernel` writes (``PMVERS``); :func:`read_kernel` refuses later ones.
KERNEL_FORMAT_VERSION = 1
KERNEL_GRID_FORMAT = "psfmatch-kernel-grid"

#: The largest cube of kernel images :func:`kernel_image_grid` computes by default, in bytes (float64): the
#: task's default ``maxMemoryGiB`` (``max_memory_bytes=`` sets another).
MAX_GRID_BYTES = 8 * 2 ** 30


#: The string card holding the exact value of each float card written with one.
EXACT_FLOAT_KEYS = {"KSUM": "KSUMSTR", "PIXSCALE": "PIXSCSTR"}
_FLOAT_TEXT = re.compile(r"\s*[+-]?(\d*)(?:\.(\d*))?(?:[EeDd][+-]?\d+)?\s*")


def write_exact_float(header, key, value, comment) -> None:
    """Set the float card ``key`` and its exact string companion (:data:`EXACT_FLOAT_KEYS`)."""
    value = float(value)
    header[key] = (value, comment)
    header[EXACT_FLOAT_KEYS[key]] = (repr(value), f"{key} exactly")


def _written_digits(header, key):
    """The number of significant digits of the card ``key`` as it stands in the file, or None."""
    image = header.cards[key].image
    m = _FLOAT_TEXT.fullmatch(image[10:].split("/", 1)[0]) if image[8:10] == "= " else None
    digits = (m.group(1) + (m.group(2) or "")).lstrip("0") if m else ""
    return len(digits) or None


def _agrees(exact, value, digits) -> bool:
    """Whether ``value`` is ``exact`` written with ``digits`` significant digits, cut off (as astropy
    shortens a long card) or rounded (as C's printf and others do)."""
    if exact == value:
        return True
    shortest = decimal.Decimal(repr(exact))
    for number, rounding in ((shortest, decimal.ROUND_DOWN), (shortest, decimal.ROUND_HALF_UP),
                             (decimal.Decimal(exact), decimal.ROUND_HALF_EVEN)):
        if float(decimal.Context(prec=digits, rounding=rounding).plus(number)) == value:
            return True
    return False


def read_exact_float(header, key, where) -> float:
    """The value of the float card ``key``, exactly when its string companion is there.

    Raises
    ------
    CorruptFileError
        If ``key`` is not a finite number, or its companion does not parse as
        a finite number or disagrees with it (see the module docstring).
    """
    exact_key = EXACT_FLOAT_KEYS[key]
    card = header[key]
    try:
        if isinstance(card, (str, bool)):
            raise ValueError
        value = float(card)
    except (TypeError, ValueError):
        raise CorruptFileError(f"{where}: {key} = {card!r} is not a number") from None
    if not math.isfinite(value):
        raise CorruptFileError(f"{where}: {key} = {card!r} is not finite")
    if exact_key not in header:
        return value
    text = header[exact_key]
    try:
        if not isinstance(text, str):
            raise ValueError
        exact = float(text.strip())
    except ValueError:
        raise CorruptFileError(f"{where}: {exact_key} = {text!r} (the exact value of {key}) is not a number; the "
                               f"header was damaged or edited (delete {exact_key} to use {key} = {card!r})") from None
    if not (math.isfinite(exact) and _agrees(exact, value, _written_digits(header, key) or 12)):
        raise CorruptFileError(f"{where}: {exact_key} = {text!r} disagrees with {key} = {card!r}: one of them was "
                               f"edited; set both to the intended value (or delete {exact_key} to use {key})")
    return exact


def _check_kernel(kernel):
    if not isinstance(kernel, LinearCombinationKernel):
        raise InvalidInputError(f"expected a LinearCombinationKernel; got {type(kernel).__name__}")


def write_kernel(kernel, path, *, overwrite=False) -> None:
    """Save a :class:`~psfmatch.kernel.kernel.LinearCombinationKernel` to FITS.

    Parameters
    ----------
    kernel : LinearCombinationKernel
    path : str or path-like
    overwrite : bool
        Replace an existing file (default False: :class:`~psfmatch.errors.OutputExistsError`).

    Raises
    ------
    InvalidInputError
        If ``kernel`` is not a LinearCombinationKernel, or ``path`` is not a path (None, a number...),
        is empty or a directory.
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    OutputNotWritableError
        If the directory of ``path`` does not accept the file (no permission, a
        read-only or full file system); an ``OSError`` naming the output.
    """
    from astropy.io import fits

    _check_kernel(kernel)
    path = as_path(path, "write_kernel's path")
    primary = fits.PrimaryHDU()
    h = primary.header
    h["PMFORMAT"] = (KERNEL_FORMAT, "written by psfmatch")
    h["PMVERS"] = (KERNEL_FORMAT_VERSION, "psfmatch kernel format version")
    write_exact_float(h, "KSUM", kernel.kernel_sum, "kernelSum: every kernel image sums to it")
    h["BASKIND"] = (kernel.basis.kind, "basis kind")
    h["KSIZE"] = (kernel.basis.kernel_size, "kernel width = height")
    h["NBASIS"] = (len(kernel.basis), "number of basis kernels")
    h["NSPATIAL"] = (kernel.coefficients.shape[1], "number of spatial terms")
    h["CONVENTN"] = ("convolution", "matched = science (*) K (not afw's correlation)")
    sf = kernel.spatial_function
    if sf is not None:
        h["SPKIND"] = (sf.kind, "spatial function kind")
        h["SPORDER"] = (sf.order, "spatial order")
        for key, value in (("SPMINX", sf.bbox.minX), ("SPMINY", sf.bbox.minY), ("SPMAXX", sf.bbox.maxX),
                           ("SPMAXY", sf.bbox.maxY)):
            h[key] = (float(value), "spatial domain (pixel edges)")
    if kernel.bbox is not None:
        b = kernel.bbox
        h["BBX0"], h["BBY0"], h["BBW"], h["BBH"] = b.getMinX(), b.getMinY(), b.getWidth(), b.getHeight()
    basis = fits.ImageHDU(np.asarray(kernel.basis.images, dtype=np.float64), name="BASIS")
    try:
        # (no quote in the card: astropy cuts a long string at a quote followed by "/"; JSON's \u0027 is one)
        basis.header["DESCRIPT"] = json.dumps(kernel.basis.description, sort_keys=True).replace("'", "\\u0027")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the basis description is not JSON-serializable: {exc}") from exc
    coeffs = fits.ImageHDU(np.asarray(kernel.coefficients, dtype=np.float64), name="COEFFS")
    with atomic_write(path, overwrite=overwrite) as tmp:
        fits.HDUList([primary, basis, coeffs]).writeto(tmp, output_verify="exception", checksum=True)


def _integer_card(header, key, path) -> int:
    """The integer value of the card ``key`` (an integral float too); :class:`CorruptFileError` naming the file
    for anything else (``SPORDER = 2.5`` was cut to 2)."""
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise CorruptFileError(f"{path}: {key} = {value!r} is not an integer")
    return int(value)


def _req(header, key, path, what="the kernel file"):
    if key not in header:
        raise CorruptFileError(f"{path}: keyword {key} is missing from {what}")
    return header[key]


def read_kernel(path) -> LinearCombinationKernel:
    """Load a kernel written by :func:`write_kernel`.

    Raises
    ------
    InvalidInputError
        If ``path`` is not a path (None, a number...).
    MissingFileError
        If the file does not exist (a `FileNotFoundError`).
    UnsupportedFormatError
        If it is not a psfmatch kernel file, or one of a later format version
        (``PMVERS``) than this psfmatch writes.
    CorruptFileError
        If a keyword or HDU is missing or inconsistent (``NBASIS``, ``KSIZE``,
        ``NSPATIAL`` disagreeing with the data; ``SPORDER`` or the box's cards
        not integers; a box of no pixels; ``CONVENTN`` other than
        ``convolution``, whose images would be applied mirrored), or the file is damaged:
        its data no longer match the ``DATASUM`` written with them (headers
        may be edited), or its images are not finite over the kernel's box.

    Examples
    --------
    Fit a kernel (no convolution), save it, load it back and evaluate it:

    >>> import os, tempfile
    >>> import numpy as np
    >>> from psfmatch import Box2I, ModelPsfMatchTask
    >>> from psfmatch.io import read_kernel, write_kernel
    >>> from psfmatch.psf import GaussianPsf
    >>> fit = ModelPsfMatchTask().fitKernel(GaussianPsf(21, 21, 1.8), GaussianPsf(31, 31, 2.6),
    ...                                     Box2I((0, 0), (256, 256)))
    >>> path = os.path.join(tempfile.mkdtemp(), "kernel.fits")
    >>> write_kernel(fit.kernel, path)
    >>> kernel = read_kernel(path)
    >>> image = kernel.computeImage((100.0, 30.0))
    >>> bool(np.array_equal(image, fit.kernel.computeImage((100.0, 30.0)))), round(float(image.sum()), 7)
    (True, 1.0)
    """
    path = as_path(path, "read_kernel's path")
    with open_fits(path, "kernel") as (hdul, guard):
        h = hdul[0].header
        fmt = str(h.get("PMFORMAT", "")).strip()
        if fmt != KERNEL_FORMAT:
            raise UnsupportedFormatError(
                f"{path}: PMFORMAT = {fmt or None!r}; not a psfmatch kernel file (expected {KERNEL_FORMAT!r}, "
                "written by LinearCombinationKernel.writeFits)")
        names = [x.name.upper() for x in hdul]
        for name in ("BASIS", "COEFFS"):
            if name not in names:
                raise CorruptFileError(f"{path}: the {name} HDU is missing (HDUs: {names})")
        version = _integer_card(h, "PMVERS", path) if "PMVERS" in h else 1  # (1.0 is 1)
        if version < 1:
            raise CorruptFileError(f"{path}: PMVERS = {h['PMVERS']!r} is no format version (1 or more)")
        if version > KERNEL_FORMAT_VERSION:
            raise UnsupportedFormatError(
                f"{path}: PMVERS = {h['PMVERS']!r}: a kernel file of format version {version}, which this psfmatch "
                f"(format {KERNEL_FORMAT_VERSION}) does not know; read it with the psfmatch that wrote it, or upgrade")
        convention = str(h.get("CONVENTN", "convolution")).strip()
        if convention.lower() != "convolution":  # (FITS string values are case-sensitive, but no writer means another)
            raise CorruptFileError(
                f"{path}: CONVENTN = {convention!r}: psfmatch's kernel files hold kernels applied by convolution "
                "('convolution'); images for another convention would be applied mirrored; write the kernel again "
                "(write_kernel)")
        kind = str(_req(h, "BASKIND", path)).strip()
        _req(h, "KSUM", path)
        ksum = read_exact_float(h, "KSUM", path)
        guard.hdu = "BASIS"
        try:
            images = np.array(hdul["BASIS"].data, dtype=np.float64)
            coeffs = np.array(hdul["COEFFS"].data, dtype=np.float64)
            description = json.loads(hdul["BASIS"].header.get("DESCRIPT", "{}"))
        except (TypeError, ValueError) as exc:
            raise CorruptFileError(f"{path}: cannot decode the kernel ({exc})") from exc
        if images.ndim != 3 or coeffs.ndim != 2 or coeffs.shape[0] != images.shape[0]:
            raise CorruptFileError(f"{path}: BASIS has shape {images.shape} and COEFFS {coeffs.shape}; expected "
                                   "(n, k, k) and (n, n_spatial)")
        if not (np.all(np.isfinite(images)) and np.all(np.isfinite(coeffs)) and np.isfinite(ksum)):
            raise CorruptFileError(f"{path}: BASIS, COEFFS or KSUM hold NaN or inf values")
        for name in ("BASIS", "COEFFS"):
            # write_kernel stores each HDU's DATASUM: data changed after writing are damage (bytes
            # inserted or overwritten), even when every value is still a finite number.  Only the data
            # are checked, so that a header edited with another tool still reads
            guard.hdu = name
            if hdul[name].verify_datasum() == 0:
                raise CorruptFileError(
                    f"{path}[{name}]: the data do not match their DATASUM checksum: the file was damaged or "
                    "changed after it was written; write the kernel again")
        if not isinstance(description, dict):
            raise CorruptFileError(f"{path}[BASIS]: DESCRIPT is not a JSON mapping")
        for key, have, what in (("NBASIS", images.shape[0], "BASIS holds {} kernels"),
                                ("KSIZE", images.shape[-1], "BASIS holds kernels of {} px"),
                                ("NSPATIAL", coeffs.shape[1], "COEFFS holds {} spatial terms")):
            if key in h and _integer_card(h, key, path) != have:
                raise CorruptFileError(f"{path}: {key} = {h[key]!r} but {what.format(have)}")
        guard.hdu = None
        sf = None
        if "SPKIND" in h:
            sp = {key: _req(h, key, path, "the spatial function")
                  for key in ("SPORDER", "SPMINX", "SPMINY", "SPMAXX", "SPMAXY")}
            order = _integer_card(h, "SPORDER", path)
            if order < 0 or (order + 1) * (order + 2) // 2 != coeffs.shape[1]:  # checked before building it
                raise CorruptFileError(f"{path}: inconsistent kernel (SPORDER = {order} needs "
                                       f"{(order + 1) * (order + 2) // 2 if order >= 0 else 'no'} spatial terms; "
                                       f"COEFFS has {coeffs.shape[1]} spatial terms)")
            try:
                x0, y0, x1, y1 = (float(sp[k]) for k in ("SPMINX", "SPMINY", "SPMAXX", "SPMAXY"))
            except (TypeError, ValueError) as exc:
                raise CorruptFileError(f"{path}: invalid spatial function ({exc})") from exc
            if not (all(math.isfinite(v) for v in (x0, y0, x1, y1)) and x0 < x1 and y0 < y1):
                raise CorruptFileError(f"{path}: the spatial function's box SPMINX..SPMAXY = ({x0:g}, {y0:g}) .. "
                                       f"({x1:g}, {y1:g}) is not a finite, non-empty box: the file is damaged")
            try:
                # (uncapped: an order above 20 was written before the cap; COEFFS holds its terms, checked above)
                sf = SpatialFunction._uncapped(str(h["SPKIND"]).strip(), order, Box2D((x0, y0), (x1, y1)))
            except (TypeError, ValueError, InvalidInputError, InvalidConfigError) as exc:  # (an unknown kind...)
                raise CorruptFileError(f"{path}: invalid spatial function ({exc})") from exc
        bbox = None
        if "BBX0" in h:
            for key in ("BBX0", "BBY0", "BBW", "BBH"):
                _req(h, key, path, "the bounding box")
            bb = [_integer_card(h, key, path) for key in ("BBX0", "BBY0", "BBW", "BBH")]
            if bb[2] < 1 or bb[3] < 1:
                raise CorruptFileError(f"{path}: the fitted box's size BBW x BBH = {bb[2]} x {bb[3]} is not positive: "
                                       "the file is damaged")
            bbox = Box2I((bb[0], bb[1]), (bb[2], bb[3]))
    try:
        kernel = LinearCombinationKernel(KernelBasis(images, kind, description), coeffs, sf, ksum, bbox)
    except ValueError as exc:
        raise CorruptFileError(f"{path}: inconsistent kernel ({exc})") from exc
    _check_finite_images(kernel, path)
    return kernel


def _check_finite_images(kernel, path):
    """Raise CorruptFileError unless the kernel's images are finite over its spatial domain.

    Finite but absurd coefficients (``1e307``) pass the file's checks and
    overflow when the kernel is evaluated; the corners and centre of the
    spatial function's domain (the box it was fitted on) show it.  A constant
    kernel is the same everywhere.
    """
    sf = kernel.spatial_function
    if sf is None:
        xs, ys = np.zeros(1), np.zeros(1)
    else:
        b = sf.bbox
        xs, ys = (v.ravel() for v in np.meshgrid(np.linspace(b.getMinX(), b.getMaxX(), 3),
                                                 np.linspace(b.getMinY(), b.getMaxY(), 3)))
    with np.errstate(over="ignore", invalid="ignore"):
        images = kernel.computeImages(xs, ys)
    bad = ~np.isfinite(images).all(axis=(1, 2))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CorruptFileError(
            f"{path}: the kernel image at ({xs[i]:g}, {ys[i]:g}) is not finite (coefficients up to "
            f"{np.abs(kernel.coefficients).max():.3g} in size): the file is damaged; write the kernel again")


def _position_pair(positions):
    """``positions`` = ``(xs, ys)`` as two 1-d float arrays of one length, or InvalidInputError."""
    if isinstance(positions, (str, bytes, dict)) or not hasattr(positions, "__len__") or len(positions) != 2:
        hint = ""
        with contextlib.suppress(TypeError, ValueError):
            if np.ndim(positions) == 2 and np.shape(positions)[1] == 2:
                hint = " (a list of (x, y) pairs? pass np.transpose(pairs))"
        raise InvalidInputError(f"positions must be two arrays (xs, ys) of one length; got {_describe(positions)}"
                                f"{hint}")
    try:
        xs, ys = (np.atleast_1d(np.asarray(p, dtype=np.float64)) for p in positions)
    except (TypeError, ValueError):
        raise InvalidInputError(f"positions must hold numbers (parent x and y); got {_describe(positions[0])} and "
                                f"{_describe(positions[1])}") from None
    if xs.shape != ys.shape:
        raise InvalidInputError(f"positions must be two arrays of one length; got {xs.shape} and {ys.shape}")
    return _positions(xs, ys, "kernel_image_grid's positions")


def _check_grid_size(kernel, n, what, remedy, max_bytes=None):
    """MemoryLimitError if ``n`` kernel images (``what``) exceed ``max_bytes`` (default ``MAX_GRID_BYTES``)."""
    limit = MAX_GRID_BYTES if max_bytes is None else max_bytes
    k = kernel.basis.kernel_size
    need = n * k * k * 8
    if need > limit:
        raise MemoryLimitError(f"{what} asks for {n} kernel images of {k}x{k} ({need / 2 ** 30:.3g} GiB), more than "
                               f"the limit of {limit / 2 ** 30:.3g} GiB (max_memory_bytes); {remedy} (at most "
                               f"{int(limit // (k * k * 8))} images), or raise max_memory_bytes")


def kernel_image_grid(kernel, *, nx=5, ny=5, bbox=None, positions=None, lsst=False, max_memory_bytes=None):
    """Kernel images at a grid of positions.

    Parameters
    ----------
    kernel : LinearCombinationKernel
    nx, ny : int
        Grid size (positive integers); the positions are the centres of an
        ``nx x ny`` tiling of ``bbox``.
    bbox : Box2I, optional
        The region (a non-empty integer box, as ``exposure.getBBox()``);
        default the kernel's fitted box (required if the kernel has none).
    positions : (array_like, array_like), optional
        Explicit ``(xs, ys)`` instead of the grid.
    lsst : bool
        Flip the images for LSST's afw (correlation convention).
    max_memory_bytes : int, optional
        The most the images may take (default ``MAX_GRID_BYTES``, 8 GiB: the
        task's default ``maxMemoryGiB``).

    Returns
    -------
    xs, ys : ndarray, shape (n,)
        Parent positions (row-major over the grid: x fastest).
    images : ndarray, shape (n, k, k)

    Raises
    ------
    InvalidInputError
        If ``kernel`` is not a LinearCombinationKernel, ``nx`` or ``ny`` is
        not a positive integer, ``bbox`` is not a non-empty Box2I, or the
        positions are not two arrays of one length of finite numbers.
    MemoryLimitError
        If the images would take more than ``max_memory_bytes``, before any is computed.
    """
    if max_memory_bytes is not None and not (isinstance(max_memory_bytes, (int, float, np.integer, np.floating))
                                             and not isinstance(max_memory_bytes, (bool, np.bool_))
                                             and max_memory_bytes > 0):
        raise InvalidInputError(f"max_memory_bytes must be a positive number of bytes; got {max_memory_bytes!r}")
    _check_kernel(kernel)
    if positions is not None:
        xs, ys = _position_pair(positions)
        _check_grid_size(kernel, xs.size, "positions", "pass fewer positions", max_memory_bytes)
    else:
        box = bbox if bbox is not None else kernel.bbox
        if box is None:
            raise InvalidInputError("the kernel has no bounding box; pass bbox= or positions=")
        if not isinstance(box, Box2I) or box.isEmpty():
            hint = " (a Box2D holds pixel edges: give the Box2I of the pixels)" if isinstance(box, Box2D) else ""
            raise InvalidInputError(f"bbox must be a non-empty Box2I; got {box!r}{hint}")
        for name, value in (("nx", nx), ("ny", ny)):
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or value != int(value) or value < 1):
                raise InvalidInputError(f"nx and ny must be positive integers; got {name} = {value!r}")
        nx, ny = int(nx), int(ny)
        _check_grid_size(kernel, nx * ny, f"nx * ny = {nx} * {ny}", "use a smaller nx and ny", max_memory_bytes)
        gx = box.getMinX() - 0.5 + (np.arange(nx) + 0.5) * box.getWidth() / nx
        gy = box.getMinY() - 0.5 + (np.arange(ny) + 0.5) * box.getHeight() / ny
        X, Y = np.meshgrid(gx, gy)
        xs, ys = X.ravel(), Y.ravel()
    images = kernel.computeImages(xs, ys)
    if lsst:
        images = images[:, ::-1, ::-1].copy()
    return xs, ys, images


def write_kernel_image_grid(kernel, path, *, nx=5, ny=5, bbox=None, positions=None, lsst=False,
                            overwrite=False, max_memory_bytes=None) -> None:
    """Write the kernel's images on a grid of positions to FITS.

    The primary HDU holds the cube ``(n, k, k)`` (``CONVENTN`` says
    ``convolution`` or ``lsst-correlation``); the ``POSITIONS`` table the
    parent ``x``, ``y`` of each plane and the image ``sum``; ``KSUM`` and
    ``KSUMSTR`` (exactly) the kernelSum.  See :func:`kernel_image_grid` for
    the parameters.
    """
    from astropy.io import fits

    path = as_path(path, "write_kernel_image_grid's path")
    xs, ys, images = kernel_image_grid(kernel, nx=nx, ny=ny, bbox=bbox, positions=positions, lsst=lsst,
                                       max_memory_bytes=max_memory_bytes)
    primary = fits.PrimaryHDU(images)
    primary.header["PMFORMAT"] = (KERNEL_GRID_FORMAT, "written by psfmatch")
    primary.header["CONVENTN"] = ("lsst-correlation" if lsst else "convolution", "how to apply the images")
    write_exact_float(primary.header, "KSUM", kernel.kernel_sum, "kernelSum")
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="x", format="D", array=xs), fits.Column(name="y", format="D", array=ys),
         fits.Column(name="sum", format="D", array=images.sum(axis=(1, 2)))], name="POSITIONS")
    with atomic_write(path, overwrite=overwrite) as tmp:
        fits.HDUList([primary, table]).writeto(tmp, output_verify="exception", checksum=True)
