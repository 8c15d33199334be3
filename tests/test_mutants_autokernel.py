"""Contracts of the automatic kernel choice (``psfmatch.autokernel``) that mutation testing found unpinned.

Each test here failed against a deliberate mutation of ``autokernel.py`` (named in its docstring) that the rest
of the suite let pass.  They use small exposures and 31 px stamps: the whole file runs in a few seconds.
"""

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import psfmatch.autokernel as ak
from psfmatch import Box2I, ModelPsfMatchConfig, ModelPsfMatchTask, SpatialCellSet
from psfmatch.diagnostics import survey_psfs
from psfmatch.psf import GaussianPsf, MoffatPsf, VariableGaussianPsf

BBOX = Box2I((0, 0), (256, 256))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def config(**kw):
    c = ModelPsfMatchConfig()
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def auto_md(c, sci, ref, bbox=BBOX):
    return ModelPsfMatchTask(config=c).fitKernel(sci, ref, bbox).metadata["autoKernel"]


def choose(c, sci, ref, bbox=BBOX, cell=128, **kw):
    cells = SpatialCellSet(bbox, cell, cell)
    return ak.choose_kernel(c, survey_psfs(sci, ref, cells), sci, ref, cells, bbox, **kw)


def result(trial, score, noise=1.0, neg=0.0, aperture=0.0):
    return ak.TrialResult(trial, score=score, noiseRatio=noise, negativeFraction=neg, apertureFluxMismatch=aperture)


def al(k, degrees=(4, 2, 2), order=0):
    return ak.KernelTrial("AL", k, order, (1.0, 0.5, 2.0), degrees, label="moments")


def df(k, lam, order=0):
    return ak.KernelTrial("DF", k, order, label="df", lambdaScaling=lam)


def select(results, tol=0.1, floor=1e-6, max_noise=4.0):
    ak._mark_admissible(results, max_noise)
    ak._mark_negative(results)
    return ak._select(results, tol, floor)


# --- widths and sizes -------------------------------------------------------------------------------------------


def test_kernel_width_comes_from_the_positions_whose_moments_converged():
    """``_kernel_widths`` uses the survey's ``ok`` positions; only when there are none, every measured one.  A
    position whose moments failed carries the numbers of a weight collapsed onto its floor, which must not set
    the kernel's width or size (mutant: every finite position used, ok or not)."""
    good = [[4.0, 0.0], [0.0, 4.0]]  # sigma_k 2 px
    junk = [[36.0, 0.0], [0.0, 36.0]]  # a failed measurement's 6 px
    survey = SimpleNamespace(ok=np.array([True, False]), kernel_covariances=lambda: np.array([good, junk]))
    s, s_big, g_ref = ak._kernel_widths(survey)
    assert s == pytest.approx(2.0) and s_big == pytest.approx(2.0)
    assert g_ref == pytest.approx(1.0 / (4 * np.pi * 4.0))
    # nothing converged: every measured position, the NaN one left out
    survey = SimpleNamespace(ok=np.array([False, False, False]),
                             kernel_covariances=lambda: np.array([good, junk, np.full((2, 2), np.nan)]))
    s, s_big, _ = ak._kernel_widths(survey)
    assert s == pytest.approx(4.0) and s_big == pytest.approx(6.0)


def test_size_ladder_never_starts_below_its_minimum():
    """The ladder starts at ``max(k_min, 6 sigma)``: a near-delta kernel still gets MIN_KERNEL_SIZE (5 px), and a
    caller's ``k_min`` is honoured (mutant: ``k_min`` ignored, a 3 px start)."""
    assert ak.kernel_size_ladder(0.2, 21)[0] == ak.MIN_KERNEL_SIZE == 5
    assert ak.kernel_size_ladder(1.0, 41, k_min=11)[0] == 11
    assert all(k >= 11 and k % 2 for k in ak.kernel_size_ladder(1.0, 41, k_min=11))


def test_delta_function_trials_reach_the_largest_size_allowed():
    """autoKernelMaxDFSize = 25 on the ladder (15, 21, 31): the delta-function trials go up to 25 px (mutant: the
    4 px-gap rule widened, the largest delta-function size left out)."""
    md = auto_md(config(autoKernelMaxDFSize=25), GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))
    assert md["sizes"] == [15, 21, 31]
    df_sizes = {t["kernelSize"] for t in md["trials"] if t["family"] == "DF"}
    assert max(df_sizes) == 25 and df_sizes == {15, 21, 25}


