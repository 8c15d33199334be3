"""Ill-posed (deconvolving) matches and the kernel-quality thresholds (psfmatch.diagnostics)."""

import json
import warnings

import numpy as np
import pytest

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.cells import SpatialCellSet
from psfmatch.diagnostics import (FLAG_ILL_POSED, FLAG_NEGATIVE, FLAG_RESIDUAL, check_ill_posed, kernel_covariance,
                                  survey_psfs)
from psfmatch.errors import (IllPosedMatchError, IllPosedMatchWarning, KernelQualityWarning, PsfMatchError)
from psfmatch.psf import GaussianPsf, ImagePsf, VariableGaussianPsf
from psfmatch.psf.analytic import elliptical_gaussian

BBOX = Box2I((0, 0), (256, 256))


def lsst_config(**kw):
    """LSST's behaviour (no automatic choice), small and quick."""
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    for k, v in kw.items():
        setattr(config, k, v)
    return config


def elliptical_psf(sig_minor, sig_major, theta_deg, size=31):
    """A point-sampled elliptical Gaussian whose major axis lies at ``theta_deg`` from +x."""
    t = np.radians(theta_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cov = rot @ np.diag([sig_major ** 2, sig_minor ** 2]) @ rot.T
    return ImagePsf(elliptical_gaussian(size, size, cov[0, 0], cov[1, 1], cov[0, 1]))


def fit_warnings(config, sci, ref, bbox=BBOX):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fit = ModelPsfMatchTask(config=config).fitKernel(sci, ref, bbox)
    return fit, rec


# --- the second-moment test itself --------------------------------------------------------------


def test_round_gaussians_deficit_is_the_sigma_difference():
    survey = survey_psfs(GaussianPsf(31, 31, 2.0), GaussianPsf(31, 31, 1.6), SpatialCellSet(BBOX, 128, 128))
    rep = check_ill_posed(survey, tolerance=0.01)
    assert rep.illPosed and rep.nFlagged == 4
    np.testing.assert_allclose(rep.deficit, 0.4, atol=1e-6)
    np.testing.assert_allclose(rep.scienceSigma, 2.0, atol=1e-6)
    np.testing.assert_allclose(rep.referenceSigma, 1.6, atol=1e-6)
    # the Gaussian one would have to deconvolve by: sqrt(2.0^2 - 1.6^2) = 1.2
    np.testing.assert_allclose(rep.deconvolutionSigma, 1.2, atol=1e-6)


def test_elliptical_worst_axis_and_deficit():
    # science 1.6 x 2.1 px with its major axis at 30 deg; reference round 1.9 px: deconvolution along 30 deg only
    sci = elliptical_psf(1.6, 2.1, 30.0)
    survey = survey_psfs(sci, GaussianPsf(31, 31, 1.9), SpatialCellSet(BBOX, 256, 256))
    rep = check_ill_posed(survey)
    assert rep.illPosed
    assert rep.angle[0] == pytest.approx(30.0, abs=1e-4)
    assert rep.deficit[0] == pytest.approx(0.2, abs=1e-6)
    assert rep.deconvolutionSigma[0] == pytest.approx(np.sqrt(2.1 ** 2 - 1.9 ** 2), abs=1e-6)
    # a round reference of 2.2 px is broader along every axis: margin 0.1 px along the major axis
    rep2 = check_ill_posed(survey_psfs(sci, GaussianPsf(31, 31, 2.2), SpatialCellSet(BBOX, 256, 256)))
    assert not rep2.illPosed and rep2.deficit[0] == pytest.approx(-0.1, abs=1e-6)


def test_deficit_and_margin_are_the_extremes_over_every_axis():
    # both PSFs elliptical at 30 deg (science 2.5 x 1.5 px, reference 3.0 x 2.0 px): the reference is broader along
    # every axis, least so at 81.5 deg (0.487 px), not along the eigenvector of C_ref - C_sci (0.5 px there, which
    # the well-posed message used to report as the smallest margin); with the roles swapped, a deficit of 0.5 px
    sci, ref = elliptical_psf(1.5, 2.5, 30.0, 41), elliptical_psf(2.0, 3.0, 30.0, 41)
    cells = SpatialCellSet(BBOX, 256, 256)
    ang = np.radians(np.linspace(0, 180, 180001))
    u = np.stack([np.cos(ang), np.sin(ang)])
    for a, b, expected in ((sci, ref, -0.4873), (ref, sci, 0.5)):
        survey = survey_psfs(a, b, cells)
        ca, cb = (np.array([[m[0], m[2]], [m[2], m[1]]]) for m in (survey.scienceMoments[0],
                                                                   survey.referenceMoments[0]))
        along = np.sqrt(np.einsum("in,ij,jn->n", u, ca, u)) - np.sqrt(np.einsum("in,ij,jn->n", u, cb, u))
        rep = check_ill_posed(survey)
        assert rep.deficit[0] == pytest.approx(along.max(), abs=1e-7)
        assert rep.deficit[0] == pytest.approx(expected, abs=1e-4)
        v = np.array([np.cos(np.radians(rep.angle[0])), np.sin(np.radians(rep.angle[0]))])
        assert np.sqrt(v @ ca @ v) - np.sqrt(v @ cb @ v) == pytest.approx(along.max(), abs=1e-7)  # along the worst axis
        assert rep.scienceSigma[0] - rep.referenceSigma[0] == pytest.approx(rep.deficit[0], abs=1e-12)
        assert rep.illPosed == (expected > 0)
    assert "smallest margin 0.487 px" in check_ill_posed(survey_psfs(sci, ref, cells)).message()


def test_the_flag_agrees_with_the_eigenvalue_test_for_very_elongated_psfs():
    # a reference of axis ratio 60 has a maximum of sigma_sci - sigma_ref narrower than a 5-degree grid: the search
    # missed it (deficit -0.048 px, not flagged, with a negative eigenvalue); the eigen-axis start finds it
    import types

    from psfmatch.diagnostics import _widest_deficit

    def moments(s1, s2, deg):
        p = np.radians(deg)
        rot = np.array([[np.cos(p), -np.sin(p)], [np.sin(p), np.cos(p)]])
        c = rot @ np.diag([s1 ** 2, s2 ** 2]) @ rot.T
        return [c[0, 0], c[1, 1], c[0, 1]]

    survey = types.SimpleNamespace(scienceMoments=np.array([moments(0.488, 1.103, 68.3)]),
                                   referenceMoments=np.array([moments(0.132, 7.951, 122.5)]), ok=np.array([True]))
    rep = check_ill_posed(survey)
    assert rep.flagged[0] and rep.deficit[0] == pytest.approx(0.8073, abs=1e-4)
    assert rep.angle[0] == pytest.approx(122.56, abs=0.05)
    # on random pairs, elongated up to 80:1, the sign of the deficit is that of the eigenvalue test
    rng = np.random.default_rng(7)
    n = 20000

    def covariances():
        t, s1, q = rng.uniform(0, np.pi, n), rng.uniform(0.05, 10, n), rng.uniform(1 / 80, 1, n)
        rot = np.stack([np.stack([np.cos(t), -np.sin(t)], -1), np.stack([np.sin(t), np.cos(t)], -1)], -2)
        d = np.zeros((n, 2, 2))
        d[:, 0, 0], d[:, 1, 1] = s1 ** 2, (s1 * q) ** 2
        return rot @ d @ rot.transpose(0, 2, 1)

    cs, cr = covariances(), covariances()
    _, ss, sr = _widest_deficit(cs, cr)
    lam = np.linalg.eigvalsh(cr - cs)[:, 0]
    clear = np.abs(lam) > 1e-9 * np.abs(cr).max(axis=(1, 2))
    assert np.array_equal((ss - sr > 0)[clear], (lam < 0)[clear])


def test_kernel_covariance_is_the_gaussian_identity():
    # sigma_k^2 = sigma_ref^2 - sigma_sci^2 along each axis
    c = kernel_covariance([[4.0, 2.25, 0.3]], [[9.0, 9.0, 0.0]])
    np.testing.assert_allclose(c[0], [[5.0, -0.3], [-0.3, 6.75]])


def test_identity_match_is_not_ill_posed():
    psf = elliptical_psf(1.6, 2.1, 30.0)
    rep = check_ill_posed(survey_psfs(psf, psf, SpatialCellSet(BBOX, 128, 128)))
    assert not rep.illPosed
    assert np.all(np.abs(rep.deficit) < 1e-6)


# --- in the task: warning by default, error when strict ------------------------------------------


def test_warning_names_cells_axis_and_deficit():
    sci = elliptical_psf(1.6, 2.1, 30.0)
    with pytest.warns(IllPosedMatchWarning, match=r"4 of 4 cells \(Cell 0x0, Cell 1x0, Cell 0x1, Cell 1x1\).*"
                                                  r"axis at 30\.0 deg.*science sigma 2\.100 px vs reference sigma "
                                                  r"1\.900 px, a deficit of 0\.200 px"):
        fit = ModelPsfMatchTask(config=lsst_config()).fitKernel(sci, GaussianPsf(31, 31, 1.9), BBOX)
    qa = fit.metadata["qa"]
    assert FLAG_ILL_POSED in qa["flags"]
    ip = qa["illPosed"]
    assert ip["flag"] and ip["nCellsFlagged"] == 4 and ip["nCellsChecked"] == 4
    assert ip["worst"]["deficit"] == pytest.approx(0.2, abs=1e-6)
    assert ip["worst"]["axisAngleDeg"] == pytest.approx(30.0, abs=1e-4)
    assert {c["cell"] for c in ip["cells"]} == {"Cell 0x0", "Cell 1x0", "Cell 0x1", "Cell 1x1"}
    for cand in fit.cellSet.candidates():
        assert cand.qa["illPosedDeficit"] == pytest.approx(0.2, abs=1e-6)
    assert any("ill-posed match" in n for n in fit.metadata["notes"])
    json.dumps(fit.metadata, allow_nan=False)


def test_strict_raises_before_anything_is_fitted_or_convolved(monkeypatch):
    import psfmatch.solve
    import psfmatch.task

    def forbidden(*a, **k):
        raise AssertionError("nothing may be fitted or convolved in strict mode")

    monkeypatch.setattr(psfmatch.task, "convolve_masked_image", forbidden)
    monkeypatch.setattr(psfmatch.solve.GramBuilder, "build", forbidden)
    config = lsst_config(strict=True)
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=GaussianPsf(31, 31, 2.0))
    with pytest.raises(IllPosedMatchError, match=r"narrower than the science PSF at 4 of 4 cells.*Cell 0x0 at "
                                                 r"\([\d.]+, [\d.]+\).*deficit of 0\.400 px.*strict=True"):
        ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(31, 31, 1.6))
    assert issubclass(IllPosedMatchError, ValueError) and issubclass(IllPosedMatchError, PsfMatchError)


