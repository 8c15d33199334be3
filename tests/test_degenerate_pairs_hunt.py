"""Degenerate and awkward PSF pairs: is every physically wrong match warned of or refused?

Each test measures the truth independently (the matched PSF ``S (*) K`` built here with scipy, its flux, unweighted
second moments, centroid and aperture fluxes) and compares it with what the task's QA and warnings say.
"""

import math
import pathlib
import warnings

import numpy as np
import pytest
from scipy.signal import fftconvolve

from psfmatch import Box2I, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.errors import IllPosedMatchWarning, KernelQualityWarning, TruncatedPsfWarning
from psfmatch.psf import GaussianPsf, ImagePsf, MoffatPsf
from psfmatch.psf.analytic import elliptical_gaussian

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _fit(sci, ref, auto, bbox=Box2I((0, 0), (128, 128)), **cfg):
    config = ModelPsfMatchConfig()
    config.autoKernel = auto
    for k, v in cfg.items():
        setattr(config, k, v)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fit = ModelPsfMatchTask(config=config).fitKernel(sci, ref, bbox)
    return fit, [w for w in rec if issubclass(w.category, (IllPosedMatchWarning, KernelQualityWarning,
                                                            TruncatedPsfWarning))]


def _pad(a, n):
    out = np.zeros((n, n))
    oy, ox = (n - a.shape[0]) // 2, (n - a.shape[1]) // 2
    out[oy:oy + a.shape[0], ox:ox + a.shape[1]] = a
    return out


def _moments(img):
    y, x = np.indices(img.shape, dtype=float)
    f = img.sum()
    cx, cy = (img * x).sum() / f, (img * y).sum() / f
    return (f, cx - (img.shape[1] - 1) / 2, cy - (img.shape[0] - 1) / 2,
            (img * (x - cx) ** 2).sum() / f, (img * (y - cy) ** 2).sum() / f)


def _matched(fit, sci, ref, pos, n=101):
    """(S (*) K, R) on a common n x n stamp, R at unit sum; K as fitted (sum kernelSum)."""
    k = fit.kernel.computeImage(pos)
    s = np.asarray(sci.computeKernelImage(pos), float)
    r = np.asarray(ref.computeKernelImage(pos), float)
    return _pad(fftconvolve(s / s.sum(), k), n), _pad(r / r.sum(), n), k


def _aperture_mismatch(a, b, radii):
    n = a.shape[0]
    y, x = np.indices(a.shape) - (n - 1) / 2
    rr = np.hypot(x, y)
    return max(abs(a[rr <= r].sum() - b[rr <= r].sum()) for r in radii)


def _kinds(rec):
    return sorted({w.category.__name__ for w in rec})


# --- identity, shift, rotation ------------------------------------------------------------------


