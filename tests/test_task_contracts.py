"""Contracts of the task, QA and PSF-model layer that mutation testing found unpinned.

Each test here failed against a deliberate mutation of the library (named in its docstring) and passes on
the current code.
"""

import numpy as np
import pytest

from psfmatch import Box2I, SpatialCellSet
from psfmatch.errors import InvalidInputError


def test_a_single_cell_holds_its_candidate_at_the_centre_of_an_even_box():
    """One cell along an axis: the candidate sits at the box's centre, ``min + (size - 1) / 2`` (a pixel
    centre or the edge between the two central pixels), not half a pixel beyond it (mutant: ``min + size / 2``)."""
    cs = SpatialCellSet(Box2I((10, 20), (100, 61)), 128, 128)
    (p,) = cs.candidate_positions()
    assert (p.x, p.y) == (10 + 99 / 2, 20 + 30)
    # the same rule on both axes, and symmetric: as far from the first pixel as from the last
    assert p.x - 10 == 109 - p.x and p.y - 20 == 80 - p.y


def test_cell_index_takes_the_nearest_pixel_and_nothing_past_the_last_one():
    """A position belongs to the cell of its nearest pixel (``floor(x + 0.5)``; mutant: ``floor(x)``), and the
    first column past the box is outside (mutant: ``xi <= x_edges[-1]``, which put it in a cell that is not
    there)."""
    from psfmatch.cells import KernelCandidate

    cs = SpatialCellSet(Box2I((0, 0), (256, 128)), 64, 64)  # 4 x 2 cells; column edges 0, 64, 128, 192, 256
    assert cs.cell_index(63.4, 10.0) == 0 and cs.cell_index(63.6, 10.0) == 1
    assert cs.cell_index(10.0, 63.6) == 4  # row 1, column 0
    assert cs.cell_index(-0.4, 0.0) == 0 and cs.cell_index(-0.6, 0.0) == -1
    assert cs.cell_index(255.4, 127.4) == 7
    for x, y in ((256.0, 5.0), (255.6, 5.0), (5.0, 128.0), (5.0, 127.6)):
        assert cs.cell_index(x, y) == -1, (x, y)
        with pytest.raises(InvalidInputError, match=r"lies outside"):
            cs.insertCandidate(KernelCandidate(0, x, y))


