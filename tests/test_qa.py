"""psfmatch.qa: the per-position QA numbers and their contracts."""

import numpy as np
import pytest

from psfmatch.errors import InvalidInputError
from psfmatch.psf import GaussianPsf
from psfmatch.psf.analytic import elliptical_gaussian
from psfmatch.qa import APERTURE_RADII, match_quality


def _shifted_gaussian(n, sigma, dx, dy):
    y, x = np.mgrid[:n, :n] - n // 2
    g = np.exp(-((x - dx) ** 2 + (y - dy) ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def test_centroid_shift_is_the_distance_and_unknown_where_moments_fail():
    """A reference shifted by (0.3, 0.2) px: the shift is the distance, 0.36 px; for an undersampled reference
    (sigma 0.6 px, where adaptive moments fail) it is NaN like the size, not a confident 0."""
    S = GaussianPsf(21, 21, 1.0).computeKernelImage((0, 0))[None]
    K = elliptical_gaussian(11, 11, 1.0, 1.0, 0.0)[None]  # S (*) K: sigma sqrt(2)
    q = match_quality(S, _shifted_gaussian(21, np.sqrt(2.0), 0.3, 0.2)[None], K)
    assert q["centroidShift"][0] == pytest.approx(np.hypot(0.3, 0.2), abs=2e-3)
    assert q["sizeMismatch"][0] == pytest.approx(0.0, abs=2e-3)
    q = match_quality(S, _shifted_gaussian(21, 0.6, 0.3, 0.2)[None], K)
    assert np.isnan(q["sizeMismatch"][0]) and np.isnan(q["ellipticityMismatch"][0])
    assert np.isnan(q["centroidShift"][0])


@pytest.mark.parametrize("science, reference, kernels", [
    ((1, 21, 21), (1, 31, 31), (1, 11, 11)),  # reference stamps larger than the science stamps
    ((21, 21), (21, 21), (11, 11)),  # single stamps instead of stacks
    ((2, 21, 21), (1, 21, 21), (1, 11, 11)),  # stacks of different lengths
    ((1, 21, 21), (1, 21, 21), (1, 10, 10)),  # an even kernel
])
def test_match_quality_refuses_mismatched_stacks(science, reference, kernels):
    with pytest.raises(InvalidInputError, match=r"match_quality needs stacks of n odd square science and reference "
                                                r"stamps of one size, .* got science \(.*\), reference \(.*\), kernels"):
        match_quality(np.ones(science), np.ones(reference), np.ones(kernels))


def test_aperture_flux_mismatch_is_the_largest_encircled_flux_difference():
    # S (*) K is exactly a Gaussian of sigma 2.5 px; the reference adds a faint wide wing (10 % of the flux in a
    # sigma-6 Gaussian): the residual's peak fraction stays small, the encircled flux differs by several percent
    from scipy.signal import fftconvolve

    P, k = 41, 21
    S = GaussianPsf(P, P, 1.5).computeKernelImage((0, 0))
    K = GaussianPsf(k, k, 2.0).computeKernelImage((0, 0))
    core, wing = (GaussianPsf(P, P, sigma).computeKernelImage((0, 0)) for sigma in (2.5, 6.0))
    R = 0.9 * core + 0.1 * wing
    R /= R.sum()
    q = match_quality(S[None], R[None], K[None])
    # brute force: the full matched stamp against the zero-padded reference, apertures of pixel centres within r
    m = fftconvolve(S, K)
    L = m.shape[0]
    Rp = np.zeros_like(m)
    Rp[k // 2:k // 2 + P, k // 2:k // 2 + P] = R
    yy, xx = np.mgrid[:L, :L] - L // 2
    dist = np.hypot(xx, yy)
    diffs = [abs((m - Rp)[dist <= r].sum()) for r in APERTURE_RADII if r <= P / 2]
    assert q["apertureFluxMismatch"][0] == pytest.approx(max(diffs), rel=1e-4)
    assert q["apertureFluxMismatch"][0] > 0.03 and q["residualMax"][0] < 0.12
    # an exact match has none
    exact = match_quality(S[None], GaussianPsf(P, P, 2.5).computeKernelImage((0, 0))[None], K[None])
    assert exact["apertureFluxMismatch"][0] < 1e-6


def test_aperture_flux_mismatch_threshold_warns_and_flags():
    import warnings

    from psfmatch.diagnostics import FLAG_APERTURE, check_kernel_quality
    from psfmatch.errors import KernelQualityWarning

    qa = {"candidates": {"residualMaxWorst": 1e-3, "kernelNegativeFractionWorst": 0.0,
                         "apertureFluxMismatchWorst": 0.004},
          "between": {"residualMaxWorst": 1e-3, "kernelNegativeFractionWorst": 0.0,
                      "apertureFluxMismatchWorst": 0.02}}
    with pytest.warns(KernelQualityWarning, match=r"encircled flux differs from the reference's by up to 0.02 of "
                      r"the total flux .* above qaMaxApertureFluxMismatch=0.01: .* Remedy: broader Alard-Lupton widths "
                      r"on a larger kernel, e.g. alardNGauss=5") as caught:
        assert check_kernel_quality(qa, 0.01, 0.3, max_aperture_mismatch=0.01, auto_kernel=True) == [FLAG_APERTURE]
    assert "the automatic mode tried them" not in str(caught[0].message)  # (only when its wing trial ran)
    with pytest.warns(KernelQualityWarning, match=r"on a larger kernel \(the automatic mode tried them: see "
                      r"metadata\[autoKernel\]\[wingTrials\]\)"):
        check_kernel_quality(qa, 0.01, 0.3, max_aperture_mismatch=0.01, auto_kernel=True, wing_tried=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_kernel_quality(qa, 0.01, 0.3, max_aperture_mismatch=0.05) == []
        assert check_kernel_quality(qa, 0.01, 0.3) == []  # (not checked without a threshold)
