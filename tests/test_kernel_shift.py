"""The QA's ``kernelShift``: the shift the matching kernel applies to every star, and its flag.

First moments add under convolution: for a unit-sum kernel ``K`` the centroid of ``S (*) K`` is the
centroid of ``S`` plus the kernel's, ``(sum x K, sum y K) / sum K`` about its centre pixel.  A
reference PSF that is not centred in its stamp makes the kernel carry that offset, and every star of
the matched exposure moves by it while the WCS stays as it was.  The QA's ``centroidShift`` compares
``S (*) K`` with ``R``, which carries the same offset, so it does not see it.  ``kernelShift`` is the
shift of the stars' adaptive-moment (weighted) centroids, which the unweighted one equals for these
Gaussians; a faint lopsided wing moves only the unweighted one.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, Point2I
from psfmatch.demo import demo_psf
from psfmatch.diagnostics import FLAG_KERNEL_SHIFT, check_kernel_quality
from psfmatch import qa as qa_module
from psfmatch.errors import InvalidConfigError, InvalidInputError, KernelQualityWarning
from psfmatch.moments import adaptive_moments
from psfmatch.psf import GaussianPsf, ImagePsf
from psfmatch.psf.base import Psf, pad_or_crop
from psfmatch.qa import kernel_centroids, match_quality, match_quality_groups

OFFSET = (0.3, -0.2)  # the reference's displacement in its stamp, pixels (x, y)
BOX = Box2I(Point2I(0, 0), (128, 96))  # one cell, its candidate at its centre (63.5, 47.5)


def _gaussian(n, sigma, dx=0.0, dy=0.0):
    y, x = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    g = np.exp(-((x - dx) ** 2 + (y - dy) ** 2) / (2.0 * sigma * sigma))
    return g / g.sum()


def _shifted_reference():
    """A round Gaussian of sigma 2.5 px displaced by OFFSET in its 41 px stamp (read as-is, not recentred)."""
    return ImagePsf(_gaussian(41, 2.5, *OFFSET))


def _worst(md):
    parts = [md["qa"][w] for w in ("candidates", "between") if md["qa"][w].get("n")]
    return max(parts, key=lambda q: q["kernelShiftWorst"])


def _centroid(image, x, y, half=25):
    stamp = image[y - half:y + half + 1, x - half:x + half + 1].astype(np.float64)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    return (stamp * xx).sum() / stamp.sum(), (stamp * yy).sum() / stamp.sum()


def test_kernel_centroids_of_a_displaced_delta_and_a_centred_gaussian():
    K = np.zeros((2, 7, 7))
    K[0, 3 + 2, 3 - 1] = 1.0  # row y = +2, column x = -1 from the centre
    K[1] = _gaussian(7, 1.0)
    dx, dy = kernel_centroids(K)
    assert (dx[0], dy[0]) == (-1.0, 2.0)
    assert abs(dx[1]) < 1e-12 and abs(dy[1]) < 1e-12


def test_a_displaced_reference_gives_the_kernel_its_offset_flagged_with_the_remedy():
    task = ModelPsfMatchTask()
    with pytest.warns(KernelQualityWarning,
                      match=r"kernel moves the stars by 0\.36\d* px, \(dx, dy\) = \(\+0\.3\d*, -0\.2\d*\) px "
                            r"at the candidate \(x, y\) = \(63\.5, 47\.5\), above qaMaxKernelShift=0\.2 px: "
                            r"every star of the matched exposure "
                            r".*WCS is not changed.*coadd.*blurs.*Remedy: check the centring of the science and "
                            r"reference PSF models; .*recenter=True \(psfmatch.psf.read_image_psf; on the command line "
                            r"image:FILE,recenter=true\); or raise qaMaxKernelShift"):
        md = task.fitKernel(GaussianPsf(31, 31, 1.5), _shifted_reference(), BOX).metadata
    q = _worst(md)
    assert q["kernelShiftWorst"] == pytest.approx(math.hypot(*OFFSET), abs=0.02)
    assert q["kernelShiftWorstDx"] == pytest.approx(OFFSET[0], abs=0.02)
    assert q["kernelShiftWorstDy"] == pytest.approx(OFFSET[1], abs=0.02)
    assert FLAG_KERNEL_SHIFT in md["qa"]["flags"]
    assert md["qa"]["thresholds"]["qaMaxKernelShift"] == 0.2
    # the QA's centroidShift compares S*K with R, which carries the same offset: it does not see it
    assert md["qa"]["candidates"]["centroidShiftWorst"] < 0.02


def test_the_warning_names_where_the_shift_is_worst():
    """The summaries' worst shift between the candidates beats theirs: the message names that position."""
    base = {"residualMaxWorst": 1e-4, "kernelNegativeFractionWorst": 0.0}
    qa = {"candidates": dict(base, kernelShiftWorst=0.05, kernelShiftWorstDx=0.05, kernelShiftWorstDy=0.0,
                             kernelShiftWorstX=10.0, kernelShiftWorstY=20.0),
          "between": dict(base, kernelShiftWorst=0.25, kernelShiftWorstDx=-0.15, kernelShiftWorstDy=0.2,
                          kernelShiftWorstX=1023.0, kernelShiftWorstY=0.0)}
    with pytest.warns(KernelQualityWarning, match=r"by 0\.25 px, \(dx, dy\) = \(-0\.15, \+0\.2\) px at the held-out "
                      r"position \(x, y\) = \(1023, 0\), above qaMaxKernelShift=0\.2 px"):
        assert check_kernel_quality(qa, 0.01, 0.3, max_kernel_shift=0.2) == [FLAG_KERNEL_SHIFT]
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelQualityWarning)
        assert check_kernel_quality(qa, 0.01, 0.3, max_kernel_shift=0.25) == []  # at the threshold: accepted
        assert check_kernel_quality(qa, 0.01, 0.3) == []  # not asked for: not checked


