"""Points and boxes in parent pixel coordinates.

Conventions: positions are (x, y) = (column, row), 0-based,
with pixel centres at integer values.  An image carries its origin ``xy0``, so
its bounding box may start anywhere; numpy arrays are indexed ``[y, x]``.
:class:`Box2I` is an inclusive integer box, as in LSST's afw.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .errors import InvalidInputError

__all__ = ["Point2D", "Point2I", "Extent2I", "Box2I", "Box2D", "as_point"]


class Point2D(NamedTuple):
    """A floating-point position ``(x, y)``; unpacks as ``x, y = point``."""

    x: float
    y: float

    def getX(self) -> float:
        return self.x

    def getY(self) -> float:
        return self.y

    def __repr__(self) -> str:
        return f"Point2D(x={self.x!r}, y={self.y!r})"


class Point2I(NamedTuple):
    """An integer pixel position ``(x, y)``."""

    x: int
    y: int

    def getX(self) -> int:
        return self.x

    def getY(self) -> int:
        return self.y


class Extent2I(NamedTuple):
    """An integer size ``(width, height)``."""

    width: int
    height: int

    def getX(self) -> int:
        return self.width

    def getY(self) -> int:
        return self.height


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
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InvalidInputError(f"{name} must be finite; got ({x}, {y})")
    return Point2D(x, y)


class Box2I:
    """An inclusive integer box in parent pixel coordinates.

    Parameters
    ----------
    minimum : (int, int)
        The (x, y) of the first pixel.
    dimensions : (int, int)
        The (width, height); both must be non-negative.
    """

    __slots__ = ("_x0", "_y0", "_w", "_h")

    def __init__(self, minimum=(0, 0), dimensions=(0, 0)):
        x0, y0 = minimum
        w, h = dimensions
        if int(w) != w or int(h) != h or w < 0 or h < 0:
            raise InvalidInputError(f"Box2I dimensions must be non-negative integers; got {dimensions!r}")
        if int(x0) != x0 or int(y0) != y0:
            raise InvalidInputError(f"Box2I minimum must be integers; got {minimum!r}")
        self._x0, self._y0, self._w, self._h = int(x0), int(y0), int(w), int(h)

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
        """A copy grown by ``dx`` (and ``dy``) pixels on every side."""
        dy = dx if dy is None else dy
        return Box2I((self._x0 - dx, self._y0 - dy), (self._w + 2 * dx, self._h + 2 * dy))

    def shifted(self, dx, dy) -> "Box2I":
        return Box2I((self._x0 + dx, self._y0 + dy), (self._w, self._h))

    def intersection(self, other: "Box2I") -> "Box2I":
        xa, ya = max(self._x0, other._x0), max(self._y0, other._y0)
        xb, yb = min(self.getMaxX(), other.getMaxX()), min(self.getMaxY(), other.getMaxY())
        if xb < xa or yb < ya:
            return Box2I((xa, ya), (0, 0))
        return Box2I.from_corners(xa, ya, xb, yb)

    def slices(self, xy0=(0, 0)) -> tuple[slice, slice]:
        """numpy slices ``(rows, cols)`` selecting this box in an array whose origin is ``xy0``."""
        x0, y0 = xy0
        return (slice(self._y0 - y0, self._y0 - y0 + self._h), slice(self._x0 - x0, self._x0 - x0 + self._w))

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
    """A floating-point box; ``Box2D(box2i)`` reaches the outer pixel edges (min - 0.5, max + 0.5)."""

    __slots__ = ("minX", "minY", "maxX", "maxY")

    def __init__(self, box_or_min, maximum=None):
        if isinstance(box_or_min, Box2I):
            b = box_or_min
            self.minX, self.minY = b.getMinX() - 0.5, b.getMinY() - 0.5
            self.maxX, self.maxY = b.getMaxX() + 0.5, b.getMaxY() + 0.5
        else:
            (self.minX, self.minY), (self.maxX, self.maxY) = box_or_min, maximum
            self.minX, self.minY, self.maxX, self.maxY = map(float, (self.minX, self.minY, self.maxX, self.maxY))
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