def test_strict_with_auto_kernel_raises_too():
    config = lsst_config(strict=True)
    config.autoKernel = True
    with pytest.raises(IllPosedMatchError, match="deficit of 0.400 px"):
        ModelPsfMatchTask(config=config).fitKernel(GaussianPsf(31, 31, 2.0), GaussianPsf(31, 31, 1.6), BBOX)


def test_only_the_deconvolving_cells_are_named():
    # science sigma grows from 1.7 (left) to 2.3 px (right) across a 512 px field; reference 2.0 px:
    # the right-hand half deconvolves
    bbox = Box2I((0, 0), (512, 128))
    sci = VariableGaussianPsf(25, 25, bbox, sigma=[2.0, 0.3, 0.0])
    config = lsst_config()
    with pytest.warns(IllPosedMatchWarning) as rec:
        fit = ModelPsfMatchTask(config=config).fitKernel(sci, GaussianPsf(31, 31, 2.0), bbox)
    msg = str([w.message for w in rec if issubclass(w.category, IllPosedMatchWarning)][0])
    flagged = {c["cell"] for c in fit.metadata["qa"]["illPosed"]["cells"]}
    expected = set()
    for cand in fit.cellSet.candidates():
        s = sci.parameters((cand.x, cand.y))[0]
        if s - 2.0 > 0.01:
            expected.add(f"Cell {int(cand.x // 128)}x0")
    assert flagged == expected == {"Cell 2x0", "Cell 3x0"}
    assert "2 of 4 cells (Cell 3x0, Cell 2x0)" in msg
    assert "Cell 0x0" not in msg


