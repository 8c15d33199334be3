"""psfmatch.qa: the per-position QA numbers and their contracts."""

import numpy as np
import pytest

from psfmatch.errors import InvalidInputError
from psfmatch.psf import GaussianPsf
from psfmatch.psf.analytic import elliptical_gaussian
from psfmatch.qa import match_quality


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