def test_no_trial_kernel_is_larger_than_the_exposure_allows():
    """On a 16 x 16 exposure the configured 21 px kernel would leave every output pixel NO_DATA (the task refuses
    ``min(w, h) <= 2 (k // 2)``): no trial uses it (mutant: the configuration's trial kept)."""
    bbox = Box2I((0, 0), (16, 16))
    c = config()
    c.kernel.active.sizeCellX = c.kernel.active.sizeCellY = 16
    md = auto_md(c, GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5), bbox)
    side = min(bbox.getWidth(), bbox.getHeight())
    assert md["trials"] and all(2 * (t["kernelSize"] // 2) < side for t in md["trials"])


# --- the trials made --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gain, expected", [(math.inf, min(ak.DF_LAMBDAS)), (1.0, max(ak.DF_LAMBDAS))])
def test_large_delta_function_kernels_take_the_weakest_strength_that_passed_the_noise_guard(monkeypatch, gain,
                                                                                             expected):
    """Above DF_SWEEP_MAX_SIZE only one strength is tried: the weakest that passed the noise guard at the largest
    size swept, or the strongest when none did (mutants: ``max(ok)``; ``min(DF_LAMBDAS)`` when none passed).  The
    sweep limit is lowered to 15 px so that 19 px is 'large' on 31 px stamps."""
    monkeypatch.setattr(ak, "DF_SWEEP_MAX_SIZE", 15)
    md = auto_md(config(autoKernelMaxDFSize=21, autoKernelMaxNoiseGain=gain), MoffatPsf(31, 31, 4.0, 2.5),
                 GaussianPsf(31, 31, 2.6))
    dft = [t for t in md["trials"] if t["family"] == "DF"]
    swept = [t for t in dft if t["kernelSize"] <= 15]
    large = [t for t in dft if t["kernelSize"] > 15]
    assert {t["lambdaScaling"] for t in swept} == set(ak.DF_LAMBDAS) and large
    k_last = max(t["kernelSize"] for t in swept)
    passed = [t["lambdaScaling"] for t in swept if t["kernelSize"] == k_last and t["noiseRatio"] <= gain]
    assert (min(passed) if passed else max(ak.DF_LAMBDAS)) == expected
    assert {t["lambdaScaling"] for t in large} == {expected}


def test_richer_basis_on_a_varying_field_only_where_the_standard_one_leaves_a_residual():
    """On a spatially varying field the richer basis (degrees 6, 4, 2) is tried only when the standard basis'
    best held-out residual exceeds RICH_BASIS_FACTOR x autoKernelResidualFloor (mutant: the comparison flipped)."""
    sci, ref = VariableGaussianPsf(31, 31, BBOX, (1.5, 0.1, 0.0)), GaussianPsf(31, 31, 2.5)
    for floor in (1e-6, 1e-4):
        md = auto_md(config(autoKernelResidualFloor=floor), sci, ref)
        assert not md["constantMatch"]
        std = [t["score"] for t in md["trials"] if t["label"] == "moments" and t["degrees"] == [4, 2, 2]]
        rich = [t for t in md["trials"] if t["label"] == "moments" and t["degrees"] == [6, 4, 2]]
        needed = min(std) > ak.RICH_BASIS_FACTOR * floor
        assert needed == (floor == 1e-6)  # (the standard basis leaves about 4e-3 here)
        assert bool(rich) == needed


def test_explicit_alard_lupton_name_makes_no_delta_function_trials():
    """``kernel.name = "AL"`` assigned explicitly (its default value) keeps the Alard-Lupton family (mutant: only
    explicit widths counted)."""
    c = config()
    c.kernel.name = "AL"
    md = auto_md(c, GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))
    assert md["free"]["families"] == ["AL"]
    assert {t["family"] for t in md["trials"]} == {"AL"}


def test_lambda_value_set_on_the_delta_function_config_stops_the_sweep():
    """Any of useRegularization, lambdaType, lambdaScaling or lambdaValue set on kernel['DF'] makes every
    delta-function trial use the configured regularization (mutant: lambdaValue not counted, the sweep ran)."""
    c = config(autoKernelMaxDFSize=21)
    c.kernel["DF"].lambdaValue = 0.5
    md = auto_md(c, GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))
    assert md["free"]["lambda"] is False
    dft = [t for t in md["trials"] if t["family"] == "DF"]
    configured = ModelPsfMatchConfig().kernel["DF"].lambdaScaling
    assert dft and all(t["lambdaType"] == "relative" and t["lambdaScaling"] == configured for t in dft)