def test_well_posed_match_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error", IllPosedMatchWarning)
        warnings.simplefilter("error", KernelQualityWarning)
        fit = ModelPsfMatchTask(config=lsst_config()).fitKernel(GaussianPsf(31, 31, 1.8), GaussianPsf(31, 31, 2.6),
                                                                  BBOX)
    qa = fit.metadata["qa"]
    assert qa["flags"] == [] and qa["illPosed"]["flag"] is False
    assert qa["illPosed"]["worst"]["deficit"] == pytest.approx(-0.8, abs=1e-6)


# --- kernel quality thresholds -------------------------------------------------------------------


def test_negative_fraction_threshold():
    # LSST's default basis on an elliptical -> round match gives a checkered kernel (negative fraction ~0.3)
    sci, ref = elliptical_psf(1.6, 2.1, 30.0), GaussianPsf(31, 31, 3.0)
    fit, rec = fit_warnings(lsst_config(qaMaxKernelNegativeFraction=0.2), sci, ref)
    neg = fit.metadata["qa"]["candidates"]["kernelNegativeFractionWorst"]
    assert neg > 0.2
    msgs = [str(w.message) for w in rec if issubclass(w.category, KernelQualityWarning)]
    assert any(f"negative flux fraction sum|min(K,0)|/sum|K| reaches {neg:.3g}" in m and
               "qaMaxKernelNegativeFraction=0.2" in m for m in msgs)
    # the remedy in a form the command line takes (the quoted key: kernel[AL] is refused)
    assert any('-c "kernel[\'AL\'].alardSigGauss=[1.0, 2.0, 4.0]"' in m for m in msgs)
    assert FLAG_NEGATIVE in fit.metadata["qa"]["flags"]
    fit, rec = fit_warnings(lsst_config(qaMaxKernelNegativeFraction=0.9), sci, ref)
    assert not [w for w in rec if issubclass(w.category, KernelQualityWarning)]
    assert FLAG_NEGATIVE not in fit.metadata["qa"]["flags"]


