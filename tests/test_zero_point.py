"""Matching onto a common photometric zero point (``zeroPoint``, ``--zero-point``; psfmatch.calib).

The contract: an exposure whose header says a source of ``c`` counts has magnitude
``Z - 2.5 log10(c)`` is matched with ``kernelSum = 10**(0.4 (Z_t - Z))``, so the
same source has the same magnitude on the output, now read with ``Z_t``; every
output of a batch then carries identical calibration cards and can be coadded.
"""

import copy
import math
import re

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.calib import (AB_JY_ZERO_POINT, AB_NJY_ZERO_POINT, ZERO_POINT_TOLERANCE, kernel_sum_for_zero_point,
                            rescale_calibration, set_zero_point, zero_point)
from psfmatch.cli import main
from psfmatch.errors import InvalidInputError
from psfmatch.psf import GaussianPsf

REFERENCE = GaussianPsf(31, 31, 2.6)


# -- reading a zero point ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("card", ["MAGZERO", "MAGZP", "PHOTZP"])
def test_a_zero_point_card_is_the_magnitude_of_one_count(card):
    assert zero_point({"fitsHeader": fits.Header([(card, 26.25)])}) == (26.25, f"{card} = 26.25")


def test_zero_points_of_a_count_rate_are_read_only_for_pixel_values_per_second():
    """CASU's MAGZPT and HST's PHOTFNU are zero points of one count per second: for an image in counts they are off
    by 2.5 log10(EXPTIME) (2.5 mag for 10 s), so they are read only when BUNIT is a rate."""
    rate = 10 ** (-0.4 * 25.0) * 3631.0
    assert zero_point({"fitsHeader": {"MAGZPT": 25.0}, "unit": "ELECTRONS/S"}) == (25.0, "MAGZPT = 25")
    assert zero_point({"fitsHeader": {"PHOTFNU": rate}, "unit": "e-/s"})[0] == pytest.approx(25.0, abs=1e-12)
    for unit, said in (("adu", "in 'adu'"), (None, "of unknown unit (no BUNIT)"), ("MJy/sr", "in 'MJy/sr'")):
        md = {"fitsHeader": fits.Header([("MAGZPT", 25.0), ("PHOTFNU", rate)])}
        if unit is not None:
            md["unit"] = unit
        with pytest.raises(InvalidInputError, match=rf"^v\.fits: its only zero points, MAGZPT = 25\.0, PHOTFNU = "
                                                    rf".*, are of a count rate \(per second\), and its pixel values "
                                                    rf"are {re.escape(said)}, not per second.*set MAGZERO to that "
                                                    r"\(MAGZPT \+ 2\.5 \* log10\(EXPTIME\) for counts\)"):
            zero_point(md, "v.fits")
    # beside the zero point of the counts, a per-second one is no contradiction
    md = {"fitsHeader": fits.Header([("MAGZERO", 27.5), ("MAGZPT", 25.0)]), "unit": "adu"}
    assert zero_point(md) == (27.5, "MAGZERO = 27.5")
    # and once on a target, it is left to rescale_calibration (it still describes a count rate), MAGZERO set
    s = kernel_sum_for_zero_point(md, 28.0)[0]
    rescale_calibration(md, s)
    set_zero_point(md, 28.0)
    assert md["fitsHeader"]["MAGZERO"] == 28.0 and md["fitsHeader"]["MAGZPT"] == pytest.approx(25.5, abs=1e-12)


def test_flux_and_ab_calibrations_give_the_same_zero_point():
    """FLUXMAG0 (counts of a 0 mag source), PHOTFNU (Jy per count, AB) and photoCalib (nJy per count, AB) of an
    exposure on zero point 26 all say 26: a source of 10**(0.4 * 26) counts is of magnitude 0."""
    z = 26.0
    assert zero_point({"fitsHeader": {"FLUXMAG0": 10 ** (0.4 * z)}})[0] == pytest.approx(z, abs=1e-12)
    assert zero_point({"fitsHeader": {"PHOTFNU": 3631.0 * 10 ** (-0.4 * z)}, "unit": "ELECTRONS/S"})[0] == \
        pytest.approx(z, abs=1e-12)
    assert zero_point({"photoCalib": {"calibrationMean": 3631e9 * 10 ** (-0.4 * z)}})[0] == pytest.approx(z,
                                                                                                       abs=1e-12)
    assert AB_NJY_ZERO_POINT == pytest.approx(31.4, abs=1e-3) and AB_JY_ZERO_POINT == pytest.approx(8.9, abs=1e-3)


