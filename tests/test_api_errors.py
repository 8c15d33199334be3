"""Bad arguments to the public building blocks raise psfmatch's typed errors, naming the value.

Kernel builders (bases, regularization, spatial functions), moments, spatial cells, geometry and
PSF models: each case below used to leak a bare TypeError, ValueError or AttributeError, or to be
accepted silently and fail (or give NaN) later.
"""

import re

import numpy as np
import pytest

from psfmatch import Box2D, Box2I, KernelCandidate, Point2D, SpatialCellSet
from psfmatch.errors import InvalidConfigError, InvalidInputError
from psfmatch.geom import as_point
from psfmatch.kernel import (KernelBasis, SpatialFunction, makeAlardLuptonBasisList, makeDeltaFunctionBasisList,
                             make_regularization_matrix, renormalize_kernel_list)
from psfmatch.moments import adaptive_moments, measure_shape
from psfmatch.psf import DoubleGaussianPsf, GaussianPsf, register_psf_reader
from psfmatch.psf.psfex import PsfexPsf

BOX = Box2I((0, 0), (100, 100))
NAN, INF = float("nan"), float("inf")


# --- kernel bases and regularization -----------------------------------------------------------------

@pytest.mark.parametrize("width, message", [
    (None, r"delta-function kernel width must be a whole number; got None \(the kernel size"),
    (INF, r"delta-function kernel width must be a whole number; got inf"),
    (NAN, r"delta-function kernel width must be a whole number; got nan"),
    ("21", r"delta-function kernel width must be a whole number; got '21'"),
    (21.5, r"delta-function kernel width must be a whole number; got 21.5"),
])
def test_delta_function_basis_refuses_a_width_that_is_not_a_whole_number(width, message):
    with pytest.raises(InvalidConfigError, match=message):
        makeDeltaFunctionBasisList(width)


def test_delta_function_basis_takes_a_float_of_integer_value():
    basis = makeDeltaFunctionBasisList(21.0)
    assert np.array_equal(basis.images, makeDeltaFunctionBasisList(21).images)
    assert basis.description == {"DFKernelSize": 21}


@pytest.mark.parametrize("args, message", [
    ((NAN, 1, [1.0], [1]), r"Alard-Lupton half width must be a whole number >= 1; got nan"),
    ((None, 1, [1.0], [1]), r"Alard-Lupton half width must be a whole number >= 1; got None"),
    ((10, 1, [None], [1]), r"Alard-Lupton sigmas \(alardSigGauss\) must be positive finite numbers .*got None"),
    ((10, 1, [NAN], [1]), r"Alard-Lupton sigmas \(alardSigGauss\) must be positive finite numbers .*got nan"),
    ((10, 1, ["1.5"], [1]), r"Alard-Lupton sigmas \(alardSigGauss\) must be positive .*got '1.5'"),
    ((10, 1, [1.0], [NAN]), r"each Alard-Lupton degree \(alardDegGauss\) must be a whole number from 0 to 20; "
                            r"got nan"),
    ((10, 1, [1.0], [None]), r"alardDegGauss\) must be a whole number from 0 to 20; got None"),
    # refused before it allocates: 10**12 would ask for ~5e23 basis kernels
    ((5, 1, [1.0], [10 ** 12]), r"alardDegGauss\) must be a whole number from 0 to 20; got 1000000000000"),
    ((10, 1, 1.5, [1]), r"alardSigGauss must be a list with one entry per Gaussian, as in \[0.7, 1.5, 3.0\]; "
                        r"got 1.5"),
    ((10, 1, [1.5], 2), r"alardDegGauss must be a list with one entry per Gaussian, as in \[4, 2, 2\]; got 2"),
])
def test_alard_lupton_basis_refuses_bad_widths_degrees_and_sizes(args, message):
    with pytest.raises(InvalidConfigError, match=message):
        makeAlardLuptonBasisList(*args)