def test_residual_threshold():
    sci, ref = GaussianPsf(31, 31, 1.8), GaussianPsf(31, 31, 2.6)
    fit, rec = fit_warnings(lsst_config(qaMaxResidual=1e-9), sci, ref)
    res = max(fit.metadata["qa"]["candidates"]["residualMaxWorst"], fit.metadata["qa"]["between"]["residualMaxWorst"])
    at, between = (fit.metadata["qa"][w]["residualMaxWorst"] for w in ("candidates", "between"))
    msgs = [str(w.message) for w in rec if issubclass(w.category, KernelQualityWarning)]
    assert any(f"reaches {res:.3g} ({at:.3g} at the candidates, {between:.3g} between them), above "
               "qaMaxResidual=1e-09: the matched PSF differs from the reference. Remedy: a larger kernelSize or "
               "autoKernel=True, a higher spatialKernelOrder, smaller cells, or a broader reference PSF" in m
               for m in msgs)
    assert fit.metadata["qa"]["flags"] == [FLAG_RESIDUAL]
    assert fit.metadata["qa"]["thresholds"]["qaMaxResidual"] == 1e-9


def test_residual_remedy_with_autokernel_names_its_limits():
    """A kernel chosen by autoKernel: the remedy names the search's limits, never "autoKernel=True"."""
    config = ModelPsfMatchConfig()
    config.qaMaxResidual = 1e-12
    fit, rec = fit_warnings(config, GaussianPsf(31, 31, 1.8), GaussianPsf(31, 31, 2.8))
    assert fit.metadata["autoKernelUsed"] and fit.metadata["autoKernel"]["trials"]
    msgs = [str(w.message) for w in rec if issubclass(w.category, KernelQualityWarning)]
    assert msgs and all("autoKernel=True" not in m for m in msgs)
    assert any("Remedy: a larger kernelSize set by hand (the automatic mode tries up to 1.4 times the 6 sigma the "
               "kernel's width needs, at most autoKernelMaxSize), a higher autoKernelMaxSpatialOrder, smaller cells"
               in m
               for m in msgs)


