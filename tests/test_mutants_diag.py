"""Contracts of the diagnostics, configuration, PSF-base and parallel layers that mutation testing found unpinned.

Each test here failed against a deliberate mutation of the library (named in its docstring) that the rest of
the suite let pass.
"""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask, parallel
from psfmatch.cells import SpatialCellSet
from psfmatch.config import apply_overrides
from psfmatch.diagnostics import (FLAG_APERTURE, FLAG_KERNEL_SHIFT, FLAG_NEGATIVE, FLAG_RESIDUAL, PsfSurvey,
                                  SurveyCachedPsf, check_ill_posed, check_kernel_quality, flux_outside, size_holding,
                                  survey_psfs, untruncated_size)
from psfmatch.errors import (IllPosedMatchError, InvalidConfigError, InvalidInputError, KernelQualityWarning,
                             PsfEvaluationError)
from psfmatch.psf import GaussianPsf, ImagePsf, VariableGaussianPsf, as_psf
from psfmatch.psf.adapters import GalSimPsf, PiffPsf
from psfmatch.psf.analytic import elliptical_gaussian
from psfmatch.psf.base import (Psf, compute_kernel_image_pairs, model_domain, pad_or_crop, pad_or_crop_stack,
                               shift_image, stamp_half_support, unique_stamps)

ONE_CELL = SpatialCellSet(Box2I((0, 0), (128, 128)), 128, 128)


# --- the ill-posed check (psfmatch.diagnostics) --------------------------------------------------------------------


def test_a_cell_is_flagged_only_when_the_deficit_exceeds_the_tolerance():
    """``flagged = deficit > tolerance``: matching a PSF to itself (deficit exactly 0) is well-posed even at
    illPosedTolerance = 0, and strict matches it (mutant: ``>=``)."""
    report = check_ill_posed(survey_psfs(GaussianPsf(21, 21, 2.0), GaussianPsf(21, 21, 2.0), ONE_CELL), tolerance=0.0)
    assert report.deficit[0] == 0.0
    assert not report.illPosed and report.nFlagged == 0 and report.measured.all()
    config = ModelPsfMatchConfig()
    config.strict = True
    config.illPosedTolerance = 0.0
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (kernel-quality warnings are not the subject)
        result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(21, 21, 2.0))
    assert result.metadata["qa"]["illPosed"]["flag"] is False


def test_an_undersampled_science_psf_at_a_deficit_equal_to_the_tolerance_is_decided_well_posed():
    """The bound decides a cell with an undersampled science PSF wherever its (largest possible) deficit is at most
    the tolerance: at equality the cell is measured and not flagged (mutant: ``deficit < tolerance``)."""
    # a 0.78 px reference is measured (at about 0.70 px), the 0.5 px science PSF is not: its bound is 0.8 px
    survey = survey_psfs(GaussianPsf(21, 21, 0.5), GaussianPsf(21, 21, 0.78), ONE_CELL)
    first = check_ill_posed(survey, tolerance=1.0)
    deficit = float(first.deficit[0])
    assert first.scienceUndersampled[0] and deficit == pytest.approx(0.8 - 0.70, abs=0.01)
    below = check_ill_posed(survey, tolerance=deficit * (1 - 1e-9))  # the bound no longer decides
    assert below.measured.tolist() == [False] and not below.illPosed
    at = check_ill_posed(survey, tolerance=deficit)
    assert at.measured.tolist() == [True] and at.scienceUndersampled.tolist() == [True]
    assert not at.illPosed and at.deficit[0] == deficit


def test_an_undersampled_reference_under_a_science_psf_barely_broader_than_the_bound_is_not_decided():
    """An undersampled reference (narrower than 0.8 px) under a measured science PSF of about 0.7 px may or may not
    be a deconvolution: the bound cannot decide, so the cell is unmeasured and strict refuses it -- it was reported
    well-posed (mutant: the bound kept for a reference whatever the deficit)."""
    sci, ref = GaussianPsf(21, 21, 0.78), GaussianPsf(21, 21, 0.5)
    report = check_ill_posed(survey_psfs(sci, ref, ONE_CELL))
    assert report.survey.scienceOk.tolist() == [True] and report.survey.referenceOk.tolist() == [False]
    assert report.measured.tolist() == [False] and report.nUnmeasured == 1
    assert not report.referenceUndersampled.any() and np.isnan(report.deficit[0])
    assert report.to_metadata()["worst"] is None
    config = ModelPsfMatchConfig()
    config.strict = True
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=sci)
    with pytest.raises(IllPosedMatchError, match=r"the ill-posed check could not be made at 1 of 1 cells"):
        ModelPsfMatchTask(config=config).run(exposure, ref)


def test_metadata_lists_the_flagged_cells_worst_first_and_counts_the_ones_left_out():
    """``to_metadata(max_cells)`` keeps the ``max_cells`` largest deficits, in decreasing order, and counts the rest
    (mutants: the cells in survey order; one cell fewer than ``max_cells``)."""
    bbox = Box2I((0, 0), (512, 512))
    science = VariableGaussianPsf(21, 21, bbox, sigma=(2.0, 0.3, 0.1))  # 1.6 to 2.4 px, a different one per cell
    report = check_ill_posed(survey_psfs(science, GaussianPsf(21, 21, 1.8), SpatialCellSet(bbox, 128, 128)))
    n = report.nFlagged
    assert n >= 5
    expected = np.sort(report.deficit[report.flagged])[::-1]
    md = report.to_metadata(max_cells=3)
    assert [c["deficit"] for c in md["cells"]] == pytest.approx(expected[:3], abs=0)
    assert md["cellsTruncated"] == n - 3 and md["nCellsFlagged"] == n
    assert md["worst"] == md["cells"][0]
    full = report.to_metadata(max_cells=n)
    assert len(full["cells"]) == n and "cellsTruncated" not in full
    assert [c["deficit"] for c in full["cells"]] == pytest.approx(expected, abs=0)