def test_alard_lupton_degrees_are_capped_at_20():
    with pytest.raises(InvalidConfigError, match=r"alardDegGauss\) must be a whole number from 0 to 20; got 21"):
        makeAlardLuptonBasisList(5, 1, [1.5], [21])
    basis = makeAlardLuptonBasisList(5, 1, [1.5], [20])
    assert len(basis) == 21 * 22 // 2
    assert basis.sums()[0] == pytest.approx(1.0) and np.allclose(basis.sums()[1:], 0.0, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=None), r"the regularized kernel size must be a whole number >= 3; got None"),
    (dict(kernel_size=NAN), r"the regularized kernel size must be a whole number >= 3; got nan"),
    (dict(kernel_size=5, border_penalty=None), r"regularizationBorderPenalty must be >= 0; got None \(a finite"),
    (dict(kernel_size=5, border_penalty=NAN), r"regularizationBorderPenalty must be >= 0; got nan \(a finite"),
    (dict(kernel_size=5, border_penalty=INF), r"regularizationBorderPenalty must be >= 0; got inf"),
    (dict(kernel_size=5, regularization_type="forwardDifference", orders=(1, None)),
     r"forwardRegularizationOrders must each be 1, 2 or 3; got \[1, None\]"),
])
def test_regularization_matrix_refuses_bad_sizes_penalties_and_orders(kwargs, message):
    # (a NaN border penalty used to give a NaN matrix without a word)
    with pytest.raises(InvalidConfigError, match=message):
        make_regularization_matrix(**kwargs)


def test_regularization_orders_are_whole_numbers_from_1_to_3():
    with pytest.raises(InvalidConfigError, match=r"forwardRegularizationOrders must each be 1, 2 or 3; got \[nan\]"):
        make_regularization_matrix(5, "forwardDifference", orders=NAN)
    np.testing.assert_array_equal(make_regularization_matrix(5, "forwardDifference", orders=(1.0, 2.0)),
                                  make_regularization_matrix(5, "forwardDifference", orders=(1, 2)))


@pytest.mark.parametrize("images, message", [
    ("abc", r"renormalize_kernel_list's images must be an array of real numbers \(n, k, k\); got an array of "
            r"dtype <U3"),
    ([[[1.0]], [[1.0, 2.0]]], r"renormalize_kernel_list's images .* got nested lists of unequal lengths"),
    (np.ones((2, 3, 3)) * (1 + 1j), r"got an array of dtype complex128 \(pass the real part explicitly"),
])
def test_renormalize_kernel_list_refuses_what_is_not_real_numbers(images, message):
    with pytest.raises(InvalidConfigError, match=message):
        renormalize_kernel_list(images)


def test_kernel_basis_refuses_images_that_are_not_numbers():
    with pytest.raises(InvalidConfigError, match=r"basis images must be an array of real numbers \(n, k, k\); "
                                                 r"got an array of dtype <U1"):
        KernelBasis([["a"]], "x")
    with pytest.raises(InvalidConfigError, match=r"basis images must be .* got an array of dtype object"):
        KernelBasis([[[None]]], "x")


# --- spatial functions --------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [None, NAN, INF, 10 ** 12, -1, 2.5, "2", True])
def test_spatial_function_refuses_an_order_that_is_not_a_whole_number_from_0_to_20(order):
    with pytest.raises(InvalidConfigError, match=rf"spatialKernelOrder must be a whole number from 0 to 20; "
                                                 rf"got {order!r}".replace("(", r"\(").replace(")", r"\)")):
        SpatialFunction("chebyshev1", order, BOX)


@pytest.mark.parametrize("bbox, message", [
    ("box", r"bbox must be a Box2I or Box2D .*got str 'box'"),
    ((0, 0, 100, 100), r"bbox must be a Box2I or Box2D .*got tuple \(0, 0, 100, 100\)"),
    (Box2I((0, 0), (0, 100)), r"a SpatialFunction's bbox must not be empty; got Box2I\(minimum=\(0, 0\), "
                              r"dimensions=\(0, 100\)\)"),
])
def test_spatial_function_refuses_a_bbox_that_is_not_a_box(bbox, message):
    with pytest.raises(InvalidInputError, match=message):
        SpatialFunction("chebyshev1", 2, bbox)