def test_undersampled_psfs_are_not_measured_as_points():
    """Below a sigma of about 0.8 px adaptive moments have no fixed point: ok is False, not a sigma of 0.01 px."""
    from psfmatch.moments import adaptive_moments
    from psfmatch.psf.analytic import elliptical_gaussian
    for sigma, ok_expected in [(0.5, False), (0.7, False), (0.9, True), (1.5, True)]:
        ixx, iyy, ixy, xc, yc, ok = adaptive_moments(GaussianPsf(21, 21, sigma).computeKernelImage((0, 0)))
        assert bool(ok) is ok_expected, sigma
        if ok:
            assert ixx == pytest.approx(sigma ** 2, rel=0.06)
    *_, ok = adaptive_moments(elliptical_gaussian(41, 41, 9.0, 0.49, 0.0))  # 3 px by 0.7 px
    assert not ok


def test_cells_the_check_cannot_measure_are_reported_and_refused_when_strict():
    """A deconvolution between two undersampled PSFs (0.65 -> 0.45 px) was reported well-posed."""
    import warnings

    from psfmatch.errors import IllPosedMatchError, IllPosedMatchWarning
    exposure = Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, 0.65))
    config = ModelPsfMatchConfig()
    config.strict = True
    msg = (r"the ill-posed check could not be made at 1 of 1 cells \(Cell 0x0\): both PSFs are undersampled \(narrower "
           r"than about 0.8 px sigma, too narrow for adaptive moments\) at 1 of them\. Make sure the reference is "
           r"broader than the science PSF there, or use better-sampled PSF models")
    with pytest.raises(IllPosedMatchError, match=msg + r".*strict=True: nothing was convolved"):
        ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(21, 21, 0.45))
    config.strict = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.warns(IllPosedMatchWarning, match=msg):
            result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(21, 21, 0.45))
    md = result.metadata
    assert md["qa"]["illPosed"]["nCellsUnmeasured"] == 1 and any("could not be made" in n for n in md["notes"])
    # nothing was measured: no invented worst cell or deficit (the weight's floor gave a sigma of 0.01 px), and
    # the moment-based QA numbers are unknown (NaN), not 0
    assert md["qa"]["illPosed"]["worst"] is None
    (cand,) = result.kernelCellSet.candidates()
    assert np.isnan(cand.qa["illPosedDeficit"])
    assert all(np.isnan(cand.qa[name]) for name in ("sizeMismatch", "ellipticityMismatch", "centroidShift"))


