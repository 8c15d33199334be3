"""Points and boxes in parent pixel coordinates.

Conventions: positions are (x, y) = (column, row), 0-based,
with pixel centres at integer values.  An image carries its origin ``xy0``, so
its bounding box may start anywhere; numpy arrays are indexed ``[y, x]``.
:class:`Box2I` is an inclusive integer box, as in LSST's afw.

Points and extents are tuples (they unpack as ``x, y = point``) with afw's
vector arithmetic instead of the tuple concatenation and repetition: ``+`` and
``-`` work element by element with another point, an extent or an ``(x, y)``
pair, ``*`` and ``/`` with a number, and unary ``-`` negates (see
:class:`Point2D`).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import NamedTuple

import numpy as np

from .errors import InvalidInputError

__all__ = ["Point2D", "Point2I", "Extent2I", "Box2I", "Box2D", "as_point"]


def _is_integer(value) -> bool:
    """Whether ``value`` is an integer type (Python or numpy; not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """Whether ``value`` is a real number (Python or numpy; not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _scalar(value):
    """``value``, or the number a 0-d numpy array holds (``np.array(5)`` is ``5``), for the type checks.

    NumPy gives 0-d arrays where a number is meant (``np.asarray(5)``, ``np.median`` of an array
    subclass...); ``float()`` and ``int()`` take them, so the argument checks take them too.
    """
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


def _finite_real(value) -> bool:
    """Whether ``value`` is a real number (not a bool) whose float is finite.

    An integer beyond the float range (``10**400``) is not one: ``float()`` would overflow.
    """
    if not _is_real(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _integral(value) -> bool:
    """Whether ``value`` (or the number a 0-d array holds) is an integer, or a finite real number of
    integer value (``3.0``); integers of any size are."""
    value = _scalar(value)
    if _is_integer(value):
        return True
    return _finite_real(value) and float(value).is_integer()


def _operand_pair(other):
    """``other`` as an ``(x, y)`` pair of real numbers, or None when it is not one (a string, a triple...)."""
    if isinstance(other, (str, bytes)):
        return None
    try:
        a, b = other
    except (TypeError, ValueError):
        return None
    return (a, b) if _is_real(a) and _is_real(b) else None


def _point_of(x, y, integer=False):
    """A :class:`Point2I` when ``integer`` and both coordinates are integer types, else a :class:`Point2D`."""
    if integer and _is_integer(x) and _is_integer(y):
        return Point2I(int(x), int(y))
    return Point2D(float(x), float(y))


class _PointArithmetic:
    """Element-by-element ``+``, ``-`` with pairs and ``*``, ``/`` with numbers, for the point classes.

    A base of :class:`Point2D` and :class:`Point2I` (before their ``NamedTuple``
    fields, so that its operators come before the tuple's), whose ``_integer``
    says whether integer operands keep an integer result.  An operand of
    another kind returns ``NotImplemented``, so Python raises ``TypeError`` (a
    tuple's concatenation and repetition never run).
    """

    __slots__ = ()
    _integer = False

    def __add__(self, other):
        pair = _operand_pair(other)
        if pair is None:
            return NotImplemented
        return _point_of(self[0] + pair[0], self[1] + pair[1], self._integer)

    __radd__ = __add__

    def __sub__(self, other):
        pair = _operand_pair(other)
        if pair is None:
            return NotImplemented
        x, y = self[0] - pair[0], self[1] - pair[1]
        if isinstance(self, Point2I) and isinstance(other, Point2I):
            return Extent2I(x, y)  # afw: Point2I - Point2I is an Extent2I
        return _point_of(x, y, self._integer)

    def __rsub__(self, other):
        pair = _operand_pair(other)
        if pair is None or isinstance(other, Extent2I):  # (afw has no Extent - Point)
            return NotImplemented
        return _point_of(pair[0] - self[0], pair[1] - self[1], self._integer)

    def __mul__(self, other):
        if not _is_real(other):
            return NotImplemented
        return _point_of(self[0] * other, self[1] * other, self._integer)

    __rmul__ = __mul__

    def __truediv__(self, other):
        if not _is_real(other):
            return NotImplemented
        return Point2D(self[0] / other, self[1] / other)

    def __neg__(self):
        return _point_of(-self[0], -self[1], self._integer)

    def __pos__(self):
        return self


class _Point2DFields(NamedTuple):
    x: float
    y: float


class Point2D(_PointArithmetic, _Point2DFields):
    """A floating-point position ``(x, y)``; unpacks as ``x, y = point``.

    Arithmetic is afw's, element by element (not a tuple's concatenation):
    ``point + other`` and ``point - other`` with another point, an
    ``Extent2I`` or an ``(x, y)`` pair, ``point * s``, ``s * point`` and
    ``point / s`` with a number ``s``, and ``-point``; each gives a
    :class:`Point2D` (where afw's ``Point - Point`` gives an extent, this gives
    a point with the same ``x`` and ``y``).  Other operands raise ``TypeError``.
    """

    __slots__ = ()

    def __new__(cls, x, y):
        if not (type(x) is float and type(y) is float):
            x, y = _scalar(x), _scalar(y)
            if not (_is_real(x) and _is_real(y)):
                raise InvalidInputError(f"Point2D needs two numbers (x, y); got ({x!r}, {y!r})")
        return super().__new__(cls, x, y)

    @classmethod
    def _make(cls, iterable):
        """As a NamedTuple's, but checked as the constructor (``_replace`` goes through it too)."""
        return cls(*iterable)

    def getX(self) -> float:
        return self.x

    def getY(self) -> float:
        return self.y

    def __repr__(self) -> str:
        return f"Point2D(x={self.x!r}, y={self.y!r})"



class _Point2IFields(NamedTuple):
    x: int
    y: int


class Point2I(_PointArithmetic, _Point2IFields):
    """An integer pixel position ``(x, y)``.

    Both coordinates must be integers (a float of integer value, ``3.0``, is
    taken as that integer); others raise
    :class:`~psfmatch.errors.InvalidInputError`.  Arithmetic is element by
    element as for :class:`Point2D`; the result stays a ``Point2I`` when every
    operand is an integer (``Point2I(1, 2) + (3, 4)``, ``Point2I(1, 2) * 2``),
    else it is a :class:`Point2D` (``Point2I(1, 2) * 0.5``, and always for
    ``/``).  As in afw, ``Point2I - Point2I`` is an ``Extent2I``.
    """

    __slots__ = ()
    _integer = True

    def __new__(cls, x, y):
        if not (_integral(x) and _integral(y)):
            raise InvalidInputError(f"Point2I needs two integers; got ({x!r}, {y!r}) (use Point2D for a position "
                                    "between pixel centres, or round it first)")
        return super().__new__(cls, int(x), int(y))

    @classmethod
    def _make(cls, iterable):
        """As a NamedTuple's, but checked as the constructor (``_replace`` goes through it too)."""
        return cls(*iterable)

    def getX(self) -> int:
        return self.x

    def getY(self) -> int:
        return self.y



class Extent2I(NamedTuple):
    """An integer size ``(width, height)``.

    Arithmetic is afw's, element by element: ``extent + other`` and
    ``extent - other`` with another extent or a pair of integers give an
    ``Extent2I`` (``extent + Point2I`` a :class:`Point2I`), and ``extent * n``
    with an integer ``n`` an ``Extent2I``; other operands (a float factor, a
    pair of floats) raise ``TypeError``.
    """

    width: int
    height: int

    def getX(self) -> int:
        return self.width

    def getY(self) -> int:
        return self.height

    def __add__(self, other):
        pair = _operand_pair(other)
        if pair is None or not (_is_integer(pair[0]) and _is_integer(pair[1])):
            return NotImplemented
        cls = Point2I if isinstance(other, Point2I) else Extent2I
        return cls(int(self[0] + pair[0]), int(self[1] + pair[1]))

    __radd__ = __add__

    def __sub__(self, other):
        pair = _operand_pair(other)
        if pair is None or isinstance(other, Point2I) or not (_is_integer(pair[0]) and _is_integer(pair[1])):
            return NotImplemented
        return Extent2I(int(self[0] - pair[0]), int(self[1] - pair[1]))

    def __rsub__(self, other):
        pair = _operand_pair(other)
        if pair is None or not (_is_integer(pair[0]) and _is_integer(pair[1])):
            return NotImplemented
        return Extent2I(int(pair[0] - self[0]), int(pair[1] - self[1]))

    def __mul__(self, other):
        if not _is_integer(other):
            return NotImplemented
        return Extent2I(int(self[0] * other), int(self[1] * other))

    __rmul__ = __mul__

    def __neg__(self):
        return Extent2I(-self[0], -self[1])


def as_point(position, name="position") -> Point2D:
    """Convert ``position`` (a point with ``.x``/``.y`` or an ``(x, y)`` pair) to :class:`Point2D`.

    Raises
    ------
    InvalidInputError
        If ``position`` is not a pair of finite numbers.
    """
    if isinstance(position, Point2D):
        x, y = position
    elif hasattr(position, "x") and hasattr(position, "y") and not isinstance(position, (tuple, list)):
        x, y = position.x, position.y
        x = x() if callable(x) else x
        y = y() if callable(y) else y
    else:
        try:
            x, y = position
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{name} must be a point with .x and .y or an (x, y) pair; got {position!r}"
            ) from None
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must hold two numbers; got {position!r}") from None
    except OverflowError:  # an integer beyond the float range
        raise InvalidInputError(f"{name} must be finite; got {position!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InvalidInputError(f"{name} must be finite; got ({x}, {y})")
    return Point2D(x, y)


def _int_pair(value, what, example):
    """``value`` (a pair of integers, or floats of integer value) as two ints, or InvalidInputError."""
    try:
        a, b = value
    except (TypeError, ValueError):
        raise InvalidInputError(f"Box2I {what} must be a pair of integers, as in {example}; got {value!r}") from None
    if not isinstance(a, bool) and not isinstance(b, bool):
        try:  # integers of any kind, cheaply (boxes are made in the convolution's loops)
            return operator.index(a), operator.index(b)
        except TypeError:
            pass
    if not (_integral(a) and _integral(b)):
        raise InvalidInputError(f"Box2I {what} must be a pair of finite integers, as in {example}; got {value!r}")
    return int(a), int(b)


def _int_offset(value, what) -> int:
    """``value`` (an integer, or a float of integer value) as an int, or InvalidInputError naming ``what``."""
    if not isinstance(value, bool):
        try:  # integers of any kind, cheaply
            return operator.index(value)
        except TypeError:
            pass
    if not _integral(value):
        raise InvalidInputError(f"Box2I.{what} must be a whole number of pixels, as in 2; got {value!r}")
    return int(value)


def _real_pair(value, what, example):
    """``value`` (a pair of finite real numbers) as two floats, or InvalidInputError naming ``what``."""
    try:
        a, b = map(_scalar, value)
    except (TypeError, ValueError):
        a = b = None
    if not (_finite_real(a) and _finite_real(b)):
        raise InvalidInputError(f"Box2D {what} must be a pair of finite numbers, as in {example}; got {value!r} "
                                "(or give a Box2I, whose pixel edges the Box2D then reaches)")
    return float(a), float(b)


class Box2I:
    """An inclusive integer box in parent pixel coordinates.

    Parameters
    ----------
    minimum : (int, int)
        The (x, y) of the first pixel.
    dimensions : (int, int) or Extent2I
        The (width, height); both must be non-negative.  Unlike afw's
        ``Box2I(min, max)``, the second argument is the size: a
        :class:`Point2I` or :class:`Point2D` there is refused (build a box from
        its inclusive corners with :meth:`from_corners`).

    Raises
    ------
    InvalidInputError
        If ``minimum`` or ``dimensions`` is not a pair of finite integers (NaN,
        inf, None, 1.5), a dimension is negative, or ``dimensions`` is a point.
    """

    __slots__ = ("_x0", "_y0", "_w", "_h")

    def __init__(self, minimum=(0, 0), dimensions=(0, 0)):
        if isinstance(dimensions, (Point2I, Point2D)):
            raise InvalidInputError(
                f"Box2I(minimum, dimensions) takes the width and height as its second argument, not the corner point "
                f"{dimensions!r} (afw's Box2I(min, max)); use Box2I.from_corners(xmin, ymin, xmax, ymax) for the "
                "inclusive corners, or give the size as a pair or an Extent2I")
        x0, y0 = _int_pair(minimum, "minimum", "(0, 0)")
        w, h = _int_pair(dimensions, "dimensions", "(width, height)")
        if w < 0 or h < 0:
            raise InvalidInputError(f"Box2I dimensions must be non-negative integers; got {dimensions!r}")
        self._x0, self._y0, self._w, self._h = x0, y0, w, h

    @classmethod
    def from_corners(cls, xmin, ymin, xmax, ymax) -> "Box2I":
        """The box from its inclusive corner pixels."""
        return cls((xmin, ymin), (xmax - xmin + 1, ymax - ymin + 1))

    # LSST-style accessors
    def getMinX(self) -> int:
        return self._x0

    def getMinY(self) -> int:
        return self._y0

    def getMaxX(self) -> int:
        return self._x0 + self._w - 1

    def getMaxY(self) -> int:
        return self._y0 + self._h - 1

    def getWidth(self) -> int:
        return self._w

    def getHeight(self) -> int:
        return self._h

    def getMin(self) -> Point2I:
        return Point2I(self._x0, self._y0)

    def getMax(self) -> Point2I:
        return Point2I(self.getMaxX(), self.getMaxY())

    def getDimensions(self) -> Extent2I:
        return Extent2I(self._w, self._h)

    def getCenter(self) -> Point2D:
        """The centre, in pixel coordinates (a half-integer for even sizes)."""
        return Point2D(self._x0 + (self._w - 1) / 2.0, self._y0 + (self._h - 1) / 2.0)

    def getArea(self) -> int:
        return self._w * self._h

    def isEmpty(self) -> bool:
        return self._w == 0 or self._h == 0

    # PEP 8 aliases
    @property
    def x0(self) -> int:
        return self._x0

    @property
    def y0(self) -> int:
        return self._y0

    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    @property
    def shape(self) -> tuple[int, int]:
        """The numpy shape ``(height, width)`` of an array covering the box."""
        return (self._h, self._w)

    def contains(self, point) -> bool:
        """Whether the pixel nearest ``point`` lies inside the box."""
        x, y = as_point(point)
        xi, yi = math.floor(x + 0.5), math.floor(y + 0.5)
        return self._x0 <= xi <= self.getMaxX() and self._y0 <= yi <= self.getMaxY()

    def grown(self, dx, dy=None) -> "Box2I":
        """A copy grown by ``dx`` (and ``dy``) pixels on every side (shrunk where negative).

        Raises
        ------
        InvalidInputError
            If ``dx`` or ``dy`` is not a whole number, or the box would shrink below nothing.
        """
        dx = _int_offset(dx, "grown's dx")
        dy = dx if dy is None else _int_offset(dy, "grown's dy")
        return Box2I((self._x0 - dx, self._y0 - dy), (self._w + 2 * dx, self._h + 2 * dy))

    def shifted(self, dx, dy) -> "Box2I":
        """A copy moved by ``(dx, dy)`` pixels.

        Raises
        ------
        InvalidInputError
            If ``dx`` or ``dy`` is not a whole number.
        """
        dx, dy = _int_offset(dx, "shifted's dx"), _int_offset(dy, "shifted's dy")
        return Box2I((self._x0 + dx, self._y0 + dy), (self._w, self._h))

    def intersection(self, other: "Box2I") -> "Box2I":
        """The pixels in both boxes (an empty box where they do not overlap).

        Raises
        ------
        InvalidInputError
            If ``other`` is not a :class:`Box2I`.
        """
        if not isinstance(other, Box2I):
            raise InvalidInputError(f"Box2I.intersection takes another Box2I; got {type(other).__name__} {other!r} "
                                    "(build one with Box2I(minimum, dimensions) or Box2I.from_corners)")
        xa, ya = max(self._x0, other._x0), max(self._y0, other._y0)
        xb, yb = min(self.getMaxX(), other.getMaxX()), min(self.getMaxY(), other.getMaxY())
        if xb < xa or yb < ya:
            return Box2I((xa, ya), (0, 0))
        return Box2I.from_corners(xa, ya, xb, yb)

    def slices(self, xy0=(0, 0), shape=None) -> tuple[slice, slice]:
        """numpy slices ``(rows, cols)`` selecting this box in an array whose origin is ``xy0``.

        Parameters
        ----------
        xy0 : (int, int)
            Parent coordinates of the array's pixel ``[0, 0]``.
        shape : (int, int), optional
            The array's shape ``(height, width)``; when given, the box must also
            end inside it.

        Raises
        ------
        InvalidInputError
            If the box starts before the array's origin (a negative start, which
            numpy would take from the array's far end and select too few
            pixels, or none, without an error), or ends beyond ``shape``.
        """
        x0, y0 = _int_pair(xy0, "slices origin xy0", "(0, 0)")
        sx, sy = self._x0 - x0, self._y0 - y0
        outside = sx < 0 or sy < 0
        if shape is not None and not outside:
            height, width = _int_pair(shape, "slices shape", "(height, width)")
            outside = sx + self._w > width or sy + self._h > height
        if outside:
            where = "" if shape is None else f" of shape {tuple(shape)}"
            raise InvalidInputError(
                f"{self!r} is not inside the array{where} whose origin is ({x0}, {y0}): numpy would select the "
                "wrong pixels; clip the box first, e.g. box.intersection(exposure.getBBox())")
        return (slice(sy, sy + self._h), slice(sx, sx + self._w))

    def __eq__(self, other) -> bool:
        return isinstance(other, Box2I) and (self._x0, self._y0, self._w, self._h) == (
            other._x0, other._y0, other._w, other._h)

    def __hash__(self) -> int:
        return hash((self._x0, self._y0, self._w, self._h))

    def __repr__(self) -> str:
        return f"Box2I(minimum=({self._x0}, {self._y0}), dimensions=({self._w}, {self._h}))"

    def __reduce__(self):
        return (Box2I, ((self._x0, self._y0), (self._w, self._h)))

    def to_dict(self) -> dict:
        return {"x0": self._x0, "y0": self._y0, "width": self._w, "height": self._h}


class Box2D:
    """A floating-point box; ``Box2D(box2i)`` reaches the outer pixel edges (min - 0.5, max + 0.5).

    Parameters
    ----------
    box_or_min : Box2I or (float, float)
        An integer box, or the ``(minX, minY)`` corner.
    maximum : (float, float), optional
        The ``(maxX, maxY)`` corner, when ``box_or_min`` is a corner.

    Raises
    ------
    InvalidInputError
        If a corner is not a pair of finite numbers, or the box has no positive width and height.
    """

    __slots__ = ("minX", "minY", "maxX", "maxY")

    def __init__(self, box_or_min, maximum=None):
        if isinstance(box_or_min, Box2I):
            b = box_or_min
            self.minX, self.minY = b.getMinX() - 0.5, b.getMinY() - 0.5
            self.maxX, self.maxY = b.getMaxX() + 0.5, b.getMaxY() + 0.5
        else:
            self.minX, self.minY = _real_pair(box_or_min, "minimum", "(0.0, 0.0)")
            self.maxX, self.maxY = _real_pair(maximum, "maximum", "(100.0, 50.0)")
        if not (self.maxX > self.minX and self.maxY > self.minY):
            raise InvalidInputError(f"Box2D must have positive extent; got {self!r}")

    def getMinX(self) -> float:
        return self.minX

    def getMinY(self) -> float:
        return self.minY

    def getMaxX(self) -> float:
        return self.maxX

    def getMaxY(self) -> float:
        return self.maxY

    def getCenter(self) -> Point2D:
        return Point2D(0.5 * (self.minX + self.maxX), 0.5 * (self.minY + self.maxY))

    def getWidth(self) -> float:
        return self.maxX - self.minX

    def getHeight(self) -> float:
        return self.maxY - self.minY

    def __eq__(self, other) -> bool:
        return isinstance(other, Box2D) and (self.minX, self.minY, self.maxX, self.maxY) == (
            other.minX, other.minY, other.maxX, other.maxY)

    def __repr__(self) -> str:
        return f"Box2D(({self.minX}, {self.minY}), ({self.maxX}, {self.maxY}))"

    def __reduce__(self):
        return (Box2D, ((self.minX, self.minY), (self.maxX, self.maxY)))

    def to_dict(self) -> dict:
        return {"minX": self.minX, "minY": self.minY, "maxX": self.maxX, "maxY": self.maxY}