def test_spatial_function_orders_are_capped_at_20_but_their_squares_are_not():
    with pytest.raises(InvalidConfigError, match=r"spatialKernelOrder must be a whole number from 0 to 20; got 21"):
        SpatialFunction("chebyshev1", 21, BOX)
    sf = SpatialFunction("chebyshev1", 20, BOX)
    assert sf.squared().order == 40 and sf.squared().nterms == 41 * 42 // 2
    x, y = 12.0, 77.0
    P = SpatialFunction("chebyshev1", 3, BOX).product_tensor()  # products expand exactly in the squared basis
    f, g = SpatialFunction("chebyshev1", 3, BOX)(x, y), SpatialFunction("chebyshev1", 6, BOX)(x, y)
    np.testing.assert_allclose(np.einsum("jkp,p->jk", P, g), np.outer(f, f), atol=1e-12)


def test_spatial_function_takes_a_box2d_and_refuses_none():
    # (None used to be accepted, and the kernel failed later with an AttributeError in computeImage)
    with pytest.raises(InvalidInputError, match=r"a SpatialFunction's bbox must be a Box2I or Box2D \(the "
                                                r"exposure's getBBox\(\)\); got NoneType None"):
        SpatialFunction("chebyshev1", 2, None)
    sf = SpatialFunction("polynomial", 2.0, Box2D((0.0, 0.0), (10.0, 20.0)))
    assert sf.order == 2 and isinstance(sf.order, int) and sf.bbox == Box2D((0.0, 0.0), (10.0, 20.0))


# --- moments --------------------------------------------------------------------------------------------

STAMP = GaussianPsf(21, 21, 2.0).computeKernelImage((0, 0))


@pytest.mark.parametrize("stamp, message", [
    (np.stack([STAMP, STAMP]), r"measure_shape's stamp must be one 2-d stamp \(ny, nx\) with ny, nx >= 1; "
                               r"got shape \(2, 21, 21\) \(measure a stack with adaptive_moments\)"),
    (STAMP[10], r"measure_shape's stamp must be one 2-d stamp .*got shape \(21,\)"),
    (np.zeros((0, 0)), r"measure_shape's stamp must be one 2-d stamp .*got shape \(0, 0\)"),
    (STAMP + 1j * STAMP, r"measure_shape's stamp must be real numbers; got an array of dtype complex128 \(measure "
                         r"the real part or the modulus explicitly\)"),
    ([["a"]], r"measure_shape's stamp must be real numbers; got an array of dtype <U1"),
])
def test_measure_shape_refuses_what_is_not_one_real_stamp(stamp, message):
    # (a complex stamp used to be measured on its real part, silently)
    with pytest.raises(InvalidInputError, match=message):
        measure_shape(stamp)


def test_measure_shape_refuses_a_position_that_is_not_a_pair_and_measures_with_one():
    with pytest.raises(InvalidInputError, match=r"measure_shape's position must be a point with .x and .y or an "
                                                r"\(x, y\) pair; got None"):
        measure_shape(np.zeros((21, 21)), position=None)
    q = measure_shape(STAMP, position=(3, 4))
    assert q.ixx == pytest.approx(4.0, rel=1e-6) and q.iyy == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize("max_iter", [None, 0, 2.0, "100", True])
def test_adaptive_moments_refuses_a_bad_iteration_limit(max_iter):
    with pytest.raises(InvalidInputError, match=rf"adaptive_moments' max_iter must be an integer >= 1; got "
                                                rf"{max_iter!r}"):
        adaptive_moments(STAMP, max_iter=max_iter)


def test_adaptive_moments_refuses_a_complex_or_one_dimensional_stack():
    with pytest.raises(InvalidInputError, match=r"adaptive_moments' stamps must be real numbers; got an array of "
                                                r"dtype complex128"):
        adaptive_moments(np.stack([STAMP, STAMP]).astype(complex))
    with pytest.raises(InvalidInputError, match=r"adaptive_moments' stamps must be one 2-d stamp \(ny, nx\) or a "
                                                r"stack \(n, ny, nx\) with ny, nx >= 1; got shape \(21,\)"):
        adaptive_moments(STAMP[10])


# --- spatial cells --------------------------------------------------------------------------------------

