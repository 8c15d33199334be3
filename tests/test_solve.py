"""The least-squares machinery: normal equations without basis convolutions, rank handling, spatial fit."""

import numpy as np
import pytest
from scipy import signal

from psfmatch import Box2I, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.kernel import makeAlardLuptonBasisList, makeDeltaFunctionBasisList
from psfmatch.kernel.spatial import SpatialFunction
from psfmatch.psf import GaussianPsf, VariableGaussianPsf
from psfmatch.solve import GramBuilder, solve_gram


def _stamps(rng, n=3, P=25):
    v, u = np.mgrid[-(P // 2):P // 2 + 1, -(P // 2):P // 2 + 1]
    S, R = [], []
    for _ in range(n):
        s = np.exp(-0.5 * ((u - rng.normal(0, .3)) ** 2 / 1.7 ** 2 + v ** 2 / 2.0 ** 2))
        r = np.exp(-0.5 * (u * u + v * v) / 2.8 ** 2) * (1 + 0.05 * rng.normal(size=u.shape))
        S.append(s / s.sum())
        R.append(r / r.sum())
    return np.array(S), np.array(R)


def _assert_equals_explicit_design(eq, basis, S, R):
    """The equations are C^T C, C^T y and y^T y of the explicit design over the full support."""
    h = basis.kernel_size // 2
    for c in range(len(S)):
        C = np.array([signal.convolve(S[c], B, mode="full").ravel() for B in basis.images]).T
        y = np.pad(R[c], h).ravel()
        np.testing.assert_allclose(eq.M[c], C.T @ C, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(eq.b[c], C.T @ y, rtol=1e-10, atol=1e-15)
        assert eq.yy[c] == pytest.approx(y @ y)


@pytest.mark.parametrize("kind", ["AL", "DF", "no-parity"])
def test_gram_equals_explicit_design_matrix(kind, rng):
    """M_ij = sum A_S X_ij and b_i = sum B_i C_SR reproduce C^T C and C^T y over the full support.

    The AL kernels are even or odd, so the pairs of opposite parity are not computed (they vanish
    for any stamp: the design's C^T C has them at rounding level for these lopsided stamps); a
    basis without parity computes every pair.
    """
    from psfmatch.kernel.basis import KernelBasis
    from psfmatch.solve import _pairs

    if kind == "AL":
        basis = makeAlardLuptonBasisList(4, 3, (0.7, 1.5, 3.0), (2, 1, 1))
        assert len(_pairs(basis.images)[0]) < len(basis) * (len(basis) + 1) // 2
    elif kind == "DF":
        basis = makeDeltaFunctionBasisList(5)
    else:
        al = makeAlardLuptonBasisList(4, 2, (1.0, 2.0), (2, 1))
        images = al.images + 0.01 * np.roll(al.images, 1, axis=2)  # shifted: no definite parity
        basis = KernelBasis(images, "pca", {})
        assert len(_pairs(basis.images)[0]) == len(basis) * (len(basis) + 1) // 2
    S, R = _stamps(rng)
    eq = GramBuilder(basis, "full").build(S, R)
    _assert_equals_explicit_design(eq, basis, S, R)
    assert S.shape[1] == 25


@pytest.mark.parametrize("region", ["stamp", "valid"])
def test_design_regions(region, rng):
    basis = makeAlardLuptonBasisList(3, 2, (1.0, 2.0), (1, 1))
    S, R = _stamps(rng, n=2, P=15)
    eq = GramBuilder(basis, region).build(S, R)
    h = 3
    for c in range(2):
        full = np.array([signal.convolve(S[c], B, mode="full") for B in basis.images])
        if region == "stamp":
            C, y = full[:, h:h + 15, h:h + 15], R[c]
        else:
            C, y = full[:, 2 * h:15, 2 * h:15], R[c][h:15 - h, h:15 - h]
        C = C.reshape(len(basis), -1).T
        np.testing.assert_allclose(eq.M[c], C.T @ C, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(eq.b[c], C.T @ y.ravel(), rtol=1e-10, atol=1e-15)


def test_solve_gram_rank_deficient_is_min_norm(rng):
    A = rng.normal(size=(20, 6))
    A[:, 5] = A[:, 0] + A[:, 1]  # rank 5
    y = rng.normal(size=20)
    x, rank, cond = solve_gram(A.T @ A, A.T @ y, 1e-8)
    assert rank == 5 and np.isfinite(cond)
    # same residual as numpy's lstsq, and no larger a norm in the scaled space
    x_ls = np.linalg.lstsq(A, y, rcond=None)[0]
    assert np.linalg.norm(A @ x - y) == pytest.approx(np.linalg.norm(A @ x_ls - y), rel=1e-8)
    # exactly singular (all-zero) systems do not raise either
    x0, r0, c0 = solve_gram(np.zeros((3, 3)), np.zeros(3), 1e-8)
    assert r0 == 0 and np.all(x0 == 0) and np.isinf(c0)


def test_chebyshev_and_polynomial_span_the_same_model():
    bbox = Box2I((0, 0), (512, 512))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.15, -0.1], e1=[0.0, 0.03, 0.0])
    fits = {}
    for kind in ("chebyshev1", "polynomial"):
        c = ModelPsfMatchConfig()
        c.kernel.active.spatialModelType = kind
        fits[kind] = ModelPsfMatchTask(config=c).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox).kernel
    for pos in [(0, 0), (100.5, 400), (511, 3)]:
        np.testing.assert_allclose(fits["chebyshev1"].computeImage(pos), fits["polynomial"].computeImage(pos),
                                   atol=1e-7)


@pytest.mark.parametrize("xy0", [(0, 0), (20000, 20000), (100000, 100000)])
def test_polynomial_model_far_from_the_origin_keeps_its_order_and_accuracy(xy0):
    """Raw-pixel monomials over a box far from 0 are solved for in their Chebyshev form: same order, same kernel."""
    bbox = Box2I(xy0, (512, 512))
    psf = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.15, -0.1, 0.05, 0.0, 0.05])
    fits = {}
    for kind in ("chebyshev1", "polynomial"):
        c = ModelPsfMatchConfig()
        c.autoKernel = False
        c.kernel.active.spatialModelType = kind
        c.kernel.active.spatialKernelOrder = 3
        c.kernel.active.sizeCellX = c.kernel.active.sizeCellY = 64
        fits[kind] = ModelPsfMatchTask(config=c).fitKernel(psf, GaussianPsf(31, 31, 2.6), bbox)
    md = fits["polynomial"].metadata
    assert md["spatialKernelOrder"] == 3
    assert all("raw-pixel monomials" in n for n in md["notes"])  # (at 1e5 a note on the monomials' precision)
    for dx, dy in [(0, 0), (100.5, 400), (511, 3), (256, 256)]:
        pos = (xy0[0] + dx, xy0[1] + dy)
        np.testing.assert_allclose(fits["polynomial"].kernel.computeImage(pos),
                                   fits["chebyshev1"].kernel.computeImage(pos), atol=2e-6)