def test_the_matched_stars_move_by_the_kernel_shift():
    """The physics identity: a star's centroid after the match minus before is the kernel's centroid
    (unweighted centroids, exactly) and the QA's kernelShift (adaptive-moment centroids)."""
    sci = GaussianPsf(31, 31, 1.5)
    image = np.zeros((128, 128), dtype=np.float32)
    x, y = 64, 60
    image[y - 15:y + 16, x - 15:x + 16] = 1e5 * sci.computeKernelImage((x, y))
    exposure = Exposure(image, None, np.ones_like(image), psf=sci)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelQualityWarning)
        result = ModelPsfMatchTask().run(exposure, _shifted_reference())
    before = _centroid(image, x, y)
    after = _centroid(result.psfMatchedExposure.image, x, y)
    moved = (after[0] - before[0], after[1] - before[1])
    kernel = result.psfMatchingKernel.computeImage((x, y))
    assert moved == pytest.approx(tuple(v[0] for v in kernel_centroids(kernel[None])), abs=1e-3)
    assert moved == pytest.approx(OFFSET, abs=0.02)
    # the adaptive-moment centroid, as the QA measures it, moves by the recorded shift
    half = 20
    stamps = np.stack([im[y - half:y + half + 1, x - half:x + half + 1].astype(np.float64)
                       for im in (image, result.psfMatchedExposure.image)])
    _, _, _, xc, yc, ok = adaptive_moments(stamps)
    assert ok.all()
    q = _worst(result.metadata)
    assert (xc[1] - xc[0], yc[1] - yc[0]) == pytest.approx((q["kernelShiftWorstDx"], q["kernelShiftWorstDy"]),
                                                           abs=2e-3)
    assert q["kernelShiftWorst"] == pytest.approx(math.hypot(*OFFSET), abs=0.02)