@pytest.fixture
def cells():
    return SpatialCellSet(Box2I((0, 0), (256, 256)), 64, 64)


@pytest.mark.parametrize("max_positions", [NAN, INF, 2.5, True])
def test_between_positions_refuses_a_count_that_is_not_a_whole_number(cells, max_positions):
    with pytest.raises(InvalidInputError, match=rf"between_positions' max_positions must be a whole number of "
                                                rf"positions, or None for all of them; got {max_positions!r}"):
        cells.between_positions(max_positions)


def test_between_positions_takes_a_float_count_of_integer_value_not_a_string(cells):
    # ('8' used to be taken as 8)
    with pytest.raises(InvalidInputError, match=r"max_positions must be a whole number of positions, or None for "
                                                r"all of them; got '8'"):
        cells.between_positions("8")
    assert cells.between_positions(8.0) == cells.between_positions(8)
    assert len(cells.between_positions(8)) == 8


def test_cell_index_refuses_a_coordinate_that_is_not_a_number(cells):
    with pytest.raises(InvalidInputError, match=r"cell_index takes a position's x and y as numbers; "
                                                r"got \(None, 1\)"):
        cells.cell_index(None, 1)
    assert cells.cell_index(NAN, 1) == -1 and cells.cell_index(70, 10) == 1


def test_insert_candidate_refuses_what_is_not_a_candidate(cells):
    with pytest.raises(InvalidInputError, match=r"insertCandidate takes a KernelCandidate, as in "
                                                r"KernelCandidate\(id, x, y\); got tuple \(10, 10\)"):
        cells.insertCandidate((10, 10))


@pytest.mark.parametrize("x, y, name, bad", [(None, 5.0, "x", "None"), (5.0, "7", "y", "'7'"),
                                             (NAN, 5.0, "x", "nan"), (5.0, INF, "y", "inf")])
def test_kernel_candidate_refuses_a_position_that_is_not_finite_numbers(x, y, name, bad):
    with pytest.raises(InvalidInputError, match=rf"a KernelCandidate's {name} must be a finite number \(its parent "
                                                rf"pixel coordinate\); got {bad}"):
        KernelCandidate(0, x, y)


# --- geometry -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ((None, (1, 1)), r"Box2D minimum must be a pair of finite numbers, as in \(0.0, 0.0\); got None"),
    (((0, 0), "ab"), r"Box2D maximum must be a pair of finite numbers, as in \(100.0, 50.0\); got 'ab'"),
    (((0, 0), None), r"Box2D maximum must be a pair of finite numbers.*got None \(or give a Box2I"),
    (((0, 0), (NAN, 1)), r"Box2D maximum must be a pair of finite numbers.*got \(nan, 1\)"),
    (((-INF, 0), (1, 1)), r"Box2D minimum must be a pair of finite numbers.*got \(-inf, 0\)"),
    (((0, 0), (1, 2, 3)), r"Box2D maximum must be a pair of finite numbers.*got \(1, 2, 3\)"),
])
def test_box2d_refuses_corners_that_are_not_pairs_of_finite_numbers(args, message):
    with pytest.raises(InvalidInputError, match=message):
        Box2D(*args)


@pytest.mark.parametrize("call, message", [
    (lambda b: b.grown(None), r"Box2I.grown's dx must be a whole number of pixels, as in 2; got None"),
    (lambda b: b.grown(1, 0.5), r"Box2I.grown's dy must be a whole number of pixels, as in 2; got 0.5"),
    (lambda b: b.shifted("1", 0), r"Box2I.shifted's dx must be a whole number of pixels, as in 2; got '1'"),
    (lambda b: b.shifted(0, NAN), r"Box2I.shifted's dy must be a whole number of pixels, as in 2; got nan"),
    (lambda b: b.intersection((0, 0, 10, 10)), r"Box2I.intersection takes another Box2I; got tuple "
                                               r"\(0, 0, 10, 10\)"),
])
def test_box2i_methods_refuse_bad_arguments(call, message):
    with pytest.raises(InvalidInputError, match=message):
        call(BOX)


