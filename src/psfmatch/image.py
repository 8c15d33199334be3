"""Images with a mask and a variance, and the exposure that carries a PSF.

Masks are integer bit planes with names, kept in a registry on the mask so that
files round-trip the names.  The default planes and bits are
LSST's: BAD=0, SAT=1, INTRP=2, CR=3, EDGE=4, DETECTED=5, DETECTED_NEGATIVE=6,
SUSPECT=7, NO_DATA=8.
"""

from __future__ import annotations

import copy

import numpy as np

from .errors import InvalidInputError
from .geom import Box2I, Point2I, _integral

__all__ = ["DEFAULT_MASK_PLANES", "Mask", "MaskedImage", "Exposure"]

#: The mask planes every :class:`Mask` starts with, and their bit numbers.
DEFAULT_MASK_PLANES = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
}

_MAX_PLANES = 31
#: Longest plane name the FITS writer can store: ``HIERARCH MP_<name> = <bit>`` must fit one 80-character card.
MAX_PLANE_NAME_LENGTH = 63


def plane_dtype(dtype) -> np.dtype:
    """The type a pixel plane of ``dtype`` is held in: float32 and float64 kept (in the native byte
    order: astropy's FITS data are big-endian, ``>f8``), anything else float32."""
    native = np.dtype(dtype).newbyteorder("=")
    return native if native in (np.float32, np.float64) else np.dtype(np.float32)