def test_every_place_is_read_and_the_first_statement_wins():
    """A dict meta's own entries (any case) count; statements within the tolerance agree, the first is taken."""
    zp, source = zero_point({"magzp": 25.0})
    assert zp == 25.0 and source == "metadata['magzp'] = 25"
    h = fits.Header([("MAGZERO", 25.0), ("FLUXMAG0", 10 ** (0.4 * (25.0 + 0.9 * ZERO_POINT_TOLERANCE)))])
    zp, source = zero_point({"fitsHeader": h, "photoCalib": {"calibrationMean": 3631e9 * 10 ** (-0.4 * 25.0)}})
    assert zp == 25.0
    assert source.startswith("MAGZERO = 25; FLUXMAG0 = ") and "photoCalib calibrationMean = " in source


def test_photflam_alone_is_no_zero_point():
    """PHOTFLAM gives an ST magnitude (its AB one needs PHOTPLAM): not read, so an HST header with PHOTFNU too is
    not a contradiction, and one with PHOTFLAM alone has no zero point."""
    assert zero_point({"fitsHeader": {"PHOTFLAM": 1.5e-19, "PHOTFNU": 3631.0 * 10 ** (-0.4 * 25.0)},
                       "unit": "ELECTRONS/S"})[0] == pytest.approx(25.0)
    with pytest.raises(InvalidInputError, match=r"x\.fits: no photometric zero point to scale from \(none of MAGZERO, "
                                                r"MAGZP, PHOTZP or FLUXMAG0.*add its zero point to the "
                                                r"header \(MAGZERO\), or give the kernelSum yourself \(run\(\.\.\., "
                                                r"kernelSum=S\), psfmatch run --kernel-sum S\)"):
        zero_point({"fitsHeader": {"PHOTFLAM": 1.5e-19}, "photoCalib": {"calibrationErr": 0.1}}, "x.fits")


@pytest.mark.parametrize("metadata, match", [
    ({"fitsHeader": {"MAGZERO": "n/a"}}, r"cannot be read from MAGZERO = 'n/a' \(a finite number is needed"),
    ({"fitsHeader": {"FLUXMAG0": -5.0}}, r"cannot be read from FLUXMAG0 = -5\.0 .*positive for FLUXMAG0"),
    ({"fitsHeader": {"MAGZERO": True}}, r"cannot be read from MAGZERO = True"),
    ({"photoCalib": {"calibrationMean": 0.0}}, r"cannot be read from photoCalib calibrationMean = 0\.0"),
    ({"fitsHeader": {"MAGZERO": (25.0, "c"), "FLUXMAG0": 10 ** (0.4 * 26.0)}},
     r"its zero points disagree by 1\.0000 mag \(MAGZERO = 25 \(zero point 25\.0000\); FLUXMAG0 = .* \(zero point "
     r"26\.0000\)\), so the flux scale of its pixels is unknown.*correct or remove the ones that are wrong"),
    ({"fitsHeader": ["MAGZERO", 25.0]}, r"metadata\['fitsHeader'\] is a list, neither a FITS Header nor a mapping"),
])
def test_a_zero_point_that_cannot_be_read_is_refused_naming_it(metadata, match):
    with pytest.raises(InvalidInputError, match=r"^e\.fits: (its zero point )?" + match):
        zero_point(metadata, "e.fits")


def test_repeated_cards_are_all_statements():
    h = fits.Header([("MAGZERO", 25.0), ("MAGZERO", 25.5)])
    with pytest.raises(InvalidInputError, match=r"disagree by 0\.5000 mag"):
        zero_point({"fitsHeader": h})


def test_zero_point_needs_a_metadata_dict():
    with pytest.raises(InvalidInputError, match=r"the exposure: its metadata must be a dict .*got list"):
        zero_point([])