def test_box2i_methods_take_integral_floats_and_refuse_none():
    with pytest.raises(InvalidInputError, match=r"Box2I.grown's dx must be a whole number of pixels"):
        BOX.grown(None)
    assert BOX.grown(2.0) == Box2I((-2, -2), (104, 104))
    assert BOX.shifted(3.0, -1) == Box2I((3, -1), (100, 100))


@pytest.mark.parametrize("x, y", [(None, "a"), (1.0, None), ("1", 2.0), (True, 1.0)])
def test_point2d_refuses_coordinates_that_are_not_numbers(x, y):
    # (Point2D(None, 'a') used to be accepted)
    with pytest.raises(InvalidInputError, match=rf"Point2D needs two numbers \(x, y\); got \({x!r}, {y!r}\)"):
        Point2D(x, y)
    with pytest.raises(InvalidInputError, match=r"Point2D needs two numbers"):
        Point2D(1.0, 2.0)._replace(x=x, y=y)


def test_point2d_keeps_numbers_as_given_and_refuses_others():
    with pytest.raises(InvalidInputError, match=r"Point2D needs two numbers \(x, y\); got \(None, 'a'\)"):
        Point2D(None, "a")
    assert Point2D(1, np.float32(2.5)) == (1, 2.5) and Point2D(1.0, 2.0) + (1, 1) == Point2D(2.0, 3.0)


# --- PSF models -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("positions, message", [
    (None, r"computeKernelImages takes a sequence of positions, as in \[\(x0, y0\), \(x1, y1\)\]; "
           r"got NoneType None \(computeKernelImage takes one\)"),
    (3.0, r"computeKernelImages takes a sequence of positions.*got float 3.0"),
    ("10,20", r"computeKernelImages takes a sequence of positions.*got str '10,20'"),
])
def test_compute_kernel_images_refuses_what_is_not_a_sequence_of_positions(positions, message):
    with pytest.raises(InvalidInputError, match=message):
        GaussianPsf(21, 21, 2.0).computeKernelImages(positions)


def test_register_psf_reader_names_the_value_that_is_not_callable():
    with pytest.raises(InvalidInputError, match=r"the reader of PSF format 'mine' must be a callable, "
                                                r"reader\(path, \*\*kwargs\) -> PSF model; got str 'not callable'"):
        register_psf_reader("mine", "not callable")
    with pytest.raises(InvalidInputError, match=r"the identifier of PSF format 'mine' must be a callable, "
                                                r"identifier\(path\) -> bool, or None .*got int 3"):
        register_psf_reader("mine", lambda path: None, 3)


@pytest.mark.parametrize("make, name, value", [
    (lambda: DoubleGaussianPsf(21, 21, 1.5, 1e-200, 1.0), "sigma2", "1e-200"),
    (lambda: DoubleGaussianPsf(21, 21, 1e-170), "sigma1", "1e-170"),
    (lambda: DoubleGaussianPsf(21, 21, 1.5, 1e200, 1.0), "sigma2", "1e+200"),
    (lambda: GaussianPsf(21, 21, 1e-160), "sigma", "1e-160"),
])
def test_gaussian_widths_whose_square_is_not_a_normal_float_are_refused(make, name, value):
    # (the profile used to be NaN at evaluation, after divide-by-zero warnings)
    with pytest.raises(InvalidInputError, match=rf"{name} = {re.escape(value)} px is outside the range a Gaussian "
                                                r"width can be computed with \(its square is not a normal float\); "
                                                r"give the width in pixels, as in 2.0"):
        make()


def test_a_tiny_but_representable_gaussian_width_gives_a_delta():
    with pytest.raises(InvalidInputError, match=r"sigma2 = 1e-200 px is outside the range"):
        DoubleGaussianPsf(21, 21, 1.5, 1e-200, 1.0)
    # the narrow wing (peak ratio b = 1) is a unit spike on the centre pixel of the core's profile
    img = DoubleGaussianPsf(21, 21, 1.5, 1e-150, 1.0).computeKernelImage((0, 0))
    core = GaussianPsf(21, 21, 1.5).computeKernelImage((0, 0))
    total = 1.0 / core[10, 10]  # the core's unnormalized sum (its peak is 1)
    assert np.all(np.isfinite(img)) and img.sum() == pytest.approx(1.0)
    assert img[10, 10] == pytest.approx(2.0 / (total + 1.0), rel=1e-12)
    np.testing.assert_allclose(img[10, 11:], core[10, 11:] * total / (total + 1.0), rtol=1e-12)


