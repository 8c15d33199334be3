"""The automatic kernel choice (``config.autoKernel``; psfmatch.autokernel)."""

import json
import math
import pickle
import warnings

import numpy as np
import pytest

from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.autokernel import alard_lupton_widths, kernel_size_ladder
from psfmatch.demo import demo_psf, demo_reference_psf
from psfmatch.errors import KernelQualityWarning, KernelTooBigError
from psfmatch.psf import GaussianPsf, ImagePsf, MoffatPsf, VariableGaussianPsf
from psfmatch.psf.analytic import elliptical_gaussian

BBOX = Box2I((0, 0), (256, 256))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def auto_config(**kw):
    config = ModelPsfMatchConfig()
    config.autoKernel = True
    config.autoKernelMaxDFSize = 21  # keeps the delta-function trials quick; the benchmark uses the default
    for k, v in kw.items():
        setattr(config, k, v)
    return config


def fit(config, sci, ref, bbox=BBOX):
    return ModelPsfMatchTask(config=config).fitKernel(sci, ref, bbox)


def worst(md):
    q = md["qa"]
    return max(q["candidates"]["residualMaxWorst"], q["between"].get("residualMaxWorst", 0.0))


def elliptical_psf(sig_minor, sig_major, theta_deg, size=31):
    t = np.radians(theta_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    cov = rot @ np.diag([sig_major ** 2, sig_minor ** 2]) @ rot.T
    return ImagePsf(elliptical_gaussian(size, size, cov[0, 0], cov[1, 1], cov[0, 1]))


@pytest.fixture(scope="module")
def gauss_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(auto_config(), GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))


# --- physics of the choice -------------------------------------------------------------------------


def test_gaussian_widths_follow_the_gaussian_identity(gauss_fit):
    md = gauss_fit.metadata["autoKernel"]
    # sigma_k^2 = sigma_ref^2 - sigma_sci^2 = 2.5^2 - 1.5^2 = 2^2
    assert md["kernelSigma"] == pytest.approx(math.sqrt(2.5 ** 2 - 1.5 ** 2), abs=1e-4)
    for t in md["trials"]:
        if t["family"] == "AL" and t["label"] == "moments":
            assert t["sigmas"][0] ** 2 == pytest.approx(2.5 ** 2 - 1.5 ** 2, rel=1e-4)
            assert t["sigmas"][1] == pytest.approx(t["sigmas"][0] / 2) and t["sigmas"][2] == pytest.approx(
                2 * t["sigmas"][0])


def test_gaussian_to_gaussian_below_1e_4_and_better_than_lsst(gauss_fit):
    assert worst(gauss_fit.metadata) < 1e-4
    lsst = fit(auto_config(autoKernel=False), GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))
    assert worst(gauss_fit.metadata) < 0.01 * worst(lsst.metadata)
    # the exact kernel is a Gaussian of sigma 2: the fitted one is too
    k = gauss_fit.kernel.computeImage((128, 128))
    h = k.shape[0] // 2
    v, u = np.mgrid[-h:h + 1, -h:h + 1]
    g = np.exp(-(u * u + v * v) / (2 * 4.0))
    np.testing.assert_allclose(k, g / g.sum(), atol=2e-6)


def test_elliptical_kernel_width_is_the_determinant_radius():
    sci = elliptical_psf(1.6, 2.1, 30.0)
    f = fit(auto_config(), sci, GaussianPsf(31, 31, 3.0))
    md = f.metadata["autoKernel"]
    expected = ((9.0 - 1.6 ** 2) * (9.0 - 2.1 ** 2)) ** 0.25
    assert md["kernelSigma"] == pytest.approx(expected, rel=1e-4)
    assert worst(f.metadata) < 1e-4
    # LSST's default basis is rejected as noisy: a checkered kernel, > 4 x the noise of the Gaussian kernel
    cfg_trial = [t for t in md["trials"] if t["label"] == "config"][0]
    assert not cfg_trial["admissible"] and cfg_trial["noiseRatio"] > 4
    assert f.metadata["qa"]["candidates"]["kernelNegativeFractionWorst"] < 0.05


def test_spatially_varying_field_below_1e_4():
    # 8 x 8 cells of 128 px: enough candidates for the spatial orders the field needs
    bbox = Box2I((0, 0), (1024, 1024))
    sci, ref = demo_psf(bbox), demo_reference_psf()
    auto = fit(auto_config(autoKernelMaxSpatialOrder=4), sci, ref, bbox)
    lsst = fit(auto_config(autoKernel=False), sci, ref, bbox)
    assert worst(auto.metadata) < 1e-4 < worst(lsst.metadata)
    md = auto.metadata["autoKernel"]
    # the spatial order was chosen on held-out positions: each step up had to pay for itself
    orders = {t["spatialOrder"]: t["score"] for t in md["orderTrials"]}
    chosen = auto.metadata["spatialKernelOrder"]
    assert chosen > 2 and orders[chosen] * 1.1 < orders[2]
    assert md["nHeldOut"] > 0 and not md["constantMatch"]


def test_default_keeps_lsst_spatial_order_and_is_no_worse():
    # raising the order is the user's call (it multiplies the convolution time); by default the automatic
    # mode keeps order 2 on a varying field and must not be worse than LSST's configuration there
    bbox = Box2I((0, 0), (1024, 1024))
    sci, ref = demo_psf(bbox), demo_reference_psf()
    auto = fit(auto_config(), sci, ref, bbox)
    lsst = fit(auto_config(autoKernel=False), sci, ref, bbox)
    assert auto.metadata["spatialKernelOrder"] == 2
    assert "orderTrials" not in auto.metadata["autoKernel"]
    assert worst(auto.metadata) <= 1.1 * worst(lsst.metadata)