def test_unmeasured_cells_carry_no_numbers_and_the_others_keep_theirs():
    from psfmatch.diagnostics import survey_psfs

    cells = SpatialCellSet(Box2I((0, 0), (256, 128)), 128, 128)
    science = VariableGaussianPsf(21, 21, Box2I((0, 0), (256, 128)), sigma=(1.05, 0.5, 0.0))  # 0.55 px to 1.55 px
    # (a 0.78 px reference, sampled at pixel centres, is measured -- at 0.70 px: not broad enough for the
    # undersampled science PSF's bound, 0.8 px)
    report = check_ill_posed(survey_psfs(science, GaussianPsf(21, 21, 0.78), cells))
    ok = report.survey.ok
    assert list(ok) == [False, True] and report.measured.tolist() == [False, True]
    for name in ("deficit", "angle", "scienceSigma", "referenceSigma", "deconvolutionSigma"):
        values = getattr(report, name)
        assert np.isnan(values[0]) and np.isfinite(values[1]), name
    assert report.worst() == 1 and report.flagged.tolist() == [False, True]
    assert report.referenceSigma[1] == pytest.approx(0.70, abs=0.01)
    assert report.deficit[1] == pytest.approx(1.55 - 0.70, abs=0.05)
    md = report.to_metadata()
    assert md["worst"]["cell"] == report.survey.labels[1] and md["nCellsUnmeasured"] == 1
    assert md["nCellsUndersampled"] == {"science": 0, "reference": 0}
    assert report.unmeasured_message() == (
        "the ill-posed check could not be made at 1 of 2 cells (Cell 0x0): the science PSF is undersampled (narrower "
        "than about 0.8 px sigma) and the reference PSF not broader than that at 1 of them. Make sure the reference "
        "is broader than the science PSF there, or use better-sampled PSF models")


def test_reference_chooser_refuses_an_unmeasurable_psf():
    from psfmatch.batch import choose_reference_psf
    from psfmatch.errors import InvalidInputError
    exposure = Exposure(np.zeros((64, 64), np.float32), psf=GaussianPsf(21, 21, 0.75))
    with pytest.raises(InvalidInputError, match=r"could not be measured at any of the 25 survey positions \(last: "
                                                r".*too undersampled"):
        choose_reference_psf([exposure])


def _bump_between():
    """2x2 cells, candidates at the corners: sigma 1.6 px there, 2.3 px at the centre, against a 2.0 px reference."""
    bbox = Box2I((0, 0), (256, 256))
    return VariableGaussianPsf(25, 25, bbox, sigma=[2.3, 0, 0, -0.35, 0, -0.35]), GaussianPsf(25, 25, 2.0), bbox


def test_a_match_ill_posed_between_the_candidates_is_flagged_and_strict_refuses_it():
    sci, ref, bbox = _bump_between()
    config = ModelPsfMatchConfig()
    config.qaPositionsPerCandidate = 2  # the held-out lattice's 5 points and 3 of the finer one
    with pytest.warns(IllPosedMatchWarning, match=r"narrower than the science PSF at 2 of 8 held-out positions "
                                                  r"between the candidates \(\(127\.5, 127\.5\), \(191\.2, 127\.5\)\).*"
                                                  r"Worst: \(127\.5, 127\.5\), along the axis"):
        fit = ModelPsfMatchTask(config=config).fitKernel(sci, ref, bbox)
    with pytest.warns(IllPosedMatchWarning) as record:  # found beside the fit, attributed to its caller
        ModelPsfMatchTask(config=config).fitKernel(sci, ref, bbox)
    assert [w.filename for w in record if w.category is IllPosedMatchWarning] == [__file__]
    qa = fit.metadata["qa"]
    assert qa["illPosed"]["flag"] is False  # at the candidates it is well-posed
    assert qa["illPosedBetween"]["flag"] is True and qa["illPosedBetween"]["nCellsChecked"] == 8
    assert qa["illPosedBetween"]["worst"]["cellIndex"] == -1
    assert qa["illPosedBetween"]["worst"]["deficit"] == pytest.approx(0.300, abs=2e-3)  # at the centre: 2.3 vs 2.0
    assert FLAG_ILL_POSED in qa["flags"]
    config.strict = True
    with pytest.raises(IllPosedMatchError, match=r"at 2 of 8 held-out positions between the candidates.*strict=True: "
                                                 r"nothing was convolved"):
        ModelPsfMatchTask(config=config).fitKernel(sci, ref, bbox)