def test_psfex_basis_with_non_finite_pixels_names_the_image_and_the_pixel():
    basis = np.zeros((3, 5, 5))
    basis[0, 2, 2] = 1.0
    basis[1, 2, 3] = np.nan
    basis[2, 4, 0] = np.inf
    with pytest.raises(InvalidInputError, match=r"PsfexPsf basis images contain NaN or inf values: basis image 1 "
                                                r"\(of 3\) holds nan at row 2, column 3, 2 non-finite values in all; "
                                                r"every basis pixel must be finite"):
        PsfexPsf(basis, degree=1)


# --- integers beyond the float range and 0-d arrays -------------------------------------------------------

HUGE = 10 ** 400  # an int float() cannot hold: the finiteness checks leaked a bare OverflowError for it


@pytest.mark.parametrize("call, error, message", [
    (lambda: makeDeltaFunctionBasisList(HUGE), InvalidConfigError,
     rf"delta-function kernels must be square and odd; got {HUGE}x{HUGE}"),
    (lambda: makeDeltaFunctionBasisList(HUGE + 1), InvalidConfigError,
     rf"a delta-function basis of {HUGE + 1} x {HUGE + 1} px kernels is more than numpy can allocate \(the kernel "
     r"size: an odd number of pixels, as in 21\)"),
    (lambda: SpatialFunction("chebyshev1", HUGE, BOX), InvalidConfigError,
     rf"spatialKernelOrder must be a whole number from 0 to 20; got {HUGE} "),
    (lambda: makeAlardLuptonBasisList(HUGE, 1, [1.0], [1]), InvalidConfigError,
     rf"an Alard-Lupton basis of {2 * HUGE + 1} x {2 * HUGE + 1} px kernels is more than numpy can allocate \(the "
     r"kernel size is 2 \* halfWidth \+ 1"),
    (lambda: makeAlardLuptonBasisList(5, 1, [1.0], [HUGE]), InvalidConfigError,
     rf"alardDegGauss\) must be a whole number from 0 to 20; got {HUGE} "),
    (lambda: makeAlardLuptonBasisList(5, 1, [HUGE], [1]), InvalidConfigError,
     rf"Alard-Lupton sigmas \(alardSigGauss\) must be positive finite numbers .*got {HUGE}$"),
    (lambda: make_regularization_matrix(HUGE), InvalidConfigError,
     rf"regularization needs an odd kernel size >= 3; got {HUGE}$"),
    (lambda: make_regularization_matrix(HUGE + 1), InvalidConfigError,
     rf"the regularization matrix of a {HUGE + 1} x {HUGE + 1} px kernel is more than numpy can allocate"),
    (lambda: make_regularization_matrix(5, border_penalty=HUGE), InvalidConfigError,
     rf"regularizationBorderPenalty must be >= 0; got {HUGE} \(a finite number"),
    (lambda: KernelCandidate(0, HUGE, 5.0), InvalidInputError,
     rf"a KernelCandidate's x must be a finite number \(its parent pixel coordinate\); got {HUGE}$"),
    (lambda: Box2D((0, 0), (HUGE, 1)), InvalidInputError,
     rf"Box2D maximum must be a pair of finite numbers, as in \(100.0, 50.0\); got \({HUGE}, 1\)"),
    (lambda: as_point((HUGE, 0.0)), InvalidInputError, rf"position must be finite; got \({HUGE}, 0.0\)"),
])
def test_an_integer_beyond_the_float_range_raises_the_typed_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_an_integer_beyond_the_float_range_is_a_count_or_a_cell_size(cells):
    # integers are finite: a count of positions or a cell size that large is legal (all of them; one cell)
    assert cells.between_positions(HUGE) == cells.between_positions(10 ** 6)
    assert len(cells.between_positions(HUGE)) > len(cells.between_positions())
    wide = SpatialCellSet(Box2I((0, 0), (256, 256)), HUGE, 64)
    assert (wide.nx, wide.ny) == (1, 4)
    assert cells.cell_index(HUGE, 5) == -1 and cells.cell_index(5, 5) == 0  # (far outside the box)