def test_kernel_sum_for_zero_point_is_the_flux_ratio():
    s, zp, source = kernel_sum_for_zero_point({"fitsHeader": {"MAGZERO": 25.0}}, 27.5)
    assert s == pytest.approx(10.0, rel=1e-14) and zp == 25.0 and source == "MAGZERO = 25"
    # a source of magnitude m: 10**(0.4 (25 - m)) counts before, s times as many after, read with 27.5
    m = 18.3
    assert 27.5 - 2.5 * math.log10(s * 10 ** (0.4 * (25.0 - m))) == pytest.approx(m, abs=1e-12)
    for bad in (float("nan"), float("inf"), "27", None, True):
        with pytest.raises(InvalidInputError, match=r"the zero point to scale to must be a finite number"):
            kernel_sum_for_zero_point({"fitsHeader": {"MAGZERO": 25.0}}, bad)


def test_set_zero_point_states_the_target_exactly_everywhere():
    """After rescaling, a FLUXMAG0 that disagreed with MAGZERO by 5e-4 mag still does; set_zero_point makes every
    statement the target's, keeping comments, and says what moved."""
    h = fits.Header([("MAGZERO", 25.0, "zp"), ("FLUXMAG0", 10 ** (0.4 * 25.0005)), ("PHOTFLAM", 1e-19)])
    md = {"fitsHeader": h, "photoCalib": {"calibrationMean": 3631e9 * 10 ** (-0.4 * 25.0), "calibrationErr": 2.0},
          "MAGZPT": (25.0, "own")}
    s = kernel_sum_for_zero_point(md, 27.0)[0]
    rescale_calibration(md, s)
    changed = set_zero_point(md, 27.0)
    assert h["MAGZERO"] == 27.0 and h.comments["MAGZERO"] == "zp"
    assert h["FLUXMAG0"] == 10 ** (0.4 * 27.0) and h["PHOTFLAM"] == pytest.approx(1e-19 / s, rel=1e-12)
    assert md["MAGZPT"] == (27.0, "own")
    assert md["photoCalib"] == {"calibrationMean": pytest.approx(3631e9 * 10 ** (-0.4 * 27.0), rel=1e-14),
                                "calibrationErr": pytest.approx(2.0 / s, rel=1e-12)}
    assert len(changed) == 1 and changed[0].startswith("FLUXMAG0 ")


def test_set_zero_point_adds_magzero_where_no_card_states_it():
    """Exposures that stated their zero point in different cards must share one once on the target: MAGZERO is
    added to a header without it (made when there is none), and left alone where it is."""
    for md in ({}, {"fitsHeader": {"FLUXMAG0": 10 ** (0.4 * 27.0)}}, {"photoCalib": {"calibrationMean": 36.31}}):
        changed = set_zero_point(md, 27.0)
        assert zero_point({"fitsHeader": md["fitsHeader"]})[0] == pytest.approx(27.0, abs=1e-12)
        assert "MAGZERO added: 27" in changed
    h = fits.Header([("MAGZERO", 27.0, "kept")])
    assert set_zero_point({"fitsHeader": h}, 27.0) == [] and list(h.items()) == [("MAGZERO", 27.0)]
    assert h.comments["MAGZERO"] == "kept"


# -- run(..., zeroPoint=) ---------------------------------------------------------------------------------------


def _star_exposure(metadata, n=64):
    y, x = np.mgrid[:n, :n]
    img = 1000.0 * np.exp(-((x - 31.3) ** 2 + (y - 32.6) ** 2) / (2 * 1.8 ** 2)) / (2 * np.pi * 1.8 ** 2)
    return Exposure(img.astype(np.float32), variance=np.ones((n, n), np.float32), psf=GaussianPsf(21, 21, 1.8),
                    metadata=metadata)


def _task():
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    return ModelPsfMatchTask(config=config)