def test_the_remedy_names_the_science_psfs_major_axis_sigma():
    """``max_science_sigma`` is the largest sigma over every axis (the major axis), which the ill-posed message
    asks the reference to exceed (mutant: the trace radius sqrt((Ixx + Iyy) / 2), too small to be a remedy)."""
    t = np.radians(30.0)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cov = rot @ np.diag([2.5 ** 2, 1.5 ** 2]) @ rot.T
    science = ImagePsf(elliptical_gaussian(41, 41, cov[0, 0], cov[1, 1], cov[0, 1]))
    report = check_ill_posed(survey_psfs(science, GaussianPsf(41, 41, 2.0), ONE_CELL))
    assert report.illPosed
    assert report.max_science_sigma() == pytest.approx(2.5, abs=2e-3)
    assert "a round Gaussian of sigma >= 2.50" in report.message()


def test_the_survey_keeps_science_centroids_only_where_the_moments_converged():
    """An undersampled science PSF has no adaptive centroid: the survey keeps none, and the QA's reuse of them
    gets NaN there (mutant: the collapsed iteration's centroid kept)."""
    survey = survey_psfs(GaussianPsf(21, 21, 0.5), GaussianPsf(21, 21, 2.0), ONE_CELL)
    assert survey.scienceOk.tolist() == [False]
    assert survey.scienceCentroids == {}
    cached = SurveyCachedPsf(GaussianPsf(21, 21, 0.5), survey)
    xs, ys = survey.positions[:, 0], survey.positions[:, 1]
    assert np.isnan(cached.science_centroids(xs, ys, 21)).all()
    good = survey_psfs(GaussianPsf(21, 21, 1.5), GaussianPsf(21, 21, 2.0), ONE_CELL)
    assert list(good.scienceCentroids) == [tuple(good.positions[0])]


def test_the_survey_cache_hands_out_a_writable_copy_of_its_stamp():
    """The fit's cached science PSF serves the survey's stamps: a caller that changes the image it got must get
    a writable copy and leave the next call's image unchanged (mutant: the survey's stamp itself, shared with every
    later call)."""
    science = VariableGaussianPsf(21, 21, Box2I((0, 0), (256, 256)), sigma=(1.5, 0.2, 0.0))
    survey = survey_psfs(science, GaussianPsf(21, 21, 3.0), SpatialCellSet(Box2I((0, 0), (256, 256)), 128, 128))
    cached = SurveyCachedPsf(science, survey)
    pos = tuple(survey.positions[1])
    first = cached.computeKernelImage(pos)
    expected = science.computeKernelImage(pos)
    np.testing.assert_array_equal(first, expected)
    first[10, 10] = -1.0
    np.testing.assert_array_equal(cached.computeKernelImage(pos), expected)


def test_flux_outside_crops_a_rectangular_stamp_about_its_centre():
    """``flux_outside`` keeps the central ``size x size`` part of a stamp whose height and width differ (mutant:
    the row and column offsets of the crop swapped)."""
    stamp = np.ones((5, 15))  # 75 units, 25 of them in the central 5 x 5 part
    assert flux_outside(stamp, 5) == pytest.approx(50 / 75)
    tall = np.zeros((15, 5))
    tall[7, 2] = 1.0  # all the flux on the centre pixel
    tall[0, 0] = tall[14, 4] = 0.5
    assert flux_outside(tall, 3) == pytest.approx(0.5)
    assert flux_outside(tall, 15) == pytest.approx(0.0)


def test_flux_outside_of_a_stamp_without_positive_flux_is_zero():
    """As documented: 0 for a stamp whose sum is not positive (nothing to lose), not a fraction of a zero or negative
    total (mutant: 1)."""
    assert flux_outside(np.zeros((5, 5)), 3) == 0.0
    negative = np.zeros((5, 5))
    negative[0, 0] = -1.0
    assert flux_outside(negative, 3) == 0.0


def _size_holding_by_scan(stamp, fraction):
    """The smallest odd side from which every larger central crop leaves at most ``fraction`` outside."""
    top = max(stamp.shape)
    ok_from = top
    for side in range(top - 2 if top % 2 else top - 1, 0, -2):
        if abs(flux_outside(stamp, side)) > fraction:
            break
        ok_from = side
    return ok_from


@pytest.mark.parametrize("fraction", [1e-3, 1e-2, 0.1])
def test_size_holding_agrees_with_a_scan_of_every_crop(fraction):
    """``size_holding`` against a direct scan of the crops, on a stamp with a negative ring (the flux outside a crop
    does not fall monotonically) and on a flat stamp, where nothing smaller than the stamp holds its flux (mutant: one
    size too small, ``+ 0`` instead of ``+ 2``)."""
    y, x = np.mgrid[-12:13, -12:13]
    r2 = x * x + y * y
    stamp = np.exp(-r2 / (2 * 2.0 ** 2)) - 0.02 * np.exp(-(np.sqrt(r2) - 7.0) ** 2 / 2.0)
    assert size_holding(stamp, fraction) == _size_holding_by_scan(stamp, fraction)
    assert size_holding(np.ones((11, 11)), fraction) == 11


def test_untruncated_size_takes_an_edge_equal_to_the_threshold_as_not_truncated():
    """A crop is truncated only where a pixel on or outside its edge *exceeds* ``threshold * peak`` (mutant: ``<``
    instead of ``<=``: an edge at exactly the threshold counted as truncation)."""
    stamp = np.zeros((7, 7))
    stamp[3, 3] = 1.0
    stamp[1, 3] = 0.25  # Chebyshev distance 2 from the centre, at exactly a quarter of the peak
    assert untruncated_size(stamp, 0.25) == 3
    assert untruncated_size(stamp, 0.2) == 7  # exceeded at distance 2: the crop must hold ring 2 inside its edge
    assert untruncated_size(stamp, 1.0) == 1