def test_identity_match_with_the_automatic_kernel_is_a_delta_without_ringing():
    """R = S: the automatic kernel is a delta function to 1e-8, and nothing is flagged."""
    psf = GaussianPsf(31, 31, 2.0)
    fit, rec = _fit(psf, GaussianPsf(31, 31, 2.0), True)
    k = fit.kernel.computeImage((64, 64))
    c = (k.shape[0] // 2, k.shape[1] // 2)
    assert k[c] == pytest.approx(1.0, abs=1e-7)
    off = k.copy()
    off[c] = 0
    assert np.abs(off).max() < 1e-7
    assert rec == [] and fit.metadata["qa"]["flags"] == []


def test_identity_match_without_the_automatic_kernel_reproduces_r_but_its_kernel_rings():
    """LSST's fixed Alard-Lupton basis cannot make a delta: the matched PSF is still R to 1e-4 of the peak (unflagged,
    as the docs' thresholds say), while the kernel carries negative lobes of about 0.13 of its absolute flux."""
    sci = ref = GaussianPsf(31, 31, 2.0)
    fit, rec = _fit(sci, ref, False)
    sk, r, k = _matched(fit, sci, ref, (64, 64))
    assert np.abs(sk - r).max() / r.max() < 1e-4
    neg = -k[k < 0].sum() / np.abs(k).sum()
    assert 0.05 < neg < fit.metadata["qa"]["thresholds"]["qaMaxKernelNegativeFraction"]
    assert fit.metadata["qa"]["candidates"]["kernelNegativeFractionWorst"] == pytest.approx(neg, rel=1e-3)
    assert rec == []


@pytest.mark.parametrize("auto", [True, False])
def test_a_reference_shifted_by_0p3_px_moves_the_stars_and_is_flagged(auto):
    sci = GaussianPsf(31, 31, 2.0)
    ref = ImagePsf(elliptical_gaussian(31, 31, 4.0, 4.0, 0.0, 0.3, 0.0))
    fit, rec = _fit(sci, ref, auto)
    sk, r, k = _matched(fit, sci, ref, (64, 64))
    _, cx, cy, _, _ = _moments(sk)
    _, rx, ry, _, _ = _moments(r)
    assert (cx - rx, cy - ry) == pytest.approx((0, 0), abs=2e-3)  # the matched star lands on R's centroid
    assert _moments(k)[1] == pytest.approx(0.3, abs=2e-3)
    assert fit.metadata["qa"]["flags"] == ["KERNEL_SHIFT"]
    assert _kinds(rec) == ["KernelQualityWarning"]
    assert str(rec[0].message).startswith("the matching kernel moves the stars by 0.3 px")


@pytest.mark.parametrize("auto", [True, False])
def test_an_even_reference_image_centred_on_pixel_n_over_2_is_flagged_as_a_diagonal_half_pixel_shift(auto):
    """A 30x30 reference drawn about pixel (15, 15) is 0.5 px off its geometric centre along both axes: the kernel
    moves every star by (0.5, 0.5) px, which the QA measures and warns of."""
    y, x = np.indices((30, 30), dtype=float)
    ref = ImagePsf(np.exp(-((x - 15) ** 2 + (y - 15) ** 2) / (2 * 2.6 ** 2)))
    sci = GaussianPsf(21, 21, 1.8)
    fit, rec = _fit(sci, ref, auto)
    qa = fit.metadata["qa"]["candidates"]
    assert qa["kernelShiftWorst"] == pytest.approx(math.sqrt(0.5), abs=0.01)
    _, kx, ky, _, _ = _moments(fit.kernel.computeImage((64, 64)))
    assert (kx, ky) == pytest.approx((0.5, 0.5), abs=0.01)
    assert "KERNEL_SHIFT" in fit.metadata["qa"]["flags"]
    assert any(str(w.message).startswith("the matching kernel moves the stars by 0.707 px") for w in rec)


@pytest.mark.parametrize("auto", [True, False])
def test_an_elongated_psf_rotated_by_90_degrees_is_ill_posed_along_its_long_axis(auto):
    sci = ImagePsf(elliptical_gaussian(31, 31, 1.5 ** 2, 2.5 ** 2, 0.0))
    ref = ImagePsf(elliptical_gaussian(31, 31, 2.5 ** 2, 1.5 ** 2, 0.0))
    fit, rec = _fit(sci, ref, auto)
    ill = fit.metadata["qa"]["illPosed"]
    assert ill["flag"] is True
    assert ill["worst"]["axisAngleDeg"] == pytest.approx(90.0, abs=1e-3)
    assert ill["worst"]["deficit"] == pytest.approx(1.0, abs=1e-3)
    assert {"ILL_POSED", "KERNEL_NEGATIVE", "RESIDUAL_HIGH"} <= set(fit.metadata["qa"]["flags"])
    assert "IllPosedMatchWarning" in _kinds(rec)
    # and the truth: the matched PSF is wrong along y by more than the QA thresholds
    sk, r, _ = _matched(fit, sci, ref, (64, 64))
    assert np.abs(sk - r).max() / r.max() > 0.01


# --- nearly-delta and very broad kernels --------------------------------------------------------


def test_a_reference_only_1pc_wider_gives_a_tiny_kernel_that_matches_second_moments():
    sci, ref = GaussianPsf(31, 31, 2.0), GaussianPsf(31, 31, 2.02)
    fit, rec = _fit(sci, ref, True)
    sk, r, k = _matched(fit, sci, ref, (64, 64))
    f, cx, cy, ixx, iyy = _moments(sk)
    assert f == pytest.approx(1.0, abs=1e-12)
    assert (ixx, iyy) == pytest.approx((2.02 ** 2, 2.02 ** 2), rel=1e-4)
    # the kernel's own variance is the Gaussian identity sigma_k^2 = 2.02^2 - 2.0^2 = 0.0804 px^2
    assert _moments(k)[3] == pytest.approx(2.02 ** 2 - 2.0 ** 2, rel=0.02)
    assert rec == [] and fit.metadata["qa"]["flags"] == []


def test_a_much_wider_reference_beyond_the_kernel_reach_is_flagged():
    """sigma 1.5 -> 10 px needs a kernel of sigma 9.9 px; the automatic mode's 41 px kernel cannot hold it: the matched
    PSF is 6.5 % too narrow, and the residual, aperture-flux and truncation warnings say so."""
    sci, ref = GaussianPsf(31, 31, 1.5), GaussianPsf(81, 81, 10.0)
    fit, rec = _fit(sci, ref, True)
    sk, r, _ = _matched(fit, sci, ref, (64, 64), n=141)
    assert math.sqrt(_moments(sk)[3] / _moments(r)[3]) - 1 < -0.03  # truly wrong
    assert {"RESIDUAL_HIGH", "APERTURE_FLUX_MISMATCH"} <= set(fit.metadata["qa"]["flags"])
    assert {"KernelQualityWarning", "TruncatedPsfWarning"} <= set(_kinds(rec))


def test_a_much_wider_reference_within_reach_is_matched_within_the_documented_thresholds():
    """sigma 1.5 -> 8 px: unflagged, and truly within 1 % of the peak and 1 % of the flux in every aperture."""
    sci, ref = GaussianPsf(31, 31, 1.5), GaussianPsf(61, 61, 8.0)
    fit, rec = _fit(sci, ref, True)
    sk, r, k = _matched(fit, sci, ref, (64, 64), n=141)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(sk - r).max() / r.max() < 0.01
    assert _aperture_mismatch(sk, r, np.arange(1.5, 41)) < 0.01
    assert fit.metadata["qa"]["flags"] == [] and rec == []


# --- undersampled, negative pixels, stamp sizes, normalization ----------------------------------


@pytest.mark.parametrize("sig_s, sig_r", [(0.6, 2.5), (0.7, 1.2)])
def test_an_undersampled_science_psf_is_matched_correctly_and_silently(sig_s, sig_r):
    sci, ref = GaussianPsf(21, 21, sig_s), GaussianPsf(31, 31, sig_r)
    fit, rec = _fit(sci, ref, True)
    sk, r, _ = _matched(fit, sci, ref, (64, 64))
    assert np.abs(sk - r).max() / r.max() < 1e-5
    assert _moments(sk)[3] == pytest.approx(_moments(r)[3], rel=1e-4)
    assert rec == [] and fit.metadata["qa"]["flags"] == []


def test_science_and_reference_stamps_of_any_size_and_sum_give_the_same_kernel():
    """Non-unit sums (7 and 0.01), an even 20x20 science image centred on its geometric centre, and stamps of 21 and
    41 px all describe the same pair (sigma 1.8 -> 2.6 px): the kernel sums to 1 and matches to 1e-6 of the peak."""
    y, x = np.indices((20, 20), dtype=float)
    pairs = [
        (GaussianPsf(21, 21, 1.8), GaussianPsf(41, 41, 2.6)),
        (ImagePsf(7 * GaussianPsf(21, 21, 1.8).computeKernelImage((0, 0))),
         ImagePsf(0.01 * GaussianPsf(41, 41, 2.6).computeKernelImage((0, 0)))),
        (ImagePsf(np.exp(-((x - 9.5) ** 2 + (y - 9.5) ** 2) / (2 * 1.8 ** 2))), GaussianPsf(41, 41, 2.6)),
    ]
    truth = GaussianPsf(41, 41, 2.6).computeKernelImage((0, 0))
    for sci, ref in pairs:
        fit, rec = _fit(sci, ref, True)
        k = fit.kernel.computeImage((64, 64))
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        s = sci.computeKernelImage((64, 64))
        sk = _pad(fftconvolve(s / s.sum(), k), 61)
        assert np.abs(sk - _pad(truth, 61)).max() / truth.max() < 1e-6
        assert rec == []


def test_a_science_psf_with_a_negative_ring_onto_a_moffat_is_judged_honestly():
    """A Gaussian minus a faint negative ring (6 % of its absolute flux negative) matched to a Moffat with broad
    wings: the QA's aperture-flux figure agrees with the truth measured here to 0.2 % of the flux, and the flag
    follows it."""
    y, x = np.indices((31, 31)) - 15.0
    rr = np.hypot(x, y)
    img = np.exp(-rr ** 2 / (2 * 1.8 ** 2)) - 0.02 * np.exp(-(rr - 6) ** 2 / 2)
    sci, ref = ImagePsf(img), MoffatPsf(61, 61, 7.0, 2.5)
    fit, rec = _fit(sci, ref, True)
    sk, r, k = _matched(fit, sci, ref, (64, 64), n=121)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    truth = _aperture_mismatch(sk, r, np.arange(1.5, 30.5))
    qa = fit.metadata["qa"]["candidates"]["apertureFluxMismatchWorst"]
    assert qa == pytest.approx(truth, abs=2e-3)
    assert ("APERTURE_FLUX_MISMATCH" in fit.metadata["qa"]["flags"]) == (qa > 0.01)
    assert ("KernelQualityWarning" in _kinds(rec)) == (qa > 0.01)


PSFEX = DATA / "psfex" / "GalSim-developers__GalSim" / "DECam_00154912_12_psfcat.psf"


@pytest.mark.skipif(not PSFEX.exists(), reason="shared PSFEx data not present")
def test_a_real_psfex_model_with_negative_pixels_onto_a_moffat_is_within_the_thresholds_it_claims():
    from psfmatch.psf.psfex import read_psfex
    sci = read_psfex(str(PSFEX))
    assert sci.computeKernelImage((64, 64)).min() < 0  # the model has negative pixels
    ref = MoffatPsf(61, 61, 7.0, 2.5)
    fit, rec = _fit(sci, ref, True)
    sk, r, k = _matched(fit, sci, ref, (64, 64), n=121)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    truth = _aperture_mismatch(sk, r, np.arange(1.5, 30.5))
    assert truth < 0.01 and np.abs(sk - r).max() / r.max() < 0.01
    assert fit.metadata["qa"]["flags"] == [] and rec == []


# --- a PSF that varies in one corner only -------------------------------------------------------


class _CornerPsf:
    """Round Gaussian of sigma 2.0 px, broadening to 2.6 px toward one corner only (beyond ``c0`` in x and y)."""

    def __init__(self, corner, c0, flip=False):
        self.corner, self.c0, self.flip = corner, c0, flip

    def sigma(self, p):
        x, y = p
        if self.flip:
            x, y = self.corner[0] - x, self.corner[1] - y
        span_x, span_y = self.corner[0] - self.c0[0], self.corner[1] - self.c0[1]
        return 2.0 + 0.6 * max(0.0, (x - self.c0[0]) / span_x) * max(0.0, (y - self.c0[1]) / span_y)

    def computeKernelImage(self, position):
        v = self.sigma(position) ** 2
        return elliptical_gaussian(31, 31, v, v, 0.0)


def _corner_truth(fit, sci, ref, pos):
    sk, r, _ = _matched(fit, sci, ref, pos)
    return np.abs(sk - r).max() / r.max()


def test_a_single_cell_exposure_broader_at_its_origin_corner_is_flagged():
    """The control of the tests below: the same variation mirrored onto (0, 0) is found and flagged."""
    sci, ref = _CornerPsf((127, 127), (90, 90), flip=True), GaussianPsf(31, 31, 2.2)
    fit, rec = _fit(sci, ref, True)
    assert _corner_truth(fit, sci, ref, (0, 0)) > 0.3
    assert {"ILL_POSED", "RESIDUAL_HIGH"} <= set(fit.metadata["qa"]["flags"])
    assert {"IllPosedMatchWarning", "KernelQualityWarning"} <= set(_kinds(rec))


def test_a_single_cell_exposure_broader_at_its_far_corner_is_flagged():
    """One cell checked one held-out position, its (0, 0) corner: a PSF broader than the reference towards
    (127, 127) went unflagged.  The QA now checks the four corners whatever the cell count."""
    sci, ref = _CornerPsf((127, 127), (90, 90)), GaussianPsf(31, 31, 2.2)
    fit, rec = _fit(sci, ref, True)
    assert fit.metadata["qa"]["between"]["n"] == 4
    assert _corner_truth(fit, sci, ref, (127, 127)) > 0.3  # the truth: 36 % of the peak, 25 % too broad
    assert {"ILL_POSED", "RESIDUAL_HIGH"} <= set(fit.metadata["qa"]["flags"])
    assert {"IllPosedMatchWarning", "KernelQualityWarning"} <= set(_kinds(rec))


def test_a_two_cell_strip_broader_at_a_top_corner_is_flagged():
    sci, ref = _CornerPsf((255, 127), (200, 80)), GaussianPsf(31, 31, 2.2)
    fit, rec = _fit(sci, ref, True, bbox=Box2I((0, 0), (256, 128)))
    assert _corner_truth(fit, sci, ref, (255, 127)) > 0.3
    assert "RESIDUAL_HIGH" in fit.metadata["qa"]["flags"]
    assert "KernelQualityWarning" in _kinds(rec)


def test_four_held_out_positions_per_cell_find_the_far_corner():
    """A denser sample (qaPositionsPerCandidate = 4) finds the far corner's truth exactly."""
    sci, ref = _CornerPsf((127, 127), (90, 90)), GaussianPsf(31, 31, 2.2)
    fit, rec = _fit(sci, ref, True, qaPositionsPerCandidate=4.0)
    assert fit.metadata["qa"]["between"]["residualMaxWorst"] == pytest.approx(
        _corner_truth(fit, sci, ref, (127, 127)), rel=1e-3)
    assert {"ILL_POSED", "RESIDUAL_HIGH"} <= set(fit.metadata["qa"]["flags"])