def test_held_out_positions_include_the_quad_centres(monkeypatch):
    """The trials are scored half-way between neighbouring sub-grid cells *and at the centres of its quads* (the
    worst place for a spatial model between four candidates; mutant: the diagonal neighbours dropped)."""
    captured = {}
    original = ak._TrialData.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        captured.setdefault("data", self)

    monkeypatch.setattr(ak._TrialData, "__init__", spy)
    c = config()
    c.kernel.active.sizeCellX = c.kernel.active.sizeCellY = 64
    c.kernel.active.candidatePlacement = "centers"
    sci = VariableGaussianPsf(21, 21, BBOX, [1.6, 0.2, 0.1])
    cells = SpatialCellSet(BBOX, 64, 64, "centers")
    ref = GaussianPsf(31, 31, 2.6)
    ak.choose_kernel(c, survey_psfs(sci, ref, cells), sci, ref, cells, BBOX)
    data = captured["data"]
    xs, ys = np.unique(data.xy_fit[:, 0]), np.unique(data.xy_fit[:, 1])
    assert len(xs) == len(ys) == 4
    quads = {((xs[i] + xs[i + 1]) / 2, (ys[j] + ys[j + 1]) / 2) for i in range(3) for j in range(3)}
    held_out = {tuple(p) for p in data.xy_ho}
    assert quads <= held_out


def test_a_trial_is_scored_by_its_worst_held_out_residual(monkeypatch):
    """score = max over the held-out positions of max|S*K - R| / max R, and the noise gain and negative fraction
    are the worst over every position's kernel (mutants: the mean residual, which hides the one position a
    spatial model misses; the least negative kernel)."""
    monkeypatch.setenv("PSFMATCH_NUM_THREADS", "1")
    calls, checked = [], []
    real_residuals, real_evaluate = ak._residuals, ak._evaluate

    def residuals(*args, **kwargs):
        out = real_residuals(*args, **kwargs)
        calls.append((np.array(out[0]), np.array(args[2])))
        return out

    def evaluate(*args, **kwargs):
        del calls[:]
        res = real_evaluate(*args, **kwargs)
        if np.isfinite(res.score):
            assert len(calls) == 2  # the fitted candidates, then the held-out positions
            checked.append((res, calls[1][0], np.concatenate([calls[0][1], calls[1][1]])))
        return res

    monkeypatch.setattr(ak, "_residuals", residuals)
    monkeypatch.setattr(ak, "_evaluate", evaluate)
    c = config()
    c.kernel.name = "AL"
    auto_md(c, VariableGaussianPsf(31, 31, BBOX, (1.5, 0.1, 0.0)), GaussianPsf(31, 31, 2.5))
    assert checked
    for res, rmax, kernels in checked:
        assert len(rmax) > 1 and rmax.max() > 1.05 * rmax.mean()  # (positions that differ: max != mean)
        assert res.score == rmax.max()
        negative = np.clip(-kernels, 0, None).sum(axis=(1, 2)) / np.abs(kernels).sum(axis=(1, 2))
        assert negative.max() > 1.05 * negative.min()
        assert res.negativeFraction == pytest.approx(negative.max(), rel=1e-12)
        assert res.noiseGain == pytest.approx(np.sum(kernels ** 2, axis=(1, 2)).max(), rel=1e-12)


# --- selection --------------------------------------------------------------------------------------------------


def test_an_inadmissible_trial_is_never_chosen_while_an_admissible_one_exists():
    """A trial above autoKernelMaxNoiseGain is out, however simple and good (mutant: admissibility ignored)."""
    noisy, clean = result(al(9), 1e-5, noise=10.0), result(al(13), 1e-5, noise=1.0)
    assert select([noisy, clean]) is clean and not noisy.admissible


def test_among_equals_the_strongest_regularization_and_the_fewest_basis_kernels_win():
    """The sort order's last keys: at one size and family, fewer basis kernels, then the strongest
    regularization, win when the scores are within the tolerance (mutants: ``+lambdaScaling``; ``nBasis``
    dropped from the key, so the order tried decided)."""
    weak, strong = result(df(13, 1e-6), 1.00e-5), result(df(13, 1e-2), 1.05e-5)
    assert select([weak, strong]) is strong
    rich, std = result(al(13, (6, 4, 2)), 1.00e-5), result(al(13), 1.05e-5)
    assert select([rich, std]) is std


def test_a_larger_alard_lupton_kernel_does_not_settle_smaller_delta_function_trials():
    """``_floor_reached`` looks only at Alard-Lupton trials no larger than the delta-function size: a 13 px
    delta-function trial sorts before a 21 px Alard-Lupton one and can win (mutant: any size settled it)."""
    c = ModelPsfMatchConfig()
    floor, tol, noise = c.autoKernelResidualFloor, c.autoKernelTolerance, c.autoKernelMaxNoiseGain
    done = [result(al(13), 5e-6), result(al(21), 1e-8)]
    assert ak._floor_reached(done, 13, 0, noise, floor, tol) is None
    assert ak._floor_reached(done, 21, 0, noise, floor, tol) is done[1]
    # the trial it would have skipped changes the choice
    import copy
    with_df = select(copy.deepcopy(done) + [result(df(13, 1e-6), 1e-9)])
    assert with_df.trial.family == "DF" and select(copy.deepcopy(done)).trial.kernelSize == 21