def test_independent_trials_on_two_threads_score_bit_for_bit_as_on_one(monkeypatch):
    # the spatial orders' trials, then the configuration's and the standard basis' trials, then the
    # richer basis', run on the pool's threads together; every score, residual and noise gain, their
    # order and the choice are those of one thread
    import threading

    import psfmatch.autokernel as ak
    import psfmatch.parallel as parallel

    bbox = Box2I((0, 0), (768, 768))
    sci, ref = demo_psf(bbox), demo_reference_psf()
    threads = set()
    real = ak._evaluate
    monkeypatch.setattr(ak, "_evaluate", lambda *a: threads.add(threading.current_thread().name) or real(*a))
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    two = fit(auto_config(autoKernelMaxSpatialOrder=3), sci, ref, bbox).metadata["autoKernel"]
    assert len(two["trials"]) >= 4 and all(name.startswith("psfmatch-worker") for name in threads)
    threads.clear()
    monkeypatch.setattr(parallel, "available_cores", lambda: 1)
    one = fit(auto_config(autoKernelMaxSpatialOrder=3), sci, ref, bbox).metadata["autoKernel"]
    assert threads == {threading.current_thread().name}
    drop_time = lambda trials: [{k: v for k, v in t.items() if k != "time"} for t in trials]
    assert len(two["orderTrials"]) == 2 and drop_time(two["orderTrials"]) == drop_time(one["orderTrials"])
    assert drop_time(two["trials"]) == drop_time(one["trials"])
    assert two["chosen"]["description"] == one["chosen"]["description"]


def test_trial_residuals_from_kernel_terms_equal_those_of_every_kernel(monkeypatch):
    # the trials' residuals convolve with the spatial model's few term images (transformed once)
    # instead of each position's kernel: the same scores to rounding, and the same choice
    import psfmatch.autokernel as ak

    bbox = Box2I((0, 0), (768, 768))
    sci, ref = demo_psf(bbox), demo_reference_psf()
    seen = []
    real = ak._residuals
    monkeypatch.setattr(ak, "_residuals", lambda S, R, K, spectra=None, terms=None:
                        seen.append(terms is not None) or real(S, R, K, spectra, terms))
    with_terms = fit(auto_config(autoKernelMaxSpatialOrder=3), sci, ref, bbox).metadata["autoKernel"]
    assert seen and all(seen)
    monkeypatch.setattr(ak, "_residuals", lambda S, R, K, spectra=None, terms=None: real(S, R, K, spectra))
    per_kernel = fit(auto_config(autoKernelMaxSpatialOrder=3), sci, ref, bbox).metadata["autoKernel"]
    for group in ("orderTrials", "trials"):
        assert len(with_terms[group]) == len(per_kernel[group]) >= 2
        for a, b in zip(with_terms[group], per_kernel[group]):
            assert a["description"] == b["description"]
            for key in ("score", "residualMaxFit", "residualL2"):
                assert a[key] == pytest.approx(b[key], rel=1e-11, abs=1e-15), (a["description"], key)
    assert with_terms["chosen"]["description"] == per_kernel["chosen"]["description"]


# --- the selection rule and its evidence -----------------------------------------------------------


def test_evidence_is_recorded_and_the_rule_holds(gauss_fit):
    md = gauss_fit.metadata
    json.dumps(md, allow_nan=False)
    a = md["autoKernel"]
    assert md["autoKernelUsed"] is True
    trials = a["trials"]
    assert any(t["label"] == "config" for t in trials)
    labels = {t["family"] for t in trials}
    assert labels == {"AL", "DF"}
    chosen = a["chosen"]
    assert chosen["admissible"]
    ok = [t for t in trials if t["admissible"] and t["score"] is not None]
    best = min(t["score"] for t in ok)
    assert chosen["score"] <= max(best * 1.1, 1e-6)
    # nothing simpler was good enough
    key = (chosen["spatialOrder"], chosen["kernelSize"])
    for t in ok:
        if (t["spatialOrder"], t["kernelSize"]) < key:
            assert t["score"] > max(best * 1.1, 1e-6)
    # the fit used the choice
    assert md["kernelSize"] == chosen["kernelSize"]


def test_prefers_the_smaller_kernel_when_the_gain_is_negligible():
    sci, ref = GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5)
    config = auto_config(autoKernelResidualFloor=1e-2)
    config.kernel.name = "AL"  # explicit: no delta-function trials (quicker)
    f = fit(config, sci, ref)
    md = f.metadata["autoKernel"]
    assert md["chosen"]["kernelSize"] == min(md["sizes"])
    assert f.metadata["kernelSize"] == min(md["sizes"])


def test_moffat_chooses_a_larger_kernel_and_beats_lsst():
    sci, ref = MoffatPsf(41, 41, 3.5, 3.5), MoffatPsf(41, 41, 5.0, 2.5)
    auto = fit(auto_config(autoKernelMaxDFSize=27), sci, ref)
    lsst = fit(auto_config(autoKernel=False), sci, ref)
    assert auto.metadata["kernelSize"] > 21
    assert worst(auto.metadata) < 0.2 * worst(lsst.metadata)


# --- explicit choices are honoured -------------------------------------------------------------------


def test_explicit_kernel_size_and_order_are_honoured():
    config = auto_config()
    config.kernel.active.kernelSize = 21  # explicit, even though it equals the default
    config.kernel.active.spatialKernelOrder = 1
    bbox = Box2I((0, 0), (512, 512))
    f = fit(config, demo_psf(bbox), demo_reference_psf(), bbox)
    assert f.metadata["kernelSize"] == 21 and f.metadata["spatialKernelOrder"] == 1
    md = f.metadata["autoKernel"]
    assert md["sizes"] == [21] and {t["spatialOrder"] for t in md["trials"]} == {1}
    assert md["free"]["kernelSize"] is False and md["free"]["spatialKernelOrder"] is False