def test_conditioned_basis_spans_the_same_polynomials():
    sf = SpatialFunction("polynomial", 4, Box2I((100000, 50000), (1024, 2048)))
    cheb, B = sf.conditioned()
    assert cheb.kind == "chebyshev1" and cheb.order == 4 and cheb.bbox == sf.bbox
    rng = np.random.default_rng(1)
    c = rng.normal(size=sf.nterms)
    x, y = rng.uniform(100000, 101024, 50), rng.uniform(50000, 52048, 50)
    # sum_t c_t C_t = sum_u (c @ B)_u x^p y^q, to the precision raw monomials allow this far out
    np.testing.assert_allclose((c @ B) @ sf.evaluate(x, y), c @ cheb.evaluate(x, y), atol=1e-5)
    same, identity = cheb.conditioned()
    assert same is cheb and np.array_equal(identity, np.eye(cheb.nterms))


def test_recovers_known_spatial_variation():
    """Second moments add under convolution: Var(K(x)) = sigma_ref^2 - sigma_sci(x)^2 along each axis."""
    bbox = Box2I((0, 0), (768, 768))
    psf = VariableGaussianPsf(25, 25, bbox, sigma=[1.8, 0.2, 0.0, 0.0, 0.0, 0.0])
    fit = ModelPsfMatchTask().fitKernel(psf, GaussianPsf(35, 35, 2.8), bbox)
    h = fit.kernel.getWidth() // 2
    v, u = np.mgrid[-h:h + 1, -h:h + 1]
    for x in np.linspace(10, 758, 7):
        K = fit.kernel.computeImage((x, 384.0))
        var_x = np.sum(K * u * u)
        var_y = np.sum(K * v * v)
        s = psf.parameters((x, 384.0))[0]
        expect = 2.8 ** 2 - s ** 2
        assert var_x == pytest.approx(expect, rel=0.02)
        assert var_y == pytest.approx(expect, rel=0.02)