def test_a_faint_lopsided_wing_moves_the_first_moment_not_the_stars():
    """A centred core with a faint wing 6 px to one side: its unweighted centroid is 0.17 px off, most of which
    the kernel removes (its own centroid is -0.12 px), but the stars' cores move
    by 0.005 px: not flagged (real PSFEx models are like this, with kernel centroids up to 0.57 px)."""
    science = _gaussian(41, 1.5) + 0.03 * _gaussian(41, 2.0, 6.0, 0.0)
    config = ModelPsfMatchConfig()
    config.autoKernel = False  # (the default 21 px kernel: fast, and it removes most of the wing's moment)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelQualityWarning)
        fit = ModelPsfMatchTask(config=config).fitKernel(ImagePsf(science / science.sum()), GaussianPsf(41, 41, 3.5),
                                                         BOX)
    kx, _ = kernel_centroids(fit.kernel.computeImage((63.5, 47.5))[None])
    assert kx[0] == pytest.approx(-0.116, abs=0.005)  # (more than 0.1 px: flagged, were it the measure)
    q = _worst(fit.metadata)
    assert q["kernelShiftWorst"] < 0.01
    assert FLAG_KERNEL_SHIFT not in fit.metadata["qa"]["flags"]


def test_a_centred_match_has_no_kernel_shift_and_no_flag():
    box = Box2I(Point2I(0, 0), (512, 512))
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelQualityWarning)
        md = ModelPsfMatchTask().fitKernel(demo_psf(box), GaussianPsf(41, 41, 2.6), box).metadata
    assert _worst(md)["kernelShiftWorst"] < 0.01
    assert md["qa"]["between"]["n"] > 0 and md["qa"]["between"]["kernelShiftWorst"] < 0.01
    assert FLAG_KERNEL_SHIFT not in md["qa"]["flags"]


def test_inf_switches_the_check_off_and_a_negative_threshold_is_refused():
    config = ModelPsfMatchConfig()
    config.qaMaxKernelShift = float("inf")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        md = ModelPsfMatchTask(config=config).fitKernel(GaussianPsf(31, 31, 1.5), _shifted_reference(), BOX).metadata
    assert _worst(md)["kernelShiftWorst"] > 0.3  # measured, not checked
    assert FLAG_KERNEL_SHIFT not in md["qa"]["flags"]
    assert not [w for w in record if issubclass(w.category, KernelQualityWarning)]
    with pytest.raises(InvalidConfigError, match=r"qaMaxKernelShift: out of range \[0\.0, inf\); got -0\.1"):
        config.qaMaxKernelShift = -0.1


class _DisplacedVaryingPsf(Psf):
    """A round Gaussian displaced by OFFSET in its 25 px stamp, its width growing with x (a varying model)."""

    def isSpatiallyVarying(self):
        return True

    def _kernel_image(self, x, y):
        return _gaussian(25, 1.4 + x / 2000.0, *OFFSET)