def test_explicit_widths_keep_alard_lupton():
    config = auto_config()
    config.kernel.active.alardSigGauss = [1.0, 2.0, 4.5]
    f = fit(config, GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))
    assert f.metadata["kernelBasisSet"] == "alard-lupton"
    assert f.metadata["ALBasisSigGauss"] == [1.0, 2.0, 4.5]
    assert {t["family"] for t in f.metadata["autoKernel"]["trials"]} == {"AL"}


def test_explicit_delta_function_basis():
    config = auto_config(autoKernelMaxSize=21)
    config.kernel.name = "DF"
    f = fit(config, GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))
    assert f.metadata["kernelBasisSet"] == "delta-function"
    assert {t["family"] for t in f.metadata["autoKernel"]["trials"]} == {"DF"}
    assert worst(f.metadata) < 1e-4


@pytest.mark.parametrize("spatially_varying", [False, True])
def test_delta_function_with_absolute_lambda(spatially_varying):
    """LSST's regularization (lambdaType = "absolute", the LSST guide's recipe) is the one every delta-function
    trial uses and the one fitted; it crashed (AttributeError) on a constant match."""
    config = auto_config(autoKernelMaxSize=21)
    config.kernel.name = "DF"
    config.kernel.active.lambdaType = "absolute"
    sci = VariableGaussianPsf(31, 31, BBOX, (1.5, 0.1, 0.0)) if spatially_varying else GaussianPsf(31, 31, 1.5)
    f = fit(config, sci, GaussianPsf(31, 31, 2.5))
    md = f.metadata["autoKernel"]
    assert f.metadata["kernelBasisSet"] == "delta-function"
    assert md["free"]["lambda"] is False
    described = [md["chosen"]] + md["trials"]
    assert all(t["lambdaType"] == "absolute" and t["lambdaValue"] == 0.2 for t in described)
    assert "lambda=0.2 (absolute)" in md["chosen"]["description"]
    if not spatially_varying:
        assert len(md["trials"]) >= 2  # the sizes were tried
        # the chosen trial is the fitted kernel: the same noise gain
        K = f.kernel.computeImage(BBOX.getCenter())
        assert md["chosen"]["noiseGain"] == pytest.approx(float(np.sum(K ** 2)), rel=1e-9)


def test_delta_function_without_regularization_is_scored_unregularized():
    """useRegularization = False: the trials are unregularized too, so the chosen trial's evidence (its noise
    gain) describes the kernel that is fitted (the trials were regularized, and judged another kernel)."""
    config = auto_config(autoKernelMaxSize=21)
    config.kernel.name = "DF"
    config.kernel.active.useRegularization = False
    f = fit(config, GaussianPsf(31, 31, 2.0), GaussianPsf(31, 31, 2.1))
    md = f.metadata["autoKernel"]
    assert md["free"]["lambda"] is False
    assert all(t["lambdaScaling"] == 0 for t in md["trials"])
    assert "unregularized" in md["chosen"]["description"]
    K = f.kernel.computeImage(BBOX.getCenter())
    assert md["chosen"]["noiseGain"] == pytest.approx(float(np.sum(K ** 2)), rel=1e-9)


def test_regularization_set_on_the_delta_function_config_holds_after_a_switch():
    """With the family left to the automatic mode, a regularization set on kernel['DF'] is the delta-function
    trials' and survives the switch (it was replaced by the relative sweep)."""
    config = auto_config(autoKernelMaxSize=21)
    config.kernel.active.spatialKernelOrder = 0
    config.kernel["DF"].lambdaType = "absolute"
    config.kernel["DF"].lambdaValue = 1e-5
    f = fit(config, GaussianPsf(25, 25, 1.8), MoffatPsf(41, 41, 6.0, 2.5))
    md = f.metadata["autoKernel"]
    assert all(t["lambdaType"] == "absolute" and t["lambdaValue"] == 1e-5
               for t in md["trials"] if t["family"] == "DF")
    assert f.metadata["kernelBasisSet"] == "delta-function"  # the constant Moffat match picks a delta-function trial
    choice = md["chosen"]
    assert (choice["lambdaType"], choice["lambdaValue"]) == ("absolute", 1e-5)
    # the fit used it: the chosen trial's noise gain is the fitted kernel's
    K = f.kernel.computeImage(BBOX.getCenter())
    assert choice["noiseGain"] == pytest.approx(float(np.sum(K ** 2)), rel=1e-9)


def test_switch_to_delta_function_keeps_the_users_shared_fields():
    """Fields set on the Alard-Lupton config (cells, spatial model, solve) hold for a delta-function choice too."""
    config = auto_config(autoKernelMaxSize=21)
    a = config.kernel.active
    a.spatialKernelOrder = 0
    a.sizeCellX = a.sizeCellY = 32
    a.spatialModelType = "polynomial"
    a.solveRcond = 1e-9
    f = fit(config, GaussianPsf(25, 25, 1.8), MoffatPsf(41, 41, 6.0, 2.5))
    md = f.metadata
    assert md["kernelBasisSet"] == "delta-function"  # the constant Moffat match picks a delta-function trial
    assert md["nCells"] == 64  # 32 px cells on 256 px, not the DF config's default 128 px (4 cells)
    assert md["spatialKernelOrderRequested"] == md["spatialKernelOrder"] == 0
    assert md["spatialModelType"] == "polynomial"
    assert not any("lowered" in n for n in md["notes"])