def test_the_held_out_positions_of_a_well_posed_match_are_checked_and_reused_by_the_qa():
    bbox = Box2I((0, 0), (512, 512))
    sci = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.1, 0.1])
    calls = []
    original = sci.computeKernelImages

    def counted(positions):
        calls.append(len(positions))
        return original(positions)

    sci.computeKernelImages = counted
    with warnings.catch_warnings():
        warnings.simplefilter("error", IllPosedMatchWarning)
        fit = ModelPsfMatchTask(config=ModelPsfMatchConfig()).fitKernel(sci, GaussianPsf(31, 31, 2.6), bbox)
    between = fit.metadata["qa"]["illPosedBetween"]
    assert between["flag"] is False and between["nCellsChecked"] == fit.metadata["qa"]["between"]["n"] == 16
    assert between["worst"]["deficit"] < 0
    assert calls.count(16) == 2  # the 16 candidates and the 16 held-out positions, each realized once


def test_user_psf_models_are_only_called_from_the_calling_thread():
    """The ill-posed check at the held-out positions runs beside the fit on a pool thread: its stamps are made in
    the calling thread, so a user's model that is not thread-safe is never called from two threads at once."""
    import threading

    from psfmatch.parallel import available_cores

    bbox = Box2I((0, 0), (512, 512))
    inner = VariableGaussianPsf(21, 21, bbox, sigma=[1.8, 0.1, 0.1])
    caller = threading.current_thread()
    other_threads = []

    class UserPsf:
        def computeKernelImage(self, position):
            if threading.current_thread() is not caller:
                other_threads.append(threading.current_thread().name)
            return inner.computeKernelImage(position)

    if available_cores() < 2:
        pytest.skip("needs two cores for the pool")
    exposure = Exposure(np.zeros((512, 512), np.float32), psf=UserPsf())
    result = ModelPsfMatchTask(config=ModelPsfMatchConfig()).run(exposure, GaussianPsf(31, 31, 2.6))
    assert result.metadata["qa"]["illPosedBetween"]["nCellsChecked"] == 16
    assert other_threads == []


def test_constant_models_skip_the_check_between_the_candidates_but_equal_stamps_there_do_not():
    bbox = Box2I((0, 0), (256, 256))
    fit = ModelPsfMatchTask(config=ModelPsfMatchConfig()).fitKernel(GaussianPsf(21, 21, 1.8), GaussianPsf(31, 31, 2.6),
                                                                     bbox)
    assert "illPosedBetween" not in fit.metadata["qa"]  # nothing varies: its stamps would be the candidates'
    sci, ref, bbox = _bump_between()  # the same stamp at the four candidates, a varying model
    with pytest.warns(IllPosedMatchWarning, match=r"at 1 of 4 held-out positions between the candidates "
                                                  r"\(\(127\.5, 127\.5\)\)"):  # the centre, among the default 4
        fit = ModelPsfMatchTask(config=ModelPsfMatchConfig()).fitKernel(sci, ref, bbox)
    assert fit.metadata["qa"]["illPosedBetween"]["nCellsChecked"] == 4


def _undersampled_exposure(sigma):
    return Exposure(np.zeros((128, 128), np.float32), psf=GaussianPsf(21, 21, sigma))


def test_an_undersampled_science_psf_under_a_broader_reference_is_well_posed():
    """A science PSF too narrow for adaptive moments (0.5 px) is narrower than a 2 px reference along every axis:
    the check says well-posed, and strict matches it (it refused it as unverifiable)."""
    config = ModelPsfMatchConfig()
    config.strict = True
    with warnings.catch_warnings():
        warnings.simplefilter("error", IllPosedMatchWarning)
        result = ModelPsfMatchTask(config=config).run(_undersampled_exposure(0.5), GaussianPsf(21, 21, 2.0))
    ill = result.metadata["qa"]["illPosed"]
    assert ill["flag"] is False and ill["nCellsUnmeasured"] == 0
    assert ill["nCellsUndersampled"] == {"science": 1, "reference": 0}
    worst = ill["worst"]
    assert worst["undersampled"] == "science" and worst["scienceSigma"] == pytest.approx(0.8)
    assert worst["deficit"] == pytest.approx(0.8 - 2.0, abs=0.01)  # at most: the science PSF is narrower still
    assert FLAG_ILL_POSED not in result.metadata["qa"]["flags"]
    from psfmatch.diagnostics import survey_psfs
    cells = SpatialCellSet(Box2I((0, 0), (128, 128)), 128, 128)
    report = check_ill_posed(survey_psfs(GaussianPsf(21, 21, 0.5), GaussianPsf(21, 21, 2.0), cells))
    assert report.message() == (
        "well-posed: the reference PSF is at least as broad as the science PSF along every axis in all 1 cells "
        "(smallest margin at least 1.2 px at Cell 0x0; the science PSF is undersampled at 1 of them, narrower than "
        "about 0.8 px sigma, where the reference is broader than that)")