def test_run_on_a_zero_point_keeps_every_magnitude():
    h = fits.Header([("MAGZERO", 24.2), ("FLUXMAG0", 10 ** (0.4 * 24.2))])
    md = {"fitsHeader": h, "photoCalib": {"calibrationMean": 3631e9 * 10 ** (-0.4 * 24.2), "calibrationErr": 1.0}}
    exposure = _star_exposure(md)
    before = copy.deepcopy(md)
    result = _task().run(exposure, REFERENCE, zeroPoint=27.0)
    out = result.psfMatchedExposure
    s = 10 ** (0.4 * (27.0 - 24.2))
    assert result.metadata["kernelSum"] == pytest.approx(s, rel=1e-14)
    c_in, c_out = float(exposure.image.sum()), float(np.nansum(out.image))
    assert c_out / c_in == pytest.approx(s, rel=1e-4)  # flux conservation, scaled
    m_in = 24.2 - 2.5 * math.log10(c_in)
    oh = out.metadata["fitsHeader"]
    assert oh["MAGZERO"] == 27.0 and oh["FLUXMAG0"] == 10 ** (0.4 * 27.0)
    assert oh["MAGZERO"] - 2.5 * math.log10(c_out) == pytest.approx(m_in, abs=1e-4)
    assert c_out * out.metadata["photoCalib"]["calibrationMean"] == pytest.approx(
        c_in * md["photoCalib"]["calibrationMean"], rel=1e-4)  # the same nJy
    rec = result.metadata["zeroPoint"]
    assert rec["target"] == 27.0 and rec["input"] == 24.2 and rec["kernelSum"] == pytest.approx(s)
    assert rec["source"].startswith("MAGZERO = 24.2; FLUXMAG0 = ")
    assert md == before and exposure.metadata["fitsHeader"]["MAGZERO"] == 24.2  # the caller's metadata unchanged


def test_run_zero_point_argument_errors_come_before_the_fit(monkeypatch):
    task = _task()
    monkeypatch.setattr(task, "fitKernel", lambda *a, **k: pytest.fail("fitted"))
    good = _star_exposure({"fitsHeader": fits.Header([("MAGZERO", 25.0)])})
    with pytest.raises(InvalidInputError, match=r"give kernelSum or zeroPoint, not both: kernelSum=2\.0 with "
                                                r"zeroPoint=27\.0"):
        task.run(good, REFERENCE, 2.0, zeroPoint=27.0)
    for bad in ("27", float("nan"), True):
        with pytest.raises(InvalidInputError, match=r"zeroPoint must be a finite number of magnitudes \(27\.0\); "
                                                    rf"got {re.escape(repr(bad))}"):
            task.run(good, REFERENCE, zeroPoint=bad)
    with pytest.raises(InvalidInputError, match=r"the exposure: no photometric zero point"):
        task.run(_star_exposure({}), REFERENCE, zeroPoint=27.0)


def test_a_convolution_error_from_a_zero_point_kernel_sum_names_the_zero_point():
    """The convolution's remedies name the kernelSum; with zeroPoint the caller gave none, so the error says which
    zero points set it.  A float32 variance of 1e-8 (a flux unit) taken 39.5 mag down underflows."""
    exposure = _star_exposure({"fitsHeader": fits.Header([("MAGZERO", 30.0)])})
    exposure.variance[:] = 1e-8
    with pytest.raises(InvalidInputError, match=r"^kernelSum = 1\.58489e-16 takes the matched variance plane's .*"
                                                r"float64 \(here zeroPoint=-9\.5 set kernelSum = 1\.58489e-16 from "
                                                r"the exposure's zero point 30\.0000 \(MAGZERO = 30\): choose a "
                                                r"target zero point nearer to it\)$"):
        _task().run(exposure, REFERENCE, zeroPoint=-9.5)
    # without a zero point the error is the convolution's own
    with pytest.raises(InvalidInputError, match=r"convert the units afterwards in float64$"):
        _task().run(exposure, REFERENCE, kernelSum=10 ** (0.4 * -39.5))


def test_the_report_shows_the_zero_point():
    from psfmatch.qa import format_report

    result = _task().run(_star_exposure({"fitsHeader": fits.Header([("MAGZP", 25.0)])}), REFERENCE, zeroPoint=26.0)
    assert "zero point: 25.0000 (MAGZP = 25) -> 26.0000" in format_report(result.metadata)
    plain = _task().run(_star_exposure({}), REFERENCE)
    assert "zero point" not in format_report(plain.metadata)