def test_reference_is_not_cropped_by_a_smaller_automatic_kernel():
    """A smaller kernel must not shrink the PSF stamps below what the reference needs (edge < 1e-3 of peak)."""
    from psfmatch.errors import TruncatedPsfWarning
    from psfmatch.psf import VariableGaussianPsf
    bbox = Box2I((0, 0), (1024, 1024))
    sci = VariableGaussianPsf(21, 21, bbox, sigma=[1.9, 0.2, 0.0])  # 1.7 to 2.1 px
    ref = GaussianPsf(31, 31, 2.7)  # untruncated from 23 px on: exp(-11^2 / (2 * 2.7^2)) = 2.5e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedPsfWarning)
        f = fit(auto_config(), sci, ref, bbox)
    md = f.metadata
    assert md["kernelSize"] < 21  # the automatic choice (15 px, whose LSST stamp would be 21 px)
    assert md["autoKernel"]["minPsfSize"] == 23
    assert md["psfSize"] >= 23 and md["referenceEdgeToPeak"] < 1e-3
    assert f.referencePsf.computeKernelImage((512, 512)).shape == (md["psfSize"],) * 2
    # the user's own padding rules stay theirs
    config = auto_config()
    config.autoPadPsfTo = 1.0
    with pytest.warns(TruncatedPsfWarning, match=r"cropped to the fit's 21x21 PSF stamps.*padPsfBy = 2 with "
                                                  r"doAutoPadPsf = False \(23 px stamps\)"):
        f = fit(config, sci, ref, bbox)
    assert f.metadata["autoKernel"]["minPsfSize"] == 0


def test_kept_configuration_is_not_told_to_turn_autokernel_on():
    """A delta-function kernel on a varying field is kept by the automatic mode: its remedy names no autoKernel."""
    from psfmatch.errors import KernelQualityWarning
    config = auto_config()
    config.kernel.name = "DF"
    bbox = Box2I((0, 0), (256, 256))
    with pytest.warns(KernelQualityWarning) as caught:
        f = fit(config, demo_psf(bbox), GaussianPsf(31, 31, 2.0), bbox)
    assert f.metadata["autoKernel"]["trials"] == []
    assert all("autoKernel" not in str(w.message) for w in caught)
    assert any("Remedy: a larger kernelSize, a higher spatialKernelOrder" in str(w.message) for w in caught)


def test_few_cells_hold_or_lower_the_trials_order_instead_of_failing_every_trial():
    """A 2x2 grid of cells determines degree 1 along each axis: the trials fit order 2 without x^2 and y^2;
    a 2x1 grid determines no more than order 1 (constant along y): the trials use it and say so."""
    bbox = Box2I((0, 0), (256, 256))
    f = fit(ModelPsfMatchConfig(), demo_psf(bbox), demo_reference_psf(), bbox)
    md = f.metadata
    trials = md["autoKernel"]["trials"]
    assert trials and all(t["score"] is not None for t in trials)
    assert {t["spatialOrder"] for t in trials} == {2} and md["spatialKernelOrder"] == 2
    assert md["notes"] == ["the order-2 spatial model is fitted with degree at most 1 along x and 1 along y: the "
                           "candidates lie on 2 distinct column(s) and 2 row(s) of the 2x2 grid, which determine no "
                           "more (use smaller cells (sizeCellX <= 85, sizeCellY <= 85: 3 cells along each axis) to fit "
                           "the whole model)"]
    bbox = Box2I((0, 0), (256, 128))
    md = fit(ModelPsfMatchConfig(), demo_psf(bbox), demo_reference_psf(), bbox).metadata
    trials = md["autoKernel"]["trials"]
    assert trials and all(t["score"] is not None for t in trials)
    assert {t["spatialOrder"] for t in trials} == {1} and md["spatialKernelOrder"] == 1
    assert "spatialKernelOrder 2 lowered to 1: the 2x1 grid of cells cannot constrain a higher order (use smaller cells " \
           "(sizeCellX <= 85, sizeCellY <= 42: 3 cells along each axis), or set the order you want)" in md["notes"]
    # an explicit order is the fit's to lower, with its own note (and only that one)
    config = ModelPsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 2
    md = fit(config, demo_psf(bbox), demo_reference_psf(), bbox).metadata
    assert md["spatialKernelOrderRequested"] == 2 and md["spatialKernelOrder"] == 1
    lowered = [n for n in md["notes"] if "lowered" in n]
    assert len(lowered) == 1 and "lowered from 2 to 1: 2 candidates on a 2x1 grid" in lowered[0]
    assert "sizeCellX <= 85, sizeCellY <= 42: 3 cells along each axis" in lowered[0]


def test_explicit_choices_survive_copy_and_pickle():
    config = auto_config()
    config.kernel.active.spatialKernelOrder = 2
    for c in (config.copy(), pickle.loads(pickle.dumps(config))):
        assert c.kernel.active.isExplicit("spatialKernelOrder")
        assert not c.kernel.active.isExplicit("kernelSize")
        assert c.isExplicit("autoKernel")


def test_explicit_kernel_too_big_still_raises():
    config = auto_config(doAutoPadPsf=False)
    config.kernel.active.kernelSize = 31
    with pytest.raises(KernelTooBigError, match=r"Kernel size \(31\) too big to match Psfs of size 31"):
        fit(config, GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))


def test_auto_off_is_lsst():
    f = fit(auto_config(autoKernel=False), GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))
    md = f.metadata
    assert md["autoKernelUsed"] is False and "autoKernel" not in md
    assert md["kernelSize"] == 21 and md["ALBasisSigGauss"] == [0.7, 1.5, 3.0]


# --- end to end and building blocks ---------------------------------------------------------------------


def test_run_end_to_end():
    exposure = Exposure(np.zeros((256, 256), np.float32), psf=GaussianPsf(25, 25, 1.7))
    exposure.image[128, 128] = 1000.0
    result = ModelPsfMatchTask(config=auto_config()).run(exposure, GaussianPsf(31, 31, 2.5))
    k = result.psfMatchingKernel
    assert k.getSum((10, 10)) == pytest.approx(1.0, abs=1e-7)
    assert float(np.nansum(result.psfMatchedExposure.image)) == pytest.approx(1000.0, rel=1e-5)
    assert result.metadata["autoKernelUsed"]


