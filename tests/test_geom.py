"""Points, extents and boxes: afw's arithmetic and constructors, typed errors for bad arguments."""

import pickle

import numpy as np
import pytest

from psfmatch import Box2I, InvalidInputError, Point2D, Point2I
from psfmatch.geom import Extent2I


def test_point_arithmetic_is_element_by_element():
    """A point is a tuple: + concatenated and * repeated it ((1, 2) + (3, 4) == (1, 2, 3, 4))."""
    assert Point2D(1, 2) + Point2D(3, 4) == (4.0, 6.0) and type(Point2D(1, 2) + (3, 4)) is Point2D
    assert Point2D(1, 2) * 2 == (2.0, 4.0) and 2 * Point2D(1, 2) == (2.0, 4.0)
    assert Point2D(1, 2) / 4 == (0.25, 0.5) and -Point2D(1, 2) == (-1.0, -2.0)
    assert (10, 20) + Point2D(1, 2) == Point2D(11, 22) and (10, 20) - Point2D(1, 2) == Point2D(9, 18)
    assert Point2D(5, 5) - Point2I(1, 2) == Point2D(4, 3)
    # integer operands keep a Point2I; anything else gives a Point2D
    p = Point2I(1, 2) + Extent2I(3, 4)
    assert p == (4, 6) and type(p) is Point2I and type(p.x) is int
    assert type(Point2I(1, 2) * 3) is Point2I and type(Point2I(1, 2) + (np.int64(1), 1)) is Point2I
    assert type(Point2I(1, 2) * 0.5) is Point2D and Point2I(1, 2) * 0.5 == (0.5, 1.0)
    assert type(Point2I(1, 2) / 1) is Point2D
    assert type(Point2I(1, 2) + (0.5, 0)) is Point2D
    # afw: Point2I - Point2I is an extent (so Box2I(p0, p1 - p0) works); Extent2I * n an extent
    d = Point2I(5, 7) - Point2I(1, 2)
    assert d == (4, 5) and type(d) is Extent2I
    assert Box2I(Point2I(1, 2), Point2I(5, 7) - Point2I(1, 2)) == Box2I((1, 2), (4, 5))
    assert Extent2I(2, 3) * 2 == Extent2I(4, 6) and Extent2I(2, 3) + (1, 1) == Extent2I(3, 4)
    assert Extent2I(2, 3) + Point2I(1, 1) == Point2I(3, 4) and type(Extent2I(2, 3) + Point2I(1, 1)) is Point2I


@pytest.mark.parametrize("operation", [
    lambda: Point2D(1, 2) + (1, 2, 3),
    lambda: Point2D(1, 2) + "ab",
    lambda: Point2D(1, 2) * Point2D(1, 2),
    lambda: Point2D(1, 2) * "2",
    lambda: Point2I(1, 2) * [2],
    lambda: Extent2I(1, 2) * 1.5,
    lambda: Extent2I(1, 2) + (0.5, 0),
])
def test_point_arithmetic_with_other_operands_raises_type_error(operation):
    with pytest.raises(TypeError, match="unsupported operand|can.t multiply sequence"):
        operation()


def test_point2i_holds_integers():
    with pytest.raises(InvalidInputError, match=r"Point2I needs two integers; got \(1\.5, 2\) \(use Point2D"):
        Point2I(1.5, 2)
    for bad in [(float("nan"), 0), (float("inf"), 0), ("1", 2), (None, 2), (True, 0)]:
        with pytest.raises(InvalidInputError, match="Point2I needs two integers"):
            Point2I(*bad)
    p = Point2I(3.0, np.int64(4))  # integer values are taken as ints
    assert p == (3, 4) and type(p.x) is int and type(p.y) is int and repr(p) == "Point2I(x=3, y=4)"
    assert pickle.loads(pickle.dumps(p)) == p and type(pickle.loads(pickle.dumps(p))) is Point2I
    assert p._replace(x=7) == Point2I(7, 4) and hash(p) == hash((3, 4))