# -- the command line ---------------------------------------------------------------------------------------------


def _file(path, magzero=None, n=64):
    h = fits.Header() if magzero is None else fits.Header([("MAGZERO", magzero)])
    _star_exposure({"fitsHeader": h}, n=n).writeFits(str(path))
    return str(path)


def _run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_run_zero_point(tmp_path, capsys):
    a = _file(tmp_path / "a.fits", 25.0)
    out = tmp_path / "m.fits"
    rc, stdout, _ = _run(["run", a, "-r", "gaussian:sigma=2.6", "-o", str(out), "--zero-point", "26",
                          "-c", "autoKernel=False"], capsys)
    assert rc == 0 and "zero point: 25.0000 (MAGZERO = 25) -> 26.0000" in stdout
    assert fits.getheader(out)["MAGZERO"] == 26.0
    matched = Exposure.readFits(str(out))
    assert float(np.nansum(matched.image)) / 1000.0 == pytest.approx(10 ** 0.4, rel=1e-3)
    # a file without one: named, exit 1, nothing written
    c = _file(tmp_path / "c.fits")
    rc, _, err = _run(["run", c, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "n.fits"), "--zero-point", "26"],
                      capsys)
    assert rc == 1 and f"{c}: no photometric zero point" in err and not (tmp_path / "n.fits").exists()


@pytest.mark.parametrize("extra, match", [
    (["--zero-point", "26", "--kernel-sum", "2"], "argument --kernel-sum: not allowed with argument --zero-point"),
    (["--zero-point", "nan"], "argument --zero-point: must be finite; got 'nan'"),
    (["--zero-point", "mag"], "argument --zero-point: expected a number; got 'mag'"),
])
def test_cli_zero_point_usage_errors(extra, match, tmp_path, capsys):
    for command in (["run", str(tmp_path / "a.fits"), "-o", str(tmp_path / "m.fits")],
                    ["batch", str(tmp_path / "a.fits"), "-o", str(tmp_path / "out")]):
        rc, _, err = _run([*command, "-r", "gaussian:sigma=2.6", *extra], capsys)
        assert rc == 2 and match in err


# -- batches ------------------------------------------------------------------------------------------------------

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    # (threads of this process, on TCP: the command line takes a scheduler's tcp:// address)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://",
                                  dashboard_address=":0", silence_logs=40) as cluster, distributed.Client(cluster) as c:
        yield c


def _batch_config():
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.spatialKernelOrder = 0
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 32
    return config