def test_kernel_size_ladder():
    assert kernel_size_ladder(2.0, 31) == [13, 19, 27, 31]
    assert kernel_size_ladder(2.0, 21) == [13, 21]
    assert all(k % 2 == 1 for k in kernel_size_ladder(1.37, 41))
    assert kernel_size_ladder(5.0, 21) == [21]


def test_alard_lupton_widths():
    sig, deg = alard_lupton_widths(2.0)
    assert sig == (2.0, 1.0, 4.0) and deg == (4, 2, 2)
    sig, deg = alard_lupton_widths(0.1, rich=True)  # floored: a near-delta kernel
    assert sig[0] == 0.5 and sig[1] == 0.35 and deg == (6, 4, 2)


def test_a_noisy_reference_image_does_not_blow_up_the_stamps():
    """A reference image with a noise floor is 'truncated' at any size: the stamps grew to its full 151 px
    (a fit 20 times slower). They stop at what the matched PSF can reach, science stamp + kernel - 1."""
    bbox = Box2I((0, 0), (512, 512))
    ref = GaussianPsf(151, 151, 2.7).computeKernelImage((0, 0))
    ref = ref + 2e-3 * ref.max() * np.random.default_rng(0).uniform(0.75, 1.0, ref.shape)
    f = fit(auto_config(), demo_psf(bbox), ImagePsf(ref), bbox)
    md = f.metadata
    assert md["autoKernel"]["minPsfSize"] == 151
    assert md["psfSize"] <= 21 + md["kernelSize"] - 1


def test_a_coarse_trial_grid_does_not_claim_the_fit_lowers_the_order():
    config = auto_config(autoKernelMaxGrid=3)
    config.kernel.active.spatialKernelOrder = 3
    bbox = Box2I((0, 0), (1024, 1024))
    md = fit(config, demo_psf(bbox), demo_reference_psf(), bbox).metadata
    assert md["spatialKernelOrder"] == 3 and not any("lowered" in n for n in md["notes"])


@pytest.mark.parametrize("placement", ["spread", "centers"])
def test_held_out_positions_are_never_fitted(monkeypatch, placement):
    """The trials are scored where they were not fitted: the exposure's corners, which "spread" candidates sit
    on, were among the held-out positions."""
    import psfmatch.autokernel as ak
    from psfmatch import SpatialCellSet
    from psfmatch.diagnostics import survey_psfs

    captured = {}
    original = ak._TrialData.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        captured["data"] = self

    monkeypatch.setattr(ak._TrialData, "__init__", spy)
    bbox = Box2I((0, 0), (256, 256))
    sci = VariableGaussianPsf(21, 21, bbox, [1.6, 0.2, 0.1], [0.05], [0.03])
    ref = GaussianPsf(31, 31, 2.6)
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    config.kernel.active.candidatePlacement = placement
    cells = SpatialCellSet(bbox, 64, 64, placement)
    ak.choose_kernel(config, survey_psfs(sci, ref, cells), sci, ref, cells, bbox)
    data = captured["data"]
    fitted = {tuple(p) for p in data.xy_fit}
    held_out = [tuple(p) for p in data.xy_ho]
    assert len(held_out) >= 9 and not fitted.intersection(held_out)
    corners = {(0.0, 0.0), (255.0, 0.0), (0.0, 255.0), (255.0, 255.0)}
    assert corners <= (fitted | set(held_out))  # every corner is either fitted or checked


def test_max_spatial_order_below_the_default_order_caps_the_choice():
    """autoKernelMaxSpatialOrder = 1 with spatialKernelOrder left at its default (2): order 1 at most (it was
    ignored, and order 2 chosen); an order the user set still wins."""
    bbox = Box2I((0, 0), (384, 384))
    sci = demo_psf(bbox)
    config = auto_config(autoKernelMaxSpatialOrder=1)
    md = fit(config, sci, demo_reference_psf(), bbox).metadata
    assert md["spatialKernelOrder"] == 1
    assert {t["spatialOrder"] for t in md["autoKernel"]["trials"]} == {1}
    config = auto_config(autoKernelMaxSpatialOrder=1)
    config.kernel.active.spatialKernelOrder = 2
    assert fit(config, sci, demo_reference_psf(), bbox).metadata["spatialKernelOrder"] == 2


def test_a_broad_reference_gets_a_kernel_as_wide_as_it_needs():
    # demo PSF (sigma 1.6-2.0 px) to a Gaussian of sigma 5: the kernel's sigma is 4.7 px, 6 sigma 31 px. The sizes
    # tried stopped at max(science stamp, 21), leaving a 2% residual with a remedy (autoKernelMaxSize) that did
    # nothing; they now reach one step past 6 sigma (within autoKernelMaxSize)
    import warnings

    from psfmatch.demo import make_demo_exposure

    exposure = make_demo_exposure(512)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelQualityWarning)
        result = ModelPsfMatchTask().run(exposure, GaussianPsf(41, 41, 5.0))
    ak = result.metadata["autoKernel"]
    assert ak["kernelSigmaMajorWorst"] == pytest.approx(4.74, abs=0.05)
    assert ak["sizes"][0] == 31 and max(ak["sizes"]) == 41  # (autoKernelMaxSize, 41, caps the step to 45)
    assert result.metadata["kernelSize"] >= 31 and result.metadata["qa"]["flags"] == []
    assert result.metadata["qa"]["between"]["residualMaxWorst"] < 2e-3


class _VaryingMoffat:
    """A Moffat (beta 2.5: a real PSF's wing) whose FWHM grows across the field, 4.0 -> 4.6 px."""

    def __init__(self, size=51):
        self.beta, self.size = 2.5, size

    def computeKernelImage(self, position=None):
        x = 512.0 if position is None else float(position[0])
        return MoffatPsf(self.size, self.size, 4.0 + 0.6 * x / 1024.0, self.beta).computeKernelImage((0, 0))