def _delta(k=1):
    K = np.zeros((k, k))
    K[k // 2, k // 2] = 1.0
    return K


def test_qa_residuals_are_relative_to_the_reference_peak():
    """``residualRms`` is the RMS of ``S (*) K - R`` over the reference stamp's pixels divided by ``max R``, as
    ``residualMax`` is ``max |D| / max R`` (mutant: the RMS not divided by the peak).  A delta kernel makes the
    residual ``S - R`` exactly."""
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.qa import match_quality

    S = elliptical_gaussian(25, 25, 2.0, 2.0)
    R = elliptical_gaussian(25, 25, 3.0, 3.0)
    D = S - R
    q = match_quality(S[None], R[None], _delta()[None])
    assert q["residualRms"][0] == pytest.approx(np.sqrt(np.mean(D ** 2)) / R.max(), rel=1e-4)
    assert q["residualMax"][0] == pytest.approx(np.abs(D).max() / R.max(), rel=1e-4)


def test_qa_ellipticity_mismatch_counts_the_cross_moment_as_a_distortion():
    """``e = (Ixx - Iyy, 2 Ixy) / (Ixx + Iyy)``: a Gaussian sheared along the diagonal (Ixx = Iyy = 4,
    Ixy = 1.2) against a round one differs by ``|e2| = 0.3`` (mutant: ``Ixy / (Ixx + Iyy)``, 0.15); the same
    shear along the axes (Ixx - Iyy = 2.4) gives the same number, as a distortion should."""
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.qa import match_quality

    R = elliptical_gaussian(31, 31, 4.0, 4.0)
    diag = elliptical_gaussian(31, 31, 4.0, 4.0, 1.2)
    axes = elliptical_gaussian(31, 31, 5.2, 2.8)
    q = match_quality(np.stack([diag, axes]), np.stack([R, R]), np.stack([_delta(), _delta()]))
    assert q["ellipticityMismatch"] == pytest.approx([0.3, 0.3], abs=2e-3)


def test_qa_kernel_negative_fraction_is_over_the_absolute_sum():
    """``kernelNegativeFraction = sum |min(K, 0)| / sum |K|`` (mutant: over ``sum K``, which a kernel with
    negative lobes makes smaller, so the fraction comes out larger)."""
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.qa import match_quality

    K = 1.5 * elliptical_gaussian(9, 9, 1.0, 1.0) - 0.5 * elliptical_gaussian(9, 9, 4.0, 4.0)  # unit sum
    S = elliptical_gaussian(25, 25, 2.0, 2.0)
    q = match_quality(S[None], S[None], K[None])
    expected = np.clip(-K, 0, None).sum() / np.abs(K).sum()
    assert 0.05 < expected < 0.5
    assert q["kernelNegativeFraction"][0] == pytest.approx(expected, rel=1e-12)


def test_qa_aperture_mismatch_is_a_magnitude_when_the_match_is_too_broad():
    """A matched PSF broader than the reference has less encircled flux in every aperture: the residual's
    aperture sums are all negative and ``apertureFluxMismatch`` is their largest magnitude (mutant: the
    largest signed sum, about 0 instead)."""
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.qa import APERTURE_RADII, match_quality

    P = 31
    S = elliptical_gaussian(P, P, 6.0, 6.0)  # broader than the reference: D = S - R
    R = elliptical_gaussian(P, P, 3.0, 3.0)
    D = S - R
    yy, xx = np.mgrid[:P, :P] - P // 2
    r = np.hypot(xx, yy)
    sums = [D[r <= a].sum() for a in APERTURE_RADII if a <= P / 2]
    assert max(sums) < 0
    q = match_quality(S[None], R[None], _delta()[None])
    assert q["apertureFluxMismatch"][0] == pytest.approx(max(abs(s) for s in sums), rel=1e-4)


def test_qa_aperture_radii_stop_at_half_the_reference_stamp():
    """The apertures of ``apertureFluxMismatch`` reach half the reference stamp and no further (mutant: up to the
    whole stamp side).  Science and reference stamps with the same core, one with a faint ring at 16-19 px and the
    other with the same flux in the stamp's corners, agree in every aperture up to 15.5 px: 0; the
    mutant's 16 and 20 px apertures see the ring."""
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.qa import match_quality

    P = 31
    yy, xx = np.mgrid[:P, :P] - P // 2
    r = np.hypot(xx, yy)
    core = elliptical_gaussian(P, P, 4.0, 4.0)
    ring, corners = (r > 16) & (r <= 19.5), r > 20.5
    S = core + 0.01 * ring / ring.sum()
    R = core + 0.01 * corners / corners.sum()
    q = match_quality((S / S.sum())[None], (R / R.sum())[None], _delta()[None])
    assert q["apertureFluxMismatch"][0] < 1e-6


def test_qa_centroid_shift_compares_x_with_x():
    """Matched and reference PSFs both 0.5 px right of the centre: no shift (mutant: x compared with y,
    0.71 px)."""
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.qa import match_quality

    R = elliptical_gaussian(25, 25, 3.0, 3.0, dx=0.5)
    q = match_quality(R[None], R[None], _delta()[None])
    assert q["centroidShift"][0] == pytest.approx(0.0, abs=1e-4)
    Rup = elliptical_gaussian(25, 25, 3.0, 3.0, dy=0.5)
    q = match_quality(R[None], Rup[None], _delta()[None])
    assert q["centroidShift"][0] == pytest.approx(np.hypot(0.5, 0.5), abs=2e-3)


def test_qa_summary_reports_the_largest_size_mismatch_with_its_sign():
    """``sizeMismatchWorst`` is the mismatch of largest magnitude, sign kept: a matched PSF 20 % too narrow
    outweighs one 5 % too broad (mutant: the largest signed value, +0.05)."""
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.qa import match_quality, summarize

    R = elliptical_gaussian(41, 41, 9.0, 9.0)
    S = np.stack([elliptical_gaussian(41, 41, (0.8 * 3) ** 2, (0.8 * 3) ** 2),
                  elliptical_gaussian(41, 41, (1.05 * 3) ** 2, (1.05 * 3) ** 2)])
    q = match_quality(S, np.stack([R, R]), np.stack([_delta(), _delta()]))
    assert q["sizeMismatch"] == pytest.approx([-0.2, 0.05], abs=2e-3)
    assert summarize(q)["sizeMismatchWorst"] == pytest.approx(-0.2, abs=2e-3)


def test_qa_measures_each_reference_stamp_of_a_varying_reference():
    """Reference stamps that differ (a spatially varying reference) are each measured: two exact matches of
    different widths both have no size or shape mismatch (mutant: the first stamp's moments used for all,
    which gives the second a size mismatch of 0.5)."""
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.qa import match_quality

    R = np.stack([elliptical_gaussian(31, 31, 4.0, 4.0), elliptical_gaussian(31, 31, 9.0, 9.0)])
    q = match_quality(R, R, np.stack([_delta(), _delta()]))
    assert np.abs(q["sizeMismatch"]).max() < 1e-4
    assert np.abs(q["centroidShift"]).max() < 1e-4


def _centroid(img):
    h, w = img.shape
    yy, xx = np.mgrid[:h, :w]
    return float((img * xx).sum() / img.sum() - w // 2), float((img * yy).sum() / img.sum() - h // 2)


@pytest.mark.parametrize("h, w", [(20, 21), (21, 20), (20, 20)])
def test_image_psf_centres_an_even_axis_on_its_own_axis(h, w):
    """An array even along one axis only is shifted by half a pixel along that axis, so its geometric centre
    ``(n - 1) / 2`` lands on the centre pixel (mutant: the half-pixel shift applied along the other axis).
    A Gaussian drawn at the array's geometric centre ends centred on the kernel image's centre pixel, flux
    conserved."""
    from psfmatch.psf import ImagePsf

    yy, xx = np.mgrid[:h, :w]
    arr = np.exp(-((xx - (w - 1) / 2) ** 2 / 2.0 / 1.6 ** 2 + (yy - (h - 1) / 2) ** 2 / 2.0 / 2.1 ** 2))
    img = ImagePsf(arr).computeKernelImage((0, 0))
    assert img.shape == (h + (h % 2 == 0), w + (w % 2 == 0))
    assert img.sum() == pytest.approx(1.0, abs=1e-12)
    assert _centroid(img) == pytest.approx((0.0, 0.0), abs=1e-6)


def test_image_psf_cropped_by_resized_keeps_unit_sum():
    """``resized`` to a smaller stamp crops the wings and renormalizes, as every kernel image has unit sum
    (mutant: the cropped array kept its lost flux, summing to 0.87 here: ``array`` showed it, the kernel
    images, normalized again, did not)."""
    from psfmatch.psf import ImagePsf
    from psfmatch.psf.analytic import elliptical_gaussian

    big = elliptical_gaussian(41, 41, 9.0, 9.0)
    resized = ImagePsf(big).resized(11, 11)
    assert resized.array.sum() == pytest.approx(1.0, abs=1e-12)  # the documented unit-sum array
    assert resized.array == pytest.approx(ImagePsf(big[15:26, 15:26]).array, rel=1e-12)  # as if given cropped
    small = resized.computeKernelImage((5, 5))
    assert small.shape == (11, 11)
    assert small.sum() == pytest.approx(1.0, abs=1e-12)
    assert small == pytest.approx(big[15:26, 15:26] / big[15:26, 15:26].sum(), rel=1e-12)


def test_image_psf_bbox_of_a_wide_stamp():
    """``computeBBox`` of a 9 x 5 (width x height) image: x from -4 to 4, y from -2 to 2 (mutant: the half
    sizes swapped)."""
    from psfmatch.psf import ImagePsf

    box = ImagePsf(np.ones((5, 9))).computeBBox()
    assert (box.getMinX(), box.getMinY(), box.getMaxX(), box.getMaxY()) == (-4, -2, 4, 2)


def test_elliptical_gaussian_cross_moment_has_the_sign_it_is_given():
    """``elliptical_gaussian(..., ixx, iyy, ixy)`` has second moments ``(ixx, iyy, ixy)``, the sign of ``ixy``
    included, on the one-stamp and the stacked path (mutants: the cross factor ``exp(-ixy x y / det)`` on either
    path, which mirrors the PSF about an axis).  Only slow task tests saw these."""
    from psfmatch.psf.analytic import elliptical_gaussian, elliptical_gaussian_stack

    yy, xx = np.mgrid[-20:21, -20:21]
    one = elliptical_gaussian(41, 41, 5.0, 3.0, 1.5)
    stack = elliptical_gaussian_stack(41, 41, [5.0, 5.0], [3.0, 3.0], [1.5, -1.5])
    for img, ixy in ((one, 1.5), (stack[0], 1.5), (stack[1], -1.5)):
        assert img.sum() == pytest.approx(1.0, abs=1e-12)
        assert (img * xx * xx).sum() == pytest.approx(5.0, rel=1e-6)
        assert (img * yy * yy).sum() == pytest.approx(3.0, rel=1e-6)
        assert (img * xx * yy).sum() == pytest.approx(ixy, rel=1e-6)


def test_variable_gaussian_scales_each_axis_by_its_own_extent():
    """On a 200 x 100 box, ``v`` runs from -1 at the bottom pixel edge to +1 at the top one, by the box's
    height (mutant: by its width, so the top edge had ``v = 0``): ``sigma = 2 + 0.5 v`` is 2.5 there, 1.5 at
    the bottom edge, and the kernel image's trace radius follows."""
    from psfmatch.psf import VariableGaussianPsf

    bbox = Box2I((0, 0), (200, 100))
    psf = VariableGaussianPsf(31, 31, bbox, sigma=[2.0, 0.0, 0.5])
    assert psf.parameters((37.0, 99.5))[0] == pytest.approx(2.5, abs=1e-12)
    assert psf.parameters((37.0, -0.5))[0] == pytest.approx(1.5, abs=1e-12)
    assert psf.parameters((37.0, 74.5))[0] == pytest.approx(2.25, abs=1e-12)
    shape = psf.computeShape((37, 74.5))
    assert shape.getTraceRadius() == pytest.approx(2.25, rel=1e-3)


def test_automatic_kernel_size_starts_from_the_major_axis_width():
    """The automatic kernel's sizes start at ``6 sigma`` of the widest kernel axis over the field
    (``2 ceil(3 sigma) + 1``): an elliptical kernel covariance diag(9, 1) px^2 needs 19 px, its 3 px major axis
    (mutant: the minor axis' 1 px gave 7 px, too small to hold the kernel's long axis)."""
    from types import SimpleNamespace

    from psfmatch.autokernel import _kernel_widths, kernel_size_ladder

    C = np.array([[[9.0, 0.0], [0.0, 1.0]], [[4.0, 0.0], [0.0, 4.0]]])
    survey = SimpleNamespace(ok=np.array([True, True]), kernel_covariances=lambda: C)
    s, s_big, g_ref = _kernel_widths(survey)
    assert s_big == pytest.approx(3.0)
    assert s == pytest.approx(np.median([np.sqrt(3.0), 2.0]))  # the determinant radii's median
    assert kernel_size_ladder(s_big, 41)[0] == 19


@pytest.mark.parametrize("make", ["double", "moffat"])
def test_radial_models_draw_a_star_at_its_sub_pixel_position(make):
    """``computeImage`` of a double Gaussian or a Moffat PSF at (10.3, 20.8) puts the star's centroid there,
    0.3 px right of and 0.2 px below its box's centre pixel (10, 21) (mutant: the x offset's sign flipped in
    the radial models' pixel grid: the GaussianPsf test did not see it)."""
    from psfmatch.psf import DoubleGaussianPsf, MoffatPsf

    psf = DoubleGaussianPsf(31, 31, 1.5, 3.0, 0.1) if make == "double" else MoffatPsf(41, 41, 3.0, 4.0)
    img = psf.computeImage((10.3, 20.8))
    box = psf.computeImageBBox((10.3, 20.8))
    assert (box.getCenter().x, box.getCenter().y) == (10.0, 21.0)
    assert img.sum() == pytest.approx(1.0, abs=1e-9)
    assert _centroid(img) == pytest.approx((0.3, -0.2), abs=2e-3)


def test_negative_lobes_count_against_a_trial_only_when_beyond_both_margins():
    """A trial is markedly negative when its negative fraction exceeds the least negative trial's by
    ``NEGATIVE_MARGIN`` (0.05) *and* is ``NEGATIVE_RATIO`` (1.25) times it or more: against 0.30, a trial at
    0.36 (0.06 more, 1.2 times) is not; one at 0.38 (1.27 times) is (mutant: the margin alone, which marked
    0.36 and so passed it over though its residual was the better)."""
    from psfmatch.autokernel import KernelTrial, TrialResult, _mark_negative, _select

    def result(k, score, neg):
        trial = KernelTrial("AL", k, 0, (1.0, 0.5, 2.0), (4, 2, 2), label="moments")
        return TrialResult(trial, score=score, noiseRatio=1.0, negativeFraction=neg, admissible=True)

    small, large = result(19, 9.0e-3, 0.36), result(27, 9.5e-3, 0.30)
    _mark_negative([small, large])
    assert not small.markedlyNegative and not large.markedlyNegative
    assert _select([small, large], 0.1, 1e-6) is small and small.note == ""
    small, large = result(19, 9.0e-3, 0.38), result(27, 9.5e-3, 0.30)
    _mark_negative([small, large])
    assert small.markedlyNegative and not large.markedlyNegative
    assert _select([small, large], 0.1, 1e-6) is large


def test_psfex_model_on_a_non_square_sample_grid_is_centred_on_both_axes():
    """A PSFEx basis 25 samples wide and 21 high, a Gaussian on its centre sample (12, 10): the kernel image
    (25 x 21) is centred on its centre pixel along both axes (mutant: the y samples offset by the grid's
    x half-width, which moved the star 2 px)."""
    from psfmatch.psf import PsfexPsf

    yy, xx = np.mgrid[:21, :25]
    b0 = np.exp(-((xx - 12) ** 2 / 2.0 / 1.7 ** 2 + (yy - 10) ** 2 / 2.0 / 2.2 ** 2))
    for samp in (1.0, 0.8):
        img = PsfexPsf(b0[None], degree=0, psf_samp=samp).computeKernelImage((100, 100))
        assert img.shape == (21 if samp == 1.0 else 17, 25 if samp == 1.0 else 21)
        assert _centroid(img) == pytest.approx((0.0, 0.0), abs=1e-3)



@pytest.mark.parametrize("region, side", [
    (Box2I((0, 0), (256, 128)), "y > 127 by 100%"),
    (Box2I((0, 100), (256, 156)), "y < 100 by 64%"),
    (Box2I((0, 0), (128, 256)), "x > 127 by 100%"),
    (Box2I((100, 0), (156, 256)), "x < 100 by 64%"),
])
def test_an_exposure_beyond_its_psf_models_region_on_any_one_side_warns(region, side):
    """Each side of the science PSF model's region is checked on its own, and the warning names it (mutant:
    the top side, y >, never checked; the existing test covers a transposed exposure, x > only)."""
    import warnings

    from psfmatch import Exposure
    from psfmatch.errors import PsfMatchWarning
    from psfmatch.psf import VariableGaussianPsf
    from psfmatch.task import _warn_psf_domain

    psf = VariableGaussianPsf(21, 21, region, sigma=[1.8, 0.1, 0.05])
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=psf)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_psf_domain(exposure)
    msgs = [str(w.message) for w in caught if w.category is PsfMatchWarning]
    assert len(msgs) == 1 and f"at {side} of that region's size" in msgs[0]


@pytest.mark.filterwarnings("ignore")
def test_a_reference_whose_resized_ignores_the_size_is_cropped_to_unit_sum_stamps():
    """A reference model whose ``resized`` returns itself (a user model that ignores the size asked for) still
    gives the fit unit-sum reference stamps of the fit's size: its 41 px images are cropped to 31 px and
    renormalized (mutant: not renormalized, so the candidates' reference stamps lost the 0.4 % of flux beyond
    the crop)."""
    from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.psf import GaussianPsf, ImagePsf
    from psfmatch.psf.analytic import elliptical_gaussian

    class Stubborn(ImagePsf):
        def resized(self, width, height):
            return self

    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    ref = Stubborn(elliptical_gaussian(41, 41, 25.0, 25.0))
    fit = ModelPsfMatchTask(config=config).fitKernel(GaussianPsf(21, 21, 1.5), ref, Box2I((0, 0), (128, 128)))
    (cand,) = fit.cellSet.candidates()
    assert fit.psfSize == 31 and cand.reference.shape == (31, 31)
    assert cand.reference.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.filterwarnings("ignore")
def test_a_varying_reference_is_realized_and_solved_at_every_candidate():
    """A constant science PSF matched to a reference that varies over the field (sigma 2.2 to 2.8 px): every
    candidate holds the reference at its own position, gets its own kernel, and the spatial kernel builds
    each candidate's reference (mutants: the reference realized once, at the first candidate; the candidates paired
    by their science stamps alone, so all shared the first candidate's equations)."""
    from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.psf import GaussianPsf, VariableGaussianPsf

    bbox = Box2I((0, 0), (256, 256))
    ref = VariableGaussianPsf(31, 31, bbox, sigma=[2.5, 0.3, 0.0])
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 128
    config.kernel.active.spatialKernelOrder = 1
    fit = ModelPsfMatchTask(config=config).fitKernel(GaussianPsf(21, 21, 1.5), ref, bbox)
    cands = list(fit.cellSet.candidates())
    assert len(cands) == 4 and fit.metadata["nUniqueCandidates"] == 2  # two columns of distinct references
    for c in cands:
        assert c.reference == pytest.approx(ref.resized(fit.psfSize, fit.psfSize).computeKernelImage((c.x, c.y)),
                                            abs=1e-12)
    sums = {round(c.x): c.kernel_image for c in cands}
    assert np.abs(sums[0] - sums[255]).max() > 1e-3  # the left and right columns' kernels differ
    assert fit.metadata["qa"]["candidates"]["residualMaxWorst"] < 1e-3  # each candidate matched to its own


@pytest.mark.parametrize("role", ["science", "reference"])
def test_a_psf_image_on_other_pixels_than_the_exposure_warns_for_either_role(role):
    """A PSF image recorded at 0.26 arcsec/px on an exposure of 0.2 arcsec/px warns, whether it is the science
    or the reference PSF, and the warning names the role (mutant: the reference never checked)."""
    import warnings

    from astropy.wcs import WCS

    from psfmatch import Exposure
    from psfmatch.errors import PsfMatchWarning
    from psfmatch.psf import GaussianPsf, ImagePsf
    from psfmatch.psf.analytic import elliptical_gaussian
    from psfmatch.task import _warn_pixel_scales

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.cunit = ["deg", "deg"]
    image = ImagePsf(elliptical_gaussian(25, 25, 4.0, 4.0), pixel_scale=0.26)
    science, reference = (image, GaussianPsf(25, 25, 2.0)) if role == "science" else (GaussianPsf(25, 25, 2.0), image)
    exposure = Exposure(np.zeros((64, 64), np.float32), psf=science, wcs=wcs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_pixel_scales(exposure, reference)
    msgs = [str(w.message) for w in caught if w.category is PsfMatchWarning]
    assert len(msgs) == 1 and msgs[0].startswith(f"the {role} PSF image has pixels of 0.26 arcsec, the exposure's "
                                                 "WCS 0.2 arcsec")
    with warnings.catch_warnings(record=True) as caught:  # the same scale: nothing to say
        warnings.simplefilter("always")
        _warn_pixel_scales(Exposure(np.zeros((64, 64), np.float32), psf=GaussianPsf(25, 25, 2.0), wcs=wcs),
                           ImagePsf(elliptical_gaussian(25, 25, 4.0, 4.0), pixel_scale=0.2015))
    assert not [w for w in caught if w.category is PsfMatchWarning]


@pytest.mark.filterwarnings("ignore")
def test_a_candidate_whose_reference_fails_is_rejected_not_given_its_neighbours_reference():
    """A reference model that cannot be evaluated in the top-right corner: that candidate is BAD ("reference
    PSF: ..."), counted among the rejected, and the kernel is fitted on the other eight (mutant: the rejection
    fell through, and the candidate was fitted, GOOD, with the previous candidate's reference stamp)."""
    from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.cells import CandidateStatus
    from psfmatch.psf import GaussianPsf

    class Partial:
        def computeKernelImage(self, position):
            if position.x > 300 and position.y > 300:
                raise ValueError("no reference here")
            v, u = np.mgrid[-15:16, -15:16]
            return np.exp(-0.5 * (u * u + v * v) / (2.6 + 0.001 * position.x) ** 2)

    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 1
    fit = ModelPsfMatchTask(config=config).fitKernel(GaussianPsf(21, 21, 1.8), Partial(), Box2I((0, 0), (384, 384)))
    md = fit.metadata
    assert md["nCandidatesRejected"] == 1 and md["nCandidatesUsed"] == 8
    (bad,) = [c for c in fit.cellSet.candidates() if c.status == CandidateStatus.BAD]
    assert bad.x > 300 and bad.y > 300 and "no reference here" in bad.reason and bad.reason.startswith("reference")
    assert md["rejectedCandidates"][0]["id"] == bad.id


def test_edge_to_peak_looks_at_all_four_edges():
    """The truncation check's ``|edge| / peak`` sees flux on any one edge of the stamp (mutant: the right
    column was never looked at, so a reference cut off on that side passed as untruncated)."""
    from psfmatch.task import _edge_to_peak

    base = np.zeros((9, 9))
    base[4, 4] = 1.0
    for where in ((0, 4), (8, 4), (4, 0), (4, 8)):
        stamp = base.copy()
        stamp[where] = 0.01
        assert _edge_to_peak(stamp) == pytest.approx(0.01), where


@pytest.mark.filterwarnings("ignore")
def test_each_candidate_records_its_own_ill_posed_deficit():
    """A science PSF broader than the reference on the right of the field only: the candidates on the right
    record a positive ``illPosedDeficit``, those on the left a negative one (a margin) (mutant: every
    candidate recorded the first cell's deficit)."""
    from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.psf import GaussianPsf, VariableGaussianPsf

    bbox = Box2I((0, 0), (256, 256))
    sci = VariableGaussianPsf(21, 21, bbox, sigma=[1.7, 0.6, 0.0])  # 1.1 px on the left, 2.3 px on the right
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 128
    config.kernel.active.spatialKernelOrder = 1
    fit = ModelPsfMatchTask(config=config).fitKernel(sci, GaussianPsf(31, 31, 2.0), bbox)
    deficit = {(round(c.x), round(c.y)): c.qa["illPosedDeficit"] for c in fit.cellSet.candidates()}
    assert set(deficit) == {(0, 0), (255, 0), (0, 255), (255, 255)}
    assert deficit[(255, 0)] > 0 and deficit[(255, 255)] > 0
    assert deficit[(0, 0)] < 0 and deficit[(0, 255)] < 0


@pytest.mark.filterwarnings("ignore")
def test_qa_of_a_kernel_with_another_sum_is_that_of_its_shape():
    """``kernelSum`` scales the kernel (and the matched flux) but not its shape: the QA compares the unit-sum
    kernel's match with the reference, the same numbers for ``kernelSum = 2`` as for 1 (mutant: the scaled
    kernel compared, a residual of a whole peak)."""
    from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.psf import GaussianPsf

    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    task = ModelPsfMatchTask(config=config)
    bbox = Box2I((0, 0), (256, 256))
    one, two = (task.fitKernel(GaussianPsf(21, 21, 1.8), GaussianPsf(31, 31, 2.6), bbox, kernelSum=ks)
                for ks in (1.0, 2.0))
    assert two.kernel.getSum((100, 100)) == pytest.approx(2.0)
    q1, q2 = one.metadata["qa"]["candidates"], two.metadata["qa"]["candidates"]
    assert q1["residualMaxWorst"] < 1e-3
    assert q2["residualMaxWorst"] == pytest.approx(q1["residualMaxWorst"], rel=1e-6, abs=1e-9)
    assert q2["apertureFluxMismatchWorst"] == pytest.approx(q1["apertureFluxMismatchWorst"], rel=1e-6, abs=1e-9)