def test_an_undersampled_reference_under_a_broader_science_psf_is_flagged():
    """A 0.5 px reference under a 1.5 px science PSF is a deconvolution: flagged ILL_POSED with a deficit of at least
    0.7 px (it was only 'could not be made', without the flag)."""
    config = ModelPsfMatchConfig()
    config.strict = True
    msg = (r"ill-posed match: the reference PSF is narrower than the science PSF at 1 of 1 cells \(Cell 0x0\), .*"
           r"science sigma 1\.50\d px vs reference sigma < 0\.8 px \(undersampled: too narrow for adaptive moments\), "
           r"a deficit of at least 0\.70\d px \(equivalent to deconvolving a Gaussian of sigma at least 1\.2\d\d px")
    with pytest.raises(IllPosedMatchError, match=msg):
        ModelPsfMatchTask(config=config).run(_undersampled_exposure(1.5), GaussianPsf(21, 21, 0.5))
    config.strict = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ModelPsfMatchTask(config=config).run(_undersampled_exposure(1.5), GaussianPsf(21, 21, 0.5))
    qa = result.metadata["qa"]
    assert FLAG_ILL_POSED in qa["flags"]
    assert qa["illPosed"]["nCellsUndersampled"] == {"science": 0, "reference": 1}
    assert qa["illPosed"]["worst"]["undersampled"] == "reference"


def test_a_psf_narrow_along_one_axis_only_is_not_taken_for_an_undersampled_one():
    """A 3 px by 0.49 px science PSF collapses the weight along one axis only: nothing bounds it along the other,
    so the cell stays unmeasured, and the message says why."""
    from psfmatch.diagnostics import survey_psfs
    from psfmatch.psf.base import Psf

    class Elongated(Psf):
        def _kernel_image(self, x, y):
            return elliptical_gaussian(41, 41, 9.0, 0.49, 0.0)

    cells = SpatialCellSet(Box2I((0, 0), (128, 128)), 128, 128)
    report = check_ill_posed(survey_psfs(Elongated(), GaussianPsf(41, 41, 2.0), cells))
    assert report.nUnmeasured == 1 and not report.illPosed
    assert ("the science PSF's adaptive moments did not converge (a PSF narrower than about 0.8 px sigma along one "
            "axis, or a stamp without a clear core) at 1 of them") in report.unmeasured_message()
    assert report.to_metadata()["nCellsUndersampled"] == {"science": 0, "reference": 0}


def test_adaptive_moments_of_a_collapsing_weight_raise_no_floating_point_warning():
    """A 0.6 px Gaussian integrated over pixels, centred off a pixel centre, made the iteration overflow on its way:
    numpy's RuntimeWarning reached the caller."""
    from psfmatch.moments import adaptive_moments, collapsed
    ss, n = 11, 25
    y, x = (np.mgrid[0:n * ss, 0:n * ss] + 0.5) / ss - n / 2
    fine = np.exp(-((x - 0.4) ** 2 + (y - 0.1) ** 2) / (2 * 0.6 ** 2))
    stamp = fine.reshape(n, ss, n, ss).sum(axis=(1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ixx, iyy, _, _, _, ok = adaptive_moments(stamp[None])
    # a failure, quietly; not the clean collapse of both axes that bounds the PSF's width (the weight collapsed
    # along y, and its x moment ran off): the ill-posed check leaves such a cell unmeasured
    assert not ok[0] and not collapsed(np.stack([ixx, iyy], axis=1))[0]