def test_the_wing_stage_adds_broad_widths_where_the_aperture_flux_is_missed():
    # the moments-built widths leave the Moffat's wing in the matched PSF: 1.2 % of the flux in some aperture
    # (above the default threshold of 1 %), while the residual is 3e-3 of the peak. Broad widths on a 41 px kernel
    # build it: 4e-4. (On DECam PSFEx models matched to round Gaussians: 3-4 % -> 0.3-0.5 %.)
    exposure = Exposure(np.zeros((1024, 1024), np.float32), psf=_VaryingMoffat())
    config = ModelPsfMatchConfig()
    config.qaMaxApertureFluxMismatch = 0.02
    loose = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(41, 41, 2.6))
    assert "wingTrials" not in loose.metadata["autoKernel"]  # (1.2 % is within 2 %)
    before = loose.metadata["qa"]["between"]["apertureFluxMismatchWorst"]
    assert 0.01 < before < 0.02
    # no trial passes the noise guard here: the kernel with the best residual (1.7e-3, a 27 px kernel of the richer
    # basis) has 130 x the noise of a Gaussian kernel and a negative fraction of 0.46; its negative lobes buy less
    # than a factor 2 in the residual, so a kernel with 5 x the noise and a negative fraction of 0.31 is chosen
    assert loose.metadata["autoKernel"]["noiseGuardApplied"] is False
    assert loose.metadata["autoKernel"]["chosen"]["noiseRatio"] < 10
    assert loose.metadata["qa"]["candidates"]["kernelNegativeFractionWorst"] < 0.35
    result = ModelPsfMatchTask().run(exposure, GaussianPsf(41, 41, 2.6))
    wing = result.metadata["autoKernel"]["wingTrials"]
    assert wing["accepted"] and wing["kernelSize"] == 41 and len(wing["widths"]) == 5
    assert result.metadata["kernelSize"] == 41
    after = result.metadata["qa"]["between"]["apertureFluxMismatchWorst"]
    assert after < 0.1 * before and result.metadata["qa"]["flags"] == []
    assert any(n.startswith("broad Alard-Lupton widths") for n in result.metadata["autoKernel"]["notes"])
    chosen = result.metadata["autoKernel"]["chosen"]
    assert chosen["label"] == "wing" and chosen["apertureFluxMismatch"] < 0.002
    # a wing kernel whose fit would exceed maxMemoryGiB is not kept (the match ran into MemoryLimitError)
    config = ModelPsfMatchConfig()
    config.maxMemoryGiB = 0.08  # the 19 px kernel's fit needs about 0.05 GiB, the wing kernel's 0.1 GiB
    small = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(41, 41, 2.6))
    assert small.metadata["kernelSize"] == loose.metadata["kernelSize"] == 19
    assert small.metadata["autoKernel"]["wingTrials"]["note"].endswith("not kept: the fit would exceed maxMemoryGiB")
    config.maxMemoryGiB = 8.0
    # a kernel size the user set is kept: no wing stage
    config.kernel.active.kernelSize = 27
    fixed = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(41, 41, 2.6))
    assert "wingTrials" not in fixed.metadata["autoKernel"] and fixed.metadata["kernelSize"] == 27


def test_the_wing_stage_needs_the_science_psf_size():
    # an undersampled science PSF (sigma 0.5 px): its moments fail everywhere, and the wing widths were built
    # from the weight's floor (0.033 and 0.055 px)
    from psfmatch.autokernel import _wing_stage
    from psfmatch.diagnostics import survey_psfs
    from psfmatch.cells import SpatialCellSet

    bbox = Box2I((0, 0), (256, 256))
    survey = survey_psfs(GaussianPsf(11, 11, 0.5), MoffatPsf(31, 31, 3.0, 2.5), SpatialCellSet(bbox, 128, 128))
    assert not survey.ok.any()
    out = _wing_stage(None, ModelPsfMatchConfig(), survey, None, None, None, bbox, None, 1.0, 1e-7, 11, 0, 255,
                      4.0, 0.1, 1e-6)
    assert out["accepted"] is None and out["widths"] == () and out["note"].startswith(
        "no wing trial: the science PSF's moments did not converge in any cell")


def test_the_aperture_warning_says_the_wing_trial_ran_only_when_it_did():
    # 31 px stamps that the padding may not grow: a 41 px wing kernel does not fit them, so no wing trial runs,
    # and the warning must not say the automatic mode tried broad widths
    exposure = Exposure(np.zeros((1024, 1024), np.float32), psf=_VaryingMoffat(31))
    config = ModelPsfMatchConfig()
    config.qaMaxApertureFluxMismatch = 1e-4
    config.doAutoPadPsf = False
    config.padPsfBy = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(41, 41, 2.6))
    wing = result.metadata["autoKernel"]["wingTrials"]
    assert not wing["ran"] and wing["note"].startswith("no wing trial: a 41 px kernel does not fit the PSF stamps")
    said = [str(w.message) for w in caught if "encircled flux" in str(w.message)]
    assert said and "the automatic mode tried them" not in said[0]


# --- negative lobes and memory ---------------------------------------------------------------------------