def test_match_many_on_one_zero_point_gives_a_coadd_with_it(client, tmp_path):
    """Two exposures of one star on zero points 25 (MAGZERO) and 26.5 (MAGZERO and FLUXMAG0, which rounding makes
    disagree by 3e-4 mag) are matched onto 27: identical cards, so they coadd, and the star's magnitude in the
    coadd is its magnitude in either input."""
    from psfmatch.batch import coadd, match_many

    a = _file(tmp_path / "a.fits", 25.0)
    h = fits.Header([("MAGZERO", 26.5), ("FLUXMAG0", 10 ** (0.4 * 26.5003))])
    img = _star_exposure({}).image * 10 ** (0.4 * 1.5)  # the same star on the brighter zero point
    b = str(tmp_path / "b.fits")
    Exposure(img, variance=np.ones_like(img), psf=GaussianPsf(21, 21, 1.8), metadata={"fitsHeader": h}).writeFits(b)
    outdir = tmp_path / "out"
    reports = match_many([a, b], REFERENCE, outdir, _batch_config(), client, zeroPoint=27.0, progress=False,
                         require_same_calibration=True)
    assert reports.ok and reports.settings["zeroPoint"] == 27.0
    assert [r.kernel_sum for r in reports] == pytest.approx([10 ** 0.8, 10 ** 0.2], rel=1e-12)
    assert "kernelSum 6.30957)" in reports[0].line() and "kernelSum 1.58489)" in reports[1].line()
    for r in reports:
        header = fits.getheader(r.output)
        assert header["MAGZERO"] == 27.0
    assert fits.getheader(reports[1].output)["FLUXMAG0"] == 10 ** (0.4 * 27.0)  # (snapped: the coadd compares it)
    stored = Exposure.readFits(reports[0].output).metadata["psfmatchBatch"]
    assert stored["zeroPoint"]["input"] == 25.0 and stored["kernelSum"] == pytest.approx(10 ** 0.8)
    co = coadd(reports.output_paths(), tmp_path / "co.fits")
    coadded = Exposure.readFits(co.output)
    assert coadded.metadata["fitsHeader"]["MAGZERO"] == 27.0
    m_in = 25.0 - 2.5 * math.log10(1000.0)
    assert 27.0 - 2.5 * math.log10(float(np.nansum(coadded.image[12:52, 12:52]))) == pytest.approx(m_in, abs=1e-3)

    # a re-run skips both (the kernel sums read back); another zero point redoes them
    again = match_many([a, b], REFERENCE, outdir, _batch_config(), client, zeroPoint=27.0, progress=False)
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert [r.kernel_sum for r in again] == pytest.approx([10 ** 0.8, 10 ** 0.2], rel=1e-12)
    other = match_many([a], REFERENCE, outdir, _batch_config(), client, zeroPoint=26.0, progress=False)
    assert other[0].status == "matched" and other[0].reason.startswith("stale output: configuration or kernelSum")
    assert fits.getheader(other[0].output)["MAGZERO"] == 26.0


def test_match_many_refuses_before_matching(client, tmp_path):
    from psfmatch.batch import match_many

    a, b, c = _file(tmp_path / "a.fits", 25.0), _file(tmp_path / "b.fits", 26.5), _file(tmp_path / "c.fits")
    outdir = tmp_path / "out"
    with pytest.raises(InvalidInputError, match=r"match_many\(zeroPoint=27\.0\): the zero point of 1 of 3 input\(s\) "
                                                r"cannot be read, so no exposure was matched: .*c\.fits: no "
                                                r"photometric zero point.*; or leave them out of the batch"):
        match_many([a, b, c], REFERENCE, outdir, _batch_config(), client, zeroPoint=27.0, progress=False)
    with pytest.raises(InvalidInputError, match=r"match_many\(require_same_calibration=True\): input .*b\.fits would "
                                                r"be matched with MAGZERO = 26\.5 and .*a\.fits with 25\.0: their "
                                                r"pixels would be on different flux scales.*no exposure was matched; "
                                                r"put every exposure on one zero point.*--zero-point ZP"):
        match_many([a, b], REFERENCE, outdir, _batch_config(), client, require_same_calibration=True,
                   progress=False)
    with pytest.raises(InvalidInputError, match=r"give kernelSum or zeroPoint, not both"):
        match_many([a, b], REFERENCE, outdir, _batch_config(), client, kernelSum=2.0, zeroPoint=27.0,
                   progress=False)
    assert not outdir.exists()
    # a common kernelSum keeps them apart; the same zero point on both passes
    with pytest.raises(InvalidInputError, match=r"would be matched with MAGZERO = 28\.005\d* and .* with 26\.505\d*:"):
        match_many([a, b], REFERENCE, outdir, _batch_config(), client, kernelSum=4.0,
                   require_same_calibration=True, progress=False)
    same = match_many([a, _file(tmp_path / "d.fits", 25.0)], REFERENCE, outdir, _batch_config(), client,
                      kernelSum=4.0, require_same_calibration=True, progress=False)
    assert same.ok and [r.kernel_sum for r in same] == [4.0, 4.0] and same.settings["zeroPoint"] is None


def test_match_one_without_a_zero_point_fails_that_input(tmp_path):
    from psfmatch.batch import match_one

    c = _file(tmp_path / "c.fits")
    rep = match_one(c, REFERENCE, tmp_path / "m.fits", _batch_config(), zeroPoint=27.0)
    assert rep.status == "failed" and rep.error_type == "InvalidInputError" and rep.kernel_sum is None
    assert rep.error_message.startswith(f"{c}: no photometric zero point") and not (tmp_path / "m.fits").exists()
    ok = match_one(c, REFERENCE, tmp_path / "m.fits", _batch_config(), kernelSum=2.5)
    assert ok.status == "matched" and ok.kernel_sum == 2.5


