"""Kernel bases and regularization (lsst-reference section 5.2)."""

import numpy as np
import pytest

from psfmatch import InvalidConfigError, ModelPsfMatchConfig
from psfmatch.kernel import (makeAlardLuptonBasisList, makeDeltaFunctionBasisList, makeKernelBasisList,
                             make_regularization_matrix, renormalize_kernel_list)


def test_delta_function_basis():
    basis = makeDeltaFunctionBasisList(21, 21)
    assert len(basis) == 441
    for n, img in enumerate(basis):
        assert img.sum() == 1.0
        assert img[n // 21, n % 21] == 1.0
        assert np.count_nonzero(img) == 1


def _check_normalization(images):
    assert abs(images[0].sum() - 1.0) < 1e-7
    for img in images[1:]:
        assert abs(img.sum()) < 1e-7
        assert abs(np.sum(img * img) - 1.0) < 1e-7


def test_alard_lupton_basis():
    basis = makeAlardLuptonBasisList(10, 3, (0.7, 1.5, 3.0), (4, 2, 2))
    assert len(basis) == 15 + 6 + 6
    assert basis.images.shape == (27, 21, 21)
    _check_normalization(basis.images)
    # the first kernel is the unit-sum sigma 0.7 Gaussian
    v, u = np.mgrid[-10:11, -10:11]
    g = np.exp(-(u * u + v * v) / (2 * 0.7 ** 2))
    np.testing.assert_allclose(basis.images[0], g / g.sum(), atol=1e-15)
    # odd monomials (x, y) of the first Gaussian are antisymmetric; even ones symmetric
    assert np.allclose(basis.images[1], -basis.images[1][:, ::-1])
    assert np.allclose(basis.images[2], -basis.images[2][::-1, :])
    assert np.allclose(basis.images[3], basis.images[3][:, ::-1])


def test_alard_lupton_mismatched_lengths():
    with pytest.raises(InvalidConfigError, match="alardNGauss=3 must equal len"):
        makeAlardLuptonBasisList(10, 3, (0.7, 1.5), (4, 2, 2))


@pytest.mark.parametrize("fwhms", [(None, None), (3.0, 4.0), (4.0, 3.0)])
def test_make_kernel_basis_list_al(fwhms):
    config = ModelPsfMatchConfig().kernel["AL"]
    config.scaleByFwhm = fwhms[0] is not None
    md = {}
    basis = makeKernelBasisList(config, *fwhms, metadata=md)
    _check_normalization(basis.images)
    assert md["ALBasisNGauss"] == 3 and md["ALBasisDegGauss"] == [4, 2, 2]
    assert md["ALBasisMode"] == ("config" if fwhms[0] is None else "fwhm")
    if fwhms[0] is not None:
        # sigma_k = sqrt(|s_ref^2 - s_sci^2|) with s = fwhm / 2.355; first width max(minSig, s_k / beta)
        f2s = 1 / (2 * np.sqrt(2 * np.log(2)))
        sk = np.sqrt(abs(fwhms[0] ** 2 - fwhms[1] ** 2)) * f2s
        min_sig = 0.7 if fwhms[0] > fwhms[1] else 0.4
        assert md["ALBasisSigGauss"][0] == pytest.approx(max(min_sig, sk / 2.0))
        assert md["ALBasisSigGauss"][1] == pytest.approx(2 * md["ALBasisSigGauss"][0])
        assert 21 <= md["ALKernelSize"] <= 35 and md["ALKernelSize"] % 2 == 1
    else:
        assert md["ALBasisSigGauss"] == [0.7, 1.5, 3.0] and md["ALKernelSize"] == 21


def test_make_kernel_basis_list_df():
    config = ModelPsfMatchConfig().kernel["DF"]
    basis = makeKernelBasisList(config)
    assert len(basis) == 441 and basis.kind == "delta-function"


def test_renormalize_kernel_list():
    v, u = np.mgrid[-10:11, -10:11].astype(float)
    raw = [np.exp(-0.5 * (u ** 2 / sx ** 2 + v ** 2 / sy ** 2)) / (2 * np.pi * sx * sy)
           for sx, sy in ((2, 2), (3, 4), (0.2, 0.25))]  # afw's GaussianFunction2: unit integral
    assert abs(raw[2].sum() - 1) > 0.5  # the narrow one is badly undersampled
    out = renormalize_kernel_list(raw)
    _check_normalization(out)


@pytest.mark.parametrize("stencil", [5, 9])
def test_central_difference_ok(stencil):
    H = make_regularization_matrix(7, "centralDifference", stencil=stencil, border_penalty=3.0)
    assert H.shape == (49, 49)
    np.testing.assert_allclose(H, H.T)
    assert np.linalg.eigvalsh(H).min() > -1e-9
    # the Laplacian of a constant vanishes; a step does not
    Hz = make_regularization_matrix(7, "centralDifference", stencil=stencil, border_penalty=0.0)
    step = np.zeros((7, 7))
    step[1:-1, 1:-1] = 1.0
    assert step.ravel() @ Hz @ step.ravel() > 0
    flat = np.ones(49)
    assert flat @ Hz @ flat == pytest.approx(0.0, abs=1e-12)


def test_central_difference_bad_stencil():
    with pytest.raises(InvalidConfigError, match="centralRegularizationStencil must be 5 or 9; got 1"):
        make_regularization_matrix(7, "centralDifference", stencil=1)


def test_border_penalty():
    with pytest.raises(InvalidConfigError, match="regularizationBorderPenalty must be >= 0; got -1"):
        make_regularization_matrix(7, "centralDifference", border_penalty=-1)
    make_regularization_matrix(7, "centralDifference", border_penalty=0)


@pytest.mark.parametrize("orders", [0, 4, [1, 4]])
def test_forward_difference_bad_orders(orders):
    with pytest.raises(InvalidConfigError, match="forwardRegularizationOrders must each be 1, 2 or 3"):
        make_regularization_matrix(7, "forwardDifference", orders=orders)


@pytest.mark.parametrize("orders", [1, [1, 2], [3]])
def test_forward_difference_ok(orders):
    H = make_regularization_matrix(7, "forwardDifference", orders=orders, border_penalty=0.0)
    # polynomials of degree < min order are in the null space of the forward differences
    flat = np.ones(49)
    assert flat @ H @ flat == pytest.approx(0.0, abs=1e-10)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=49)
    assert noise @ H @ noise > 1.0


def test_unknown_regularization_type():
    with pytest.raises(InvalidConfigError, match="regularizationType must be 'centralDifference' or 'forwardDifference'"):
        make_regularization_matrix(7, "laplacian")