def test_negative_lobes_must_buy_a_factor_two_in_the_residual():
    # sigma 2.3 -> 2.6 px on 21 px science stamps (what "gaussian:sigma=2.3" gives on the command line): the exact
    # kernel is a Gaussian of sigma 1.2 px, but the richer basis scored best (1.9e-6 of the peak, against 2.8e-6)
    # by fitting the stamp's truncation with negative lobes: a negative fraction of 0.13 and 3 x the noise
    exposure = Exposure(np.zeros((512, 512), np.float32), psf=GaussianPsf(21, 21, 2.3))
    exposure.image[256, 256] = 1000.0
    result = ModelPsfMatchTask().run(exposure, GaussianPsf(31, 31, 2.6))
    md = result.metadata
    q = md["qa"]
    # (0.13 before; the KERNEL_NEGATIVE flag's threshold is 0.3)
    assert q["candidates"]["kernelNegativeFractionWorst"] < 0.01 < ModelPsfMatchConfig().qaMaxKernelNegativeFraction
    assert q["flags"] == []
    assert max(q["candidates"]["residualMaxWorst"], q["between"]["residualMaxWorst"]) < 5e-6
    assert q["candidates"]["apertureFluxMismatchWorst"] < 1e-5
    assert float(np.nansum(result.psfMatchedExposure.image)) == pytest.approx(1000.0, rel=1e-5)
    ak = md["autoKernel"]
    assert ak["chosen"]["noiseRatio"] < 1.05 and not ak["chosen"]["markedlyNegative"]
    passed = [t for t in ak["trials"] if t.get("note", "").startswith("passed over: markedly negative")]
    assert len(passed) == 1 and passed[0]["markedlyNegative"] and passed[0]["negativeFraction"] > 0.1
    assert passed[0]["score"] < ak["chosen"]["score"] < 2 * passed[0]["score"]
    assert "not a factor 2 below the others' best" in passed[0]["note"]
    assert "markedly negative" in ak["rule"] and all("markedlyNegative" in t for t in ak["trials"])


def test_selection_prefers_kernels_without_marked_negative_lobes_only_where_they_are_equally_good():
    from psfmatch.autokernel import KernelTrial, TrialResult, _mark_negative, _select

    def result(k, score, neg, nbasis_degrees=(4, 2, 2)):
        trial = KernelTrial("AL", k, 0, (1.0, 0.5, 2.0), nbasis_degrees, label="moments")
        return TrialResult(trial, score=score, noiseRatio=1.0, negativeFraction=neg, admissible=True)

    # both below the floor: the simplest (smallest) kernel won, though markedly negative
    lobed, smooth = result(9, 5e-7, 0.13), result(13, 8e-7, 0.0)
    trials = [lobed, smooth]
    _mark_negative(trials)
    assert lobed.markedlyNegative and not smooth.markedlyNegative
    assert _select(trials, 0.1, 1e-6) is smooth
    assert lobed.note.startswith("passed over: markedly negative")
    # negative lobes that buy more than a factor 2 are the match's own: kept
    lobed, smooth = result(21, 1e-4, 0.13), result(21, 3e-4, 0.0, (6, 4, 2))
    _mark_negative([lobed, smooth])
    assert _select([lobed, smooth], 0.1, 1e-6) is lobed and lobed.note == ""
    # a real PSF's match needs lobes in every trial: only those well beyond the least negative one count
    a, b = result(19, 9.4e-3, 0.34), result(27, 9.1e-3, 0.31)
    _mark_negative([a, b])
    assert not a.markedlyNegative and not b.markedlyNegative and _select([a, b], 0.1, 1e-6) is a


def test_trials_whose_fit_would_exceed_max_memory_are_skipped():
    # a constant Moffat -> Gaussian match chooses a 41 px delta-function kernel, whose fit needs about 0.33 GiB: with
    # maxMemoryGiB = 0.1 the choice raised MemoryLimitError in the fit, though smaller kernels fit
    exposure = Exposure(np.zeros((512, 512), np.float32), psf=MoffatPsf(61, 61, 4.0, 2.5))
    config = ModelPsfMatchConfig()
    config.maxMemoryGiB = 0.1
    result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(61, 61, 4.0))
    md = result.metadata
    ak = md["autoKernel"]
    skipped = [t for t in ak["trials"] if t.get("note") == "skipped: the fit of this kernel would exceed maxMemoryGiB"]
    assert {(t["family"], t["kernelSize"]) for t in skipped} >= {("DF", 41), ("AL", 41)}
    assert all(t["score"] is None and not t["admissible"] for t in skipped)
    assert ak["chosen"].get("note") is None and md["qa"]["flags"] == []
    assert md["qa"]["candidates"]["residualMaxWorst"] < 1e-3  # (the fit checked its own memory: it did not raise)
    # the default limit keeps the delta-function kernel
    default = ModelPsfMatchTask().fitKernel(exposure.getPsf(), GaussianPsf(61, 61, 4.0), exposure.getBBox())
    assert default.metadata["autoKernel"]["chosen"]["description"].startswith("DF k=41")
    assert not any("maxMemoryGiB" in t.get("note", "") for t in default.metadata["autoKernel"]["trials"])


def test_only_as_many_trials_run_at_once_as_fit_max_memory(monkeypatch):
    """Independent trials ran on every core at once, each needing up to its fit's estimate: on 8 threads a 63 px
    DECam PSFEx model's trials (on 7x7 cells of 32 px) peaked at 1.1 times the largest estimate, past a
    maxMemoryGiB just above it. As many run at once as fit the limit; the choice is the same."""
    import threading
    import time

    import psfmatch.autokernel as ak
    import psfmatch.task as task_module

    monkeypatch.setenv("PSFMATCH_NUM_THREADS", "4")
    lock, running, most = threading.Lock(), [0], [0]
    real = ak._evaluate

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)  # (the trials of a group overlap on the threads)
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    needs = []
    real_estimate = task_module.estimate_fit_memory

    def estimate(*args, **kwargs):
        out = real_estimate(*args, **kwargs)
        needs.append(out[0])
        return out

    monkeypatch.setattr(ak, "_evaluate", counted)
    monkeypatch.setattr(task_module, "estimate_fit_memory", estimate)
    bbox = Box2I((0, 0), (511, 511))
    psf, ref = demo_psf(bbox), GaussianPsf(31, 31, 2.6)
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    free = ModelPsfMatchTask(config=config).fitKernel(psf, ref, bbox)
    assert most[0] > 1  # the default limit holds every core's trial: unchanged
    config.maxMemoryGiB = 1.5 * max(needs) / 2 ** 30  # every trial fits, two at once do not
    most[0] = 0
    bounded = ModelPsfMatchTask(config=config).fitKernel(psf, ref, bbox)
    assert most[0] == 1
    assert bounded.metadata["autoKernel"]["chosen"] == {**free.metadata["autoKernel"]["chosen"],
                                                        "time": bounded.metadata["autoKernel"]["chosen"]["time"]}
    assert not any("maxMemoryGiB" in t.get("note", "") for t in bounded.metadata["autoKernel"]["trials"])
    config.maxMemoryGiB = 2.5 * max(needs) / 2 ** 30
    most[0] = 0
    ModelPsfMatchTask(config=config).fitKernel(psf, ref, bbox)
    assert most[0] == 2