def test_every_trial_failing_keeps_the_configuration_as_it_is():
    """When no trial could be evaluated (here: every fit would exceed maxMemoryGiB) the configured kernel is
    used, widths and spatial order included (mutants: the moments' widths; the highest order tried, 3)."""
    bbox = Box2I((0, 0), (512, 512))
    c = config(autoKernelMaxSpatialOrder=3)
    choice = choose(c, VariableGaussianPsf(31, 31, bbox, (1.5, 0.1, 0.0)), GaussianPsf(31, 31, 2.5), bbox,
                    fit_memory=lambda cfg, psf_size: 1e30)
    assert choice.result.note == "every trial failed; the configured kernel is used"
    assert all(r.score == math.inf for r in choice.results)
    default = ModelPsfMatchConfig().kernel.active
    kc = choice.config.kernel.active
    assert choice.trial.label == "config"
    assert list(kc.alardSigGauss) == list(default.alardSigGauss)
    assert kc.kernelSize == default.kernelSize and kc.spatialKernelOrder == default.spatialKernelOrder == 2


# --- what the choice hands to the fit ---------------------------------------------------------------------------


@pytest.mark.parametrize("pca_set", [False, True])
def test_principal_components_on_a_constant_delta_function_match(pca_set):
    """A constant match has one distinct candidate: the delta-function fit drops the PCA (LSST's DF default)
    unless the user set usePcaForSpatialKernel (mutants: the user's True overridden; the PCA kept)."""
    c = config(autoKernelMaxDFSize=21, autoKernelMaxSize=21)
    c.kernel.name = "DF"
    if pca_set:
        c.kernel["DF"].usePcaForSpatialKernel = True  # explicit, equal to the DF default
    choice = choose(c, GaussianPsf(31, 31, 1.5), GaussianPsf(31, 31, 2.5))
    assert choice.trial.family == "DF" and choice.metadata["constantMatch"]
    assert choice.config.kernel["DF"].usePcaForSpatialKernel is pca_set


def test_a_value_set_on_the_delta_function_config_wins_over_the_alard_lupton_one_after_a_switch():
    """A switch to the delta-function family carries the user's Alard-Lupton shared fields over, except those set
    on kernel['DF'] itself (mutant: the Alard-Lupton value overwrote the delta-function one)."""
    c = config(autoKernelMaxSize=21)
    c.kernel["AL"].spatialKernelOrder = 0
    c.kernel["AL"].solveRcond = 1e-9
    c.kernel["AL"].spatialModelType = "polynomial"
    c.kernel["DF"].solveRcond = 1e-7
    choice = choose(c, GaussianPsf(25, 25, 1.8), MoffatPsf(41, 41, 6.0, 2.5))
    assert choice.trial.family == "DF" and choice.config.kernel.name == "DF"
    dfc = choice.config.kernel["DF"]
    assert dfc.solveRcond == 1e-7  # its own
    assert dfc.spatialModelType == "polynomial"  # carried over from the Alard-Lupton config


# --- the wing stage ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score, aperture, accepted", [
    (1e-3, 0.016, False),  # 0.8 x the mismatch: not the WING_GAIN (0.75) it must buy
    (1e-3, 0.014, True),  # 0.7 x
    (5e-3, 0.002, True),  # a residual 5 x the choice's, but within qaMaxResidual (1e-2)
    (2e-2, 0.002, False),  # beyond both the tolerance and qaMaxResidual
])
def test_wing_trial_acceptance_rule(monkeypatch, score, aperture, accepted):
    """The wing trial replaces the choice when it cuts the aperture-flux mismatch to WING_GAIN of the choice's or
    less, passes the noise guard and keeps the residual within (1 + tol) x the choice's or qaMaxResidual
    (mutants: WING_GAIN 1.0; qaMaxResidual dropped from the limit).  The trial's evaluation is stubbed: the rule
    is what is tested."""
    monkeypatch.setattr(ak, "_TrialData", lambda *args, **kwargs: None)
    monkeypatch.setattr(ak, "_evaluate", lambda trial, *args, **kwargs: ak.TrialResult(
        trial, score=score, apertureFluxMismatch=aperture, noiseRatio=1.0))
    c = ModelPsfMatchConfig()
    sci, ref = MoffatPsf(31, 31, 4.0, 2.5), GaussianPsf(31, 31, 2.6)
    cells = SpatialCellSet(BBOX, 128, 128)
    survey = survey_psfs(sci, ref, cells)
    pick = ak.TrialResult(al(19), score=1e-3, apertureFluxMismatch=0.02, noiseRatio=1.0, admissible=True)
    out = ak._wing_stage(pick, c, survey, sci, ref, cells, BBOX, c.kernel.active, 1.0, 1e-7, 31, 0, 253,
                         c.autoKernelMaxNoiseGain, c.autoKernelTolerance, c.autoKernelResidualFloor)
    assert out["ran"] and (out["accepted"] is not None) is accepted