def test_untruncated_size_measures_rings_about_the_centre_of_a_rectangular_stamp():
    """Rings are Chebyshev distances from the centre pixel ``(h // 2, w // 2)`` of a stamp whose sides differ
    (mutant: the row and column centres swapped)."""
    stamp = np.zeros((5, 11))
    stamp[2, 5] = 1.0
    stamp[2, 9] = 0.5  # 4 columns right of the centre
    assert untruncated_size(stamp, 0.1) == 11
    assert untruncated_size(stamp.T, 0.1) == 11
    stamp[2, 9] = 0.0
    stamp[0, 3] = 0.5  # Chebyshev distance 2
    assert untruncated_size(stamp, 0.1) == 7


# --- the kernel-quality thresholds ----------------------------------------------------------------------------------


def test_kernel_quality_flags_only_numbers_above_their_thresholds():
    """Each QA number at exactly its threshold passes; just above it warns and flags (mutants: ``>=``)."""
    at = {"residualMaxWorst": 0.01, "kernelNegativeFractionWorst": 0.3, "kernelShiftWorst": 0.2,
          "apertureFluxMismatchWorst": 0.01}
    kw = dict(max_aperture_mismatch=0.01, max_kernel_shift=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_kernel_quality({"candidates": at}, 0.01, 0.3, **kw) == []
    above = {k: v * 1.001 for k, v in at.items()}
    with pytest.warns(KernelQualityWarning):
        flags = check_kernel_quality({"candidates": at, "between": above}, 0.01, 0.3, **kw)
    assert flags == [FLAG_RESIDUAL, FLAG_NEGATIVE, FLAG_KERNEL_SHIFT, FLAG_APERTURE]


def test_kernel_quality_takes_the_worst_finite_number_of_either_set():
    """A QA number unknown at the candidates (NaN: moments that did not converge) does not hide the one measured
    between them (mutant: NaN kept, and max([nan, x]) is nan, which exceeds no threshold)."""
    qa = {"candidates": {"residualMaxWorst": float("nan"), "kernelShiftWorst": float("nan")},
          "between": {"residualMaxWorst": 0.5, "kernelShiftWorst": 0.7}}
    with pytest.warns(KernelQualityWarning):
        assert check_kernel_quality(qa, 0.01, 0.3, max_kernel_shift=0.2) == [FLAG_RESIDUAL, FLAG_KERNEL_SHIFT]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_kernel_quality({"candidates": {"residualMaxWorst": float("nan")}}, 0.01, 0.3) == []


def test_a_survey_of_given_images_measures_a_varying_reference_at_every_cell():
    """With ``images`` (stamps already realized, as the task hands them to its worker thread) a reference that
    varies is measured cell by cell, as without them; only one stamp object shared by every cell is taken as
    constant (mutant: any given reference taken as constant, its first stamp serving every cell)."""
    bbox = Box2I((0, 0), (256, 256))
    cells = SpatialCellSet(bbox, 128, 128)
    science = GaussianPsf(21, 21, 1.5)
    reference = VariableGaussianPsf(21, 21, bbox, sigma=(2.5, 0.4, 0.2))
    direct = survey_psfs(science, reference, cells)
    given = survey_psfs(science, reference, cells,
                        images=compute_kernel_image_pairs(science, reference, cells.cell_centers()))
    np.testing.assert_allclose(given.referenceMoments, direct.referenceMoments, rtol=1e-12)
    assert len(np.unique(np.round(given.referenceMoments[:, 0], 6))) == 4 and not given.constant
    shared = compute_kernel_image_pairs(science, GaussianPsf(21, 21, 2.5), cells.cell_centers())
    assert survey_psfs(science, GaussianPsf(21, 21, 2.5), cells, images=shared).constant


# --- stamps: padding, cropping, support, distinct stamps (psfmatch.psf.base) -----------------------------------------


def _centred_by_hand(image, width, height):
    """Each pixel moved by hand so that the centre pixel ``(h // 2, w // 2)`` lands on ``(height // 2, width // 2)``."""
    h, w = image.shape
    out = np.zeros((height, width), dtype=image.dtype)
    for y in range(h):
        for x in range(w):
            yy, xx = y - h // 2 + height // 2, x - w // 2 + width // 2
            if 0 <= yy < height and 0 <= xx < width:
                out[yy, xx] = image[y, x]
    return out


@pytest.mark.parametrize("width, height", [(9, 7), (7, 9), (3, 5), (5, 3), (1, 9), (11, 1), (5, 5)])
def test_pad_or_crop_keeps_the_centre_pixel_of_rectangular_stamps(width, height):
    """Padding and cropping stamps whose width and height differ, one axis padded while the other is cropped,
    against moving every pixel by hand (mutants: the x and y offsets swapped; a width bound by the y offset)."""
    image = np.arange(1.0, 36.0).reshape(5, 7)  # every pixel distinct: any misplacement shows
    expected = _centred_by_hand(image, width, height)
    np.testing.assert_array_equal(pad_or_crop(image, width, height), expected)
    np.testing.assert_array_equal(pad_or_crop_stack(np.stack([image, 2 * image]), width, height),
                                  np.stack([expected, 2 * expected]))
    np.testing.assert_array_equal(pad_or_crop_stack([image, image.T], width, height),
                                  np.stack([expected, _centred_by_hand(image.T, width, height)]))


def test_stamp_half_support_is_the_chebyshev_reach_along_rows_and_columns():
    """The largest Chebyshev distance of a non-zero pixel from the centre, along x as well as y (mutant: rows
    only)."""
    stack = np.zeros((2, 11, 11))
    stack[0, 5, 5] = 1.0
    stack[1, 5, 9] = 1e-9  # 4 columns right of the centre, on the centre row
    assert stamp_half_support(stack) == 4
    assert stamp_half_support(np.transpose(stack, (0, 2, 1))) == 4
    stack[1, 5, 9] = 0.0
    stack[1, 4, 1] = 1.0  # 4 columns left, 1 row up
    assert stamp_half_support(stack) == 4
    assert stamp_half_support(np.zeros((1, 5, 5))) == 0


def test_unique_stamps_tells_apart_stamps_that_agree_at_the_centre():
    """Stamps equal in their central 64 values but not in the wings are distinct, and repeats of each are grouped
    with their first appearance (mutants: the all-equal shortcut comparing one value; every stamp its own group)."""
    a = GaussianPsf(15, 15, 2.0).computeKernelImage((0, 0))
    b = a.copy()
    b[13, 1] += 1e-12  # a wing pixel, far from the central values
    first, inverse = unique_stamps(np.stack([a, b, a, b, b]))
    assert first.tolist() == [0, 1] and inverse.tolist() == [0, 1, 0, 1, 1]
    first, inverse = unique_stamps(np.stack([a, a, a]))
    assert first.tolist() == [0] and inverse.tolist() == [0, 0, 0]


# --- images placed at sub-pixel positions ---------------------------------------------------------------------------


class _UserGaussian:
    """A user's model with only ``computeKernelImage``: the rest of the protocol comes from :class:`Psf`."""

    def __init__(self, width, height, sigma):
        self.stamp = GaussianPsf(width, height, sigma).computeKernelImage((0, 0))

    def computeKernelImage(self, position):
        return self.stamp


@pytest.mark.parametrize("model", [GaussianPsf, lambda w, h, s: as_psf(_UserGaussian(w, h, s))],
                         ids=["analytic", "user"])
@pytest.mark.parametrize("width, height", [(25, 25), (15, 25), (25, 15)])
@pytest.mark.parametrize("position", [(2.5, 4.5), (10.5, -3.5), (7.25, 7.75), (0.0, 0.0), (-1.5, 6.49)])
def test_compute_image_puts_the_centroid_at_the_position_in_its_parent_box(position, width, height, model):
    """The image of :meth:`Psf.computeImage` and the box of :meth:`Psf.computeImageBBox` agree: the image's centroid
    in parent pixels is the position, half-integer positions and stamps wider than high included (mutants: Python's
    round-half-to-even in computeImage, while the box rounds halves up; the box's x and y half-sizes swapped)."""
    psf = model(width, height, 1.8)
    local = psf.computeBBox(position)
    assert (local.getMinX(), local.getMinY(), local.getWidth(), local.getHeight()) == (
        -(width // 2), -(height // 2), width, height)
    img = psf.computeImage(position)
    box = psf.computeImageBBox(position)
    assert img.shape == (box.getHeight(), box.getWidth())
    y, x = np.indices(img.shape)
    cx = box.getMinX() + float((x * img).sum())
    cy = box.getMinY() + float((y * img).sum())
    assert (cx, cy) == pytest.approx(position, abs=1e-3)  # (a 15 px side truncates the 1.8 px Gaussian a little)


def test_shift_image_loses_the_flux_shifted_off_the_stamp_instead_of_wrapping_it():
    """The Fourier shift pads the stamp first: flux moved past one edge leaves it, and none reappears at the
    opposite edge (mutant: no padding)."""
    image = np.zeros((11, 11))
    image[5, 9] = 1.0
    out = shift_image(image, 3.0, 0.0)  # to column 12: outside the stamp
    np.testing.assert_allclose(out, 0.0, atol=1e-12)
    out = shift_image(image, -2.0, 1.0)  # an integer shift inside the stamp is exact
    expected = np.zeros((11, 11))
    expected[6, 7] = 1.0
    np.testing.assert_allclose(out, expected, atol=1e-12)


class _DrawsAnySize:
    """A user's analytic model that draws itself on any stamp (``resized``, as LSST's task calls it)."""

    def __init__(self, width=11, height=11):
        self.width, self.height = width, height

    def computeKernelImage(self, position):
        return GaussianPsf(self.width, self.height, 3.0).computeKernelImage((0, 0))

    def resized(self, width, height):
        return _DrawsAnySize(width, height)


@pytest.mark.parametrize("width, height", [(31, 21), (21, 31), (25, 25)])
def test_an_adapted_model_resized_to_a_rectangle_draws_its_own_wings(width, height, caplog):
    """The adapter uses the object's own ``resized`` when its stamps have the asked width and height, wider than high
    or higher than wide: the wings are drawn, not zero-padded from the small stamp (mutant: the shape compared as
    (width, height), so a rectangle fell back to padding with a warning)."""
    psf = as_psf(_DrawsAnySize()).resized(width, height)
    img = psf.computeKernelImage((0, 0))
    np.testing.assert_allclose(img, GaussianPsf(width, height, 3.0).computeKernelImage((0, 0)), rtol=1e-12)
    assert img[0, width // 2] > 0 and img[height // 2, 0] > 0  # the wings, outside the 11 px stamp
    assert "padding or cropping" not in caplog.text


# --- the Piff adapter, with a stand-in for a Piff PSF object (runs without Piff) ------------------------------------


class _FakePiff:
    """Draws a round 1.5 px Gaussian the way ``piff.PSF.draw`` does (an image with ``.array``), recording its calls.

    ``draw(x, y, stamp_size, center=True, offset=(dx, dy))`` puts the profile ``offset`` pixels from the stamp's
    centre pixel; ``x, y`` are Piff's image coordinates.
    """

    def __init__(self, stars=()):
        self.calls = []
        self.stars = [SimpleNamespace(image_pos=SimpleNamespace(x=x, y=y)) for x, y in stars]

    def draw(self, x, y, stamp_size, center=True, offset=None, **kwargs):
        self.calls.append({"x": x, "y": y, "offset": offset, **kwargs})
        dx, dy = (0.0, 0.0) if offset is None else offset
        yy, xx = np.indices((stamp_size, stamp_size)) - stamp_size // 2
        return SimpleNamespace(array=np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * 1.5 ** 2)))


def test_piff_adapter_passes_piff_coordinates_and_the_chip():
    """psfmatch's 0-based position ``x`` goes to Piff as ``x + origin``; the chip and extra properties go along;
    the default average position is the stars' mean in 0-based pixels (mutants: origin dropped from the position
    or from the average; chipnum not passed)."""
    fake = _FakePiff(stars=[(11.0, 21.0), (31.0, 61.0)])
    psf = PiffPsf(fake, chipnum=3, stamp_size=15, color=0.7)
    assert tuple(psf.getAveragePosition()) == pytest.approx((20.0, 40.0))
    psf.computeKernelImage((10.0, 20.0))
    assert fake.calls[-1] == {"x": 11.0, "y": 21.0, "offset": None, "chipnum": 3, "color": 0.7}
    PiffPsf(fake, origin=0).computeKernelImage((10.0, 20.0))
    assert (fake.calls[-1]["x"], fake.calls[-1]["y"]) == (10.0, 20.0) and "chipnum" not in fake.calls[-1]


@pytest.mark.parametrize("position", [(100.25, 90.75), (10.0, 20.4), (7.3, 5.0)])
def test_piff_adapter_places_the_image_at_the_sub_pixel_position(position):
    """``computeImage`` asks Piff for the offset ``(dx, dy)`` from the nearest pixel, in that order: the image's
    centroid in its parent box is the position (mutant: ``(dy, dx)``)."""
    psf = PiffPsf(_FakePiff(), stamp_size=21)
    img = psf.computeImage(position)
    box = psf.computeImageBBox(position)
    y, x = np.indices(img.shape)
    assert (box.getMinX() + (x * img).sum(), box.getMinY() + (y * img).sum()) == pytest.approx(position, abs=1e-6)


def test_piff_adapter_resized_to_a_rectangle_pads_its_square_stamps():
    """Piff draws square stamps only: a rectangle is made by padding (mutant: rebuilt on a square stamp of the
    width, giving images of the wrong height)."""
    psf = PiffPsf(_FakePiff(), stamp_size=15)
    assert psf.resized(31, 21).computeKernelImage((5.0, 5.0)).shape == (21, 31)
    assert psf.resized(21, 31).computeKernelImage((5.0, 5.0)).shape == (31, 21)
    square = psf.resized(25, 25)
    assert isinstance(square, PiffPsf) and square.computeKernelImage((5.0, 5.0)).shape == (25, 25)


def test_compute_image_has_unit_sum_whatever_the_models_own_drawing_gives():
    """``computeImage`` is normalized to unit sum even where the model draws its shifted image with another flux (a
    subclass's ``_image_at``; a GalSim profile of flux 3) (mutant: the model's image returned as drawn)."""
    class Bright(Psf):
        def _kernel_image(self, x, y):
            return GaussianPsf(21, 21, 2.0).computeKernelImage((x, y))

        def _image_at(self, x, y, dx, dy):
            return 5.0 * GaussianPsf(21, 21, 2.0).computeImage((x, y))

    img = Bright().computeImage((10.3, 4.6))
    assert img.sum() == pytest.approx(1.0, abs=1e-12)
    galsim = pytest.importorskip("galsim")
    psf = GalSimPsf(galsim.Gaussian(sigma=0.4, flux=3.0), pixel_scale=0.2, stamp_size=25)
    assert psf.computeImage((3.25, 8.5)).sum() == pytest.approx(1.0, abs=1e-12)


# --- configuration (psfmatch.config) --------------------------------------------------------------------------------


@pytest.mark.parametrize("where, name, boundary, inside", [
    ("top", "qaMaxResidual", 0.0, 1e-300), ("top", "qaMaxApertureFluxMismatch", 0.0, 1e-300),
    ("top", "maxMemoryGiB", 0.0, 1e-6), ("kernel", "solveRcond", 0.0, 1e-300),
    ("kernel", "alardGaussBeta", 0.0, 1e-3),
])
def test_an_open_lower_bound_refuses_the_bound_itself(where, name, boundary, inside):
    """RangeFields with ``inclusiveMin=False`` refuse their minimum (a zero residual threshold flags every fit, a
    zero rcond keeps every singular value) and take anything above (mutant: the open end treated as closed)."""
    config = ModelPsfMatchConfig()
    target = config if where == "top" else config.kernel.active
    with pytest.raises(InvalidConfigError, match=rf"{name}: out of range \({boundary!r}, .*; got {boundary!r}"):
        setattr(target, name, boundary)
    setattr(target, name, inside)
    assert getattr(target, name) == inside


@pytest.mark.parametrize("name", ["kernelSize", "kernelSizeMin", "kernelSizeMax"])
def test_kernel_sizes_are_odd_and_at_least_3(name):
    """A 1 px kernel cannot match anything: the size fields take odd integers from 3 (mutant: from 1)."""
    config = ModelPsfMatchConfig()
    for bad in (1, -1, 4):
        with pytest.raises(InvalidConfigError, match=rf"{name}: must satisfy an odd integer >= 3; got {bad}"):
            setattr(config.kernel.active, name, bad)
    setattr(config.kernel.active, name, 3)
    assert getattr(config.kernel.active, name) == 3


def test_kernel_size_min_may_equal_the_max_but_not_exceed_it():
    """``scaleByFwhm`` with kernelSizeMin == kernelSizeMax fixes the size: valid (mutant: refused)."""
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSizeMin = config.kernel.active.kernelSizeMax = 25
    config.validate()
    config.kernel.active.kernelSizeMin = 27
    with pytest.raises(InvalidConfigError, match=r"kernelSizeMin \(27\) must not exceed kernelSizeMax \(25\)"):
        config.validate()


def test_alard_lupton_degrees_must_match_the_number_of_gaussians():
    """alardNGauss, len(alardSigGauss) and len(alardDegGauss) must agree (mutant: the degrees not checked, a basis
    of 3 Gaussians built from 2 degrees)."""
    config = ModelPsfMatchConfig()
    config.kernel.active.alardDegGauss = [4, 2]
    with pytest.raises(InvalidConfigError, match=r"alardNGauss \(3\) must equal len\(alardSigGauss\) \(3\) and "
                                                 r"len\(alardDegGauss\) \(2\)"):
        config.validate()


def test_an_odd_pad_is_refused_only_when_it_is_used():
    """padPsfBy must be even when doAutoPadPsf is False (it is then added to the stamp); with doAutoPadPsf it is
    unused and any value validates, as in LSST (mutant: refused whatever doAutoPadPsf)."""
    config = ModelPsfMatchConfig()
    config.padPsfBy = 3
    config.validate()
    config.doAutoPadPsf = False
    with pytest.raises(InvalidConfigError, match=r"padPsfBy \(3 pixels\) must be even number"):
        config.validate()
    config.padPsfBy = 4
    config.validate()


def test_the_documented_defaults_of_the_ill_posed_check_and_the_qa_thresholds():
    """The defaults that psfmatch.diagnostics and the docs state (mutant: illPosedTolerance 0.02)."""
    config = ModelPsfMatchConfig()
    assert config.strict is False and config.illPosedTolerance == 0.01
    assert (config.qaMaxResidual, config.qaMaxKernelNegativeFraction, config.qaMaxKernelShift,
            config.qaMaxApertureFluxMismatch) == (1e-2, 0.3, 0.2, 1e-2)
    assert config.autoKernel is True and config.maxMemoryGiB == 8.0
    assert config.kernel["DF"].usePcaForSpatialKernel is True and config.kernel["AL"].usePcaForSpatialKernel is False


# --- kernel images: validation, vectorized stacks, pairs ------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 4), (4, 5), (4, 4)])
def test_kernel_images_with_an_even_side_are_refused_whichever_side(shape):
    """An even width is refused as an even height is (mutant: only the height checked)."""
    psf = as_psf(_UserGaussian(5, 5, 1.0))
    psf.obj.stamp = np.ones(shape)
    with pytest.raises(PsfEvaluationError, match=rf"has even size {shape[1]}x{shape[0]}; kernel images must be odd"):
        psf.computeKernelImage((0, 0))


def test_a_vectorized_stack_is_normalized_like_single_stamps():
    """A model's vectorized ``_kernel_images`` is validated and brought to unit sum, as ``computeKernelImage`` is,
    so both paths give the same stamps (mutant: the stack returned with the model's own sums)."""
    class Vectorized(Psf):
        def _kernel_image(self, x, y):
            return (1.0 + x) * GaussianPsf(11, 11, 1.0 + 0.01 * y).computeKernelImage((0, 0))

        def _kernel_images(self, xs, ys):
            return np.stack([self._kernel_image(x, y) for x, y in zip(xs, ys)])

    psf = Vectorized()
    positions = [(0.0, 0.0), (4.0, 10.0), (9.0, 50.0)]
    stack = psf.computeKernelImages(positions)
    np.testing.assert_allclose(stack.sum(axis=(1, 2)), 1.0, rtol=1e-12)
    for img, p in zip(stack, positions):
        np.testing.assert_allclose(img, psf.computeKernelImage(p), rtol=1e-12)


@pytest.mark.parametrize("varying", [False, True])
def test_the_reference_is_evaluated_only_where_the_science_psf_was(varying):
    """The reference of a pair is evaluated only where the science PSF could be, once when it does not vary
    (mutants: a constant reference evaluated at the first position, where the science PSF failed; a varying one
    evaluated at every position)."""
    class LeftFails(Psf):
        def _kernel_image(self, x, y):
            if x < 100:
                raise ValueError("outside the model's domain")
            return GaussianPsf(11, 11, 1.5).computeKernelImage((0, 0))

    class Recording(Psf):
        def __init__(self):
            self.calls = []

        def _kernel_image(self, x, y):
            self.calls.append((x, y))
            return GaussianPsf(11, 11, 2.0).computeKernelImage((0, 0))

        def isSpatiallyVarying(self):
            return varying

    reference = Recording()
    positions = [(10.0, 5.0), (150.0, 6.0), (20.0, 8.0), (200.0, 7.0)]
    sci, ref, errors = compute_kernel_image_pairs(LeftFails(), reference, positions)
    assert sorted(errors) == [0, 2] and sci[0] is None and ref[0] is None and ref[2] is None
    assert reference.calls == ([(150.0, 6.0), (200.0, 7.0)] if varying else [(150.0, 6.0)])
    assert ref[1] is not None and ref[3] is not None


def test_a_reference_failing_where_the_science_psf_does_not_drops_that_position():
    """Where only the reference fails, the pair is dropped with the reference's error, and the survey skips that
    cell naming it (mutant: the reference's error lost, a None stamp handed on)."""
    class RightFails(Psf):
        name = "RightFails"

        def _kernel_image(self, x, y):
            if x > 128:
                raise ValueError("outside the model's domain")
            return GaussianPsf(21, 21, 2.5).computeKernelImage((0, 0))

    positions = [(64.0, 64.0), (192.0, 64.0)]
    sci, ref, errors = compute_kernel_image_pairs(GaussianPsf(21, 21, 1.5), RightFails(), positions)
    assert sci[1] is not None and ref[1] is None and list(errors) == [1]
    assert isinstance(errors[1], PsfEvaluationError) and "RightFails could not be evaluated at (192" in str(errors[1])
    cells = SpatialCellSet(Box2I((0, 0), (256, 128)), 128, 128)
    survey = survey_psfs(GaussianPsf(21, 21, 1.5), RightFails(), cells)
    assert len(survey) == 1 and survey.positions[0, 0] < 128
    assert len(survey.failed) == 1 and "outside the model's domain" in survey.failed[0]


def test_a_model_stating_an_empty_domain_states_none():
    """``model_domain``: a ``getBBox`` giving an empty box counts as no domain, through wrappers too (mutant: the
    empty box returned, and nothing of the field would be inside the model's domain)."""
    class Stated(Psf):
        def __init__(self, box):
            self.box = box

        def _kernel_image(self, x, y):
            return GaussianPsf(11, 11, 1.5).computeKernelImage((0, 0))

        def getBBox(self):
            return self.box

    box = Box2I((10, 20), (100, 50))
    assert model_domain(Stated(box)) == box
    assert model_domain(Stated(box).resized(15, 15)) == box
    empty = Box2I((10, 20), (0, 0))
    assert empty.isEmpty()
    assert model_domain(Stated(empty)) is None
    assert model_domain(Stated(empty).resized(15, 15)) is None


def test_resizing_a_resized_model_starts_again_from_the_model():
    """``psf.resized(11, 11).resized(31, 31)`` is the model on a 31 px stamp: the wings the 11 px crop cut are
    back (mutant: the 11 px crop padded with zeros)."""
    psf = as_psf(_UserGaussian(31, 31, 3.0))
    twice = psf.resized(11, 11).resized(31, 31)
    np.testing.assert_array_equal(twice.computeKernelImage((0, 0)), psf.computeKernelImage((0, 0)))
    np.testing.assert_array_equal(psf.resized(11, 11).resized(9, 13).computeKernelImage((0, 0)),
                                  pad_or_crop(psf.computeKernelImage((0, 0)), 9, 13) /
                                  pad_or_crop(psf.computeKernelImage((0, 0)), 9, 13).sum())


def test_a_bool_field_takes_0_and_1_but_no_other_integer():
    """Bool fields take True/False, 0/1 and their spellings; 2 is a mistake, not True (mutant: any integer)."""
    config = ModelPsfMatchConfig()
    config.doAutoPadPsf = 0
    assert config.doAutoPadPsf is False
    config.doAutoPadPsf = np.int64(1)
    assert config.doAutoPadPsf is True
    for bad in (2, -1):
        with pytest.raises(InvalidConfigError, match=rf"doAutoPadPsf: expected a bool \(True or False\); got {bad}"):
            config.doAutoPadPsf = bad


def test_values_set_by_a_subclass_set_defaults_are_defaults_not_explicit_choices():
    """A config subclass's ``setDefaults`` (LSST's idiom) gives defaults: ``autoKernel`` may still choose those
    fields (mutant: they counted as set by the user)."""
    class MyConfig(ModelPsfMatchConfig):
        def setDefaults(self):
            super().setDefaults()
            self.autoKernelMaxSize = 31
            self.illPosedTolerance = 0.05

    config = MyConfig()
    assert (config.autoKernelMaxSize, config.illPosedTolerance) == (31, 0.05)
    assert not config.isExplicit("autoKernelMaxSize") and not config.isExplicit("illPosedTolerance")
    config.illPosedTolerance = 0.05
    assert config.isExplicit("illPosedTolerance")


def test_configs_with_different_kernel_choices_differ():
    """Equality compares the chosen kernel, not only the sub-configs (mutant: an 'AL' and a 'DF' config, both chosen
    explicitly and otherwise equal, compared equal, so a task's config check would miss the change)."""
    al, df = ModelPsfMatchConfig(), ModelPsfMatchConfig()
    al.kernel.name = "AL"
    df.kernel.name = "DF"
    assert al != df and al.kernel != df.kernel
    df.kernel.name = "AL"
    assert al == df


@pytest.mark.parametrize("name", ["alardSigGauss", "alardDegGauss"])
def test_list_fields_with_a_minimum_length_refuse_an_empty_list(name):
    """An Alard-Lupton basis needs at least one Gaussian (mutant: the length bound off by one)."""
    config = ModelPsfMatchConfig()
    with pytest.raises(InvalidConfigError, match=rf"{name}: needs at least 1 item\(s\); got \[\]"):
        setattr(config.kernel.active, name, [])


def test_a_single_number_sets_a_one_item_list_field():
    """``alardSigGauss=2.5`` on the command line (or in code) is the list [2.5] (mutant: refused as not a list)."""
    config = apply_overrides(ModelPsfMatchConfig(), ["kernel.active.alardSigGauss=2.5", "kernel.active.alardNGauss=1",
                                                     "kernel.active.alardDegGauss=4"])
    assert config.kernel.active.alardSigGauss == [2.5] and config.kernel.active.alardDegGauss == [4]
    config.validate()
    config.kernel.active.alardSigGauss = np.float64(3.0)
    assert config.kernel.active.alardSigGauss == [3.0]


@pytest.mark.parametrize("undersampled", ["science", "reference"])
def test_the_undersampled_bound_decides_only_against_a_measured_psf(undersampled):
    """The bound of an undersampled PSF (its moments on the iteration's floor) decides a cell only where the other
    PSF's moments converged; against a failed measurement (numbers that mean nothing) the cell stays unmeasured
    (mutants: the other PSF's ok flag not required)."""
    floor, failed = np.array([[1e-4, 1e-4, 0.0]]), np.array([[9.0, 9.0, 0.0]])
    sci, ref = (floor, failed) if undersampled == "science" else (failed, floor)
    survey = PsfSurvey(np.array([[64.0, 64.0]]), [0], ["Cell 0x0"], None, None, sci, ref, np.array([False]), 21, 21,
                       True, scienceOk=np.array([False]), referenceOk=np.array([False]))
    report = check_ill_posed(survey)
    assert report.measured.tolist() == [False] and not report.illPosed
    assert not report.scienceUndersampled.any() and not report.referenceUndersampled.any()
    # the same bound against a converged measurement decides the cell
    ok = np.array([True])
    decided = check_ill_posed(PsfSurvey(np.array([[64.0, 64.0]]), [0], ["Cell 0x0"], None, None, sci, ref,
                                        np.array([False]), 21, 21, True,
                                        scienceOk=~ok if undersampled == "science" else ok,
                                        referenceOk=ok if undersampled == "science" else ~ok))
    assert decided.measured.tolist() == [True]
    assert decided.illPosed is (undersampled == "reference")


def test_the_survey_cache_serves_a_leading_subset_of_its_positions():
    """The cached science PSF gives the stamps asked for, also for the first few of the survey's positions (mutant:
    the survey's whole stack handed out for any run of its rows from the first)."""
    bbox = Box2I((0, 0), (256, 256))
    science = VariableGaussianPsf(21, 21, bbox, sigma=(1.5, 0.2, 0.1))
    survey = survey_psfs(science, GaussianPsf(21, 21, 3.0), SpatialCellSet(bbox, 128, 128))
    cached = SurveyCachedPsf(science, survey)
    positions = [tuple(p) for p in survey.positions]
    for k in (1, 2, len(positions)):
        stack = cached.computeKernelImages(positions[:k])
        assert stack.shape == (k, 21, 21)
        np.testing.assert_array_equal(stack, science.computeKernelImages(positions[:k]))


@pytest.mark.parametrize("varying", [False, True])
def test_the_survey_pads_both_psfs_to_the_larger_stamp(varying):
    """Both stacks are zero-padded to the larger of the two models' stamps; a reference larger than the science PSF
    is not cropped to the science stamp (mutant: the common size taken from the science PSF alone)."""
    bbox = Box2I((0, 0), (256, 128))
    reference = (VariableGaussianPsf(41, 41, bbox, sigma=(4.0, 0.5, 0.0)) if varying else GaussianPsf(41, 41, 4.0))
    survey = survey_psfs(GaussianPsf(21, 21, 1.5), reference, SpatialCellSet(bbox, 128, 128))
    assert (survey.scienceSize, survey.referenceSize) == (21, 41)
    assert survey.science.shape == survey.reference.shape == (2, 41, 41)
    for row, (x, y) in zip(survey.reference, survey.positions):
        np.testing.assert_array_equal(row, reference.computeKernelImage((x, y)))
    np.testing.assert_array_equal(survey.science[0], pad_or_crop(GaussianPsf(21, 21, 1.5).computeKernelImage((0, 0)),
                                                                 41, 41))


def test_validating_a_models_stamps_leaves_its_arrays_alone():
    """The stamps a model hands over (one image, or a vectorized stack) are normalized in a copy: the model's own
    arrays keep their values (mutant: a stack normalized in place)."""
    own = np.stack([3.0 * GaussianPsf(11, 11, 1.5).computeKernelImage((0, 0))] * 2)

    class Stored(Psf):
        def _kernel_image(self, x, y):
            return own[0]

        def _kernel_images(self, xs, ys):
            return own

    before = own.copy()
    stack = Stored().computeKernelImages([(0.0, 0.0), (5.0, 5.0)])
    np.testing.assert_allclose(stack.sum(axis=(1, 2)), 1.0)
    Stored().computeKernelImage((1.0, 1.0))
    np.testing.assert_array_equal(own, before)


@pytest.mark.parametrize("width, height", [(21.5, 21), (21, 20.999), (np.float64(21.5), 21)])
def test_a_stamp_size_with_a_fraction_is_refused(width, height):
    """Stamp sizes are odd integers: 21.5 is refused, not truncated to 21 (mutant: the integer check dropped)."""
    with pytest.raises(InvalidInputError, match=r"PSF stamp (width|height) must be a positive odd integer; got"):
        as_psf(_UserGaussian(11, 11, 1.5)).resized(width, height)
    assert as_psf(_UserGaussian(11, 11, 1.5)).resized(21.0, np.int64(21)).computeKernelImage((0, 0)).shape == (21, 21)


def test_a_copy_keeps_which_kernel_was_chosen_explicitly():
    """``copy()`` and deep copies keep the explicit choice of the kernel, so they equal the original (mutant: the
    choice's explicit flag dropped by the copy)."""
    import copy

    config = ModelPsfMatchConfig()
    config.kernel.name = "AL"  # the default value, chosen explicitly: autoKernel honours it
    for dup in (config.copy(), copy.deepcopy(config)):
        assert dup.kernel.isExplicit() and dup == config
    assert not ModelPsfMatchConfig().copy().kernel.isExplicit()


def test_to_dict_and_pickle_keep_the_kernel_choice():
    """``to_dict`` holds the chosen kernel's name, and a pickled delta-function config comes back as one (mutant:
    the name left out, the copy falling back to 'AL')."""
    import pickle

    config = ModelPsfMatchConfig()
    config.kernel.name = "DF"
    config.kernel.active.lambdaScaling = 1e-3
    d = config.to_dict()
    assert d["kernel"]["name"] == "DF" and d["kernel"]["DF"]["lambdaScaling"] == 1e-3
    back = pickle.loads(pickle.dumps(config))
    assert back.kernel.name == "DF" and back == config


def test_psfmatchs_warning_sections_apply_their_action():
    """``parallel.catch_warnings(action)`` applies ``action`` inside and restores the filters after (mutant: the
    action ignored)."""
    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        with parallel.catch_warnings("ignore"):
            warnings.warn("hidden", UserWarning)
        warnings.warn("shown", UserWarning)
    assert [str(w.message) for w in outer] == ["shown"]
    with pytest.raises(UserWarning, match="raised"):
        with parallel.catch_warnings("error"):
            warnings.warn("raised", UserWarning)
    with parallel.catch_warnings("always", record=True) as caught:
        warnings.warn("recorded", UserWarning)
    assert [str(w.message) for w in caught] == ["recorded"]


def test_an_adapted_model_keeps_its_own_average_position():
    """The adapter asks the object for its average position, where ``computeKernelImage()`` without a position
    evaluates it; an object whose method fails gets the origin (mutant: always the origin)."""
    class Placed(_UserGaussian):
        def __init__(self):
            super().__init__(11, 11, 1.5)
            self.seen = []

        def getAveragePosition(self):
            return (100.0, 200.0)

        def computeKernelImage(self, position):
            self.seen.append(tuple(position))
            return self.stamp

    obj = Placed()
    psf = as_psf(obj)
    assert tuple(psf.getAveragePosition()) == (100.0, 200.0)
    psf.computeKernelImage()
    assert obj.seen == [(100.0, 200.0)]

    class Broken(_UserGaussian):
        def getAveragePosition(self):
            raise RuntimeError("not implemented")

    assert tuple(as_psf(Broken(11, 11, 1.5)).getAveragePosition()) == (0.0, 0.0)