def test_delta_function_trials_that_could_not_be_chosen_are_not_made():
    """A constant 3.5 -> 5 px Gaussian match: the 41 px Alard-Lupton trial reaches the residual floor, so the
    41 px delta-function trial (1681 unknowns, most of the choice's time) could not win and is skipped; the
    smaller sizes, where no Alard-Lupton trial reaches the floor, still get theirs."""
    bbox = Box2I((0, 0), (128, 128))
    md = fit(ModelPsfMatchConfig(), GaussianPsf(41, 41, 3.5), GaussianPsf(51, 51, 5.0), bbox).metadata
    trials = md["autoKernel"]["trials"]
    floor = ModelPsfMatchConfig().autoKernelResidualFloor
    al41 = [t for t in trials if t["family"] == "AL" and t["kernelSize"] == 41]
    df = {t["kernelSize"]: t for t in trials if t["family"] == "DF"}
    assert al41 and min(t["score"] for t in al41) <= floor
    assert df[41]["score"] is None and df[41]["note"].startswith(
        "skipped: the Alard-Lupton trial of 41 px already reaches autoKernelResidualFloor (")
    assert df[33]["score"] is not None and not df[33].get("note")  # AL 33 stays above the floor: DF 33 is tried
    chosen = md["autoKernel"]["chosen"]
    assert (chosen["family"], chosen["kernelSize"]) == ("AL", 41)


def test_a_delta_function_trial_is_skipped_only_where_it_cannot_change_the_choice():
    import copy

    import psfmatch.autokernel as ak

    c = ModelPsfMatchConfig()
    floor, tol, max_noise = c.autoKernelResidualFloor, c.autoKernelTolerance, c.autoKernelMaxNoiseGain

    def res(family, k, score, neg=0.0):
        t = (ak.KernelTrial("AL", k, 0, (1.0, 0.5, 2.0), (4, 2, 2), label="moments") if family == "AL"
             else ak.KernelTrial("DF", k, 0, label="df", lambdaScaling=1e-6))
        return ak.TrialResult(t, score=score, noiseRatio=1.0, negativeFraction=neg, apertureFluxMismatch=0.0)

    def choice(results):
        results = copy.deepcopy(results)
        ak._mark_admissible(results, max_noise)
        ak._mark_negative(results)
        return ak._select(results, tol, floor).trial.describe()

    # AL 21 within the floor but not by the tolerance's margin: the DF 21 trial's better score would lower
    # _select's limit below AL 17's 1.05e-6 (AL 21 chosen); without it AL 17 would be: it is made
    done = [res("AL", 17, 1.05e-6), res("DF", 17, 3e-6, 0.01), res("AL", 21, 0.99e-6)]
    assert ak._floor_reached(done, 21, 0, max_noise, floor, tol) is None
    assert choice(done + [res("DF", 21, 0.2e-6, 0.01)]) != choice(done)
    # with the margin, whatever DF 21 scores, the choice is the same: it is skipped
    done = [res("AL", 17, 1.05e-6), res("DF", 17, 3e-6, 0.01), res("AL", 21, 0.5e-6)]
    assert ak._floor_reached(done, 21, 0, max_noise, floor, tol) is done[2]
    for score, neg in ((1e-9, 0.0), (1e-9, 0.2), (5e-6, 0.0)):
        assert choice(done + [res("DF", 21, score, neg)]) == choice(done)
    # a negative trial within the floor that sorts first could be passed over or not depending on the DF trial
    done = [res("AL", 17, 0.8e-6, 0.3), res("AL", 21, 0.5e-6)]
    assert ak._floor_reached(done, 21, 0, max_noise, floor, tol) is None


def test_psfs_too_narrow_to_measure_anywhere_keep_the_configured_kernel():
    """An elongated science PSF of sigma 0.6 px (0.44 px along its minor axis) and a 1 px reference: their adaptive
    moments fail at every position, so the kernel's width is unknown; the automatic mode crashed with an untyped
    ValueError (math.ceil of NaN, found by the property test of test_robustness_core).  It now says so and fits
    the configured kernel."""
    bbox = Box2I((0, 0), (24, 24))
    psf = VariableGaussianPsf(7, 7, bbox, sigma=[0.6, 0.06, 0.0], e1=[0.263671875])
    config = ModelPsfMatchConfig()
    config.kernel.active.kernelSize = 3
    config.kernel.active.spatialKernelOrder = 0
    config.doAutoPadPsf = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ModelPsfMatchTask(config=config).run(Exposure(np.ones((24, 24), np.float32), psf=psf),
                                                      GaussianPsf(9, 9, 1.0))
    auto = result.metadata["autoKernel"]
    assert auto["note"].startswith("the kernel's width could not be measured at any position")
    assert auto["kernelSigma"] is None and json.dumps(auto)  # (no NaN in the record)
    assert result.psfMatchingKernel.getWidth() == 3
    assert result.psfMatchingKernel.computeImage((12, 12)).sum() == pytest.approx(1.0, abs=1e-7)
