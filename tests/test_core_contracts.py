"""Contracts of the numerical core that mutation testing found unpinned (convolve, solve, kernel, basis, spatial).

Each test here fails against a deliberate mutation of the library (named in its docstring; most of those
mutants survived the rest of the suite) and passes on the real code.
"""

import numpy as np
import pytest

from psfmatch import Box2I
from psfmatch.convolve import convolve_masked_image, direct_convolve, mask_footprint
from psfmatch.image import MaskedImage
from psfmatch.kernel import makeAlardLuptonBasisList
from psfmatch.kernel.basis import KernelBasis
from psfmatch.kernel.kernel import LinearCombinationKernel
from psfmatch.kernel.spatial import SpatialFunction


def _asymmetric_images(k, n, seed):
    """``n`` positive ``k x k`` images with no symmetry (no x/y swap or flip leaves one unchanged)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:k, :k] - k // 2
    imgs = []
    for _ in range(n):
        g = np.exp(-((xx - 0.7) ** 2 / 2.0 + (yy + 0.4) ** 2 / 0.8)) * (1 + 0.3 * rng.random((k, k)))
        imgs.append(g / g.sum())
    return np.array(imgs)


def _varying_chebyshev_kernel(bbox, k=7, seed=11):
    """An order-2 Chebyshev kernel over ``bbox`` whose coefficients vary strongly along both axes."""
    basis = makeAlardLuptonBasisList(k // 2, 2, (1.0, 2.0), (2, 1))
    rng = np.random.default_rng(seed)
    sf = SpatialFunction("chebyshev1", 2, bbox)
    coeffs = np.zeros((len(basis), sf.nterms))
    coeffs[0, 0] = 1.0
    coeffs[1:] = rng.normal(0, 0.08, (len(basis) - 1, sf.nterms))
    return LinearCombinationKernel(basis, coeffs, sf, 1.0, bbox)


def test_a_concentric_sub_box_applies_the_kernel_of_its_own_positions():
    """An image on a box centred like the kernel's but smaller must get the kernel at its own pixels.

    Mutation: ``_axis_change`` returned the identity whenever the boxes shared a centre (``alpha == 0``),
    ignoring the scale ``beta``: the image got the kernel of positions four times as far from the centre.
    """
    bbox = Box2I((0, 0), (200, 160))  # pixel edges [-0.5, 199.5] x [-0.5, 159.5]: centre (99.5, 79.5)
    K = _varying_chebyshev_kernel(bbox)
    rng = np.random.default_rng(1)
    img = rng.normal(10.0, 2.0, (40, 50))
    var = rng.uniform(0.5, 2.0, (40, 50))
    mi = MaskedImage(img, variance=var, xy0=(75, 60))  # edges [74.5, 124.5] x [59.5, 99.5]: the same centre
    out = convolve_masked_image(mi, K, tile=64, workers=1)
    ref_i, ref_v = direct_convolve(mi, K)
    inner = (slice(3, -3), slice(3, -3))
    np.testing.assert_allclose(out.image[inner], ref_i[inner], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out.variance[inner], ref_v[inner], rtol=1e-10)


def test_an_asymmetric_constant_kernel_convolves_image_and_variance_exactly():
    """``out = sum_u K(u) I(x - u)`` and ``var = sum_u K(u)^2 V(x - u)`` for a kernel with no symmetry.

    Mutation: the constant kernel's variance image was ``K * K.T`` (a transposed factor); every other test
    used a kernel symmetric under the transpose.
    """
    K = LinearCombinationKernel(KernelBasis(_asymmetric_images(7, 1, 2), "pca"), [1.0])
    rng = np.random.default_rng(3)
    img = rng.normal(5.0, 1.0, (30, 34))
    var = rng.uniform(0.5, 3.0, (30, 34))
    mi = MaskedImage(img, variance=var)
    out = convolve_masked_image(mi, K, workers=1)
    ref_i, ref_v = direct_convolve(mi, K)
    inner = (slice(3, -3), slice(3, -3))
    np.testing.assert_allclose(out.image[inner], ref_i[inner], rtol=1e-12)
    np.testing.assert_allclose(out.variance[inner], ref_v[inner], rtol=1e-12)


def _sparse_kernel():
    """A constant 5x5 kernel with exact zeros: a peak at the centre, a weaker pixel right of it, one below-left."""
    img = np.zeros((5, 5))
    img[2, 2], img[2, 3], img[4, 1] = 0.7, 0.2, 0.1
    return LinearCombinationKernel(KernelBasis(img[None], "pca"), [1.0])


def test_a_zero_threshold_footprint_is_exactly_the_non_zero_kernel_pixels():
    """``maskDilationThreshold = 0`` selects every pixel that is non-zero somewhere, and only those.

    Mutation: ``amax >= 0`` selected the whole ``k x k`` square, so a flagged pixel spread over pixels the
    kernel never reads it into.
    """
    K = _sparse_kernel()
    fp = mask_footprint(K, 0.0)
    np.testing.assert_array_equal(fp, K.computeImage() != 0)
    mask = np.zeros((21, 21), np.int32)
    mask[10, 10] = 1  # BAD
    out = convolve_masked_image(MaskedImage(np.zeros((21, 21)), mask, np.ones((21, 21))), K, mask_threshold=0.0)
    # out(x) reads I(x - u) for the kernel pixels u: the bit lands at (10, 10) + u
    expected = np.zeros((21, 21), bool)
    expected[10, 10] = expected[10, 11] = expected[12, 9] = True
    np.testing.assert_array_equal((out.mask & 1) != 0, expected)


def test_a_unit_threshold_footprint_is_the_kernel_peak():
    """``maskDilationThreshold = 1`` keeps the pixels at the kernel's peak (``|K| >= 1 * max|K|``): not none.

    Mutation: a strict ``>`` gave an empty footprint, and every mask bit (BAD, SAT, ...) was dropped.
    """
    K = _sparse_kernel()
    fp = mask_footprint(K, 1.0)
    assert fp.sum() == 1 and fp[2, 2]
    mask = np.zeros((21, 21), np.int32)
    mask[10, 10] = 32 | 1  # DETECTED (the footprint's planes) and BAD (every non-zero kernel pixel)
    out = convolve_masked_image(MaskedImage(np.zeros((21, 21)), mask, np.ones((21, 21))), K, mask_threshold=1.0)
    assert np.flatnonzero(out.mask & 32).tolist() == [10 * 21 + 10]
    support = np.zeros((21, 21), bool)
    support[8:13, 8:13] = mask_footprint(K, 0.0)
    assert np.array_equal((out.mask & 1) != 0, support) and support.sum() > 1


def test_a_zero_kernel_keeps_each_pixels_own_mask_bits():
    """A kernel of sum 0 everywhere (``kernelSum = 0``) zeroes the image but must not erase the mask.

    Mutation: without the centre pixel set for an all-zero kernel, the footprint was empty and no bit survived.
    """
    K = _sparse_kernel().with_kernel_sum(0.0)
    fp = mask_footprint(K, 1e-3)
    assert fp.sum() == 1 and fp[2, 2]
    mask = np.zeros((21, 21), np.int32)
    mask[10, 10] = 1
    out = convolve_masked_image(MaskedImage(np.ones((21, 21)), mask, np.ones((21, 21))), K)
    assert np.flatnonzero(out.mask & 1).tolist() == [10 * 21 + 10]
    np.testing.assert_array_equal(out.image[2:-2, 2:-2], 0.0)


def test_the_border_mask_is_no_data_only():
    """The outer ``kernelSize // 2`` pixels carry NO_DATA and nothing else (afw's ``doCopyEdge=False``).

    Mutation: OR-ing NO_DATA into the dilated mask kept the input's bits (SAT, CR) on the border.
    """
    H, W = 24, 26
    mask = np.zeros((H, W), np.int32)
    mi = MaskedImage(np.ones((H, W)), mask, np.ones((H, W)))
    m = mi.getMask()
    sat, nodata = m.getPlaneBitMask("SAT"), m.getPlaneBitMask("NO_DATA")
    mi.mask[0, :] = mi.mask[:, -1] = mi.mask[-2, :] = mi.mask[:, 1] = sat
    out = convolve_masked_image(mi, _sparse_kernel())
    border = np.ones((H, W), bool)
    border[2:-2, 2:-2] = False
    np.testing.assert_array_equal(out.mask[border], nodata)
    assert np.all(out.mask[~border] & nodata == 0)


def test_constrained_equations_of_a_basis_with_arbitrary_sums_are_its_gram():
    """``transform_equations`` is ``T^T M T``, ``T^T b`` also for a pivot sum other than 1 and ratios other than 0, 1.

    The library's own bases all have a pivot of unit sum and ratios of 0 (Alard-Lupton, PCA) or 1 (delta
    functions).  Mutations: ``Mpp / s_p`` for ``Mpp / s_p**2``; the ``r_i r_j M_pp`` term dropped; the
    ``- r_i b_p`` term dropped.  Here the equations are checked against the design of the transformed basis.
    """
    from psfmatch.solve import NormalEquations, constrained_basis, transform_equations

    rng = np.random.default_rng(8)
    raw = rng.normal(0.0, 1.0, (4, 5, 5)) + np.array([0.2, -0.05, 0.13, 0.0])[:, None, None]
    raw[0] *= 3.0  # pivot sum far from 1
    basis = KernelBasis(raw, "pca")
    imgs, order, ratios, s_p = constrained_basis(basis)
    assert abs(s_p - 1) > 0.5 and np.all(np.abs(ratios) > 1e-3) and not np.all(ratios == 1)
    # the transformed kernels as combinations of the raw ones, and a random linear design of the raw kernels
    T = np.linalg.lstsq(raw.reshape(4, -1).T, imgs.reshape(4, -1).T, rcond=None)[0]
    np.testing.assert_allclose(T.T @ raw.reshape(4, -1), imgs.reshape(4, -1), atol=1e-12)
    C = rng.standard_normal((2, 30, 4))
    y = rng.standard_normal((2, 30))
    M, b = np.einsum("nki,nkj->nij", C, C), np.einsum("nki,nk->ni", C, y)
    got = transform_equations(NormalEquations(M, b, np.einsum("nk,nk->n", y, y)), order, ratios, s_p)
    np.testing.assert_allclose(got.M, T.T @ M @ T, rtol=0, atol=1e-12 * np.abs(M).max())
    np.testing.assert_allclose(got.b, b @ T, rtol=0, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("k", [3, 5, 9, 15])
def test_footprint_rectangles_are_maximal(k):
    """Each run is extended over every row that holds it: a square is one rectangle, a disk at most ``k//2 + 1``.

    Mutation: stopping the upward extension at row 1 (``a0 > 1``) still covered the footprint, but split a
    square into two rectangles and a disk into more than documented (each one an extra dilation pass).
    """
    from psfmatch.convolve import footprint_rectangles

    h = k // 2
    assert footprint_rectangles(np.ones((k, k), bool)) == [(-h, h, -h, h)]
    yy, xx = np.mgrid[:k, :k] - h
    disk = yy ** 2 + xx ** 2 <= h * h
    rects = footprint_rectangles(disk)
    assert len(rects) <= k // 2 + 1
    union = np.zeros_like(disk)
    for dy0, dy1, dx0, dx1 in rects:
        union[dy0 + h:dy1 + h + 1, dx0 + h:dx1 + h + 1] = True
    np.testing.assert_array_equal(union, disk)


def _explicit_full_equations(basis, S, R):
    """``C^T C``, ``C^T y``, ``y^T y`` of the explicit design over the full (zero-padded) support, per candidate."""
    from scipy import signal

    h = basis.kernel_size // 2
    out = []
    for s, r in zip(S, R):
        C = np.array([signal.convolve(s, B, mode="full").ravel() for B in basis.images]).T
        y = np.pad(r, h).ravel()
        out.append((C.T @ C, C.T @ y, y @ y))
    return out


def _gaussian_stamps(P, widths, shift=0.0):
    v, u = np.mgrid[-(P // 2):P // 2 + 1, -(P // 2):P // 2 + 1]
    out = []
    for w in widths:
        g = np.exp(-0.5 * ((u - shift) ** 2 / w ** 2 + v ** 2 / (1.2 * w) ** 2))
        out.append(g / g.sum())
    return np.array(out)


def test_references_shared_only_by_the_first_candidates_are_not_taken_as_one():
    """A reference stamp is transformed once only when *every* candidate has the same one.

    Mutation: comparing only the first two stamps took ``[R0, R0, R1]`` as a shared ``R0``, and the third
    candidate was fitted to the wrong reference.
    """
    from psfmatch.solve import GramBuilder

    basis = makeAlardLuptonBasisList(3, 2, (1.0, 2.0), (1, 1))
    S = _gaussian_stamps(21, (1.4, 1.6, 1.8), shift=0.3)
    R = _gaussian_stamps(21, (2.5, 2.5, 3.1))
    eq = GramBuilder(basis, "full").build(S, R)
    for c, (M, b, yy) in enumerate(_explicit_full_equations(basis, S, R)):
        np.testing.assert_allclose(eq.M[c], M, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(eq.b[c], b, rtol=1e-10, atol=1e-15)
        assert eq.yy[c] == pytest.approx(yy, rel=1e-12)


def test_one_builder_serves_stamps_of_several_sizes():
    """A GramBuilder reused on stamps of another size (another transform size) gives that size's equations.

    Mutation: its spectral products were reused whatever the transform size they were made for.
    """
    from psfmatch.solve import GramBuilder

    basis = makeAlardLuptonBasisList(3, 2, (1.0, 2.0), (1, 1))
    builder = GramBuilder(basis, "full")
    for P in (15, 31):
        S = _gaussian_stamps(P, (1.3, 1.7), shift=0.4)
        R = _gaussian_stamps(P, (2.4, 2.8))
        eq = builder.build(S, R)
        for c, (M, b, yy) in enumerate(_explicit_full_equations(basis, S, R)):
            np.testing.assert_allclose(eq.M[c], M, rtol=1e-10, atol=1e-15)
            np.testing.assert_allclose(eq.b[c], b, rtol=1e-10, atol=1e-15)


def test_a_kernel_varying_only_linearly_in_x_is_spatially_varying():
    """A kernel whose only non-constant term is ``x`` varies, and is convolved with its variation.

    Mutation: ``isSpatiallyVarying`` looked at the terms after the first two (``[:, 2:]``): such a kernel was
    taken as constant, and the image convolved everywhere with the kernel at the centre.
    """
    bbox = Box2I((0, 0), (40, 30))
    basis = makeAlardLuptonBasisList(2, 2, (0.8, 1.6), (1, 0))
    sf = SpatialFunction("chebyshev1", 1, bbox)
    coeffs = np.zeros((len(basis), sf.nterms))
    coeffs[0, 0] = 1.0
    coeffs[1:, sf.terms.index((1, 0))] = [0.3, -0.2, 0.25]
    K = LinearCombinationKernel(basis, coeffs, sf, 1.0, bbox)
    assert K.isSpatiallyVarying()
    assert not np.allclose(K.computeImage((0, 15)), K.computeImage((39, 15)))
    rng = np.random.default_rng(5)
    mi = MaskedImage(rng.normal(10.0, 1.0, (30, 40)), variance=rng.uniform(1, 2, (30, 40)))
    out = convolve_masked_image(mi, K, workers=1)
    ref_i, ref_v = direct_convolve(mi, K)
    inner = (slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(out.image[inner], ref_i[inner], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out.variance[inner], ref_v[inner], rtol=1e-10)


@pytest.mark.parametrize("stencil", [5, 9])
@pytest.mark.parametrize("border", [0.0, 3.0])
def test_central_difference_penalty_is_the_squared_laplacian(stencil, border):
    """``p^T H p`` sums the squared Laplacian over interior pixels, plus ``border^2`` times the border's ``p^2``.

    The existing checks (a constant costs 0, a step does not) hold for many wrong matrices.  Mutations: the
    right-hand column treated as interior (its stencil wrapping into the next row); the 9-point stencil's
    edge and corner weights swapped.
    """
    from scipy import ndimage

    from psfmatch.kernel import make_regularization_matrix

    k = 7
    H = make_regularization_matrix(k, "centralDifference", stencil=stencil, border_penalty=border)
    if stencil == 5:
        lap = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)
    else:
        lap = np.array([[1, 4, 1], [4, -20, 4], [1, 4, 1]], float) / 6.0
    rng = np.random.default_rng(9)
    for _ in range(3):
        p = rng.normal(size=(k, k))
        interior = ndimage.correlate(p, lap, mode="constant")[1:-1, 1:-1]
        edge = np.ones((k, k), bool)
        edge[1:-1, 1:-1] = False
        want = np.sum(interior ** 2) + border ** 2 * np.sum(p[edge] ** 2)
        assert p.ravel() @ H @ p.ravel() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("orders", [[1], [2], [1, 3]])
def test_forward_difference_penalty_is_the_sum_of_squared_differences(orders):
    """``p^T H p`` sums, for each order and pixel, the squared forward difference along x and along y, the order
    tapered to the room left before the kernel's far edge, plus ``border^2`` times the border's ``p^2``.

    Mutations: the room along x taken from the row (and along y from the column); the border penalty on the
    top and bottom rows only.
    """
    from psfmatch.kernel import make_regularization_matrix

    k, border = 7, 2.0
    H = make_regularization_matrix(k, "forwardDifference", orders=orders, border_penalty=border)
    rng = np.random.default_rng(10)
    p = rng.normal(size=(k, k))
    want = 0.0
    for order in orders:
        for r in range(k):
            for c in range(k):
                ox = min(order, k - 1 - c)
                if ox:
                    want += np.diff(p[r, c:c + ox + 1], n=ox)[0] ** 2
                oy = min(order, k - 1 - r)
                if oy:
                    want += np.diff(p[r:r + oy + 1, c], n=oy)[0] ** 2
    edge = np.ones((k, k), bool)
    edge[1:-1, 1:-1] = False
    want += border ** 2 * np.sum(p[edge] ** 2)
    assert p.ravel() @ H @ p.ravel() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("P, k", [(15, 7), (25, 9)])
def test_equations_of_stamps_with_power_to_their_edges_equal_the_explicit_design(P, k):
    """The spectral normal equations are exact for any stamps, not only compact Gaussians.

    Stamps whose pixels are non-zero out to their edges (broad wings, a noisy PSF model) have an
    autocorrelation reaching lag ``2a``.  Mutation: a transform of ``2a + h + 1`` points instead of
    ``2a + 2h + 1`` aliased those lags into the ones the Gram matrix uses; Gaussian stamps, whose far lags
    are ~1e-13, did not show it.
    """
    from psfmatch.solve import GramBuilder

    basis = makeAlardLuptonBasisList(k // 2, 2, (1.0, 2.0), (2, 1))
    rng = np.random.default_rng(12)
    S = rng.uniform(0.5, 1.5, (2, P, P))
    R = rng.uniform(0.5, 1.5, (2, P, P))
    eq = GramBuilder(basis, "full").build(S, R)
    for c, (M, b, yy) in enumerate(_explicit_full_equations(basis, S, R)):
        np.testing.assert_allclose(eq.M[c], M, rtol=1e-10, atol=1e-12 * np.abs(M).max())
        np.testing.assert_allclose(eq.b[c], b, rtol=1e-10, atol=1e-12 * np.abs(b).max())


def test_candidate_chi2_is_the_residual_of_the_fitted_kernel():
    """``solve_candidates``' ``chi2`` is ``|S (*) K - R|^2`` at the solution, as documented.

    Nothing in the task reads it, so no other test did.  Mutations: ``reduce_constrained`` subtracting
    ``b_0`` once instead of twice (``|R - S (*) B_0|^2`` wrong); the quadratic term's sign flipped.
    """
    from scipy import signal

    from psfmatch.solve import (GramBuilder, constrained_basis, reduce_constrained, solve_candidates,
                                transform_equations)

    basis = makeAlardLuptonBasisList(3, 2, (1.0, 2.0), (2, 1))
    S = _gaussian_stamps(21, (1.3, 1.6), shift=0.4)
    R = _gaussian_stamps(21, (2.2, 2.6))
    imgs, order, ratios, s_p = constrained_basis(basis)
    eq = reduce_constrained(transform_equations(GramBuilder(basis, "full").build(S, R), order, ratios, s_p))
    coeffs, rank, cond = solve_candidates(eq, 1e-12)
    a = coeffs[:, 1:]  # the residual at the solution, from the equations alone
    chi2 = eq.yy - 2 * np.einsum("ni,ni->n", a, eq.b) + np.einsum("ni,nij,nj->n", a, eq.M, a)
    h = basis.kernel_size // 2
    for c in range(len(S)):
        K = np.tensordot(coeffs[c], imgs, axes=1)
        assert K.sum() == pytest.approx(1.0, abs=1e-12)  # the sum constraint
        resid = signal.convolve(S[c], K, mode="full") - np.pad(R[c], h)
        want = np.sum(resid ** 2)
        assert want < 1e-2 * np.sum(R[c] ** 2)  # a real fit, not a trivial one
        assert chi2[c] == pytest.approx(want, rel=1e-6, abs=1e-15)


def test_pca_of_kernels_does_not_depend_on_their_sums():
    """``pca_basis`` scales each kernel to unit sum first: kernels of another sum give the same basis.

    The task's candidate kernels already sum to 1, so no other test saw it.  Mutation: without the scaling
    a kernel of sum 3 dominated the mean and the components.
    """
    from psfmatch.solve import pca_basis

    k = 9
    yy, xx = np.mgrid[:k, :k] - k // 2
    K = np.array([np.exp(-(xx ** 2 / (2 * sx ** 2) + yy ** 2 / (2 * sy ** 2))) for sx, sy in
                  ((1.0, 1.2), (1.4, 1.1), (1.8, 1.6), (1.2, 2.0))])
    K /= K.sum(axis=(1, 2), keepdims=True)
    for subtract_mean in (True, False):
        unit = pca_basis(K, 3, subtract_mean).images
        scaled = pca_basis(K * np.array([3.0, 0.5, 1.0, 7.0])[:, None, None], 3, subtract_mean).images
        assert unit.shape == scaled.shape
        for a, b in zip(unit, scaled):  # each component up to its (arbitrary) sign
            assert min(np.abs(a - b).max(), np.abs(a + b).max()) < 1e-10


def test_as_many_positions_as_terms_can_determine_the_spatial_model():
    """A square design of full rank (three non-collinear candidates for an order-1 model) determines every term.

    Mutation: ``<=`` for ``<`` in the count check called every square design rank-deficient, and the task
    would have lowered the spatial order of a fit its candidates determine exactly.
    """
    from psfmatch.kernel.spatial import full_column_rank

    sf = SpatialFunction("chebyshev1", 1, Box2I((0, 0), (100, 80)))
    F = sf.evaluate(np.array([10.0, 90.0, 50.0]), np.array([10.0, 10.0, 70.0])).T  # (3 positions, 3 terms)
    assert F.shape == (3, 3)
    assert full_column_rank(F)
    assert not full_column_rank(sf.evaluate(np.array([10.0, 50.0, 90.0]), np.array([10.0, 40.0, 70.0])).T)  # collinear
    assert not full_column_rank(F[:2])  # fewer positions than terms


def test_kernel_parameters_carry_the_kernel_sum():
    """afw's parameters include ``kernelSum``: ``sum_i getKernelParameters(x)_i B_i`` is the kernel image at
    ``x``, and ``getSpatialParameters`` (and each parameter's function) reproduce those parameters.

    Mutations: ``getSpatialParameters`` or ``getKernelParameters`` without the ``kernelSum`` factor; every
    kernel the suite queried them on had ``kernelSum = 1``.
    """
    bbox = Box2I((0, 0), (60, 50))
    K = _varying_chebyshev_kernel(bbox, k=5).with_kernel_sum(2.5)
    sf = K.getSpatialFunction()
    for x, y in ((3.0, 4.0), (51.5, 40.0)):
        params = K.getKernelParameters((x, y))
        np.testing.assert_allclose(np.tensordot(params, K.basis.images, axes=1), K.computeImage((x, y)),
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(K.getSpatialParameters() @ sf.evaluate(x, y), params, rtol=1e-12, atol=1e-15)
        assert K.getSpatialFunction(0)(x, y) == pytest.approx(params[0], rel=1e-12)
    assert K.computeImage((3.0, 4.0)).sum() == pytest.approx(2.5, rel=1e-12)


def test_the_default_position_is_the_centre_of_the_fitted_box():
    """Without a position, a kernel with a box is evaluated at the box's centre (documented; afw uses (0, 0)).

    Mutation: falling back to (0, 0) gave, for a box far from the origin, an extrapolated kernel.
    """
    bbox = Box2I((300, 200), (60, 40))
    K = _varying_chebyshev_kernel(bbox, k=5)
    centre = bbox.getCenter()
    np.testing.assert_array_equal(K.computeImage(), K.computeImage((centre.x, centre.y)))
    np.testing.assert_array_equal(K.getKernelParameters(), K.getKernelParameters((centre.x, centre.y)))
    assert not np.allclose(K.computeImage(), K.computeImage((0.0, 0.0)))