def test_spatial_function_terms():
    sf = SpatialFunction("chebyshev1", 2, Box2I((0, 0), (100, 50)))
    assert sf.terms == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    f = sf.evaluate(99.5, -0.5)  # the box's pixel edges map to +1 and -1
    np.testing.assert_allclose(f, [1, 1, -1, 1, -1, 1])
    # products expand exactly on the order-4 basis
    P = sf.product_tensor()
    sq = sf.squared()
    xs, ys = np.array([3.0, 70.0]), np.array([10.0, 44.0])
    fv, gv = sf.evaluate(xs, ys), sq.evaluate(xs, ys)
    np.testing.assert_allclose(np.einsum("jkp,pn->jkn", P, gv), fv[:, None] * fv[None], atol=1e-12)


@pytest.mark.parametrize("shared_reference", [False, True])
def test_gram_of_zero_padded_stamps_uses_their_support(shared_reference, rng):
    """Science stamps zero-padded to psfSize (the task's autoPad) are transformed on their support only:
    the equations are those of the explicit design over the full support, whatever the placement."""
    from psfmatch.psf.base import stamp_half_support as _half_support

    for basis in (makeAlardLuptonBasisList(5, 3, (0.8, 1.6, 3.0), (2, 1, 1)), makeDeltaFunctionBasisList(5)):
        _check_padded(basis, shared_reference, rng)
    # and the other way round: a reference padded to a larger stamp than its support (r < a)
    basis = makeAlardLuptonBasisList(5, 3, (0.8, 1.6, 3.0), (2, 1, 1))
    S, _ = _stamps(rng, n=3, P=31)
    _, Rs = _stamps(rng, n=3, P=11)
    R = np.pad(Rs, ((0, 0), (10, 10), (10, 10)))
    if shared_reference:
        R = np.broadcast_to(R[0], R.shape)
    assert _half_support(R) == 5 < _half_support(S) == 15
    _assert_equals_explicit_design(GramBuilder(basis, "full").build(S, R), basis, S, R)


def _check_padded(basis, shared_reference, rng):
    from psfmatch.psf.base import stamp_half_support as _half_support

    S0, R0 = _stamps(rng, n=4, P=15)
    S = np.pad(S0, ((0, 0), (8, 8), (8, 8)))  # 15 -> 31: zeros around, as the task pads
    S[1, 11, 14] += 1e-3  # one lopsided stamp
    _, Rbig = _stamps(rng, n=4, P=31)
    R = np.broadcast_to(Rbig[0], Rbig.shape) if shared_reference else Rbig
    builder = GramBuilder(basis, "full")
    assert _half_support(S) == 7 and builder._full_geometry(S, R)[0] < 31 + basis.kernel_size - 1
    _assert_equals_explicit_design(builder.build(S, R), basis, S, R)


def test_chunked_normal_equations_equal_one_chunk(rng):
    """The chunk size changes how the candidates are grouped (and run on the cores), never their equations."""
    basis = makeAlardLuptonBasisList(5, 3, (0.8, 1.6, 3.0), (2, 1, 1))
    S, R = _stamps(rng, n=37, P=31)
    whole = GramBuilder(basis, "full").build(S, R, chunk=37)
    for chunk in (5, 16, 256):
        part = GramBuilder(basis, "full").build(S, R, chunk=chunk)
        for a, b in ((part.M, whole.M), (part.b, whole.b), (part.yy, whole.yy)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14 * np.abs(b).max())  # rounding of the products