def test_box_refuses_a_corner_point_as_its_dimensions():
    """afw's Box2I(Point2I min, Point2I max) is the inclusive-corner constructor: here it made a 9 x 9 box."""
    with pytest.raises(InvalidInputError, match=r"takes the width and height as its second argument, not the "
                                                r"corner point Point2I\(x=9, y=9\).*Box2I\.from_corners"):
        Box2I(Point2I(0, 0), Point2I(9, 9))
    with pytest.raises(InvalidInputError, match="not the corner point"):
        Box2I((0, 0), Point2D(9, 9))
    assert Box2I.from_corners(0, 0, 9, 9).getMaxX() == 9
    assert Box2I(Point2I(0, 0), Extent2I(10, 10)) == Box2I((0, 0), (10, 10))


@pytest.mark.parametrize("args, match", [
    (((0, 0), (float("nan"), 1)), r"dimensions must be a pair of finite integers.*got \(nan, 1\)"),
    (((0, 0), (float("inf"), 1)), r"dimensions must be a pair of finite integers.*got \(inf, 1\)"),
    (((float("nan"), 0), (1, 1)), r"minimum must be a pair of finite integers"),
    ((None,), r"minimum must be a pair of integers, as in \(0, 0\); got None"),
    (((0, 0), None), r"dimensions must be a pair of integers"),
    (((0.5, 0), (1, 1)), r"minimum must be a pair of finite integers.*got \(0\.5, 0\)"),
    (((0, 0), (1, 2, 3)), r"dimensions must be a pair of integers"),
    (((0, 0), (-1, 3)), "non-negative integers"),
])
def test_box_arguments_that_are_not_integer_pairs_are_refused(args, match):
    with pytest.raises(InvalidInputError, match=match):
        Box2I(*args)


def test_box_slices_refuse_a_box_outside_the_array():
    """A negative start selected from the far end of the array: Box2I((-5, 0), (10, 10)) gave a (10, 0) view."""
    arr = np.arange(400).reshape(20, 20)
    with pytest.raises(InvalidInputError, match=r"Box2I\(minimum=\(-5, 0\), dimensions=\(10, 10\)\) is not inside "
                                                r"the array whose origin is \(0, 0\).*box\.intersection"):
        Box2I((-5, 0), (10, 10)).slices()
    with pytest.raises(InvalidInputError, match=r"not inside the array whose origin is \(10, 20\)"):
        Box2I((12, 19), (3, 3)).slices(xy0=(10, 20))
    # with the array's shape, the far end is checked too
    with pytest.raises(InvalidInputError, match=r"not inside the array of shape \(20, 20\)"):
        Box2I((15, 0), (10, 10)).slices(shape=arr.shape)
    sy, sx = Box2I((5, 2), (10, 3)).slices(shape=arr.shape)
    assert arr[sy, sx].shape == (3, 10) and arr[sy, sx][0, 0] == arr[2, 5]
    assert Box2I((12, 22), (3, 3)).slices(xy0=(10, 20)) == (slice(2, 5), slice(2, 5))


def test_point2i_replace_and_make_are_checked():
    """NamedTuple's _make and _replace bypassed the integer check: Point2I(1, 2)._replace(x=1.5) held 1.5."""
    assert Point2I(1, 2)._replace(x=3) == Point2I(3, 2)
    with pytest.raises(InvalidInputError, match=r"Point2I needs two integers; got \(1\.5, 2\)"):
        Point2I(1, 2)._replace(x=1.5)
    with pytest.raises(InvalidInputError, match=r"Point2I needs two integers"):
        Point2I._make([float("nan"), 2])


def test_an_extent_minus_a_point_is_refused():
    """Extent2I - Point2I gave a Point2I through Point2I.__rsub__, though the docstring (and afw) refuse it."""
    with pytest.raises(TypeError):
        Extent2I(10, 20) - Point2I(1, 2)
    assert Extent2I(10, 20) + Point2I(1, 2) == Point2I(11, 22)