def test_zero_dimensional_arrays_are_taken_as_the_numbers_they_hold(cells):
    # np.array(5) and np.array(0.7) worked before the argument checks, as they do in GaussianPsf and as_point
    basis = makeDeltaFunctionBasisList(np.array(5))
    assert np.array_equal(basis.images, makeDeltaFunctionBasisList(5).images) and basis.description == {
        "DFKernelSize": 5}
    al = makeAlardLuptonBasisList(np.array(5), np.array(2), [np.array(0.7), 1.5], [np.array(2), np.array(1.0)])
    np.testing.assert_array_equal(al.images, makeAlardLuptonBasisList(5, 2, [0.7, 1.5], [2, 1]).images)
    sf = SpatialFunction("chebyshev1", np.array(2), BOX)
    assert sf == SpatialFunction("chebyshev1", 2, BOX) and type(sf.order) is int
    np.testing.assert_array_equal(make_regularization_matrix(np.array(7), border_penalty=np.array(3.0)),
                                  make_regularization_matrix(7, border_penalty=3.0))
    np.testing.assert_array_equal(make_regularization_matrix(5, "forwardDifference", orders=(1, np.array(2))),
                                  make_regularization_matrix(5, "forwardDifference", orders=(1, 2)))
    c = KernelCandidate(0, np.array(5.0), np.array(6))
    assert (c.x, c.y) == (5.0, 6) and not isinstance(c.x, np.ndarray) and c.getPosition() == Point2D(5.0, 6.0)
    assert Box2D((np.array(0.0), 0.0), (10.0, np.array(10))) == Box2D((0.0, 0.0), (10.0, 10.0))
    assert BOX.grown(np.array(2.0)) == BOX.grown(2) and BOX.shifted(np.array(1.0), 0) == BOX.shifted(1, 0)
    p = Point2D(np.array(1.5), 2.0)
    assert p == (1.5, 2.0) and type(p.x) is float
    assert cells.between_positions(np.array(8)) == cells.between_positions(8)
    assert SpatialCellSet(Box2I((0, 0), (256, 256)), np.array(64), np.array(64.0)).nx == 4
    # what they hold is checked as a number is
    with pytest.raises(InvalidConfigError, match=r"spatialKernelOrder must be a whole number from 0 to 20; got "
                                                 r"array\(2.5\)"):
        SpatialFunction("chebyshev1", np.array(2.5), BOX)
    with pytest.raises(InvalidInputError, match=r"a KernelCandidate's x must be a finite number .*got nan"):
        KernelCandidate(0, np.array(np.nan), 1.0)
    with pytest.raises(InvalidInputError, match=r"Box2I.grown's dx must be a whole number of pixels, as in 2; got "
                                                r"array\(True\)"):
        BOX.grown(np.array(True))


def test_squared_spatial_functions_past_the_cap_rebuild_and_condition():
    # squared() of an order >= 11 is past the cap of 20: its to_dict() and conditioned() were refused
    box = Box2D((-1.0, -1.0), (1.0, 1.0))  # (the Chebyshev variable is x itself: the change of basis is exact)
    sq = SpatialFunction("polynomial", 11, box).squared()
    assert sq.order == 22 and SpatialFunction.from_dict(sq.to_dict()) == sq
    cheb, B = sq.conditioned()
    assert cheb == SpatialFunction.from_dict({**sq.to_dict(), "kind": "chebyshev1"}) and B.shape == (276, 276)
    rng = np.random.default_rng(3)
    c = rng.normal(size=cheb.nterms)
    x, y = rng.uniform(-1, 1, 20), rng.uniform(-1, 1, 20)
    np.testing.assert_allclose(c @ cheb(x, y), (c @ B) @ sq(x, y), rtol=1e-9, atol=1e-9 * np.abs(c).sum())