def test_cli_batch_zero_point_and_its_early_coadd_check(client, tmp_path, capsys):
    a, b = _file(tmp_path / "a.fits", 25.0), _file(tmp_path / "b.fits", 26.5)
    outdir, co = tmp_path / "out", tmp_path / "co.fits"
    common = ["batch", a, b, "-r", "gaussian:sigma=2.6", "-o", str(outdir), "--coadd", str(co), "--scheduler",
              client.scheduler.address, "-c", "autoKernel=False", "-c", "kernel.active.spatialKernelOrder=0"]
    rc, _, err = _run(common, capsys)
    assert rc == 1, err
    assert f"--coadd {co}: input {b} would be matched with MAGZERO = 26.5 and {a} with 25.0" in err
    assert "--zero-point ZP" in err and not outdir.exists()
    rc, out, _ = _run([*common, "--zero-point", "27"], capsys)
    assert rc == 0 and "2 matched" in out
    assert fits.getheader(co)["MAGZERO"] == 27.0
    # without --coadd, an input without a zero point is refused as early
    c = _file(tmp_path / "c.fits")
    rc, _, err = _run(["batch", a, c, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "o2"), "--zero-point", "27",
                       "--scheduler", client.scheduler.address], capsys)
    assert rc == 1 and "--zero-point 27.0: the zero point of 1 of 2 input(s) cannot be read" in err
    assert not (tmp_path / "o2").exists()


def test_an_nddata_meta_zero_point_gets_no_second_magzero():
    """An NDData's dict meta states MAGZERO among the metadata's own entries: set_zero_point sets it and adds no
    header card beside it (a CCDData would carry MAGZERO twice)."""
    md = {"MAGZERO": 25.0, "unit": "adu"}
    rescale_calibration(md, kernel_sum_for_zero_point(md, 27.0)[0])
    assert set_zero_point(md, 27.0) == [] and md["MAGZERO"] == pytest.approx(27.0, abs=1e-12)
    assert "fitsHeader" not in md


def test_zero_points_of_a_count_rate_do_not_decide_a_coadd_of_counts(tmp_path):
    """Exposures in counts of 10 s and 20 s on one flux scale (MAGZERO 27) carry CASU-style MAGZPT 24.5 and
    25.25 (per second): the coadd must not take those for two flux scales, and keeps no MAGZPT; in a rate unit
    the same cards are zero points of the pixel values, and differing ones are refused, early as at the coadd."""
    from psfmatch.batch import _check_batch_calibration, coadd

    def write(name, magzpt, unit):
        path = str(tmp_path / name)
        h = fits.Header([("MAGZERO", 27.0), ("MAGZPT", magzpt)])
        _star_exposure({"fitsHeader": h, "unit": unit}, n=32).writeFits(path)
        return path

    counts = [write("a.fits", 24.5, "adu"), write("b.fits", 25.25, "adu")]
    _check_batch_calibration(counts, "--coadd c.fits", require_same=True)
    co = Exposure.readFits(coadd(counts, str(tmp_path / "c.fits"), require_same_psf=False).output)
    assert co.metadata["fitsHeader"]["MAGZERO"] == 27.0 and "MAGZPT" not in co.metadata["fitsHeader"]
    rates = [write("r1.fits", 24.5, "adu/s"), write("r2.fits", 25.25, "adu/s")]
    with pytest.raises(InvalidInputError, match=r"--coadd c2\.fits: input .*r2\.fits would be matched with MAGZPT = "
                                                r"25\.25 and .*r1\.fits with 24\.5"):
        _check_batch_calibration(rates, "--coadd c2.fits", require_same=True)
    with pytest.raises(InvalidInputError, match=r"coadd input .*r2\.fits has MAGZPT = 25\.25 and .*r1\.fits has 24\.5"):
        coadd(rates, str(tmp_path / "c2.fits"), require_same_psf=False)