@pytest.mark.filterwarnings("ignore::psfmatch.errors.KernelQualityWarning")
@pytest.mark.parametrize("name", ["AL", "DF"])
def test_constant_match_at_order_0_reuses_the_candidate_solution(name, rng):
    """One distinct candidate and a constant spatial model: the joint system is n f^2 times the candidate's."""
    from psfmatch.solve import (NormalEquations, constrained_basis, reduce_constrained, solve_candidates,
                                solve_spatial, transform_equations)

    basis = makeAlardLuptonBasisList(5, 3, (0.8, 1.6, 3.0), (2, 1, 1)) if name == "AL" else \
        makeDeltaFunctionBasisList(7)
    S, R = _stamps(rng, n=1, P=25)
    imgs, order, ratios, s_p = constrained_basis(basis)
    raw = GramBuilder(basis, "full").build(S, R)
    if name == "DF":  # a weakly regularized, ill-conditioned system: the truncation must agree too
        raw = NormalEquations(raw.M + 1e-9 * np.eye(raw.M.shape[-1])[None], raw.b, raw.yy)
    eq = reduce_constrained(transform_equations(raw, order, ratios, s_p))
    coeffs, rank, cond = solve_candidates(eq, 1e-7)
    n, f0 = 7, 1.0  # Chebyshev T_0 = 1 at every candidate
    rep = NormalEquations(np.repeat(eq.M, n, axis=0), np.repeat(eq.b, n, axis=0), np.repeat(eq.yy, n))
    theta, srank, scond = solve_spatial(rep, np.full((n, 1), f0), 1e-7)
    assert srank == rank[0]
    assert scond == pytest.approx(cond[0], rel=1e-6)
    np.testing.assert_allclose(theta[:, 0], coeffs[0, 1:] / f0, rtol=1e-6, atol=1e-9 * np.abs(theta).max())
    # and the task gives the spatial kernel that candidate's own solution, with its rank and condition
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.name = name
    config.kernel.active.kernelSize = 11
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    fit = ModelPsfMatchTask(config=config).fitKernel(GaussianPsf(25, 25, 1.8), GaussianPsf(25, 25, 2.6),
                                                      Box2I((0, 0), (256, 256)))
    md = fit.metadata
    cand = next(iter(fit.cellSet.candidates()))
    assert md["nUniqueCandidates"] == 1 and md["nCandidatesUsed"] == 16
    assert md["spatialSolutionRank"] == cand.rank and md["spatialConditionNum"] == pytest.approx(cand.condition_number)
    own = cand.kernel_image / cand.kernel_image.sum()
    np.testing.assert_allclose(fit.kernel.computeImage((100, 40)) / fit.kernel.getSum((100, 40)), own, rtol=0,
                               atol=1e-12)