def _as_2d(array, name, dtype=None, copy=True, remedy=None):
    """``array`` checked to be 2-d, non-empty and real, as float32/float64 (or ``dtype``); a copy unless ``copy=False``.

    With ``copy=False`` an array that already has the wanted type (native byte
    order) is returned as it is; any other is converted, which copies (see
    :func:`_convert` for the values a narrower type cannot hold).
    """
    if array is None:
        return None
    if isinstance(array, np.ma.MaskedArray):
        raise InvalidInputError(
            f"{name} is a numpy masked array, whose mask would be lost; give its data and its mask separately, e.g. "
            f"Exposure(arr.data, mask=Mask.from_bool(np.ma.getmaskarray(arr), 'BAD')) (Mask.from_bool sets the "
            "plane you name where the mask is True)")
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-d array; got {arr.ndim} dimension(s) with shape {arr.shape}")
    if arr.size == 0:
        raise InvalidInputError(f"{name} must not be empty; got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise InvalidInputError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    return _convert(arr, plane_dtype(arr.dtype) if dtype is None else dtype, name, copy, remedy)


def _convert(arr, dtype, name, copy=True, remedy=None):
    """``arr`` as ``dtype`` (a copy unless ``copy=False`` and it already is), refusing values it cannot hold.

    A float type narrowed to a shorter one (a float64 variance held in a
    float32 exposure, a long double image) turns finite values beyond the
    narrower type's range into inf; that is refused with
    :class:`~psfmatch.errors.InvalidInputError` naming the plane, the largest
    such value and ``remedy``.
    """
    dtype = np.dtype(dtype)
    if arr.dtype == dtype:
        return arr.copy() if copy else arr
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(dtype)
    if arr.dtype.kind == "f" and dtype.kind == "f" and arr.dtype.itemsize > dtype.itemsize:
        lost = np.isinf(out)
        if lost.any():
            src = arr[lost]
            src = src[np.isfinite(src)]
            if src.size:
                if remedy is None:
                    remedy = ("give the image as float64 (the variance is held in the image's type) or rescale the "
                              "data")
                raise InvalidInputError(
                    f"{name} holds finite values up to {float(np.abs(src).max()):.4g}, which {dtype} pixels cannot "
                    f"hold (the largest is {float(np.finfo(dtype).max):.4g}); {remedy}")
    return out


def _mask_array(array, copy=True):
    """``array`` checked to be 2-d integer bit planes, as native int32; a copy unless ``copy=False``.

    Values become int32 by their low 32 bits: a value of a wider type survives
    when it lies in ``[-2**31, 2**32)`` (bit 31 set as a positive value, or a
    sign-extended negative int32); anything else has a bit above 31 set, which
    the conversion would silently drop, and is refused.  Narrower signed types
    (int8, int16) are taken as the bits they hold: an int16 with bit 15 set
    (-32768) is 0x8000, not sign-extended into bits 16..31.
    """
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise InvalidInputError(f"mask must be a 2-d array; got shape {arr.shape}")
    if arr.dtype == bool:
        raise InvalidInputError(
            "mask must be an integer bit-plane array, not boolean; convert a boolean mask with "
            "Mask.from_bool(array, plane='BAD')")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"mask must hold integers; got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.dtype.itemsize < 4:
        # the bits as they are: a view as the unsigned type of the same width (and byte order), no copy
        arr = arr.view(arr.dtype.str.replace("i", "u"))
    if arr.dtype.itemsize > 4 and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -(1 << 31) or hi >= 1 << 32:
            raise InvalidInputError(
                f"mask values span {lo}..{hi}: bits above 31 are set, and a mask holds 32 bit planes "
                "(bits 0..31); move those planes to free bits below 32 first")
    return np.array(arr, dtype=np.int32, copy=True) if copy else np.asarray(arr, dtype=np.int32)


def plane_names(value, what, example) -> tuple:
    """``value`` as a tuple of mask plane names: one ``str`` is one name; any other iterable of ``str`` its names.

    Raises
    ------
    InvalidInputError
        Naming ``what`` (the argument) and ``example`` (a valid value) when ``value`` is neither.
    """
    names = (value,) if isinstance(value, str) else value
    try:
        names = tuple(names)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise InvalidInputError(f"{what} must be a mask plane name or a sequence of names (e.g. {example}); got "
                                f"{type(value).__name__} {value!r:.100}")
    return names


def check_plane_name(name, planes=()) -> None:
    """Check that ``name`` can name a mask plane that FITS files store and read back.

    Parameters
    ----------
    name : str
        The plane name.
    planes : iterable of str
        The other plane names of the mask; FITS keywords ignore case, so
        ``name`` must differ from each of them in more than case.

    Raises
    ------
    InvalidInputError
        If ``name`` is not a string of 1 to :data:`MAX_PLANE_NAME_LENGTH`
        printable ASCII characters, starts or ends with a blank, holds ``=``,
        ``*`` or ``?`` (FITS keyword syntax and astropy's wildcards), or
        differs from another plane only in case.
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"a mask plane name must be a string; got {type(name).__name__} {name!r}")
    if not name or len(name) > MAX_PLANE_NAME_LENGTH:
        raise InvalidInputError(f"mask plane name {name!r} has {len(name)} characters; give 1 to "
                                f"{MAX_PLANE_NAME_LENGTH} (the longest a FITS header card can store)")
    bad = sorted({c for c in name if not " " <= c <= "~"} | ({"=", "*", "?"} & set(name)))
    if bad or name != name.strip():
        what = f"the characters {bad}" if bad else "leading or trailing blanks"
        raise InvalidInputError(f"mask plane name {name!r} holds {what}; use printable ASCII letters, digits and "
                                "punctuation other than '=', '*' and '?' (as in 'STREAK' or 'SAT_CORE')")
    clash = [p for p in planes if p != name and p.upper() == name.upper()]
    if clash:
        raise InvalidInputError(f"mask plane name {name!r} differs from the plane {clash[0]!r} only in case, which "
                                "FITS keywords ignore; choose another name")


def _check_planes(planes) -> dict:
    """A new plane-name to bit-number dict from ``planes`` (default ``DEFAULT_MASK_PLANES``), checked.

    Raises
    ------
    InvalidInputError
        If ``planes`` is not a mapping, a name cannot be stored in a FITS file
        (``check_plane_name``), a bit is not an integer in ``0..31`` or
        two names share a bit.
    """
    if planes is None:
        return dict(DEFAULT_MASK_PLANES)
    if not callable(getattr(planes, "items", None)):
        raise InvalidInputError(f"mask planes must be a mapping of plane name to bit number, as in "
                                f"{{'BAD': 0, 'STREAK': 9}}; got {type(planes).__name__} {planes!r}")
    out, names_of = {}, {}
    for name, bit in planes.items():
        check_plane_name(name, out)
        if not (_integral(bit) and 0 <= bit <= _MAX_PLANES):
            raise InvalidInputError(f"mask plane {name!r} has bit {bit!r}; bits must be integers in 0..{_MAX_PLANES}")
        bit = int(bit)
        if bit in names_of:
            raise InvalidInputError(f"mask planes {names_of[bit]!r} and {name!r} both have bit {bit}; give each plane "
                                    "its own bit (Mask.addMaskPlane picks a free one)")
        out[name], names_of[bit] = bit, name
    return out


def _bit_value(bits: int) -> int:
    """The 32-bit mask pattern ``bits`` (0 <= bits < 2**32) as the int32 value a mask pixel holds."""
    return bits - (1 << 32) if bits >= 1 << 31 else bits


class Mask:
    """An integer mask whose bits are named planes.

    Parameters
    ----------
    array : array_like of int, optional
        The mask bits; copied to int32.  Zeros of ``shape`` when omitted.  A
        wider integer type is taken by its low 32 bits, and refused
        (:class:`~psfmatch.errors.InvalidInputError`) when a bit above 31 is set.
    shape : tuple of int, optional
        Shape ``(height, width)`` when ``array`` is omitted.
    planes : mapping of str to int, optional
        Plane name to bit number; defaults to ``DEFAULT_MASK_PLANES``.
        Names must be storable in a FITS header (``check_plane_name``),
        bits integers in 0..31, one name per bit.
    copy : bool
        With False, an int32 ``array`` is used as it is (not copied): the caller
        hands it over and must not use it afterwards.

    Raises
    ------
    InvalidInputError
        If the array is not 2-d integer bit planes (a boolean array: use
        :meth:`from_bool`), or ``planes`` breaks the rules above.

    Notes
    -----
    Bit 31 is the int32 sign bit: a pixel with it set is negative, and
    :meth:`getPlaneBitMask` gives such a plane as ``-2**31`` (afw's
    ``MaskPixel`` is a signed 32-bit integer too), so that
    ``mask.array |= mask.getPlaneBitMask(name)`` works for every plane.
    """

    def __init__(self, array=None, *, shape=None, planes=None, copy=True):
        if array is None:
            if shape is None:
                raise InvalidInputError("Mask needs an array or a shape")
            array = np.zeros(shape, dtype=np.int32)
        self._array = _mask_array(array, copy)
        self._planes = _check_planes(planes)

    @classmethod
    def from_bool(cls, array, plane="BAD", planes=None) -> "Mask":
        """A mask with ``plane`` set where the boolean ``array`` is True (astropy's convention)."""
        arr = np.asarray(array, dtype=bool)
        m = cls(shape=arr.shape, planes=planes)
        m.array[arr] = m.getPlaneBitMask(plane)
        return m

    @property
    def array(self) -> np.ndarray:
        """The mask bits, a 2-d int32 numpy array.

        Assigning to it copies the new bits into this array (as afw's
        assignment of pixels does: a `MaskedImage` sharing this mask sees
        them); they are checked as the constructor checks them, and must
        have the mask's shape.
        """
        return self._array

    @array.setter
    def array(self, value):
        if value is self._array:
            return
        arr = _mask_array(value, copy=False)
        if arr.shape != self._array.shape:
            raise InvalidInputError(f"Mask.array of shape {arr.shape} cannot replace the mask's {self._array.shape}; "
                                    "assign bits of the mask's shape, or make a new Mask")
        _assign(self, "_array", arr)

    @property
    def shape(self):
        return self._array.shape

    def getMaskPlaneDict(self) -> dict:
        """A copy of the plane-name to bit-number registry."""
        return dict(self._planes)

    def addMaskPlane(self, name: str) -> int:
        """Register plane ``name`` (if new) and return its bit number.

        Raises
        ------
        InvalidInputError
            If ``name`` cannot be stored in a FITS file (see ``check_plane_name``:
            1 to 63 printable ASCII characters, no ``=``, ``*`` or ``?``, not an
            existing name in another case), or all 32 bits are in use.
        """
        if isinstance(name, str) and name in self._planes:
            return self._planes[name]
        check_plane_name(name, self._planes)
        used = set(self._planes.values())
        for bit in range(_MAX_PLANES + 1):
            if bit not in used:
                self._planes[name] = bit
                return bit
        raise InvalidInputError(f"cannot add mask plane {name!r}: all {_MAX_PLANES + 1} bits are in use")

    def _known(self, names) -> list:
        """``names`` (a name or an iterable of names) as a list, each a plane of this mask, or InvalidInputError.

        The error names every unknown plane and the planes this mask has.
        """
        if isinstance(names, str):
            names = [names]
        else:
            try:
                names = list(names)
            except TypeError:
                raise InvalidInputError(
                    f"mask planes must be given as a name or a list of names; got {names!r}") from None
        unknown = [n for n in names if not (isinstance(n, str) and n in self._planes)]
        if unknown:
            which = (f"unknown mask plane {unknown[0]!r}" if len(unknown) == 1
                     else f"unknown mask planes {', '.join(repr(n) for n in unknown)}")
            raise InvalidInputError(f"{which}; this mask has {sorted(self._planes)} (check the spelling, or register "
                                    "a plane with addMaskPlane)")
        return names

    def getPlaneBitMask(self, names) -> int:
        """The mask value with the bits of plane ``names`` (a name or a list of names) set.

        Returns
        -------
        int
            The value as an int32 mask pixel holds it, like afw's
            ``MaskPixel``: a plane at bit 31 (the sign bit) gives a negative
            value (``-2**31``), so that ``exposure.mask[y, x] |= value`` and
            ``mask.array & value`` work for every plane.  Test it with
            ``!= 0``, not ``> 0``.

        Raises
        ------
        InvalidInputError
            If a name is not registered on this mask.
        """
        names = self._known(names)
        bits = 0
        for name in names:
            bits |= 1 << self._planes[name]
        return _bit_value(bits)

    def planes_set(self, names) -> np.ndarray:
        """Boolean array: True where any of the planes ``names`` (a name or a list of names) is set.

        Raises
        ------
        InvalidInputError
            If a name is not registered on this mask (a list too: a misspelt
            plane would otherwise select nothing).
        """
        names = self._known(names)
        if not names:
            return np.zeros(self.shape, dtype=bool)
        return (self._array & np.int32(self.getPlaneBitMask(names))) != 0

    def copy(self) -> "Mask":
        return Mask(self._array, planes=self._planes)

    def __array__(self, dtype=None, copy=None):
        """The bits for numpy, honouring its ``copy`` argument (``np.array(mask)`` is a copy, as numpy promises).

        ``copy=None`` (``np.asarray``) gives the mask's own array when no
        conversion is needed; ``copy=False`` raises ``ValueError`` when one is.
        """
        need = dtype is not None and np.dtype(dtype) != self._array.dtype
        if copy is False and need:
            raise ValueError(f"the Mask's int32 bits cannot be given as {np.dtype(dtype)} without a copy")
        if need:
            return self._array.astype(dtype)
        return self._array.copy() if copy else self._array

    def __eq__(self, other):
        return isinstance(other, Mask) and self._planes == other._planes and np.array_equal(self._array, other._array)

    def __repr__(self):
        return f"Mask(shape={self.shape}, planes={sorted(self._planes, key=self._planes.get)})"


def _assign(owner, attr, arr) -> None:
    """Copy the checked plane ``arr`` into ``owner.<attr>`` in place.

    A read-only plane (an array handed over with ``copy=False``) is refused: replacing it would
    leave the views that share it (:meth:`Exposure.getMaskedImage`) with the old values.
    """
    plane = getattr(owner, attr)
    if not plane.flags.writeable:
        raise InvalidInputError(
            f"the {attr.lstrip('_')} plane is a read-only array (handed over with copy=False) and cannot be "
            f"assigned: make the {type(owner).__name__} from a copy (copy=True), or a new one from the new values")
    np.copyto(plane, arr)


class MaskedImage:
    """An image, its integer mask and its per-pixel variance, sharing one bounding box.

    Parameters
    ----------
    image : array_like
        Pixel values, 2-d; copied (float32 and float64 are kept, in the native byte order; other
        types become float32).  A numpy masked array is refused (its mask would be lost): give
        its data, and its mask as ``Mask.from_bool(np.ma.getmaskarray(arr), 'BAD')``.
    mask : array_like of int or `Mask`, optional
        Bit planes; zeros when omitted.  A boolean array is refused: convert it with
        :meth:`Mask.from_bool`.
    variance : array_like, optional
        Per-pixel variance in data units squared, held in the image's type; zeros when omitted
        (as in afw).  Finite values that type cannot hold (a float64 variance of 1e40 with a
        float32 image) are refused.
    xy0 : (int, int)
        Parent coordinates of the pixel ``image[0, 0]``.
    mask_planes : mapping of str to int, optional
        Plane names of an array ``mask`` (default ``DEFAULT_MASK_PLANES``).
    copy : bool
        With False, planes that already have the right types (a float32 or
        float64 image, a variance of the image's type, an int32 mask array or a
        `Mask`) are used as they are instead of copied: the caller hands them
        over (a reader or the convolution with freshly made arrays) and must not
        use them afterwards.  Others are converted, which copies.

    Raises
    ------
    InvalidInputError
        If a plane is not a 2-d real array, the planes differ in shape, a value
        cannot be held in the image's type, or ``xy0`` is not a pair of finite
        integers.

    Notes
    -----
    ``image``, ``variance`` and ``mask`` may be assigned: the new values are
    checked as here and copied into the existing planes, which keep their
    shape and type (see :attr:`image`).
    """

    def __init__(self, image, mask=None, variance=None, *, xy0=(0, 0), mask_planes=None, copy=True):
        if isinstance(image, MaskedImage):
            raise InvalidInputError(
                f"image must be an array; got {image!r}: copy one with its copy() method, or make an Exposure of a "
                "MaskedImage with Exposure.from_masked_image(mi, psf=...)")
        self._image = _as_2d(image, "image", copy=copy)
        shape = self._image.shape
        if isinstance(mask, Mask):
            self._mask = mask.copy() if copy else mask
        elif mask is None:
            self._mask = Mask(shape=shape, planes=mask_planes)
        else:  # a boolean array is refused there, with the Mask.from_bool remedy
            self._mask = Mask(mask, planes=mask_planes, copy=copy)
        if variance is None:
            self._variance = np.zeros(shape, dtype=self._image.dtype)
        else:
            self._variance = _as_2d(variance, "variance", dtype=self._image.dtype, copy=copy)
        for name, arr in (("mask", self._mask.array), ("variance", self._variance)):
            if arr.shape != shape:
                raise InvalidInputError(
                    f"image, mask and variance must have one shape; image is {shape}, {name} is {arr.shape}")
        try:
            x0, y0 = xy0
        except (TypeError, ValueError):
            raise InvalidInputError(f"xy0 must be a pair of integers; got {xy0!r}") from None
        if not (_integral(x0) and _integral(y0)):
            raise InvalidInputError(f"xy0 must be a pair of finite integers; got {xy0!r}")
        self._xy0 = Point2I(int(x0), int(y0))

    def _set_plane(self, name, value) -> None:
        """Check ``value`` as the constructor does and copy it into the plane ``name`` (image or variance)."""
        attr = f"_{name}"
        plane = getattr(self, attr)
        if value is plane:
            return
        remedy = (f"this {type(self).__name__} holds {plane.dtype} pixels: make a new one from float64 planes, or "
                  "rescale the data")
        arr = _as_2d(value, name, dtype=plane.dtype, copy=False, remedy=remedy)
        if arr.shape != plane.shape:
            raise InvalidInputError(
                f"{name} of shape {arr.shape} cannot replace the {plane.shape} {name} of this {type(self).__name__}: "
                f"image, mask and variance must have one shape; assign one of shape {plane.shape}, or make a new "
                f"{type(self).__name__} from planes of the new shape")
        _assign(self, attr, arr)

    @property
    def image(self) -> np.ndarray:
        """The pixel values, a 2-d float32 or float64 numpy array.

        Assigning to it copies the new values into this array (as afw's
        ``exposure.image = ...`` does: a `MaskedImage` from
        :meth:`Exposure.getMaskedImage` sees them), converted to its type; the
        shape must stay, and a value of another shape or type that cannot be
        held raises :class:`~psfmatch.errors.InvalidInputError`.  To change the
        shape or the pixel type, make a new object.
        """
        return self._image

    @image.setter
    def image(self, value):
        self._set_plane("image", value)

    @property
    def variance(self) -> np.ndarray:
        """The per-pixel variance, a 2-d numpy array of the image's type; assigned as :attr:`image` is."""
        return self._variance

    @variance.setter
    def variance(self, value):
        self._set_plane("variance", value)

    @property
    def mask(self) -> np.ndarray:
        """The mask bits as an int32 numpy array (see ``getMask`` for the plane names).

        Assigning to it copies the new bits into this array (see
        :attr:`Mask.array`); they must be integer bit planes of the image's
        shape.
        """
        return self._mask.array

    @mask.setter
    def mask(self, value):
        arr = _mask_array(value, copy=False)
        if arr.shape != self._image.shape:
            raise InvalidInputError(f"mask shape {arr.shape} differs from the image's {self._image.shape}")
        self._mask.array = arr

    def getMask(self) -> Mask:
        return self._mask

    def getImage(self) -> np.ndarray:
        return self.image

    def getVariance(self) -> np.ndarray:
        return self.variance

    def getXY0(self) -> Point2I:
        return self._xy0

    def getBBox(self) -> Box2I:
        h, w = self.image.shape
        return Box2I(self._xy0, (w, h))

    def getDimensions(self):
        return self.getBBox().getDimensions()

    def getWidth(self) -> int:
        return self.image.shape[1]

    def getHeight(self) -> int:
        return self.image.shape[0]

    @property
    def dtype(self):
        return self.image.dtype

    def copy(self) -> "MaskedImage":
        return MaskedImage(self.image, self._mask, self.variance, xy0=self._xy0)

    def __repr__(self):
        return f"{type(self).__name__}(bbox={self.getBBox()!r}, dtype={self.image.dtype})"


class Exposure(MaskedImage):
    """A masked image with a PSF model, a WCS and metadata.

    Parameters
    ----------
    image, mask, variance, xy0
        As for :class:`MaskedImage`.
    psf : PSF model, optional
        Any object with ``computeKernelImage(position)`` (see :mod:`psfmatch.psf`).
    wcs : `astropy.wcs.WCS`, optional
        The WCS of the array, carried through unchanged (and written to FITS
        by :func:`~psfmatch.io.write_exposure`); another object (a gwcs,
        astropy's sliced WCS wrapper) raises
        :class:`~psfmatch.errors.InvalidInputError`, see :meth:`setWcs`.
    metadata : mapping, optional
        Carried through by the task (deep-copied); anything but a mapping
        raises :class:`~psfmatch.errors.InvalidInputError`.  The keys ``photoCalib``,
        ``visitInfo``, ``id`` and ``filter`` have accessors.

    Examples
    --------
    >>> import numpy as np
    >>> from psfmatch import Exposure
    >>> from psfmatch.psf import GaussianPsf
    >>> exp = Exposure(np.zeros((64, 64), dtype=np.float32), psf=GaussianPsf(15, 15, 2.0))
    >>> exp.hasPsf(), exp.getBBox().getDimensions()
    (True, Extent2I(width=64, height=64))
    """

    def __init__(self, image, mask=None, variance=None, *, psf=None, wcs=None, xy0=(0, 0),
                 metadata=None, mask_planes=None, copy=True):
        super().__init__(image, mask, variance, xy0=xy0, mask_planes=mask_planes, copy=copy)
        self._psf = None
        if psf is not None:
            self.setPsf(psf)
        self._wcs = None
        self.setWcs(wcs)
        if metadata is None:
            self.metadata = {}
        else:
            try:
                if not callable(getattr(metadata, "keys", None)):
                    raise TypeError
                self.metadata = dict(metadata)
            except (TypeError, ValueError):
                raise InvalidInputError(f"metadata must be a mapping of names to values (a dict); got "
                                        f"{type(metadata).__name__} {metadata!r:.100}") from None

    @classmethod
    def from_masked_image(cls, mi: MaskedImage, *, copy=True, **kwargs) -> "Exposure":
        """An exposure with the planes of ``mi`` and the other attributes in ``kwargs``.

        With ``copy=False`` the exposure takes ``mi``'s arrays and mask as they are
        (no copy: ``mi`` should not be used afterwards); the task hands its freshly
        convolved planes over this way.
        """
        return cls(mi.image, mi.getMask(), mi.variance, xy0=mi.getXY0(), copy=copy, **kwargs)

    # PSF
    @property
    def psf(self):
        return self._psf

    @psf.setter
    def psf(self, value):
        self.setPsf(value)

    def getPsf(self):
        return self._psf

    def setPsf(self, psf) -> None:
        """Attach a PSF model; ``None`` removes it.

        Raises
        ------
        InvalidInputError
            If ``psf`` has no ``computeKernelImage`` method, or is a class
            rather than a model.
        """
        if isinstance(psf, type):
            raise InvalidInputError(
                f"setPsf needs a PSF model, not the class {psf.__name__}; give an instance, e.g. "
                "GaussianPsf(31, 31, 2.6)")
        if psf is not None and not callable(getattr(psf, "computeKernelImage", None)):
            raise InvalidInputError(
                f"a PSF model needs a computeKernelImage(position) method; {type(psf).__name__} has none")
        self._psf = psf

    def hasPsf(self) -> bool:
        return self._psf is not None

    # WCS and metadata
    @property
    def wcs(self):
        return self._wcs

    def getWcs(self):
        return self._wcs

    def setWcs(self, wcs) -> None:
        """Attach the `astropy.wcs.WCS` of the array (kept as given, not copied); ``None`` removes it.

        Raises
        ------
        InvalidInputError
            If ``wcs`` is not an `astropy.wcs.WCS` (a gwcs, astropy's
            ``HighLevelWCSWrapper`` of a sliced NDData's WCS, a header):
            psfmatch copies, compares and writes the WCS to FITS as one.
        """
        if wcs is not None:
            from astropy.wcs import WCS

            if not isinstance(wcs, WCS):
                raise InvalidInputError(
                    f"an exposure's WCS must be an astropy.wcs.WCS; got {type(wcs).__module__}.{type(wcs).__name__}: "
                    "convert it (a FITS header: WCS(header); an NDData or a cut-out of one: Exposure.from_nddata, "
                    "which does) or pass wcs=None")
        self._wcs = wcs

    def getMetadata(self) -> dict:
        return self.metadata

    def getPhotoCalib(self):
        return self.metadata.get("photoCalib")

    def getVisitInfo(self):
        return self.metadata.get("visitInfo")

    def getFilter(self):
        return self.metadata.get("filter")

    def getId(self):
        return self.metadata.get("id")

    def getMaskedImage(self) -> MaskedImage:
        """The exposure's image, mask and variance as a `MaskedImage` that shares the pixels, as afw's does.

        Its planes are the exposure's arrays and its :class:`Mask` is the
        exposure's (plane names included): pixels set, bits or'ed and planes
        added through it are the exposure's.  Use ``getMaskedImage().copy()``
        for independent planes.
        """
        return MaskedImage(self._image, self._mask, self._variance, xy0=self._xy0, copy=False)

    def copy(self) -> "Exposure":
        """A deep copy: planes, WCS and metadata are new objects (the PSF model is shared: models are
        not modified in place).

        Raises
        ------
        InvalidInputError
            If an entry of the metadata cannot be copied (a lock, an open file): the
            message names the entries.
        """
        return Exposure(self.image, self._mask, self.variance, psf=self._psf, wcs=copy.deepcopy(self._wcs),
                        xy0=self._xy0, metadata=metadata_copy(self.metadata, to="the copy"))

    def __deepcopy__(self, memo):
        """``copy.deepcopy(exposure)``: :meth:`copy` (the PSF model shared, metadata that cannot be copied named)."""
        out = self.copy()
        memo[id(self)] = out
        return out

    # FITS and astropy interop (implemented in psfmatch.io)
    @classmethod
    def readFits(cls, path, **kwargs) -> "Exposure":
        """Read an exposure from a FITS file; see :func:`psfmatch.io.read_exposure`."""
        from .io.fits import read_exposure

        return read_exposure(path, **kwargs)

    def writeFits(self, path, overwrite=False) -> None:
        """Write to a multi-extension FITS file, atomically; see :func:`psfmatch.io.write_exposure`."""
        from .io.fits import write_exposure

        write_exposure(self, path, overwrite=overwrite)

    @classmethod
    def from_nddata(cls, nd, psf=None, **kwargs) -> "Exposure":
        """An exposure from astropy ``NDData``/``CCDData``; see :func:`psfmatch.io.exposure_from_nddata`."""
        from .io.nddata import exposure_from_nddata

        return exposure_from_nddata(nd, psf=psf, **kwargs)

    def to_nddata(self, **kwargs):
        """This exposure as astropy ``NDData`` (``CCDData`` with ``ccd=True``).

        See :func:`psfmatch.io.exposure_to_nddata`.
        """
        from .io.nddata import exposure_to_nddata

        return exposure_to_nddata(self, **kwargs)


def metadata_copy(metadata, what="the exposure's metadata", to="the matched exposure") -> dict:
    """A deep copy of ``metadata`` (``what``) for ``to``, or InvalidInputError naming what cannot be copied."""
    try:
        return copy.deepcopy(metadata)
    except Exception as exc:
        bad = []
        for key, value in (metadata.items() if isinstance(metadata, dict) else ()):
            try:
                copy.deepcopy(value)
            except Exception:
                bad.append(key)
        where = f"the entries {bad}" if bad else "it"
        raise InvalidInputError(
            f"{what} cannot be copied to {to} ({type(exc).__name__}: {exc}): remove "
            f"or convert {where} (locks, open files and the like cannot be copied)") from None