def test_the_fit_reuses_the_surveys_science_centroids_in_the_frame_of_its_padded_stamps(monkeypatch):
    """The survey measures the science stamps' centroids on their own 25 px stamps, the QA on the fit's padded
    ones: offsets from the centre pixel carry over.  The science PSF's own displacement (OFFSET) is not a
    shift of the stars by the kernel (the reference is centred: the kernel moves them by -OFFSET), and the
    numbers are the ones measured from scratch; the science stacks are not measured again."""
    box = Box2I(Point2I(0, 0), (512, 512))
    measured = []
    real = qa_module._reference_moments

    def spy(stack):
        measured.append(not np.array_equal(stack, np.broadcast_to(stack[0], stack.shape)))
        return real(stack)

    monkeypatch.setattr(qa_module, "_reference_moments", spy)
    config = ModelPsfMatchConfig()
    config.autoKernel = False  # the default 21 px kernel pads the 25 px stamps to 31 px
    config.qaMaxKernelShift = float("inf")
    fit = ModelPsfMatchTask(config=config).fitKernel(_DisplacedVaryingPsf(), GaussianPsf(41, 41, 3.0), box)
    assert fit.psfSize == 31
    assert not any(measured)  # only the (constant) reference's stacks
    q = fit.metadata["qa"]
    assert q["between"]["n"] > 0
    for part in ("candidates", "between"):
        assert q[part]["kernelShiftWorst"] == pytest.approx(math.hypot(*OFFSET), abs=0.01)
    # the candidates' numbers are those of match_quality measuring everything itself
    cands = [c for c in fit.cellSet.candidates() if c.qa]
    S = np.stack([pad_or_crop(c.science, 31, 31) for c in cands])
    R = np.broadcast_to(cands[0].reference, S.shape)
    K = np.stack([fit.kernel.computeImage((c.x, c.y)) for c in cands])
    fresh = match_quality(S, R, K / K.sum(axis=(1, 2), keepdims=True))
    assert [c.qa["kernelShiftDx"] for c in cands] == pytest.approx(fresh["kernelShiftDx"], abs=1e-7)
    assert [c.qa["kernelShiftDy"] for c in cands] == pytest.approx(fresh["kernelShiftDy"], abs=1e-7)
    assert fresh["kernelShiftDx"] == pytest.approx(-OFFSET[0], abs=0.01)


def test_known_science_centroids_are_used_and_the_unknown_ones_measured():
    S = np.stack([_gaussian(31, 1.5, 0.25, -0.1), _gaussian(31, 1.8)])
    R = np.stack([_gaussian(31, 2.5)] * 2)
    K = np.stack([_gaussian(21, 2.0)] * 2)
    plain = match_quality_groups([(S, R, K)])[0]
    _, _, _, xc, yc, _ = adaptive_moments(S[:1])
    known = np.array([[xc[0] + 0.5, yc[0]], [np.nan, np.nan]])  # a wrong first x centroid shows it is used
    q = match_quality_groups([(S, R, K, known)])[0]
    assert q["kernelShiftDx"][0] == pytest.approx(plain["kernelShiftDx"][0] - 0.5, abs=1e-12)
    assert q["kernelShiftDy"][0] == pytest.approx(plain["kernelShiftDy"][0], abs=1e-12)
    # the unknown one is measured (alone: the same fixed point, to rounding)
    assert (q["kernelShiftDx"][1], q["kernelShiftDy"][1]) == pytest.approx(
        (plain["kernelShiftDx"][1], plain["kernelShiftDy"][1]), abs=1e-12)
    assert match_quality_groups([(S, R, K, None)])[0]["kernelShiftDx"].tolist() == plain["kernelShiftDx"].tolist()
    with pytest.raises(InvalidInputError, match=r"known science centroids must be an \(n, 2\) array for the 2 "
                                                r"stamps; got shape \(2,\)"):
        match_quality_groups([(S, R, K, np.zeros(2))])


def test_the_surveys_centroids_by_position_and_stamp_size():
    from psfmatch.cells import SpatialCellSet
    from psfmatch.diagnostics import SurveyCachedPsf, survey_psfs

    cells = SpatialCellSet(Box2I(Point2I(0, 0), (256, 256)), 128, 128)
    survey = survey_psfs(_DisplacedVaryingPsf(), GaussianPsf(41, 41, 3.0), cells)
    xs, ys = survey.positions[:, 0], survey.positions[:, 1]
    cached = SurveyCachedPsf(_DisplacedVaryingPsf(), survey)
    c = cached.science_centroids(xs, ys, 25)
    assert c == pytest.approx(np.broadcast_to(OFFSET, c.shape), abs=1e-3)
    assert np.isnan(cached.science_centroids(xs, ys, 23)).all()  # measured on larger stamps than the QA's
    assert np.isnan(cached.science_centroids([1.0], [2.0], 25)).all()  # no survey there
