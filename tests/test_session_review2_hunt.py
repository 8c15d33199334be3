"""Review (second pass) of this session's changes since 515bb8a: the geometric mask rule (maskDilationPlanes),
the batch's kept automatic reference, stale temporaries and QA-flagged inputs, read_exposure's EXTVER pairing and
INHERIT unit, read_image_psf(size=), the delta-function/PCA metadata, KernelCandidate's afw selectors, and the
configuration's from_dict / copy-then-transplant overrides.

Tests whose docstring says "Was a defect" pin the fixes of the defects this review found.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.cells import KernelCandidate
from psfmatch.config import apply_overrides
from psfmatch.convolve import convolve_masked_image
from psfmatch.demo import render_stars
from psfmatch.errors import InvalidConfigError, InvalidInputError, UnsupportedFormatError
from psfmatch.image import MaskedImage
from psfmatch.io import read_exposure, write_exposure
from psfmatch.kernel import makeAlardLuptonBasisList
from psfmatch.kernel.kernel import LinearCombinationKernel
from psfmatch.psf import GaussianPsf
from psfmatch.psf.image_io import read_image_psf

N = 96


def _quiet():
    w = warnings.catch_warnings()
    w.__enter__()
    warnings.simplefilter("ignore")
    return w


def _exposure(sigma=1.5, n=128, metadata=None, seed=1):
    rng = np.random.default_rng(seed)
    psf = GaussianPsf(25, 25, sigma)
    xs, ys = rng.uniform(20, n - 20, 8), rng.uniform(20, n - 20, 8)
    img = render_stars((n, n), psf, xs, ys, np.full(8, 1e4)) + 100.0
    return Exposure(img.astype(np.float32), None, np.full((n, n), 4.0, np.float32), psf=psf,
                    metadata=metadata or {})


def _config(cell=64):
    c = ModelPsfMatchConfig()
    c.kernel.active.sizeCellX = c.kernel.active.sizeCellY = cell
    return c


def _run(exp, ref, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelPsfMatchTask(config=config).run(exp, ref)


# ---------------------------------------------------------------------------------------------------------------
# the mask rule
# ---------------------------------------------------------------------------------------------------------------

def _kernel(sigma=2.0, k=21):
    return LinearCombinationKernel(makeAlardLuptonBasisList(k // 2, 1, (sigma,), (0,)), [1.0], kernel_sum=1.0)


def _one_pixel(plane, n=80):
    mi = MaskedImage(np.full((n, n), 100.0), variance=np.full((n, n), 4.0))
    b = mi.getMask().getPlaneBitMask(plane)
    mi.mask[n // 2, n // 2] |= b
    return mi, b


def test_detected_keeps_the_footprint_bad_and_a_custom_plane_take_the_whole_support():
    counts = {}
    for plane in ("DETECTED", "INTRP", "BAD"):
        mi, b = _one_pixel(plane)
        counts[plane] = int(((convolve_masked_image(mi, _kernel()).mask & b) != 0).sum())
    mi = MaskedImage(np.full((80, 80), 100.0), variance=np.full((80, 80), 4.0))
    mi.getMask().addMaskPlane("STREAK")
    b = mi.getMask().getPlaneBitMask("STREAK")
    mi.mask[40, 40] |= b
    counts["STREAK"] = int(((convolve_masked_image(mi, _kernel()).mask & b) != 0).sum())
    assert counts == {"DETECTED": 177, "INTRP": 177, "BAD": 441, "STREAK": 441}


def test_config_mask_dilation_planes_takes_a_string_as_one_name():
    c = ModelPsfMatchConfig()
    c.maskDilationPlanes = "DETECTED"
    assert list(c.maskDilationPlanes) == ["DETECTED"]
    c.maskDilationPlanes = np.array(["DETECTED", "BAD"])
    assert all(type(v) is str for v in c.maskDilationPlanes)


def test_footprint_planes_given_as_a_string_is_one_plane_name():
    """Was a defect (fixed): convolve_masked_image(footprint_planes='DETECTED') iterates the string's letters:
    DETECTED silently spreads over the whole kernel."""
    mi, b = _one_pixel("DETECTED")
    out = convolve_masked_image(mi, _kernel(), footprint_planes="DETECTED")
    assert int(((out.mask & b) != 0).sum()) == 177  # as footprint_planes=("DETECTED",)


def test_footprint_planes_not_a_sequence_of_names_is_a_typed_error():
    """Was a defect (fixed): footprint_planes=5 raises a bare TypeError, not InvalidInputError."""
    mi, _ = _one_pixel("DETECTED")
    with pytest.raises(InvalidInputError, match="footprint_planes"):
        convolve_masked_image(mi, _kernel(), footprint_planes=5)


# ---------------------------------------------------------------------------------------------------------------
# read_exposure: EXTVER pairing, INHERIT, negative stddev
# ---------------------------------------------------------------------------------------------------------------

def _ver(hdu, v):
    hdu.ver = v
    return hdu


def test_a_bare_plane_name_pairs_with_the_image_extver(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(100, 1, (40, 50)).astype(np.float32)
    hdus = [fits.PrimaryHDU()]
    for v, (off, dq, err) in enumerate([(0, 0, 1.0), (1000, 4, 3.0)], start=1):
        hdus += [_ver(fits.ImageHDU(img + off, name="SCI"), v),
                 _ver(fits.ImageHDU(np.full((40, 50), dq, np.int16), name="DQ"), v),
                 _ver(fits.ImageHDU(np.full((40, 50), err, np.float32), name="ERR"), v)]
    path = str(tmp_path / "two_chips.fits")
    fits.HDUList(hdus).writeto(path)
    for hdu in (("SCI", 2), 4):
        e = read_exposure(path, hdu=hdu, mask="dq", variance="ERR", variance_kind="stddev")
        assert float(e.image.mean()) == pytest.approx(float(img.mean()) + 1000, rel=1e-6)
        assert int(e.mask.max()) == 4 and float(e.variance.mean()) == 9.0
    e = read_exposure(path, mask="DQ", variance="ERR", variance_kind="stddev")  # SCI,1 by default
    assert int(e.mask.max()) == 0 and float(e.variance.mean()) == 1.0


def test_same_named_planes_without_extver_error_names_a_remedy_that_works(tmp_path):
    """Was a defect (fixed): two same-named planes without EXTVER: the error says none has EXTVER 1 (both do) and its
    remedy ('DQ', EXTVER) cannot pick one."""
    img = np.random.default_rng(0).normal(100, 1, (40, 50)).astype(np.float32)
    path = str(tmp_path / "dup.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"),
                  fits.ImageHDU(np.zeros((40, 50), np.int16), name="DQ"),
                  fits.ImageHDU(np.ones((40, 50), np.int16), name="DQ")]).writeto(path)
    with pytest.raises(UnsupportedFormatError) as info:
        read_exposure(path, mask="DQ")
    msg = str(info.value)
    assert "none has the image's EXTVER" not in msg  # (both have EXTVER 1)
    assert "mask=2" in msg or "index" in msg  # (an index is the only way to choose)


def test_an_inheriting_extension_takes_the_primary_unit_and_a_non_inheriting_one_does_not(tmp_path):
    img = np.random.default_rng(0).normal(100, 1, (40, 50)).astype(np.float32)
    for inherit, unit in ((True, "MJy/sr"), (False, None)):
        ph = fits.PrimaryHDU()
        ph.header["BUNIT"] = "MJy/sr"
        ih = fits.ImageHDU(img, name="SCI")
        ih.header["INHERIT"] = inherit
        path = str(tmp_path / f"inh{inherit}.fits")
        fits.HDUList([ph, ih]).writeto(path)
        e = read_exposure(path)
        assert e.metadata.get("unit") == unit
        assert ("BUNIT" in e.metadata["fitsHeader"]) is (not inherit)


# ---------------------------------------------------------------------------------------------------------------
# read_image_psf(size=)
# ---------------------------------------------------------------------------------------------------------------

def test_read_image_psf_size_crops_renormalized_and_pads_about_the_centre(tmp_path):
    y, x = np.mgrid[-20:21, -20:21]
    g = np.exp(-(x ** 2 + y ** 2) / (2 * 2.0 ** 2))
    g /= g.sum()
    h = fits.PrimaryHDU(g)
    h.header["PIXSCALE"] = 0.2
    path = str(tmp_path / "psf.fits")
    h.writeto(path)
    crop = read_image_psf(path, size=9)
    inner = g[16:25, 16:25]
    np.testing.assert_allclose(crop.array, inner / inner.sum(), rtol=1e-12)
    assert crop.pixel_scale == 0.2
    pad = read_image_psf(path, size=(61, 51))
    assert pad.array.shape == (51, 61) and pad.array.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(pad.array[5:46, 10:51], g, rtol=1e-12)
    for bad in (8, 0, 9.5, "9", True, (9, 10)):
        with pytest.raises(InvalidInputError, match="read_image_psf size must be an odd positive integer"):
            read_image_psf(path, size=bad)


# ---------------------------------------------------------------------------------------------------------------
# task: earlier match record, DF / PCA metadata, candidates' selectors, remedies
# ---------------------------------------------------------------------------------------------------------------

def test_an_earlier_batch_record_is_dropped_from_the_output_not_from_the_callers_exposure():
    h = fits.Header()
    h["BATCHOK"], h["BATCHREF"], h["OBJECT"] = True, "abc", "M31"
    exp = _exposure(metadata={"fitsHeader": h, "psfmatchBatch": {"config": {}}})
    res = _run(exp, GaussianPsf(25, 25, 2.5), _config())
    assert "psfmatchBatch" in exp.metadata and "BATCHOK" in exp.metadata["fitsHeader"]
    out = res.psfMatchedExposure.metadata
    assert "psfmatchBatch" not in out and "BATCHOK" not in out["fitsHeader"] and "BATCHREF" not in out["fitsHeader"]
    assert out["fitsHeader"]["OBJECT"] == "M31"


def test_df_regularization_and_pca_metadata_and_candidate_selectors():
    exp = _exposure()
    c = _config()
    c.autoKernel = False  # (the automatic mode tunes the strength: here the configured one is used)
    c.kernel.name = "DF"
    c.kernel.active.usePcaForSpatialKernel = True
    res = _run(exp, GaussianPsf(25, 25, 2.5), c)
    md = res.metadata
    reg = md["regularization"]
    assert reg["lambdaType"] == "relative" and reg["lambdaScaling"] == c.kernel["DF"].lambdaScaling
    assert 0 < reg["lambdaMin"] <= reg["lambdaMax"]
    assert md["deltaFunctionUnknowns"] == md["kernelSize"] ** 2 - 1  # (the kernel-sum constraint removes one)
    assert 0 < md["deltaFunctionRank"] <= md["deltaFunctionUnknowns"]
    assert md["PcaNumComponents"] < c.kernel.active.numPrincipalComponents
    assert any("numPrincipalComponents = 5" in n for n in md["notes"])
    cand = next(iter(res.kernelCellSet.getCellList()[0]))
    assert cand.solution == "PCA"
    assert cand.getKsum(KernelCandidate.PCA) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(InvalidInputError, match=r"keeps only its PCA solution"):
        cand.getKernelImage(KernelCandidate.ORIG)
    with pytest.raises(InvalidInputError, match=r"ORIG, PCA or RECENT"):
        cand.getKernelSum(3)


def test_an_alard_lupton_pca_fit_records_no_delta_function_rank():
    """Was a defect (fixed): an Alard-Lupton fit with usePcaForSpatialKernel records metadata['deltaFunctionRank']
    though no delta-function solve ran."""
    c = _config()
    c.kernel.active.usePcaForSpatialKernel = True
    md = _run(_exposure(), GaussianPsf(25, 25, 2.5), c).metadata
    assert md["kernelBasisSet"] != "delta-function"
    assert "deltaFunctionRank" not in md and "deltaFunctionConditionNum" not in md


def test_negative_kernel_remedy_after_an_automatic_switch_to_df_is_actionable():
    """Was a defect (fixed): when autoKernel switched the user's AL kernel to DF, the KERNEL_NEGATIVE remedy proposes
    kernel.name='AL', which is already set."""
    from psfmatch.diagnostics import KernelQualityWarning

    c = _config()
    assert c.kernel.name == "AL" and c.autoKernel
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = ModelPsfMatchTask(config=c).run(_exposure(), GaussianPsf(25, 25, 1.0))
    assert res.metadata["kernelBasisSet"] == "delta-function"  # (the automatic mode's choice)
    msgs = [str(x.message) for x in w if issubclass(x.category, KernelQualityWarning) and "negative" in str(
        x.message)]
    assert msgs
    assert all("kernel.name='AL'" not in m or "autoKernel" in m for m in msgs)


# ---------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------

def test_frozen_config_refuses_load_and_overrides_and_a_failing_file_changes_nothing(tmp_path):
    c = ModelPsfMatchConfig()
    c.freeze()
    py = tmp_path / "o.py"
    py.write_text("config.maxMemoryGiB = 2\n\nconfig.kernel.active.kernelSize = 'x'\n")
    with pytest.raises(InvalidConfigError, match="frozen; copy it"):
        c.load(str(py))
    with pytest.raises(InvalidConfigError, match="frozen; copy it"):
        apply_overrides(c, ["maxMemoryGiB=2"])
    c = ModelPsfMatchConfig()
    active = c.kernel.active
    with pytest.raises(InvalidConfigError, match=r"o\.py', line 3: .*kernelSize: expected an int"):
        c.load(str(py))
    assert c.maxMemoryGiB == 8.0 and c == ModelPsfMatchConfig()
    apply_overrides(c, ["kernel.active.kernelSize=31"])
    assert active.kernelSize == 31 and c.kernel.active is active
    with pytest.raises(InvalidConfigError, match=r"kernelSize"):
        apply_overrides(c, ["maxMemoryGiB=3", "kernel.active.kernelSize=4"])
    assert c.maxMemoryGiB == 8.0 and active.kernelSize == 31


def test_yaml_repeating_a_nested_key_is_refused_with_lines(tmp_path):
    pytest.importorskip("yaml")
    y = tmp_path / "d.yaml"
    y.write_text("kernel:\n  AL:\n    kernelSize: 25\n  AL:\n    spatialKernelOrder: 1\n")
    with pytest.raises(InvalidConfigError, match=r"key 'AL' appears twice in one mapping \(lines 2 and 4\)"):
        ModelPsfMatchConfig().load(str(y))


def test_from_dict_of_an_older_record_missing_fields_keeps_defaults_and_refuses_a_removed_one():
    d = ModelPsfMatchConfig().to_dict()
    del d["maskDilationPlanes"]
    del d["kernel"]["AL"]["kernelSize"]
    d["kernel"]["AL"]["spatialKernelOrder"] = 1
    r = ModelPsfMatchConfig.from_dict(d)
    assert r.kernel["AL"].kernelSize == ModelPsfMatchConfig().kernel["AL"].kernelSize
    assert r.kernel["AL"].spatialKernelOrder == 1 and r.kernel["AL"].isExplicit("spatialKernelOrder")
    with pytest.raises(InvalidConfigError, match=r"has no field 'someOldField'"):
        ModelPsfMatchConfig.from_dict({"someOldField": 3})


# ---------------------------------------------------------------------------------------------------------------
# batch: kept reference, stale temporaries, flagged inputs, the report's configuration
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(inprocess_client):
    return inprocess_client


def _night(folder, sigmas=(1.5, 1.8, 2.2), ext=".fits"):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(20, N - 20, 6), rng.uniform(20, N - 20, 6)
    paths = []
    for i, s in enumerate(sigmas):
        psf = GaussianPsf(25, 25, s)
        img = render_stars((N, N), psf, xs, ys, np.full(6, 1e4)) + rng.normal(size=(N, N))
        p = os.path.join(folder, f"v{i}{ext}")
        write_exposure(Exposure(img.astype(np.float32), None, np.ones((N, N), np.float32), psf=psf), p,
                       overwrite=True)
        paths.append(p)
    return paths


def _match_many(*args, **kw):
    from psfmatch.batch import match_many

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return match_many(*args, **kw)


@pytest.mark.parametrize("kind", ["gaussian", "doublegaussian"])
def test_an_unreadable_broadest_input_keeps_the_earlier_reference_and_redoes_nothing(client, tmp_path, kind):
    paths = _night(str(tmp_path / "raw"))
    out = str(tmp_path / "out")
    opts = {"kind": kind}
    r1 = _match_many(paths, "auto", out, _config(48), client=client, reference_options=opts)
    sigma = r1.reference["choice"]["sigma"]
    assert sigma == pytest.approx(math.sqrt(1.21 * 2.2 ** 2 + 0.49), rel=1e-3)
    mtimes = [os.stat(r.output).st_mtime_ns for r in r1]
    with open(paths[2], "wb") as fh:
        fh.write(b"not a fits file" * 100)
    r2 = _match_many(paths, "auto", out, _config(48), client=client, reference_options=opts)
    assert [r.status for r in r2] == ["skipped", "skipped", "failed"]
    assert r2.reference["repr"] == r1.reference["repr"]
    assert [os.stat(r.output).st_mtime_ns for r in r1][:2] == mtimes[:2]
    s = r2.summary()
    assert "kept from 3 complete output(s)" in s and "not surveyed for the reference: 1 input(s)" in s


@pytest.mark.parametrize("ext", [".fits.gz", ".FITS.BZ2"])
def test_stale_temporaries_of_compressed_outputs_are_removed_and_fresh_ones_kept(client, tmp_path, ext):
    paths = _night(str(tmp_path / "raw"), sigmas=(1.5, 1.8), ext=ext)
    out = str(tmp_path / "out")
    os.makedirs(out)
    stale, fresh = [], []
    for p in paths:
        base = os.path.basename(p)
        suf = ".tmp" + os.path.splitext(base)[1].lower()
        fd, t = tempfile.mkstemp(prefix="." + base + ".", suffix=suf, dir=out)
        os.close(fd)
        os.utime(t, (1, 1))
        stale.append(t)
    other = os.path.join(out, ".unrelated.fits.abc.tmp")  # (not an output's: left alone)
    open(other, "w").close()
    os.utime(other, (1, 1))
    r = _match_many(paths, GaussianPsf(25, 25, 2.6), out, _config(48), client=client)
    assert [x.status for x in r] == ["matched", "matched"]
    assert not any(os.path.exists(t) for t in stale) and os.path.exists(other)


def test_flagged_inputs_are_named_on_a_rerun_and_by_the_coadd(client, tmp_path):
    from psfmatch.batch import coadd
    from psfmatch.errors import PsfMatchWarning

    paths = _night(str(tmp_path / "raw"), sigmas=(1.5, 3.0))
    out = str(tmp_path / "out")
    _match_many(paths, GaussianPsf(25, 25, 2.6), out, _config(48), client=client)
    r = _match_many(paths, GaussianPsf(25, 25, 2.6), out, _config(48), client=client)
    assert [x.status for x in r] == ["skipped", "skipped"]
    assert [x.path for x in r.flagged] == [os.path.abspath(paths[1])] or [x.path for x in r.flagged] == [paths[1]]
    assert "FLAGGED" in r.summary() and "ILL_POSED" in r.summary()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = coadd(r.output_paths(), str(tmp_path / "co.fits"))
    assert list(c.flagged_inputs) == [r[1].output] and "ILL_POSED" in c.flagged_inputs[r[1].output]
    assert any(issubclass(x.category, PsfMatchWarning) and "carry QA flags" in str(x.message) for x in w)


def test_from_dict_rebuilds_the_configuration_recorded_in_a_batch_report(client, tmp_path):
    """Was a defect (fixed): the batch report (strict JSON) writes maxMemoryGiB=inf as null, which Config.from_dict
    refuses: a recorded configuration cannot be rebuilt."""
    paths = _night(str(tmp_path / "raw"), sigmas=(1.5,))
    c = _config(48)
    c.maxMemoryGiB = math.inf  # (a valid value: no memory limit)
    report = str(tmp_path / "report.json")
    _match_many(paths, GaussianPsf(25, 25, 2.6), str(tmp_path / "out"), c, client=client, report_path=report)
    with open(report) as fh:
        settings = json.load(fh)["settings"]
    rebuilt = ModelPsfMatchConfig.from_dict(settings["config"], explicitFields=settings["explicitFields"])
    assert rebuilt == c