def test_large_systems_solved_by_cholesky_agree_with_the_eigen_decomposition(monkeypatch, rng):
    """Large full-rank systems: eigenvalues for the rank, then Cholesky; truncated ones: the pseudo-inverse."""
    import scipy.linalg

    import psfmatch.solve as solve_mod

    monkeypatch.setattr(solve_mod, "_LARGE_SOLVED", {})
    N = solve_mod._LARGE_SYSTEM + 20
    A = rng.standard_normal((N + 40, N)) * np.logspace(0, 3, N)  # columns of very different scales
    M, b = A.T @ A, A.T @ rng.standard_normal(N + 40)

    def eigen_reference(M, b, cut):
        d = np.sqrt(np.diag(M))
        w, V = scipy.linalg.eigh(M / np.outer(d, d))
        s = np.sqrt(np.clip(w, 0, None))
        keep = s > cut * s.max()
        x = V @ (np.where(keep, 1 / np.where(keep, w, 1), 0) * (V.T @ (b / d))) / d
        return x, int(keep.sum()), s.max() / s[keep].min()

    decompositions = []
    real_eigh = solve_mod._eigh
    monkeypatch.setattr(solve_mod, "_eigh", lambda A, **kw: decompositions.append(A.shape) or real_eigh(A, **kw))
    x, rank, cond = solve_gram(M, b, 1e-7)
    want, want_rank, want_cond = eigen_reference(M, b, np.sqrt(N * np.finfo(float).eps))
    assert rank == want_rank == N and not decompositions  # full rank: no eigenvectors needed
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-9 * np.abs(want).max())
    np.testing.assert_allclose(M @ x, b, rtol=0, atol=1e-9 * np.abs(b).max())
    np.testing.assert_allclose(cond, want_cond, rtol=1e-8)  # s_max / s_min of the column-scaled design
    # a rank-deficient system (a repeated column) keeps the minimum-norm pseudo-inverse solution
    A2 = np.concatenate([A, A[:, :1]], axis=1)
    M2, b2 = A2.T @ A2, A2.T @ rng.standard_normal(N + 40)
    x2, rank2, _ = solve_gram(M2, b2, 1e-7)
    want2, want_rank2, _ = eigen_reference(M2, b2, np.sqrt((N + 1) * np.finfo(float).eps))
    assert rank2 == want_rank2 == N and decompositions == [(N + 1, N + 1)]
    np.testing.assert_allclose(x2, want2, rtol=0, atol=1e-9 * np.abs(want2).max())
    assert abs(x2[0] - x2[-1]) < 1e-9 * np.abs(want2).max()  # the repeated column's weight split evenly
    # a Cholesky that fails after all falls back to the decomposition
    monkeypatch.setattr(solve_mod, "_LARGE_SOLVED", {})
    monkeypatch.setattr(scipy.linalg, "solve", lambda *a, **kw: (_ for _ in ()).throw(np.linalg.LinAlgError("no")))
    x3, rank3, _ = solve_gram(M, b, 1e-7)
    assert rank3 == N and len(decompositions) == 2
    np.testing.assert_allclose(x3, want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_a_large_system_solved_again_is_looked_up_not_decomposed(monkeypatch, rng):
    """The automatic kernel's chosen delta-function trial and the fit after it solve the same system once."""
    import psfmatch.solve as solve_mod

    calls = []
    real_solve = solve_mod._solve_large
    monkeypatch.setattr(solve_mod, "_solve_large", lambda *a: calls.append(a[0].shape) or real_solve(*a))
    monkeypatch.setattr(solve_mod, "_LARGE_SOLVED", {})
    N = solve_mod._LARGE_SYSTEM + 10
    A = rng.standard_normal((N + 5, N))
    M, b = A.T @ A, A.T @ rng.standard_normal(N + 5)
    x1, r1, c1 = solve_gram(M, b, 1e-7)
    x1_copy = x1.copy()
    x1[:] = 0.0  # the caller's array is its own: the remembered solution is not touched
    x2, r2, c2 = solve_gram(M.copy(), b.copy(), 1e-7)
    assert len(calls) == 1 and np.array_equal(x2, x1_copy) and r2 == r1 and c2 == c1
    np.testing.assert_allclose(M @ x2, b, rtol=0, atol=1e-8 * np.abs(b).max())
    # another right side, another rcond or a changed matrix is a new system
    solve_gram(M, 2 * b, 1e-7)
    solve_gram(M, b, 1e-5)
    M2 = M.copy()
    M2[0, 0] *= 1 + 1e-15
    solve_gram(M2, b, 1e-7)
    assert len(calls) == 4


@pytest.mark.parametrize("pivot_first", [False, True])
def test_constrained_equations_are_the_gram_of_the_constrained_basis(rng, pivot_first):
    """``transform_equations`` gives ``T^T M T`` and ``T^T b`` for the basis change of ``constrained_basis``.

    The delta-function basis puts its pivot (the centre pixel) in the middle of the raw order, which
    the block copy handles; an order that is not the raw one takes the general gather.
    """
    from psfmatch.kernel.basis import makeDeltaFunctionBasisList
    from psfmatch.solve import NormalEquations, constrained_basis, transform_equations

    basis = makeDeltaFunctionBasisList(5)
    imgs, order, ratios, s_p = constrained_basis(basis)
    N = len(order)
    if pivot_first:  # the same basis change with the other kernels listed in reverse
        order = np.concatenate([order[:1], order[1:][::-1]])
        ratios = ratios[::-1]
    # T maps constrained coefficients to raw ones: B'_0 = B_p / s_p, B'_i = B_o(i) - r_i B_p
    T = np.zeros((N, N))
    T[order[0], 0] = 1 / s_p
    for i, (o, r) in enumerate(zip(order[1:], ratios), start=1):
        T[o, i] = 1.0
        T[order[0], i] = -r
    C = rng.standard_normal((3, 40, N))
    y = rng.standard_normal((3, 40))
    M, b = np.einsum("nki,nkj->nij", C, C), np.einsum("nki,nk->ni", C, y)
    got = transform_equations(NormalEquations(M, b, np.einsum("nk,nk->n", y, y)), order, ratios, s_p)
    np.testing.assert_allclose(got.M, T.T @ M @ T, rtol=0, atol=1e-12 * np.abs(M).max())
    np.testing.assert_allclose(got.b, b @ T, rtol=0, atol=1e-12 * np.abs(b).max())


# ---------------------------------------------------------------------------
# PCA of the candidates' kernels: every candidate counts once


def _gaussian_kernels(params, k=15):
    from psfmatch.psf.analytic import elliptical_gaussian
    return np.array([elliptical_gaussian(k, k, ixx, iyy, ixy) for ixx, iyy, ixy in params])


def _same_up_to_sign(a, b, atol):
    """Components agree up to the sign of each (an eigenvector's sign is arbitrary)."""
    assert a.shape == b.shape
    for x, y in zip(a, b):
        assert min(np.abs(x - y).max(), np.abs(x + y).max()) < atol


@pytest.mark.parametrize("subtract_mean", [True, False])
def test_pca_weights_equal_repeating_the_kernels(subtract_mean):
    from psfmatch.solve import pca_basis
    K = _gaussian_kernels([(2.0, 2.0, 0.0), (2.6, 1.8, 0.3), (1.5, 2.4, -0.2), (3.0, 3.0, 0.0)])
    counts = np.array([5, 1, 2, 7])
    repeated = pca_basis(np.repeat(K, counts, axis=0), 3, subtract_mean)
    weighted = pca_basis(K, 3, subtract_mean, weights=counts)
    _same_up_to_sign(weighted.images, repeated.images, 1e-10)
    # and the weights matter: equal weights give another basis
    plain = pca_basis(K, 3, subtract_mean)
    assert np.abs(plain.images[1:] - weighted.images[1:]).max() > 1e-3


@pytest.mark.parametrize("weights", [[1, 2], [1, 2, -1], [0, 0, 0], [1, np.nan, 1]])
def test_pca_bad_weights(weights):
    from psfmatch.errors import InvalidInputError
    from psfmatch.solve import pca_basis
    K = _gaussian_kernels([(2.0, 2.0, 0.0), (2.6, 1.8, 0.3), (1.5, 2.4, -0.2)])
    with pytest.raises(InvalidInputError, match=r"weights must be 3 finite non-negative numbers"):
        pca_basis(K, 2, weights=weights)


class _ZonePsf:
    """Three zones of different elliptical Gaussians, of unequal areas; ``jitter`` makes every stamp distinct."""

    def __init__(self, jitter=0.0):
        self.jitter = jitter

    def computeKernelImage(self, position):
        from psfmatch.psf.analytic import elliptical_gaussian
        x, y = position
        ixx, iyy = (4.8, 3.2) if x < 256 else (2.9, 4.3) if y < 256 else (2.56, 2.56)
        img = elliptical_gaussian(31, 31, ixx, iyy, 0.0)
        if self.jitter:
            rng = np.random.default_rng(int(x * 1009 + y * 7))
            img = img * (1 + self.jitter * rng.random(img.shape))
        return img / img.sum()

    def isSpatiallyVarying(self):
        return True

    def getAveragePosition(self):
        return (512.0, 512.0)


@pytest.mark.filterwarnings("ignore::psfmatch.errors.KernelQualityWarning")  # order 0 on a varying field
def test_pca_kernel_does_not_depend_on_identical_stamps():
    """A model returning identical stamps in many cells (3 distinct of 64) fits the kernel that the same model
    with every stamp distinct (1e-10 jitter) fits: the PCA weighs candidates, not distinct stamps."""
    bbox = Box2I((0, 0), (1024, 1024))
    images, unique = {}, {}
    for jitter in (0.0, 1e-10):
        c = ModelPsfMatchConfig()
        c.autoKernel = False
        a = c.kernel.active
        a.usePcaForSpatialKernel, a.numPrincipalComponents, a.spatialKernelOrder = True, 2, 0
        fit = ModelPsfMatchTask(config=c).fitKernel(_ZonePsf(jitter), GaussianPsf(31, 31, 2.8), bbox)
        images[jitter] = fit.kernel.computeImage((700, 700))
        unique[jitter] = fit.metadata["nUniqueCandidates"]
    assert unique == {0.0: 3, 1e-10: 64}
    peak = np.abs(images[0.0]).max()
    # 0.21 of the peak when each distinct stamp pair weighed once
    assert np.abs(images[0.0] - images[1e-10]).max() < 1e-6 * peak
