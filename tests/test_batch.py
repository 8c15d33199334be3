"""Batch matching on Dask, the automatic reference PSF, the tiled coadd and ``psfmatch batch``.

The Dask tests run a real ``LocalCluster`` (2 worker processes, 1 thread each)
shared by the module; one test starts the embedded cluster of ``match_many``
itself.  Exposures are small (160 x 160) so the whole file stays well under a
minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the batch tests need dask[distributed]")

from astropy.io import fits  # noqa: E402

from psfmatch import Exposure, ModelPsfMatchConfig  # noqa: E402
from psfmatch.batch import (FAILED, MATCHED, SKIPPED, GridMismatchError, check_matched_output,  # noqa: E402
                            choose_reference_psf, coadd, match_many, match_one)
from psfmatch.batch_cli import add_batch_parser, run_batch_command  # noqa: E402
from psfmatch.demo import make_demo_exposure  # noqa: E402
from psfmatch.errors import InvalidInputError, MissingFileError, OutputExistsError  # noqa: E402
from psfmatch.geom import Box2I  # noqa: E402
from psfmatch.image import Mask  # noqa: E402
from psfmatch.io.fits import read_exposure, write_exposure  # noqa: E402
from psfmatch.psf import DoubleGaussianPsf, GaussianPsf, VariableGaussianPsf  # noqa: E402

SIZE = 160
REFERENCE = GaussianPsf(31, 31, 2.6)


def _forbid(monkeypatch, name, why):
    """Make ``psfmatch.batch.<name>`` fail the test with ``why`` if anything calls it (the work must not start)."""
    import psfmatch.batch

    def must_not_run(*args, **kwargs):
        raise AssertionError(why)

    monkeypatch.setattr(psfmatch.batch, name, must_not_run)


def _config():
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = 80
    config.kernel.active.sizeCellY = 80
    config.kernel.active.spatialKernelOrder = 1
    return config


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="2GiB",
                                       dashboard_address=":0", silence_logs=40)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three exposure files and a corrupt one (its header overwritten with junk)."""
    d = tmp_path_factory.mktemp("inputs")
    paths = []
    for i in range(3):
        p = str(d / f"exp{i}.fits")
        write_exposure(make_demo_exposure(SIZE, seed=i, n_stars=8), p)
        paths.append(p)
    bad = str(d / "corrupt.fits")
    with open(paths[0], "rb") as fh:
        data = fh.read()
    with open(bad, "wb") as fh:
        fh.write(np.random.default_rng(0).bytes(2880) + data[2880:])
    return paths, bad


def _mtimes(paths):
    return {p: os.stat(p).st_mtime_ns for p in paths}


# ---------------------------------------------------------------------------
# match_many


def test_batch_isolates_a_corrupt_input_and_reruns_do_no_work(client, inputs, tmp_path):
    paths, bad = inputs
    outdir = tmp_path / "out"
    seen = []
    reports = match_many(paths + [bad], REFERENCE, outdir, config=_config(), client=client,
                         progress=lambda r, done, total: seen.append((r.path, done, total)),
                         report_path=tmp_path / "report.json")
    assert [r.path for r in reports] == [os.path.abspath(p) for p in paths + [bad]]
    assert [r.status for r in reports] == [MATCHED, MATCHED, MATCHED, FAILED]
    assert not reports.ok and len(reports.failed) == 1
    failed = reports[-1]
    assert failed.error_type == "CorruptFileError" and "corrupt.fits" in failed.error_message
    assert failed.output is None and failed.traceback
    assert not (outdir / "corrupt.fits").exists()
    assert len(seen) == 4 and seen[-1][1:] == (4, 4)
    for p, r in zip(paths, reports):
        assert r.output == str(outdir / os.path.basename(p))
        assert r.worker is not None and r.worker.startswith("tcp://")
        assert 0 < r.qa["qa"]["between"]["residualMaxWorst"] < 0.05  # the QA summary came back
        assert {"read", "match", "write", "total"} <= set(r.timings)
        assert "kernel:" in r.qa_text()
        matched = read_exposure(r.output)
        psf = matched.getPsf()
        assert isinstance(psf, GaussianPsf) and psf.getSigma() == pytest.approx(2.6)
        assert matched.metadata["psfmatchBatch"]["input"] == os.path.abspath(p)
        assert check_matched_output(r.output)[0]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["counts"] == {"matched": 3, "skipped": 0, "failed": 1}
    assert saved["exposures"][-1]["error_type"] == "CorruptFileError"
    assert "FAILED" in reports.summary() and "corrupt.fits" in reports.summary()
    # each matched line gives the worst residual and aperture-flux mismatch, and the QA flags if any
    line = reports[0].line()
    ap = max(reports[0].qa["qa"][w]["apertureFluxMismatchWorst"] for w in ("candidates", "between"))
    assert "worst max|S*K-R|/peak" in line and f"aperture flux {ap:.1e}" in line
    assert ("flags" in line) == bool(reports[0].qa["qa"]["flags"])

    # a re-run does no work: nothing is read, matched or written
    before = _mtimes([r.output for r in reports if r.ok])
    again = match_many(paths + [bad], REFERENCE, outdir, config=_config(), client=client, progress=False)
    assert [r.status for r in again] == [SKIPPED, SKIPPED, SKIPPED, FAILED]
    for r, first in zip(again[:3], reports):
        assert r.reason == "complete" and "match" not in r.timings and "read" not in r.timings
        assert r.qa["qa"]["between"] == first.qa["qa"]["between"]  # QA read back from the file
    assert _mtimes(before) == before


def test_incomplete_foreign_and_stale_outputs_are_redone(client, inputs, tmp_path):
    paths, _ = inputs
    outdir = tmp_path / "out"
    first = match_many(paths, REFERENCE, outdir, config=_config(), client=client, progress=False)
    assert first.ok
    out0, out1, out2 = (r.output for r in first)
    with open(out0, "r+b") as fh:  # truncated, as by a crash of something else than our atomic write
        fh.truncate(os.path.getsize(out0) // 2)
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.float32)).writeto(out1, overwrite=True)  # a foreign file
    with fits.open(out2) as hdul:
        offset = hdul["IMAGE"].fileinfo()["datLoc"]
    with open(out2, "r+b") as fh:  # flipped bits in the image data
        fh.seek(offset + 1000)
        fh.write(b"\x7f\x7f\x7f")
    for out in (out0, out1, out2):
        assert not check_matched_output(out)[0]
    again = match_many(paths, REFERENCE, outdir, config=_config(), client=client, progress=False)
    assert [r.status for r in again] == [MATCHED, MATCHED, MATCHED]
    assert "output" in again[0].reason or "corrupt" in again[0].reason
    assert "foreign" in again[1].reason
    assert "checksum" in again[2].reason
    assert all(check_matched_output(r.output)[0] for r in again)

    # another configuration, kernelSum or reference makes every output stale
    config = _config()
    config.kernel.active.spatialKernelOrder = 0
    stale = match_many(paths, REFERENCE, outdir, config=config, client=client.scheduler.address, progress=False)
    assert [r.status for r in stale] == [MATCHED] * 3
    assert all("configuration" in r.reason for r in stale)
    ref2 = match_many(paths[:1], GaussianPsf(31, 31, 2.7), outdir, config=config, client=client.cluster,
                      progress=False)
    assert ref2[0].status == MATCHED and "reference" in ref2[0].reason
    forced = match_many(paths[:1], GaussianPsf(31, 31, 2.7), outdir, config=config, client=client, force=True,
                        progress=False)
    assert forced[0].status == MATCHED and forced[0].reason == "forced"


@pytest.mark.filterwarnings("ignore::psfmatch.errors.KernelQualityWarning")
def test_threaded_workers_leave_the_warnings_machinery_alone(inputs, tmp_path):
    import warnings

    filters, show = list(warnings.filters), warnings.showwarning
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        reports = match_many(inputs[0][:2], REFERENCE, tmp_path / "out", config=_config(), client=c, progress=False)
        assert [r.status for r in reports] == [MATCHED, MATCHED]
        again = match_many(inputs[0][:2], REFERENCE, tmp_path / "out", config=_config(), client=c, progress=False)
        assert [r.status for r in again] == [SKIPPED, SKIPPED]
    assert warnings.filters == filters and warnings.showwarning is show


@pytest.mark.filterwarnings("ignore::psfmatch.errors.IllPosedMatchWarning")
@pytest.mark.filterwarnings("ignore::psfmatch.errors.KernelQualityWarning")
def test_single_threaded_workers_sharing_a_process_keep_each_reports_warnings_apart(tmp_path):
    """Client(processes=False)'s workers, one thread each, are threads of one process: each took itself for its
    process's sole thread and entered the process-global warnings.catch_warnings beside the others, so warnings
    landed in other exposures' reports and the process kept a recorder as showwarning and an 'always' filter."""
    paths = []
    for i, sigma in enumerate((2.6, 1.2, 2.6, 1.2)):  # broader than the reference (ill-posed), narrower
        exposure = make_demo_exposure(SIZE, seed=i, n_stars=8)
        exposure.setPsf(GaussianPsf(21, 21, sigma))
        paths.append(str(tmp_path / f"{'broad' if sigma > 2 else 'narrow'}{i}.fits"))
        write_exposure(exposure, paths[-1])
    reference = GaussianPsf(31, 31, 2.0)
    with distributed.Client(processes=False, n_workers=3, threads_per_worker=1, dashboard_address=":0") as c:
        match_many(paths[1:2], reference, tmp_path / "warm", config=_config(), client=c, progress=False)
        filters, show = list(warnings.filters), warnings.showwarning  # (after the imports the first match makes)
        reports = match_many(paths, reference, tmp_path / "out", config=_config(), client=c, progress=False)
    assert warnings.filters == filters and warnings.showwarning is show
    assert [r.status for r in reports] == [MATCHED] * 4
    for r in reports:
        ill_posed = [w for w in r.warnings if "ill-posed match" in w]
        if "broad" in r.path:  # its own warning, once, as the log's record (warnings go to the usual display)
            assert len(ill_posed) == 1 and ill_posed[0].startswith("WARNING: ill-posed match")
            assert "science sigma 2.600 px vs reference sigma 2.000 px" in ill_posed[0]
        else:
            assert ill_posed == [] and not any("IllPosedMatchWarning" in w for w in r.warnings)


def test_match_one_fingerprints_without_dask(inputs, tmp_path):
    src = tmp_path / "in.fits"
    shutil.copy(inputs[0][0], src)
    out = tmp_path / "out.fits"
    r = match_one(src, REFERENCE, out, _config())
    assert r.status == MATCHED and r.worker is None
    assert match_one(src, REFERENCE, out, _config()).status == SKIPPED
    os.utime(src, ns=(os.stat(src).st_atime_ns, os.stat(src).st_mtime_ns + 10**9))  # touched
    r = match_one(src, REFERENCE, out, _config())
    assert r.status == MATCHED and r.reason == "stale output: input changed"
    r = match_one(src, REFERENCE, out, _config(), fingerprint="sha256")
    assert r.status == MATCHED  # the marker changed kind
    assert r.reason == "stale output: fingerprint mode changed (stat -> sha256)"
    os.utime(src, ns=(os.stat(src).st_atime_ns, os.stat(src).st_mtime_ns + 10**9))
    assert match_one(src, REFERENCE, out, _config(), fingerprint="sha256").status == SKIPPED
    header = fits.getheader(out)
    assert header["BATCHOK"] is True and header["BATCHFPR"].startswith("sha256:")
    missing = match_one(tmp_path / "nope.fits", REFERENCE, tmp_path / "nope-out.fits", _config())
    assert missing.status == FAILED and missing.error_type == "MissingFileError"
    assert re.search(r"exposure file '.*nope\.fits' does not exist", missing.error_message)
    folder = match_one(tmp_path, REFERENCE, tmp_path / "folder-out.fits", _config())
    assert folder.status == FAILED and folder.error_type == "UnsupportedFormatError"
    assert "is a directory" in folder.error_message


def test_a_field_set_explicitly_to_its_default_makes_the_output_stale(inputs, tmp_path):
    """autoKernel honours explicit settings, so the completion marker must tell them apart from defaults."""
    from psfmatch.batch import _config_hash

    src = tmp_path / "in.fits"
    shutil.copy(inputs[0][0], src)
    out = tmp_path / "out.fits"
    assert match_one(src, REFERENCE, out, _config()).status == MATCHED
    explicit = _config()
    explicit.kernel.active.kernelSize = ModelPsfMatchConfig().kernel.active.kernelSize  # the default value
    assert explicit.to_dict() == _config().to_dict()
    r = match_one(src, REFERENCE, out, explicit)
    assert r.status == MATCHED and r.reason == "stale output: configuration or kernelSum changed"
    # (the fields set to other values show in the values; only the one set to its default is listed)
    assert read_exposure(out).metadata["psfmatchBatch"]["explicitFields"] == ["config.kernel['AL'].kernelSize"]
    assert match_one(src, REFERENCE, out, explicit).status == SKIPPED
    # a default configuration keeps the hash of earlier versions (their outputs are not redone)
    import hashlib

    old = json.dumps({"config": ModelPsfMatchConfig().to_dict(), "kernelSum": 1.0}, sort_keys=True, default=str)
    assert _config_hash(ModelPsfMatchConfig(), 1.0) == hashlib.sha256(old.encode()).hexdigest()[:40]


def test_a_reference_that_differs_only_away_from_its_centre_makes_the_output_stale(inputs, tmp_path):
    """Two PSFEx references with the same repr and the same image at POLZERO (where every higher term vanishes)
    but different linear terms: the second run redoes the output (it was skipped as current)."""
    from psfmatch.psf.psfex import PsfexPsf

    y, x = np.mgrid[-15:16, -15:16].astype(float)
    g = np.exp(-(x ** 2 + y ** 2) / (2 * 2.6 ** 2))

    def reference(slope):  # a size gradient along x
        b1 = slope * (x ** 2 + y ** 2 - 2 * 2.6 ** 2) * g / 2.6 ** 2
        return PsfexPsf(np.stack([g, b1, 0 * g]), degree=1, polzero=(SIZE / 2 + 1, SIZE / 2 + 1),
                        polscal=(SIZE, SIZE))

    a, b = reference(0.0), reference(0.05)
    assert repr(a) == repr(b) and np.array_equal(a.computeKernelImage(a.getAveragePosition()),
                                                 b.computeKernelImage(b.getAveragePosition()))
    src = tmp_path / "in.fits"
    shutil.copy(inputs[0][0], src)
    out = tmp_path / "out.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert match_one(src, a, out, _config()).status == MATCHED
        r = match_one(src, b, out, _config())
    assert r.status == MATCHED and r.reason == "stale output: reference PSF changed"


def test_duplicate_names_and_in_place_outputs_are_refused(inputs, tmp_path):
    paths, _ = inputs
    other = tmp_path / "b"
    other.mkdir()
    shutil.copy(paths[0], other / os.path.basename(paths[0]))
    with pytest.raises(InvalidInputError, match="same file name"):
        match_many([paths[0], str(other / os.path.basename(paths[0]))], REFERENCE, tmp_path / "o", client=False)
    with pytest.raises(InvalidInputError, match="overwrite the input"):
        match_many([paths[0]], REFERENCE, os.path.dirname(paths[0]), client=False)
    with pytest.raises(InvalidInputError, match="no input"):
        match_many([], REFERENCE, tmp_path / "o")


def test_outputs_never_replace_an_input_through_a_symbolic_link(inputs, tmp_path):
    paths, _ = inputs
    raw = tmp_path / "raw"
    raw.mkdir()
    a = raw / "a.fits"
    shutil.copy(paths[0], a)
    before = a.read_bytes()
    (tmp_path / "matched").symlink_to("raw")  # outdir reaches the inputs' folder through a link
    with pytest.raises(InvalidInputError, match=r"output .*matched/a\.fits of .*raw/a\.fits would overwrite the input"):
        match_many([str(a)], REFERENCE, tmp_path / "matched", client=False)
    with pytest.raises(InvalidInputError, match=r"report_path .*a\.fits would overwrite the input"):
        match_many([str(a)], REFERENCE, tmp_path / "out", report_path=tmp_path / "matched" / "a.fits", client=False)
    with pytest.raises(InvalidInputError, match="would overwrite the matched file of"):
        match_many([str(a)], REFERENCE, tmp_path / "out", report_path=tmp_path / "out" / "a.fits", client=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match=r"outdir .*file exists and is not a directory"):
        match_many([str(a)], REFERENCE, tmp_path / "file", client=False)
    # the coadd refuses to write over one of its inputs, even with overwrite=True
    with pytest.raises(InvalidInputError, match=r"coadd output .*a\.fits would overwrite the input"):
        coadd([str(a)], tmp_path / "matched" / "a.fits", overwrite=True)
    assert a.read_bytes() == before
    assert sorted(os.listdir(raw)) == ["a.fits"]


def test_one_file_given_twice_is_refused_also_through_a_link(inputs, tmp_path):
    """One exposure reached by two paths would be matched twice and coadded twice, halving the variance."""
    raw = tmp_path / "raw"
    raw.mkdir()
    a = raw / "a.fits"
    shutil.copy(inputs[0][0], a)
    (raw / "a_latest.fits").symlink_to("a.fits")
    os.link(a, raw / "a_copy.fits")
    for other, how in ((raw / "a.fits", "is given twice"), (raw / "a_latest.fits", "are the same file"),
                       (raw / "a_copy.fits", "are the same file")):
        with pytest.raises(InvalidInputError, match=re.escape(how) + ".*give each exposure once"):
            match_many([str(a), str(other)], REFERENCE, tmp_path / "out", client=False)
        with pytest.raises(InvalidInputError, match=re.escape(how) + ".*give each exposure once"):
            coadd([str(a), str(other)], tmp_path / "co.fits")
    with pytest.raises(InvalidInputError, match=r"inputs .*raw/a\.fits and .*raw/a_latest\.fits are the same file"):
        coadd([str(a), str(raw / "a_latest.fits")], tmp_path / "co.fits")
    assert sorted(os.listdir(tmp_path)) == ["raw"]  # nothing was written, no outdir made


def test_match_many_checks_reference_options_before_any_work(inputs, tmp_path):
    with pytest.raises(InvalidInputError, match=r"reference_options \['margn'\] are not options of "
                                                r"choose_reference_psf; it takes kind, margin, floor"):
        match_many(inputs[0][:1], "auto", tmp_path / "out", client=False, reference_options={"margn": 0.2})
    with pytest.raises(InvalidInputError, match="reference_options must be a dict"):
        match_many(inputs[0][:1], "auto", tmp_path / "out", client=False, reference_options=[("margin", 0.2)])
    assert not (tmp_path / "out").exists()


def test_embedded_local_cluster_and_auto_reference(inputs, tmp_path, monkeypatch):
    from psfmatch.parallel import available_cores

    paths, bad = inputs
    monkeypatch.delenv("PSFMATCH_NUM_THREADS", raising=False)
    reports = match_many(paths[:2] + [bad], "auto", tmp_path / "out", config=_config(), n_workers=2,
                         memory_limit="1GiB", progress=False)
    eng = reports.engine
    assert eng["started_cluster"] and eng["n_workers"] == 2 and eng["threads_per_worker"] == 1
    # the two workers share the cores: psfmatch runs one thread (at least) per task inside them
    assert eng["psfmatch_threads"] == [max(1, available_cores() // 2)]
    assert "PSFMATCH_NUM_THREADS" not in os.environ  # the spawn environment was restored
    assert eng["memory_limit_per_worker"] == 2 ** 30
    assert [r.status for r in reports] == [MATCHED, MATCHED, FAILED]
    choice = reports.reference["choice"]
    assert choice["n_exposures"] == 2 and choice["failures"][0]["path"] == os.path.abspath(bad)
    expected = np.sqrt(1.1 ** 2 * choice["lambda_max"] + 0.7 ** 2)
    assert choice["sigma"] == pytest.approx(expected)
    psf = read_exposure(reports[0].output).getPsf()
    assert psf.getSigma() == pytest.approx(choice["sigma"])
    assert read_exposure(reports[0].output).metadata["psfmatchBatch"]["reference"]["choice"]["rule"]


# ---------------------------------------------------------------------------
# the automatic reference


def test_auto_reference_uses_the_broadest_axis_not_the_determinant_radius():
    bbox = Box2I((0, 0), (300, 200))
    round_ = Exposure(np.zeros((200, 300), np.float32), psf=GaussianPsf(25, 25, 1.5))
    # sigma 2 with e1 = 0.3: variances 4 * 1.3 = 5.2 along x, 2.8 along y (determinant radius^2 = 3.82)
    elongated = (VariableGaussianPsf(31, 31, bbox, sigma=[2.0], e1=[0.3], e2=[0.0]), bbox)
    choice = choose_reference_psf([round_, elongated])
    assert choice.lambda_max == pytest.approx(5.2, rel=2e-3)
    assert choice.sigma == pytest.approx(np.sqrt(1.21 * choice.lambda_max + 0.49))
    assert choice.sigma ** 2 > 5.2 > choice.max_determinant_radius ** 2
    assert choice.broadest["path"] == "sources[1] (tuple)" and "sources[1] (tuple) at" in choice.rule
    assert isinstance(choice.psf, GaussianPsf)
    assert choice.stamp % 2 == 1 and choice.psf.getSigma() == choice.sigma
    d = choice.to_dict()
    assert json.dumps(d) and "lambda_max" in d["rule"]

    dg = choose_reference_psf([elongated], kind="doublegaussian", margin=0.0, floor=0.0)
    assert isinstance(dg.psf, DoubleGaussianPsf)
    assert dg.psf.getSigma1() == pytest.approx(np.sqrt(dg.lambda_max))
    assert dg.psf.getSigma2() == pytest.approx(2 * dg.psf.getSigma1()) and dg.psf.getB() == 0.1
    with pytest.raises(InvalidInputError):
        choose_reference_psf([elongated], margin=-1)
    with pytest.raises(InvalidInputError, match="no exposure"):
        choose_reference_psf([Exposure(np.zeros((50, 50), np.float32))])


@pytest.mark.filterwarnings("ignore::psfmatch.errors.KernelQualityWarning")
def test_auto_reference_match_is_not_a_deconvolution():
    from psfmatch import ModelPsfMatchTask

    exposure = make_demo_exposure(SIZE, seed=3, n_stars=4)
    choice = choose_reference_psf([exposure])
    config = _config()
    if "strict" in config.to_dict():
        config.strict = True  # ill-posed cells would raise
    result = ModelPsfMatchTask(config).run(exposure, choice.psf)
    ill = result.metadata["qa"].get("illPosed")
    if ill is not None:
        assert ill["flag"] is False and ill["worst"]["deficit"] < 0  # the reference is broader on every axis
    assert result.metadata["qa"]["between"]["residualMaxWorst"] < 0.05


# ---------------------------------------------------------------------------
# the coadd


def _write(path, image, variance, mask=None, psf=REFERENCE, xy0=(0, 0), wcs=None, planes=None):
    exp = Exposure(np.asarray(image, np.float32), mask if mask is not None else None,
                   np.asarray(variance, np.float32), psf=psf, xy0=xy0, wcs=wcs, mask_planes=planes)
    write_exposure(exp, path, overwrite=True)
    return str(path)


def test_coadd_of_n_matched_copies_has_variance_over_n_and_the_reference(client, inputs, tmp_path):
    src = inputs[0][0]
    n = 4
    copies = []
    for i in range(n):
        p = tmp_path / f"copy{i}.fits"
        shutil.copy(src, p)
        copies.append(str(p))
    reports = match_many(copies, REFERENCE, tmp_path / "out", config=_config(), client=client, progress=False)
    assert reports.ok
    out = tmp_path / "coadd.fits"
    rep = coadd(reports.output_paths(), out, tile_size=48)
    assert rep.n_tiles == 16 and rep.shape == (SIZE, SIZE)
    matched = read_exposure(reports[0].output)
    co = read_exposure(out)
    ok = np.isfinite(matched.image) & ((matched.mask & matched.getMask().getPlaneBitMask("NO_DATA")) == 0)
    np.testing.assert_allclose(co.variance[ok], matched.variance[ok] / n, rtol=1e-6)
    np.testing.assert_allclose(co.image[ok], matched.image[ok], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(co.mask[ok], matched.mask[ok])
    nodata = co.getMask().getPlaneBitMask("NO_DATA")
    assert np.all(co.mask[~ok] == nodata) and np.all(np.isnan(co.image[~ok])) and np.all(np.isinf(co.variance[~ok]))
    assert rep.coverage == pytest.approx(ok.mean())
    assert isinstance(co.getPsf(), GaussianPsf) and co.getPsf().getSigma() == pytest.approx(2.6)
    assert co.metadata["coadd"]["nInputs"] == n
    with pytest.raises(OutputExistsError):
        coadd(reports.output_paths(), out)


def test_coadd_noise_scales_as_one_over_n(tmp_path):
    rng = np.random.default_rng(7)
    n, var = 5, 4.0
    paths = [_write(tmp_path / f"n{i}.fits", rng.normal(10.0, np.sqrt(var), (120, 100)), np.full((120, 100), var))
             for i in range(n)]
    coadd(paths, tmp_path / "c.fits", tile_size=32)
    co = read_exposure(tmp_path / "c.fits")
    np.testing.assert_allclose(co.variance, var / n, rtol=1e-6)
    assert np.var(co.image) == pytest.approx(var / n, rel=0.08)  # 12000 pixels: ~1.3% scatter on a variance


def test_coadd_weights_and_mask_rules(tmp_path):
    shape = (40, 50)
    xy0 = (10, 20)
    m = Mask(shape=shape)
    BAD, SAT, ND = (m.getPlaneBitMask(p) for p in ("BAD", "SAT", "NO_DATA"))
    imgs = [np.full(shape, v) for v in (1.0, 2.0, 4.0)]
    vars_ = [np.full(shape, v) for v in (1.0, 2.0, 4.0)]
    masks = [np.zeros(shape, np.int32) for _ in range(3)]
    masks[0][5, 5] = ND                             # (5, 5): excluded from input 0
    for k in range(3):
        masks[k][6, 6] = SAT                        # (6, 6): SAT everywhere -> SAT in the coadd
    masks[1][7, 7] = SAT                            # (7, 7): SAT in one input only -> not set
    masks[2][8, 8] = BAD                            # (8, 8): BAD excluded when asked
    for k in range(3):
        masks[k][9, 9] = ND                         # (9, 9): no input -> NO_DATA
    imgs[1][10, 10] = np.nan                        # (10, 10): non-finite pixel excluded
    vars_[2][11, 11] = 0.0                          # (11, 11): zero variance excluded
    paths = [_write(tmp_path / f"m{k}.fits", imgs[k], vars_[k], masks[k], xy0=xy0) for k in range(3)]
    rep = coadd(paths, tmp_path / "c.fits", exclude_planes=["BAD"], tile_size=16)
    assert rep.n_tiles == 12 and rep.excluded_planes == ["NO_DATA", "BAD"] and rep.xy0 == xy0
    co = read_exposure(tmp_path / "c.fits")
    assert tuple(co.getXY0()) == xy0

    def mean(ks):
        w = [1.0 / vars_[k][0, 0] for k in ks]
        return sum(wi * imgs[k][0, 0] for wi, k in zip(w, ks)) / sum(w), 1.0 / sum(w)

    img, var = mean([0, 1, 2])
    assert co.image[0, 0] == pytest.approx(img) and co.variance[0, 0] == pytest.approx(var)
    assert co.image[0, 0] == pytest.approx((1 + 1 + 1) / (1 + 0.5 + 0.25))
    for (y, x), ks in (((5, 5), [1, 2]), ((8, 8), [0, 1]), ((10, 10), [0, 2]), ((11, 11), [0, 1])):
        img, var = mean(ks)
        assert co.image[y, x] == pytest.approx(img), (y, x)
        assert co.variance[y, x] == pytest.approx(var), (y, x)
    assert co.mask[6, 6] == SAT and co.mask[7, 7] == 0 and co.mask[8, 8] == 0 and co.mask[0, 0] == 0
    assert co.mask[9, 9] == ND and np.isnan(co.image[9, 9]) and np.isinf(co.variance[9, 9])
    assert rep.coverage == pytest.approx(1 - 1 / (40 * 50))


def test_coadd_maps_mask_planes_by_name(tmp_path):
    shape = (20, 20)
    planes = {"NO_DATA": 8, "SAT": 12, "BAD": 0}
    m = np.zeros(shape, np.int32)
    m[3, 3] = 1 << 12  # SAT in the second registry
    a = np.zeros(shape, np.int32)
    a[3, 3] = Mask(shape=(1, 1)).getPlaneBitMask("SAT")
    paths = [_write(tmp_path / "a.fits", np.ones(shape), np.ones(shape), a),
             _write(tmp_path / "b.fits", np.ones(shape), np.ones(shape), m, planes=planes)]
    coadd(paths, tmp_path / "c.fits")
    co = read_exposure(tmp_path / "c.fits")
    assert co.mask[3, 3] == co.getMask().getPlaneBitMask("SAT")


def test_coadd_refuses_a_whole_file_compressed_output_name(tmp_path):
    one = np.ones((20, 30))
    a = _write(tmp_path / "a.fits", one, one)
    for name in ("coadd.fits.gz", "coadd.fits.bz2"):
        with pytest.raises(InvalidInputError, match=rf"{name}: the coadd writes its planes in place through a "
                                                    r"memory map and cannot compress the whole file; .* a "
                                                    r"tile-compressed .fits.fz name"):
            coadd([a], tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits"]


def test_a_fz_coadd_is_tile_compressed_and_equal_to_the_uncompressed_one(tmp_path):
    # a .fz coadd name was refused; it now gives the same coadd, bit for bit, tile-compressed and checksummed
    rng = np.random.default_rng(3)
    inputs = []
    for i in range(3):
        img = rng.normal(100.0, 5.0, size=(70, 90))
        var = rng.uniform(20.0, 30.0, size=(70, 90))
        mask = np.zeros((70, 90), np.int32)
        mask[i * 10:i * 10 + 5, 20:30] = Mask(shape=(1, 1)).getPlaneBitMask("SAT")
        inputs.append(_write(tmp_path / f"in{i}.fits", img, var, mask=mask))
    plain = coadd(inputs, tmp_path / "coadd.fits", tile_size=32)
    packed = coadd(inputs, tmp_path / "coadd.fits.fz", tile_size=32)
    assert packed.output.endswith("coadd.fits.fz") and packed.coverage == plain.coverage
    a, b = read_exposure(tmp_path / "coadd.fits"), read_exposure(tmp_path / "coadd.fits.fz")
    for plane in ("image", "variance", "mask"):
        np.testing.assert_array_equal(getattr(b, plane), getattr(a, plane))
    assert b.getMask().getMaskPlaneDict() == a.getMask().getMaskPlaneDict()
    assert b.getXY0() == a.getXY0() and b.metadata["coadd"] == a.metadata["coadd"]
    with fits.open(tmp_path / "coadd.fits.fz", disable_image_compression=True) as hdul:
        assert [h.header.get("ZIMAGE") for h in hdul[1:4]] == [True, True, True]
        assert all(h.verify_checksum() == 1 for h in hdul if "CHECKSUM" in h.header)
    assert os.path.getsize(tmp_path / "coadd.fits.fz") < os.path.getsize(tmp_path / "coadd.fits")
    # the permissions of any new file (the compressed copy's temporary file was made 0600)
    assert os.stat(tmp_path / "coadd.fits.fz").st_mode & 0o777 == os.stat(tmp_path / "coadd.fits").st_mode & 0o777
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_coadd_refuses_inputs_off_the_grid(tmp_path):
    from astropy.wcs import WCS

    def wcs(crval):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = crval
        w.wcs.crpix = [10, 10]
        w.wcs.cdelt = [-5e-5, 5e-5]
        return w

    one = np.ones((20, 30))
    a = _write(tmp_path / "a.fits", one, one, wcs=wcs([10.0, 20.0]))
    b_shape = _write(tmp_path / "b.fits", np.ones((20, 31)), np.ones((20, 31)), wcs=wcs([10.0, 20.0]))
    b_xy0 = _write(tmp_path / "c.fits", one, one, xy0=(1, 0), wcs=wcs([10.0, 20.0]))
    b_wcs = _write(tmp_path / "d.fits", one, one, wcs=wcs([10.0, 20.001]))
    b_nowcs = _write(tmp_path / "e.fits", one, one)
    b_psf = _write(tmp_path / "f.fits", one, one, wcs=wcs([10.0, 20.0]), psf=GaussianPsf(31, 31, 2.0))
    with pytest.raises(GridMismatchError, match=r"b\.fits has shape 31x20"):
        coadd([a, b_shape], tmp_path / "o.fits")
    with pytest.raises(GridMismatchError, match=r"c\.fits has origin xy0 = \(1, 0\)"):
        coadd([a, b_xy0], tmp_path / "o.fits")
    with pytest.raises(GridMismatchError, match=r"d\.fits has a WCS different"):
        coadd([a, b_wcs], tmp_path / "o.fits")
    with pytest.raises(GridMismatchError, match=r"e\.fits has no WCS"):
        coadd([a, b_nowcs], tmp_path / "o.fits")
    with pytest.raises(InvalidInputError, match="same PSF"):
        coadd([a, b_psf], tmp_path / "o.fits")
    with pytest.raises(InvalidInputError, match="not mask planes"):
        coadd([a], tmp_path / "o.fits", exclude_planes=["BADD"])
    with pytest.raises(InvalidInputError):
        coadd([], tmp_path / "o.fits")
    fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(tmp_path / "plain.fits")
    with pytest.raises(InvalidInputError, match=r"coadd input: .*plain\.fits: no IMAGE, MASK, VARIANCE HDU.*coadd "
                                                r"reads psfmatch or LSST-style exposure files"):
        coadd([a, tmp_path / "plain.fits"], tmp_path / "o.fits")
    with pytest.raises(MissingFileError, match=r"absent\.fits.*does not exist"):
        coadd([a, tmp_path / "absent.fits"], tmp_path / "o.fits")
    assert isinstance(GridMismatchError("x"), ValueError)
    assert not (tmp_path / "o.fits").exists()
    coadd([a, b_psf], tmp_path / "o.fits", require_same_psf=False)  # allowed when asked
    assert read_exposure(tmp_path / "o.fits").getWcs() is not None


def test_coadd_refuses_inputs_in_different_units(tmp_path):
    one = np.ones((20, 30))

    def write(name, unit):
        exp = Exposure(one.astype(np.float32), None, one.astype(np.float32), psf=REFERENCE,
                       metadata={} if unit is None else {"unit": unit})
        write_exposure(exp, tmp_path / name)
        return str(tmp_path / name)

    njy, adu, none = write("a.fits", "nJy"), write("b.fits", "adu"), write("d.fits", None)
    ct, count = write("e.fits", "ct"), write("f.fits", "count")
    with pytest.raises(InvalidInputError, match=r"coadd input .*b\.fits has image unit \(BUNIT\) 'adu' and .*a\.fits "
                                                r"has 'nJy': .*bring the inputs to one unit"):
        coadd([njy, adu], tmp_path / "o.fits")
    with pytest.raises(InvalidInputError, match=r"d\.fits has image unit \(BUNIT\) none and .*a\.fits has 'nJy'"):
        coadd([njy, none], tmp_path / "o.fits")
    assert not (tmp_path / "o.fits").exists()
    coadd([ct, count], tmp_path / "o.fits")  # one unit, spelled two ways
    assert read_exposure(tmp_path / "o.fits").metadata["unit"] == "ct"


def test_coadd_decompresses_gzip_inputs_once(tmp_path, monkeypatch):
    """A tile of a .fits.gz input made astropy decompress the whole file: once per tile and input."""
    import psfmatch.batch

    rng = np.random.default_rng(3)
    plain, gz = [], []
    for i in range(2):
        image, variance = rng.normal(0.0, 1.0, (40, 50)), np.full((40, 50), 1.0 + i)
        plain.append(_write(tmp_path / f"p{i}.fits", image, variance))
        gz.append(_write(tmp_path / f"g{i}.fits.gz", image, variance))
    with open(gz[0], "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"  # really gzip-compressed
    read = []
    original = psfmatch.batch._coadd_block

    def spy(block_info=None, *, specs, **kwargs):
        for path, _, _ in specs:
            with open(path, "rb") as fh:
                read.append((path, fh.read(6)))
        return original(block_info, specs=specs, **kwargs)

    monkeypatch.setattr(psfmatch.batch, "_coadd_block", spy)
    out = tmp_path / "out"
    out.mkdir()
    coadd(plain, out / "plain.fits", tile_size=16)
    coadd(gz, out / "gz.fits", tile_size=16)
    assert read and all(head == b"SIMPLE" for _, head in read)  # every tile read uncompressed FITS
    a, b = read_exposure(out / "plain.fits"), read_exposure(out / "gz.fits")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.variance, b.variance)
    assert b.metadata["coadd"]["inputs"] == [os.path.abspath(p) for p in gz]
    assert sorted(os.listdir(out)) == ["gz.fits", "plain.fits"]  # the decompressed copies are gone

    def fail(block_info=None, **kwargs):
        raise RuntimeError("tile failed")

    monkeypatch.setattr(psfmatch.batch, "_coadd_block", fail)
    with pytest.raises(RuntimeError, match="tile failed"):
        coadd(gz, out / "failed.fits", tile_size=16)
    assert sorted(os.listdir(out)) == ["gz.fits", "plain.fits"]  # also removed on error


def test_coadd_without_dask_is_a_missing_dependency_error(tmp_path, monkeypatch):
    import sys

    from psfmatch.errors import MissingDependencyError

    one = np.ones((20, 30))
    a = _write(tmp_path / "a.fits", one, one)
    monkeypatch.setitem(sys.modules, "dask", None)  # as if dask were not installed
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(MissingDependencyError, match=r"coadd needs dask\.array: pip install 'psfmatch\[batch\]'"):
        coadd([a], tmp_path / "c.fits")


def test_coadd_argument_errors_are_typed_and_come_first(tmp_path):
    one = np.ones((20, 30))
    a = _write(tmp_path / "a.fits", one, one)
    for kwargs, match in ((dict(num_workers=-1), r"num_workers must be an integer >= 1 .*got -1"),
                          (dict(num_workers="x"), r"num_workers must be an integer >= 1 .*got 'x'"),
                          (dict(tile_size="abc"), r"tile_size must be an integer >= 16 .*got 'abc'"),
                          (dict(tile_size=8), r"tile_size must be an integer >= 16 .*got 8"),
                          (dict(exclude_planes=[3]), r"exclude_planes must hold mask plane names \(strings\)"),
                          (dict(exclude_planes=3), r"exclude_planes must be a sequence of mask plane names")):
        with pytest.raises(InvalidInputError, match=match):
            coadd([a], tmp_path / "c.fits", **kwargs)
    assert sorted(os.listdir(tmp_path)) == ["a.fits"]
    rep = coadd([a], tmp_path / "c.fits", exclude_planes=None, num_workers=1)  # None: no plane besides NO_DATA
    assert rep.excluded_planes == ["NO_DATA"]


# ---------------------------------------------------------------------------
# the command line


def _parse(argv):
    parser = argparse.ArgumentParser(prog="psfmatch")
    sub = parser.add_subparsers(dest="command")
    add_batch_parser(sub)
    return parser.parse_args(argv)


def test_cli_batch_exit_status_outputs_and_coadd(client, inputs, tmp_path, capsys):
    paths, bad = inputs
    cfg = ["-c", "kernel.active.sizeCellX=80", "-c", "kernel.active.sizeCellY=80"]
    outdir = tmp_path / "out"
    args = _parse(["batch", *paths, bad, "--reference-psf", "gaussian:sigma=2.6", "--outdir", str(outdir),
                   "--coadd", str(tmp_path / "co.fits"), "--scheduler", client.scheduler.address, *cfg])
    assert args.func is run_batch_command
    assert run_batch_command(args) == 1
    out, err = capsys.readouterr()
    assert "3 matched" in out and "1 failed" in out and "FAILED" in out and "corrupt.fits" in out
    assert err.count("psfmatch batch: [") == 4  # one line per exposure (stderr is not a terminal)
    for p in paths:
        assert (outdir / os.path.basename(p)).exists()
    assert (outdir / "psfmatch-batch-report.json").exists()
    # no coadd of a subset: the command failed, and its re-run must be able to write the coadd
    assert "coadd: not written: 1 of 4 input(s) failed; fix them and re-run the same command" in out
    assert not (tmp_path / "co.fits").exists()

    # the same command once the bad input is fixed (here: left out) finishes the batch, without --overwrite
    args = _parse(["batch", *paths, "-r", "gaussian:sigma=2.6", "-o", str(outdir), "--coadd",
                   str(tmp_path / "co.fits"), "--scheduler", client.scheduler.address, *cfg])
    assert run_batch_command(args) == 0
    out, _ = capsys.readouterr()
    assert "0 matched, 3 skipped" in out and "coadd: " in out
    co = read_exposure(tmp_path / "co.fits")
    assert co.getPsf().getSigma() == pytest.approx(2.6) and co.metadata["coadd"]["nInputs"] == 3

    args = _parse(["batch", *paths, "-r", "gaussian:sigma=2.6", "-o", str(outdir), "--coadd",
                   str(tmp_path / "co.fits"), "--scheduler", client.scheduler.address])
    with pytest.raises(OutputExistsError):
        run_batch_command(args)


def test_cli_batch_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["batch", "a.fits", "--reference-psf", "auto"])  # no --outdir
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        _parse(["batch", "a.fits", "-o", "d", "--reference-psf", "nonsense:sigma=2"])
    assert exc.value.code == 2
    assert _parse(["batch", "a.fits", "-o", "d", "-r", "AUTO"]).reference_psf == "auto"
    args = _parse(["batch", "-o", str(tmp_path), "-r", "auto"])
    assert run_batch_command(args) == 2
    assert "no inputs" in capsys.readouterr().err


@pytest.mark.parametrize("options, match", [
    (["--coadd-exclude", "SATT"], "error: --coadd-exclude needs --coadd (without a coadd it would be ignored); add "
                                  "--coadd OUT.fits to make the coadd, or leave --coadd-exclude out"),
    (["--coadd-tile", "1024"], "error: --coadd-tile needs --coadd"),
    (["--coadd-exclude", "BAD", "--coadd-tile", "64"], "error: --coadd-exclude and --coadd-tile need --coadd"),
    (["--coadd-mixed-calibration"], "error: --coadd-mixed-calibration needs --coadd"),
])
def test_cli_batch_coadd_options_without_coadd_are_usage_errors(options, match, inputs, tmp_path, monkeypatch,
                                                                 capsys):
    # a forgotten --coadd is reported before any work, not ignored (the batch used to run and exit 0)
    _forbid(monkeypatch, "match_many", "matched although --coadd-exclude/--coadd-tile came without --coadd")
    paths, _ = inputs
    out = tmp_path / "out"
    assert run_batch_command(_parse(["batch", paths[0], "-r", "gaussian:sigma=2.6", "-o", str(out), *options])) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()
    # with --coadd they are used (the plane checked before any matching: SATT is no plane of the inputs)
    with pytest.raises(InvalidInputError, match="--coadd-exclude SATT: not a mask plane of any input"):
        run_batch_command(_parse(["batch", paths[0], "-r", "gaussian:sigma=2.6", "-o", str(out), "--coadd",
                                  str(tmp_path / "co.fits"), "--coadd-exclude", "SATT"]))


@pytest.mark.parametrize("option, match", [
    (["--coadd-tile", "8"], "at least 16 pixels"),
    (["--memory-limit", "lots"], "memory size per worker such as 4GiB"),
    (["--memory-limit", "-1"], "memory size per worker"),
    (["--memory-limit", "0B"], "memory size per worker"),
    (["--scheduler", "head-node"], "Dask scheduler with its port, e.g. tcp://head:8786; got 'head-node'"),
])
def test_cli_batch_bad_option_values_are_usage_errors(option, match, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["batch", "a.fits", "-o", "d", "-r", "auto", *option])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err
    assert _parse(["batch", "a.fits", "-o", "d", "-r", "auto", "--memory-limit", "4GiB", "--scheduler",
                   "tcp://127.0.0.1:8786", "--coadd-tile", "16"]).coadd_tile == 16
    for fraction in ("0.5", "0", "1"):  # Dask's fractions of the machine's memory (0: no limit)
        assert _parse(["batch", "a.fits", "-o", "d", "-r", "auto", "--memory-limit", fraction]).memory_limit == fraction


def test_cli_batch_checks_every_destination_before_any_work(inputs, tmp_path, monkeypatch):
    _forbid(monkeypatch, "match_many", "matched before the destinations were checked")
    paths, _ = inputs
    a, b = (str(tmp_path / n) for n in ("a.fits", "b.fits"))
    shutil.copy(paths[0], a)
    shutil.copy(paths[1], b)
    before = open(b, "rb").read()
    out = str(tmp_path / "out")
    (tmp_path / "notes.json").write_text('{"mine": 1}')

    def run(*extra):
        return run_batch_command(_parse(["batch", a, b, "-r", "gaussian:sigma=2.6", "-o", out, *extra]))

    with pytest.raises(MissingFileError, match=r"cannot write --report nodir/r\.json: directory .*nodir does not"):
        run("--report", "nodir/r.json")
    with pytest.raises(MissingFileError, match=r"cannot write --coadd .*c\.fits: directory .*nodir does not"):
        run("--coadd", str(tmp_path / "nodir" / "c.fits"))
    with pytest.raises(InvalidInputError, match=r"--report .*b\.fits would overwrite the input"):
        run("--report", b)
    with pytest.raises(InvalidInputError, match=r"--coadd .*a\.fits would overwrite the matched file of"):
        run("--coadd", os.path.join(out, "a.fits"))
    with pytest.raises(InvalidInputError, match="are the same file"):
        run("--coadd", str(tmp_path / "x.fits"), "--report", str(tmp_path / "x.fits"))
    with pytest.raises(OutputExistsError, match=r"--report .*notes\.json is not a psfmatch batch report; pass "
                                                 "--overwrite"):
        run("--report", str(tmp_path / "notes.json"))
    with pytest.raises(InvalidInputError, match="is a directory"):
        run("--report", str(tmp_path))
    with pytest.raises(InvalidInputError, match="exists and is not a directory"):
        run_batch_command(_parse(["batch", a, "-r", "gaussian:sigma=2.6", "-o", b]))
    with pytest.raises(AssertionError, match="matched before"):  # --overwrite lets the batch start
        run("--report", str(tmp_path / "notes.json"), "--overwrite")
    assert open(b, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["a.fits", "b.fits", "notes.json"]


def test_cli_batch_outputs_spare_the_reference_psf_input_list_and_config_files(inputs, tmp_path, monkeypatch):
    """--coadd and --report never replace the command's other inputs (the user's PSF model, the input list, -C
    files), also through a symbolic link; --overwrite replaced them."""
    _forbid(monkeypatch, "match_many", "matched before the destinations were checked")
    paths, _ = inputs
    ref = tmp_path / "ref.fits"
    fits.PrimaryHDU(GaussianPsf(31, 31, 2.6).computeKernelImage((0, 0))).writeto(ref)
    (tmp_path / "ref_link.fits").symlink_to(ref)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths[:2]) + "\n")
    overrides = tmp_path / "overrides.py"
    overrides.write_text("config.kernel.active.sizeCellX = 64\n")
    before = {p: p.read_bytes() for p in (ref, listing, overrides)}
    out = str(tmp_path / "out")
    cases = [
        (["-r", f"image:{ref}", "--coadd", str(tmp_path / "ref_link.fits")],
         r"--coadd .*ref_link\.fits would overwrite the input .*ref\.fits \(the reference PSF"),
        (["-r", "gaussian:sigma=2.6", "--input-list", str(listing), "--report", str(listing)],
         r"--report .*list\.txt would overwrite the input .*list\.txt \(the input list, --input-list"),
        (["-r", "gaussian:sigma=2.6", "-C", str(overrides), "--coadd", str(overrides)],
         r"--coadd .*overrides\.py would overwrite the input .*overrides\.py \(config file -C"),
    ]
    for extra, message in cases:
        argv = ["batch", *([] if "--input-list" in extra else paths[:2]), "-o", out, "--overwrite", *extra]
        with pytest.raises(InvalidInputError, match=message):
            run_batch_command(_parse(argv))
    assert all(p.read_bytes() == data for p, data in before.items())
    assert sorted(os.listdir(tmp_path)) == ["list.txt", "overrides.py", "ref.fits", "ref_link.fits"]


def test_cli_batch_checks_the_coadd_options_before_any_work(inputs, tmp_path, monkeypatch):
    _forbid(monkeypatch, "match_many", "matched before the coadd options were checked")
    paths, _ = inputs
    out = str(tmp_path / "out")

    def run(*extra, inputs=paths[:2]):
        return run_batch_command(_parse(["batch", *inputs, "-r", "gaussian:sigma=2.6", "-o", out, *extra]))

    with pytest.raises(InvalidInputError, match=r"--coadd-exclude SATT: not a mask plane of any input; known planes: "
                                                r"BAD,CR,.*SAT"):
        run("--coadd", str(tmp_path / "c.fits"), "--coadd-exclude", "BAD,SATT")
    with pytest.raises(InvalidInputError, match=r"--coadd .*c\.fits\.gz: the coadd writes its planes in place"):
        run("--coadd", str(tmp_path / "c.fits.gz"))
    # NO_DATA (which matching adds) and the inputs' planes are fine; a plain image gets the default planes
    with pytest.raises(AssertionError, match="matched before"):
        run("--coadd", str(tmp_path / "c.fits"), "--coadd-exclude", "NO_DATA,SAT,BAD")
    fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(tmp_path / "plain.fits")
    with pytest.raises(AssertionError, match="matched before"):
        run("--coadd", str(tmp_path / "c.fits"), "--coadd-exclude", "SAT", inputs=[str(tmp_path / "plain.fits")])
    assert sorted(os.listdir(tmp_path)) == ["plain.fits"]
    # the headers read for the grid check give the mask planes too: each input's are read once, not twice
    import psfmatch.io

    real, read = psfmatch.io.read_exposure_info, []
    monkeypatch.setattr(psfmatch.io, "read_exposure_info", lambda path, **kw: read.append(path) or real(path, **kw))
    with pytest.raises(AssertionError, match="matched before"):
        run("--coadd", str(tmp_path / "c.fits"), "--coadd-exclude", "SAT")
    assert sorted(read) == sorted(paths[:2])


def test_cli_batch_prints_the_summary_before_writing_the_report(client, inputs, tmp_path, capsys, monkeypatch):
    from psfmatch.batch import BatchReport

    write_json = BatchReport.write_json

    def disk_full(self, path):  # (the report marked running at the start is written: the final write fails)
        if self.state != "complete":
            return write_json(self, path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(BatchReport, "write_json", disk_full)
    paths, _ = inputs
    args = _parse(["batch", paths[0], "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "out"), "--scheduler",
                   client.scheduler.address, "-c", "kernel.active.sizeCellX=80", "-c", "kernel.active.sizeCellY=80"])
    with pytest.raises(OSError, match="No space left"):
        run_batch_command(args)
    out = capsys.readouterr().out
    assert "1 exposure(s): 1 matched" in out and "report:" not in out


def test_cli_batch_quiet_shows_only_the_failures(client, inputs, tmp_path, capsys):
    paths, bad = inputs
    args = _parse(["batch", paths[0], bad, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "out"), "--scheduler",
                   client.scheduler.address, "--coadd", str(tmp_path / "co.fits"),
                   "-c", "kernel.active.sizeCellX=80", "-c", "kernel.active.sizeCellY=80"])
    args.quiet = True  # as `psfmatch -q batch` / `psfmatch batch -q` set it
    assert run_batch_command(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"psfmatch batch: FAILED {os.path.abspath(bad)}: CorruptFileError: ")
    assert lines[1].startswith("coadd: not written: 1 of 2 input(s) failed")
    assert not (tmp_path / "co.fits").exists() and (tmp_path / "out" / "psfmatch-batch-report.json").exists()


def test_cli_main_runs_batch(client, inputs, tmp_path, capsys):
    from psfmatch import cli

    try:
        code = cli.main(["batch", "--help"])
    except SystemExit as exc:  # pragma: no cover - depends on cli.main
        code = exc.code
    if code != 0:
        pytest.skip("'batch' is not registered on the psfmatch command yet (cli.py: add_batch_parser)")
    capsys.readouterr()
    paths, bad = inputs
    opts = ["-r", "auto", "-o", str(tmp_path / "out"), "--scheduler", client.scheduler.address,
            "-c", "kernel.active.sizeCellX=80", "-c", "kernel.active.sizeCellY=80"]
    assert cli.main(["batch", *paths, bad, *opts]) == 1
    out = capsys.readouterr().out
    assert "3 matched" in out and "1 failed" in out and "chosen automatically" in out
    assert cli.main(["batch", *paths, *opts]) == 0
    assert cli.main(["batch", "-r", "auto", "-o", str(tmp_path / "out")]) == 2


def test_grid_mismatch_error_is_one_class_in_errors_and_batch():
    import psfmatch.errors

    assert psfmatch.batch.GridMismatchError is psfmatch.errors.GridMismatchError
    assert issubclass(psfmatch.errors.GridMismatchError, psfmatch.errors.InvalidInputError)


def test_config_hash_of_earlier_versions_is_kept_unless_a_field_is_set_to_its_default():
    """Recording the explicit fields redid every output made with any -c after an upgrade; only a field set
    explicitly to its default (which the values do not show) changes the hash now."""
    import hashlib
    import json

    from psfmatch.batch import _config_hash
    from psfmatch.config import apply_overrides

    def earlier(config, ks):  # the hash as the previous version computed it
        text = json.dumps({"config": config.to_dict(), "kernelSum": float(ks)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    for overrides in ([], ["kernel.active.kernelSize=25"], ["kernel.name=DF"], ["maxMemoryGiB=16"]):
        config = apply_overrides(ModelPsfMatchConfig(), overrides)
        assert _config_hash(config, 1.0) == earlier(config, 1.0), overrides
    config = apply_overrides(ModelPsfMatchConfig(), ["kernel.active.kernelSize=21"])  # the default, explicit
    assert _config_hash(config, 1.0) != earlier(config, 1.0)


def test_path_checks_cost_a_stat_per_file(tmp_path, monkeypatch):
    """The symlink-proof checks resolved every path component of every pair: 92 system calls an input."""
    from psfmatch.batch import _check_extra_output, _check_paths
    raw = tmp_path / "raw"
    raw.mkdir()
    paths = []
    for i in range(50):
        (raw / f"e{i}.fits").write_bytes(b"")
        paths.append(str(raw / f"e{i}.fits"))
    out = tmp_path / "out"
    out.mkdir()
    calls = []
    real_stat, real_lstat = os.stat, os.lstat
    monkeypatch.setattr(os, "stat", lambda *a, **k: calls.append(1) or real_stat(*a, **k))
    monkeypatch.setattr(os, "lstat", lambda *a, **k: calls.append(1) or real_lstat(*a, **k))
    _check_paths(paths, str(out))
    _check_extra_output(str(tmp_path / "report.json"), "--report", paths, str(out))
    assert len(calls) <= 2 * len(paths) + 20


def test_outputs_whose_fits_chose_other_stamp_sizes_coadd(inputs, tmp_path):
    """Each output carries the reference on the stamp its own fit used: two exposures matched with different
    kernel sizes carry it on 25 and 35 px stamps, and their coadd was refused ("stamp shapes differ")."""
    outs = []
    for i, k in enumerate((11, 21)):
        config = _config()
        config.autoKernel = False
        config.kernel.active.kernelSize = k
        out = tmp_path / f"m{i}.fits"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert match_one(inputs[0][i], REFERENCE, out, config).status == MATCHED
        outs.append(out)
    shapes = [read_exposure(p).getPsf().computeKernelImage((80, 80)).shape for p in outs]
    assert shapes[0] != shapes[1]
    result = coadd(outs, tmp_path / "coadd.fits")
    psf = read_exposure(tmp_path / "coadd.fits").getPsf()
    assert psf.computeKernelImage((80, 80)).shape == max(shapes)  # the larger stamp, wings kept
    assert len(result.inputs) == 2 and result.psf == repr(psf)
    # a different reference is still refused
    other = tmp_path / "other.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        match_one(inputs[0][2], GaussianPsf(31, 31, 2.9), other, _config())
    with pytest.raises(InvalidInputError, match=r"do not carry the same PSF \(kernel images differ by"):
        coadd([outs[0], other], tmp_path / "c2.fits")


@pytest.mark.parametrize("options, match", [
    ({"margin": -1}, r"margin must be a finite number >= 0; got -1"),
    ({"grid": 2.7}, r"grid must be an integer >= 1 .*; got 2\.7"),
    ({"grid": 0}, r"grid must be an integer >= 1"),
    ({"stamp": 21.9}, r"stamp must be an integer >= 3"),
    ({"stamp": 20}, r"stamp must be an odd integer >= 3; got 20"),
    ({"margin": True}, r"margin must be a finite number >= 0; got True"),
    ({"kind": "doublegaussian", "wing_ratio": float("inf")}, r"wing_ratio must be a finite number; got inf"),
    ({"kind": "doublegaussian", "b": None}, r"b must be a number; got None"),
    ({"kind": "moffat"}, r"kind must be 'gaussian' or 'doublegaussian'"),
])
def test_reference_options_are_checked_before_any_work(inputs, tmp_path, options, match):
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError, match=match):
        match_many(inputs[0][:1], "auto", out, client=False, reference_options=options)
    assert not out.exists()  # (it was created, and the cluster started, before the check)


def test_reference_options_take_numpy_numbers_and_refuse_absurd_ones(inputs):
    from psfmatch.batch import choose_reference_psf

    plain = choose_reference_psf(inputs[0][:1], margin=0.1, floor=1)
    numpy = choose_reference_psf(inputs[0][:1], margin=np.float32(0.1), floor=np.int64(1))
    assert numpy.sigma == pytest.approx(plain.sigma, rel=1e-7)
    with pytest.raises(InvalidInputError, match=r"margin 1e\+200 and floor 0\.7 give no finite reference sigma"):
        choose_reference_psf(inputs[0][:1], margin=1e200)


@pytest.mark.parametrize("bad", ["abc", None, [1.0, 2.0], -1.0])
def test_match_one_records_a_bad_kernel_sum_as_a_typed_failure(inputs, tmp_path, bad):
    r = match_one(inputs[0][0], REFERENCE, tmp_path / "o.fits", _config(), kernelSum=bad)
    assert r.status == FAILED and r.error_type == "InvalidInputError" and "kernelSum must be" in r.error_message


def test_a_warning_is_reported_once(inputs, tmp_path):
    """The task both warns and logs: the report listed most warnings twice."""
    config = _config()
    config.autoKernel = False
    config.kernel.active.kernelSize = 5  # too small: a residual warning
    r = match_one(inputs[0][0], REFERENCE, tmp_path / "o.fits", config)
    assert r.status == MATCHED and r.warnings
    bodies = [w.split(": ", 1)[-1] for w in r.warnings]
    assert len(bodies) == len(set(bodies)) and any("KernelQualityWarning" in w for w in r.warnings)


def test_coadd_keeps_every_bit_with_a_plane_at_bit_31(tmp_path):
    """A plane held at bit 31 by the first input and at bit 9 by the second: the remapped pixel went through
    float64 as +2**31 and reached the int32 plane as INT_MIN, losing its other bits (SAT); and NO_DATA added
    at bit 31 raised OverflowError."""
    from psfmatch.image import DEFAULT_MASK_PLANES

    paths = []
    for k, xbit in enumerate((31, 9)):
        mask = np.zeros((32, 32), np.int32)
        planes = {**DEFAULT_MASK_PLANES, "X": xbit}
        mask[5, 5] = Mask(mask, planes=planes).getPlaneBitMask(["X", "SAT"])
        paths.append(_write(tmp_path / f"in{k}.fits", np.ones((32, 32)), np.ones((32, 32)), mask, planes=planes))
    coadd(paths, tmp_path / "co.fits", tile_size=16)
    co = read_exposure(tmp_path / "co.fits")
    m = co.getMask()
    assert m.getMaskPlaneDict()["X"] == 31 and int(co.mask[5, 5]) == m.getPlaneBitMask(["X", "SAT"])
    # 31 planes in use and no NO_DATA: the coadd adds it at bit 31
    full = {name: bit for name, bit in DEFAULT_MASK_PLANES.items() if name != "NO_DATA"}
    for b in range(31):
        if b not in full.values():
            full[f"P{b}"] = b
    image = np.ones((32, 32))
    image[:4] = np.nan  # no input covers these rows
    a = _write(tmp_path / "full.fits", image, np.ones((32, 32)), planes=full)
    coadd([a], tmp_path / "co31.fits", tile_size=16)
    co = read_exposure(tmp_path / "co31.fits")
    assert co.getMask().getMaskPlaneDict()["NO_DATA"] == 31
    assert co.getMask().planes_set("NO_DATA")[:4].all() and not co.getMask().planes_set("NO_DATA")[4:].any()


def test_resume_verifies_the_checksums_of_a_tile_compressed_output(tmp_path):
    # a .fz input gives a tile-compressed output, whose planes' checksums are those of their tables of
    # compressed tiles: astropy shows them only with the compression disabled, so the resume check
    # took an output whose image header was damaged (the tiles still decompress) for complete
    src = tmp_path / "exp.fits.fz"
    write_exposure(make_demo_exposure(SIZE, seed=5, n_stars=8), src)
    out = tmp_path / "out" / "exp.fits.fz"
    out.parent.mkdir()
    assert match_one(str(src), REFERENCE, str(out), config=_config()).status == MATCHED
    assert check_matched_output(out) == (True, "complete", check_matched_output(out)[2])
    with fits.open(out, disable_image_compression=True) as hdul:
        assert hdul["IMAGE"].header["ZIMAGE"] is True  # (tile-compressed indeed)
        start = hdul["IMAGE"].fileinfo()["hdrLoc"]
    before = read_exposure(out).image
    data = bytearray(out.read_bytes())
    at = data.index(b"/ compression algorithm", start)  # a comment: the tiles decompress as before
    data[at + 2:at + 5] = b"COM"
    out.write_bytes(bytes(data))
    np.testing.assert_array_equal(read_exposure(out).image, before)  # the damage is invisible in the pixels
    assert check_matched_output(out)[:2] == (False, "corrupt output (checksum of HDU 1 'IMAGE' fails)")


# ---------------------------------------------------------------------------
# outputs cut short, outdir checks, worker counts, the workers' environment, input lists, killed workers


def test_an_output_cut_short_at_or_inside_an_hdu_is_redone(inputs, tmp_path):
    """A file cut where an HDU starts loses the PSF and METADATA HDUs without any astropy warning: every HDU of
    a matched file is required, so the resume check redoes it (it was skipped as complete, and the coadd failed)."""
    src = tmp_path / "in.fits"
    shutil.copy(inputs[0][0], src)
    out = tmp_path / "out.fits"
    assert match_one(src, REFERENCE, out, _config()).status == MATCHED
    whole = out.read_bytes()
    with fits.open(out) as hdul:
        starts = {h.name: hdul.fileinfo(i)["hdrLoc"] for i, h in enumerate(hdul)}
    cases = [(starts["PSF"], "incomplete output: no PSF, METADATA HDU (the file was cut short)"),
             (starts["METADATA"], "incomplete output: no METADATA HDU (the file was cut short)"),
             (starts["METADATA"] + 400, "corrupt output (.*HDU 5.*ends inside this HDU's header"),
             (starts["METADATA"] + 2880 + 10, "corrupt output (.*METADATA.*promises .* bytes of data")]
    for cut, reason in cases:
        out.write_bytes(whole[:cut])
        ok, why, _ = check_matched_output(out)
        assert not ok and re.fullmatch(re.escape(reason).replace(r"\.\*", ".*") + ".*", why), (cut, why)
    out.write_bytes(whole + b"junk after the last HDU" * 4)  # astropy: "extra bytes after the last HDU"
    assert not check_matched_output(out)[0]
    out.write_bytes(whole[:starts["PSF"]])
    r = match_one(src, REFERENCE, out, _config())
    assert r.status == MATCHED and r.reason == "incomplete output: no PSF, METADATA HDU (the file was cut short)"
    assert check_matched_output(out)[:2] == (True, "complete")
    assert read_exposure(out).getPsf().getSigma() == pytest.approx(2.6)


def test_an_unwritable_outdir_is_refused_before_the_cluster_starts(inputs, monkeypatch):
    from psfmatch.errors import OutputNotWritableError

    folder = "/proc/self/fdinfo"  # (a folder no one, root included, can create files in)
    if not os.path.isdir(folder):
        pytest.skip("needs Linux's /proc")

    _forbid(monkeypatch, "dask_client", "the cluster started before outdir was checked")
    with pytest.raises(OutputNotWritableError, match=r"outdir /proc/self/fdinfo is not writable \(.*\): no matched "
                                                     r"file could be written there; make it writable"):
        match_many(inputs[0][:1], REFERENCE, folder)
    with pytest.raises(OutputNotWritableError, match=r"cannot create outdir /proc/psfmatch-no-such/out in /proc "
                                                     r"\(.*\); create it yourself, or give an outdir in a writable"):
        match_many(inputs[0][:1], REFERENCE, "/proc/psfmatch-no-such/out")


def test_an_outdir_that_cannot_be_made_is_a_typed_error_and_comes_after_the_dependency_check(inputs, tmp_path,
                                                                                           monkeypatch, capsys):
    import sys

    paths = inputs[0][:1]
    (tmp_path / "file").write_text("x")
    (tmp_path / "broken").symlink_to("no-such-target")
    with pytest.raises(InvalidInputError, match=r"outdir .*file/sub cannot be created: .*file on its path is a "
                                                r"file; give an outdir in an existing directory"):
        match_many(paths, REFERENCE, tmp_path / "file" / "sub")
    with pytest.raises(InvalidInputError, match=r"outdir .*broken is a symbolic link to no-such-target, which does "
                                                r"not exist; create its target directory or give another outdir"):
        match_many(paths, REFERENCE, tmp_path / "broken")
    for empty in ("", " "):  # not the current directory
        with pytest.raises(InvalidInputError, match=r"outdir is empty \(.*\); give the directory for the matched"):
            match_many(paths, REFERENCE, empty)
        with pytest.raises(SystemExit) as exc:
            _parse(["batch", "a.fits", "-r", "auto", "-o", empty])
        assert exc.value.code == 2
        assert "argument --outdir/-o: expected the directory for the matched files" in capsys.readouterr().err
    # without distributed: the MissingDependencyError comes before outdir is made
    from psfmatch.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingDependencyError, match="needs Dask's distributed scheduler"):
        match_many(paths, REFERENCE, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["broken", "file"]


def test_absurd_worker_counts_are_refused_before_any_work(inputs, tmp_path, monkeypatch, capsys):
    import psfmatch.batch
    from psfmatch.batch import _cpu_count, dask_client

    top = max(64, 8 * _cpu_count())

    def boom(*args, **kwargs):  # (a huge count made dask build worker specs until the memory ran out)
        raise AssertionError("a LocalCluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", boom)
    for n in (10 ** 9, top + 1, 0, 2.5, True):
        with pytest.raises(InvalidInputError, match=rf"n_workers must be an integer from 1 to {top} \(8 worker "
                                                    rf"processes per core.*got {re.escape(repr(n))}; for more workers"):
            match_many(inputs[0][:1], REFERENCE, tmp_path / "out", n_workers=n)
        with pytest.raises(InvalidInputError, match=f"n_workers must be an integer from 1 to {top}"):
            with dask_client(n_workers=n):
                pass
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:
        _parse(["batch", "a.fits", "-r", "auto", "-o", "d", "--workers", "99999999999999999999"])
    assert exc.value.code == 2
    assert (f"argument --workers: expected at most {top} worker processes (8 per core, at least 64; this machine has "
            f"{_cpu_count()} cores); got '99999999999999999999': give fewer, or start a Dask cluster of your own and "
            "pass --scheduler") in capsys.readouterr().err
    assert _parse(["batch", "a.fits", "-r", "auto", "-o", "d", "--workers", str(top)]).workers == top
    assert psfmatch.batch._local_workers(None) == _cpu_count()


@pytest.mark.parametrize("value, expected", [("abc", None), ("0", None), (" -2 ", None), ("", None), ("3", "3")])
def test_an_invalid_psfmatch_num_threads_is_replaced_for_the_workers_with_one_warning(value, expected, monkeypatch):
    from psfmatch.batch import _worker_threads, dask_client

    seen = {}

    class Started(Exception):
        pass

    def cluster(*args, **kwargs):  # what the worker processes would inherit
        seen["env"] = os.environ.get("PSFMATCH_NUM_THREADS")
        raise Started

    monkeypatch.setattr(distributed, "LocalCluster", cluster)
    monkeypatch.setenv("PSFMATCH_NUM_THREADS", value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Started):
            with dask_client(n_workers=2, memory_limit="1GiB"):
                pass
    assert seen["env"] == (expected or str(_worker_threads(2, 1)))
    assert os.environ["PSFMATCH_NUM_THREADS"] == value  # restored
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if value.strip() and expected is None:
        assert said == [f"PSFMATCH_NUM_THREADS={value.strip()!r} is not a positive integer: the local cluster's "
                        f"workers use {seen['env']} psfmatch thread(s) per task instead (the cores left to each); "
                        "set it to a positive integer or unset it"]
    else:
        assert said == []


def test_an_input_list_that_is_not_a_text_file_is_a_typed_error(inputs, tmp_path):
    from psfmatch.batch_cli import _inputs
    from psfmatch.errors import UnsupportedFormatError

    paths, _ = inputs
    (tmp_path / "binary.lst").write_bytes(b"a.fits\n\xc0\xff\x00\x01")
    remedy = "--input-list must be a text file with one input path per line"
    for listing, what in ((paths[0], "is a FITS file"), (str(tmp_path), "is a directory"),
                          (str(tmp_path / "binary.lst"), r"is not a text file \(byte 7 is not UTF-8 text\)")):
        with pytest.raises(UnsupportedFormatError, match=rf"--input-list '.*' {what}; {re.escape(remedy)}"):
            run_batch_command(_parse(["batch", "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "out"),
                                      "--input-list", listing]))
    listing = tmp_path / "list.txt"
    listing.write_text(f"# the visits\n{paths[0]}\n\n  {paths[1]}  \n")
    args = _parse(["batch", paths[2], "-r", "auto", "-o", "d", "--input-list", str(listing)])
    assert _inputs(args) == [paths[2], paths[0], paths[1]]
    assert not (tmp_path / "out").exists()


def test_a_killed_worker_failure_names_the_memory_limit_and_the_remedy(inputs, tmp_path, monkeypatch):
    import types

    import psfmatch.batch
    from psfmatch.batch import _engine_failure

    def killed(job):  # what the scheduler raises when every worker that ran the task died
        raise distributed.KilledWorker(job["output"], types.SimpleNamespace(address="tcp://127.0.0.1:1"), 3)

    monkeypatch.setattr(psfmatch.batch, "_match_task", killed)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, memory_limit="300MiB",
                            dashboard_address=":0") as c:
        reports = match_many(inputs[0][:1], REFERENCE, tmp_path / "out", client=c, progress=False)
    r = reports[0]
    assert r.status == FAILED and r.error_type == "KilledWorker" and r.reason == "engine failure"
    assert r.error_message.startswith(
        "the workers that ran this exposure died: most likely they were killed at their memory limit of 300.00 MiB "
        "per worker (the exposure needs more); give the cluster's workers more memory, or run fewer of them on "
        "each machine (distributed: Attempted to run task")
    assert "memory limit of 300.00 MiB" in reports.summary()  # (the start of the message: the summary shows it)
    exc = distributed.KilledWorker("k", types.SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
    local = _engine_failure(exc, {"started_cluster": True, "memory_limit_per_worker": 200 * 10 ** 6})
    assert ("killed at their memory limit of 190.73 MiB per worker (the exposure needs more); raise the memory "
            "limit per worker (psfmatch batch --memory-limit, match_many(memory_limit=)) or run fewer workers "
            "(--workers, n_workers=) so that each gets more memory") in local
    assert "the workers have no memory limit, so most likely the machine ran out of memory" in _engine_failure(
        exc, {"started_cluster": True, "memory_limit_per_worker": "0"})
    assert _engine_failure(ValueError("other"), {}) == "other"


def test_the_summary_is_shown_once_with_verbose_logging(client, inputs, tmp_path, capsys, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="psfmatch")
    args = _parse(["batch", inputs[0][0], "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "out"), "--scheduler",
                   client.scheduler.address, "-c", "kernel.active.sizeCellX=80", "-c", "kernel.active.sizeCellY=80"])
    assert run_batch_command(args) == 0
    out = capsys.readouterr().out
    shown = out + caplog.text
    assert shown.count("1 exposure(s): 1 matched") == 1 and shown.count("reference PSF: Gaussian") == 1


def test_an_input_without_a_psf_fails_with_the_remedy_a_batch_user_can_follow(tmp_path):
    """It failed with 'exposure does not contain a Psf model', naming neither the file nor a remedy; the remedy is
    now batch's own --psf."""
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.random.default_rng(0).normal(100.0, 5.0, size=(64, 64)).astype(np.float32)).writeto(plain)
    (tmp_path / "out").mkdir()
    report = match_one(str(plain), REFERENCE, str(tmp_path / "out" / "plain.fits"), config=_config())
    assert report.status == FAILED and report.error_type == "MissingPsfError"
    assert report.error_message == (f"{plain} carries no PSF model; give its PSF with psfmatch batch --psf FILE|SPEC "
                                    "(one for every input), or as a second column of --input-list (one per input); "
                                    "in Python, match_many(psf=...)")
    assert not (tmp_path / "out" / "plain.fits").exists()


def test_the_json_report_records_what_the_batch_matched_with(client, inputs, tmp_path):
    """The report did not record the configuration, kernelSum or fingerprint mode: only each output did."""
    paths, _ = inputs
    config = _config()
    config.kernel.active.kernelSize = 21  # explicitly, to its default
    report = match_many(paths[:1], REFERENCE, tmp_path / "out", config=config, client=client, progress=False,
                        kernelSum=2.0, fingerprint="sha256", report_path=tmp_path / "report.json")
    saved = json.loads((tmp_path / "report.json").read_text())["settings"]
    assert saved["kernelSum"] == 2.0 and saved["fingerprint"] == "sha256" and saved["force"] is False
    assert saved["config"]["kernel"]["AL"]["sizeCellX"] == 80
    assert saved["explicitFields"] == ["config.kernel['AL'].kernelSize"]
    with fits.open(report[0].output) as hdul:  # the marker's configuration hash
        assert hdul[0].header["BATCHCFG"] == saved["configHash"]


def test_switching_the_fingerprint_mode_is_reported_as_such_not_as_a_changed_input(inputs, tmp_path):
    """The output was redone with the reason 'input changed', though the input was untouched."""
    src = tmp_path / "in.fits"
    shutil.copy(inputs[0][0], src)
    out = tmp_path / "out.fits"
    assert match_one(src, REFERENCE, out, _config(), fingerprint="sha256").status == MATCHED
    ok, reason, _ = check_matched_output(out, {**dict(fits.getheader(out)), "BATCHFPR": "stat:1:2"})
    assert not ok and reason == "stale output: fingerprint mode changed (sha256 -> stat)"
    r = match_one(src, REFERENCE, out, _config(), fingerprint="stat")
    assert r.status == MATCHED and r.reason == "stale output: fingerprint mode changed (sha256 -> stat)"
    assert "(stale output: fingerprint mode changed (sha256 -> stat)" in r.line()
    assert match_one(src, REFERENCE, out, _config(), fingerprint="stat").reason == "complete"


def test_an_interrupted_run_leaves_a_report_that_says_so_not_the_previous_one(client, inputs, tmp_path, capsys):
    """Ctrl-C (or a killed process) left the previous run's report in place, to be read as this run's."""
    paths, _ = inputs
    outdir, report = tmp_path / "out", tmp_path / "out" / "psfmatch-batch-report.json"
    first = match_many(paths, REFERENCE, outdir, config=_config(), client=client, progress=False, report_path=report)
    assert first.ok and json.loads(report.read_text())["state"] == "complete"
    seen = []

    def ctrl_c(rep, done, total):  # Ctrl-C once the first exposure is done
        seen.append(json.loads(report.read_text()))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        match_many(paths, REFERENCE, outdir, config=_config(), client=client, force=True, progress=ctrl_c,
                   report_path=report)
    running = seen[0]  # written before any match: the earlier report is gone at once
    assert running["state"] == "running" and running["exposures"] == []
    assert running["counts"] == {"matched": 0, "skipped": 0, "failed": 0, "pending": 3}
    assert running["pending"] == [os.path.abspath(p) for p in paths]
    assert re.search(r"^this batch started at .* \(host .*, process \d+\) and has not finished: if that process no "
                     r"longer runs, it was killed; re-run the same command to finish the batch", running["note"])
    saved = json.loads(report.read_text())
    assert saved["state"] == "interrupted"
    assert saved["counts"] == {"matched": 1, "skipped": 0, "failed": 0, "pending": 2}
    assert len(saved["exposures"]) == 1 and saved["exposures"][0]["reason"] == "forced"
    assert sorted(saved["pending"] + [saved["exposures"][0]["path"]]) == sorted(os.path.abspath(p) for p in paths)
    assert saved["note"] == ("this batch stopped after 1 of 3 exposure(s) (KeyboardInterrupt); re-run the same "
                             "command to finish it (the complete outputs are skipped)")
    # psfmatch batch replaces such a report (no --overwrite) and finishes the batch
    args = _parse(["batch", *paths, "-r", "gaussian:sigma=2.6,size=31", "-o", str(outdir), "--scheduler",
                   client.scheduler.address, "-c", "kernel.active.sizeCellX=80", "-c", "kernel.active.sizeCellY=80",
                   "-c", "kernel.active.spatialKernelOrder=1"])
    assert run_batch_command(args) == 0
    assert "0 matched, 3 skipped" in capsys.readouterr().out
    final = json.loads(report.read_text())
    assert final["state"] == "complete" and "pending" not in final and final["counts"]["skipped"] == 3


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_scheduler_is_a_typed_error_naming_the_address_and_the_remedy(inputs, tmp_path, capsys):
    """An address where nothing listens waited 30 s, then failed with distributed's OSError and no remedy."""
    import time

    from psfmatch import cli
    from psfmatch.batch import SchedulerUnreachableError

    address = f"tcp://127.0.0.1:{_free_port()}"  # refuses connections
    # (the cause, when distributed's last attempt saw it before the timeout)
    message = (rf"no Dask scheduler answered at {re.escape(address)} within 0\.5 s( \(connection refused\))?: check "
               r"that the scheduler is running \(dask scheduler prints its address\) and reachable from this "
               r"machine, or give a longer timeout \(psfmatch batch --scheduler-timeout, connect_timeout=\); omit "
               r"--scheduler \(client=None\) to start a local cluster instead")
    t = time.perf_counter()
    with pytest.raises(SchedulerUnreachableError, match=message):
        match_many(inputs[0][:1], REFERENCE, tmp_path / "out", client=address, connect_timeout=0.5, progress=False,
                   report_path=tmp_path / "report.json")
    assert time.perf_counter() - t < 10
    assert not (tmp_path / "report.json").exists() and os.listdir(tmp_path / "out") == []
    assert issubclass(SchedulerUnreachableError, ConnectionError)
    code = cli.main(["batch", inputs[0][0], "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "out"), "--scheduler",
                     address, "--scheduler-timeout", "0.5"])
    assert code == 1 and re.search(message, capsys.readouterr().err)
    with pytest.raises(InvalidInputError, match="connect_timeout must be a positive number of seconds; got 0"):
        match_many(inputs[0][:1], REFERENCE, tmp_path / "out", client=address, connect_timeout=0)
    with pytest.raises(SystemExit) as exc:
        _parse(["batch", "a.fits", "-o", "d", "-r", "auto", "--scheduler", address, "--scheduler-timeout", "0"])
    assert exc.value.code == 2


def _plain_image(path, seed):
    """A plain FITS image (no PSF, mask or variance) of the demo's stars."""
    exposure = make_demo_exposure(SIZE, seed=seed, n_stars=8)
    fits.PrimaryHDU(exposure.image.astype(np.float32)).writeto(path)
    return str(path)


def _psf_model(sigma):
    """The demo's spatially varying PSF with base sigma ``sigma``."""
    return VariableGaussianPsf(21, 21, Box2I((0, 0), (SIZE, SIZE)), sigma=[sigma, 0.15, 0.05, 0.0, 0.0, 0.0],
                               e1=[0.0, 0.04, -0.02], e2=[0.02, 0.0, 0.03])


def _psf_file(path, sigma):
    """A PSF file (psfmatch's format: an exposure file carrying the PSF) of :func:`_psf_model`."""
    write_exposure(Exposure(np.zeros((4, 4), np.float32), psf=_psf_model(sigma)), path, overwrite=True)
    return str(path)


def test_cli_batch_psf_matches_plain_images_and_a_changed_psf_redoes_the_output(client, tmp_path, capsys):
    """batch had no --psf: plain images could not be batch-matched.  --psf gives one PSF for every input, the input
    list one per input; the output and its completion marker record the PSF used."""
    a, b = _plain_image(tmp_path / "a.fits", 0), _plain_image(tmp_path / "b.fits", 1)
    psf_a, psf_b = _psf_file(tmp_path / "psfa.fits", 1.8), _psf_file(tmp_path / "psfb.fits", 1.9)
    outdir = tmp_path / "out"
    opts = ["-o", str(outdir), "--scheduler", client.scheduler.address, "-c", "kernel.active.sizeCellX=80",
            "-c", "kernel.active.sizeCellY=80", "-c", "kernel.active.spatialKernelOrder=1"]

    def run(*argv):
        code = run_batch_command(_parse(["batch", *argv, *opts]))
        capsys.readouterr()
        return code, json.loads((outdir / "psfmatch-batch-report.json").read_text())

    code, saved = run(a, b, "-r", "gaussian:sigma=2.6", "--psf", f"psfmatch:{psf_a}")
    assert code == 0 and saved["counts"]["matched"] == 2
    assert saved["settings"]["sciencePsf"] == f"psfmatch:{os.path.abspath(psf_a)}"
    assert [e["psf"] for e in saved["exposures"]] == [f"psfmatch:{os.path.abspath(psf_a)}"] * 2
    for name in ("a.fits", "b.fits"):
        matched = read_exposure(outdir / name)
        assert matched.getPsf().getSigma() == pytest.approx(2.6)
        record = matched.metadata["psfmatchBatch"]["sciencePsf"]
        assert record["hash"] == fits.getheader(outdir / name)["BATCHPSF"]
    assert run(a, b, "-r", "gaussian:sigma=2.6", "--psf", f"psfmatch:{psf_a}")[1]["counts"]["skipped"] == 2

    # b gets its own PSF from the input list (a keeps --psf's): only b is redone, and says why
    listing = tmp_path / "list.txt"
    listing.write_text(f"{b} psfmatch:{psf_b}\n")
    code, saved = run(a, "--input-list", str(listing), "-r", "gaussian:sigma=2.6", "--psf", f"psfmatch:{psf_a}")
    assert code == 0 and [e["status"] for e in saved["exposures"]] == [SKIPPED, MATCHED]
    assert saved["exposures"][1]["reason"] == "stale output: science PSF (--psf) changed"
    assert saved["exposures"][1]["psf"] == f"psfmatch:{os.path.abspath(psf_b)}"
    assert saved["settings"]["sciencePsf"] == "per input"

    # the same PSF file with another content redoes a; without --psf, a fails with the remedy
    _psf_file(psf_a, 1.7)
    code, saved = run(a, "-r", "gaussian:sigma=2.6", "--psf", f"psfmatch:{psf_a}")
    assert saved["exposures"][0]["reason"] == "stale output: science PSF (--psf) changed"
    code, saved = run(a, "-r", "gaussian:sigma=2.6")
    assert code == 1 and saved["exposures"][0]["error_type"] == "MissingPsfError"
    assert "psfmatch batch --psf FILE|SPEC" in saved["exposures"][0]["error_message"]

    # an automatic reference is chosen from the PSFs given (b's is the broader)
    code, saved = run(a, "--input-list", str(listing), "-r", "auto", "--psf", f"psfmatch:{psf_a}")
    box = Box2I((0, 0), (SIZE, SIZE))
    expected = choose_reference_psf([(_psf_model(1.7), box), (_psf_model(1.9), box)])
    assert code == 0 and saved["reference"]["choice"]["sigma"] == pytest.approx(expected.sigma, rel=1e-9)
    assert saved["reference"]["choice"]["broadest"]["path"] == os.path.abspath(b)


def test_the_psf_options_are_checked_before_any_work(inputs, tmp_path, monkeypatch):
    _forbid(monkeypatch, "match_many", "matched before the PSFs were checked")
    paths, _ = inputs
    out = str(tmp_path / "out")
    with pytest.raises(MissingFileError, match=r"science PSF \(--psf\) file '.*nope\.psf' does not exist"):
        run_batch_command(_parse(["batch", paths[0], "-r", "gaussian:sigma=2.6", "-o", out, "--psf",
                                  str(tmp_path / "nope.psf")]))
    with pytest.raises(SystemExit) as exc:
        _parse(["batch", paths[0], "-r", "gaussian:sigma=2.6", "-o", out, "--psf", "gaussian:sigma=-1"])
    assert exc.value.code == 2
    psf = tmp_path / "psf.fits"
    fits.PrimaryHDU(GaussianPsf(25, 25, 2.0).computeKernelImage((0, 0))).writeto(psf)
    with pytest.raises(InvalidInputError, match=r"--coadd .*psf\.fits would overwrite the input .*psf\.fits \(the "
                                                r"science PSF, --psf"):
        run_batch_command(_parse(["batch", paths[0], "-r", "gaussian:sigma=2.6", "-o", out, "--psf", str(psf),
                                  "--coadd", str(psf), "--overwrite"]))
    with pytest.raises(InvalidInputError, match="psf has 2 entries for 1 inputs; give one per input"):
        match_many(paths[:1], REFERENCE, out, psf=[None, None])
    with pytest.raises(InvalidInputError, match="psf must be a PSF model, a SPEC, a sequence of them"):
        match_many(paths[:1], REFERENCE, out, psf=2.0)
    assert sorted(os.listdir(tmp_path)) == ["psf.fits"]


def test_the_input_list_takes_a_psf_per_input_and_keeps_paths_with_spaces(inputs, tmp_path):
    from psfmatch.batch_cli import _inputs_and_psfs
    from psfmatch.errors import UnsupportedFormatError

    paths, _ = inputs
    spaced = tmp_path / "my exposure.fits"
    shutil.copy(paths[0], spaced)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{spaced}\n{paths[1]} psfex:{tmp_path}/b.psf\n'{spaced}' gaussian:sigma=2\n{paths[2]}\n")
    args = _parse(["batch", "-r", "auto", "-o", "d", "--input-list", str(listing)])
    assert _inputs_and_psfs(args) == ([str(spaced), paths[1], str(spaced), paths[2]],
                                      [None, f"psfex:{tmp_path}/b.psf", "gaussian:sigma=2", None])
    for text, match in ((f"{paths[1]} a.psf b.psf\n", r"line 1 \(.*\) has 3 fields; give the input's path, "
                                                       r"optionally followed by its PSF"),
                        (f"'{paths[1]} a.psf\n", "line 1 .*No closing quotation"),
                        (f"{paths[1]} gaussian:sigma=-1\n", None)):
        listing.write_text(text)
        if match is None:
            with pytest.raises(InvalidInputError, match=r"science PSF of .*exp1\.fits \(--input-list line 1\)"):
                _inputs_and_psfs(args)
        else:
            with pytest.raises(UnsupportedFormatError, match=match):
                _inputs_and_psfs(args)


def _no_cluster(monkeypatch):
    """Make match_many fail loudly if it gets as far as the cluster."""
    import psfmatch.batch

    def must_not_start(*args, **kwargs):
        raise AssertionError("the cluster was started before the arguments were checked")

    monkeypatch.setattr(psfmatch.batch, "dask_client", must_not_start)


def test_no_output_replaces_a_psf_file_that_the_batch_reads(inputs, tmp_path, monkeypatch):
    """--psf out/a.fits with input raw/a.fits and -o out: the worker read the PSF, then wrote the matched exposure
    over it (exit 0); the report, and the outputs of -r FILE, were not checked against the PSF files either."""
    import psfmatch.batch

    _no_cluster(monkeypatch)
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    out.mkdir()
    a, b = str(raw / "a.fits"), str(raw / "b.fits")
    shutil.copy(inputs[0][0], a)
    shutil.copy(inputs[0][1], b)
    psf = _psf_file(out / "a.fits", 1.8)  # where a's output goes
    (tmp_path / "link.fits").symlink_to(psf)
    other = _psf_file(tmp_path / "other.fits", 1.8)
    before = {p: open(p, "rb").read() for p in (psf, other)}
    output = r"the output .*out/a\.fits of .*raw/a\.fits would overwrite "
    remedy = r" \(the same file, also through a link\), which the batch reads: give another outdir, or move that file"
    cases = [  # (psf=, report_path, outdir, message)
        (f"psfmatch:{psf}", None, out, output + r"the science PSF \(psf=, --psf\) .*out/a\.fits" + remedy),
        (f"psfmatch:{tmp_path / 'link.fits'}", None, out, output + r"the science PSF \(psf=, --psf\) .*link\.fits"),
        # a file not written yet is told by its name: a's output would be b's PSF
        ([None, f"psfex:{tmp_path / 'new' / 'a.fits'}"], None, tmp_path / "new",
         r"the output .*new/a\.fits of .*raw/a\.fits would overwrite the science PSF of .*raw/b\.fits \(psf=, --psf "
         r"or --input-list\) .*new/a\.fits"),
        (f"psfmatch:{other}", other, tmp_path / "out2",
         r"report_path .*other\.fits would overwrite the science PSF \(psf=, --psf\) .*other\.fits \(the same file, "
         r"also through a link\), which the batch reads; give another file name for the report"),
    ]
    for given, report, outdir, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            match_many([a, b], REFERENCE, outdir, psf=given, report_path=report, progress=False)
    # psfmatch batch: the outputs spare the reference PSF's file (-r FILE), --psf's and the input list's PSFs
    monkeypatch.setattr(psfmatch.batch, "match_many", lambda *args, **kwargs: pytest.fail("matched"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{a}\n{b} psfmatch:{psf}\n")
    for extra, role in ((["-r", f"psfmatch:{psf}", a], "the reference PSF"),
                        (["-r", "gaussian:sigma=2.6", "--psf", psf, a], "the science PSF, --psf"),
                        (["-r", "gaussian:sigma=2.6", "--input-list", str(listing)], r"the PSF of .*b\.fits in "
                                                                                       r"--input-list")):
        with pytest.raises(InvalidInputError, match=output + role + r" .*out/a\.fits" + remedy):
            run_batch_command(_parse(["batch", "-o", str(out), *extra]))
    assert all(open(p, "rb").read() == data for p, data in before.items())
    assert os.listdir(out) == ["a.fits"] and not (tmp_path / "new").exists()


def test_a_psf_class_is_refused_before_any_work(inputs, tmp_path, monkeypatch):
    """match_many(paths, GaussianPsf) and psf=GaussianPsf passed the checks (a class has computeKernelImage too):
    every input then failed on the workers."""
    _no_cluster(monkeypatch)
    paths = inputs[0][:2]
    message = "{} must be a PSF model, not the class {}; give an instance, e.g. GaussianPsf(31, 31, 2.6)"
    for kwargs, who, cls in (({"referencePsfModel": GaussianPsf}, "referencePsfModel", "GaussianPsf"),
                             ({"referencePsfModel": REFERENCE, "psf": GaussianPsf}, "psf", "GaussianPsf"),
                             ({"referencePsfModel": "auto", "psf": [None, VariableGaussianPsf]}, "psf of input 1",
                              "VariableGaussianPsf")):
        with pytest.raises(InvalidInputError, match=re.escape(message.format(who, cls))):
            match_many(paths, outdir=tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_scheduler_address_that_accepts_but_never_answers_times_out(tmp_path):
    """A port that accepts connections but does not speak Dask (a dashboard, a hung scheduler) held dask_client far
    past connect_timeout: distributed waits for the scheduler's handshake without a timeout."""
    import socket
    import threading
    import time

    from psfmatch.batch import SchedulerUnreachableError, dask_client

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.05)
    stop, held = threading.Event(), []

    def accept_and_say_nothing():
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except (socket.timeout, OSError):
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    outcome = []

    def connect():  # (on a thread: a client that waits forever fails the test instead of hanging it)
        try:
            with dask_client(address, connect_timeout=0.5):
                outcome.append("connected")
        except Exception as exc:
            outcome.append(exc)

    try:
        t = time.perf_counter()
        waiter = threading.Thread(target=connect, daemon=True)
        waiter.start()
        waiter.join(10)
        assert outcome, "dask_client still waits 10 s past connect_timeout=0.5"
        assert time.perf_counter() - t < 5
        assert isinstance(outcome[0], SchedulerUnreachableError)
        assert re.fullmatch(
            rf"something at {re.escape(address)} accepted the connection but did not answer as a Dask scheduler "
            r"within 0\.5 s: check that this is the scheduler's address \(dask scheduler prints it; not the "
            r"dashboard's port, 8787 by default\) and that the scheduler is not hung, or give a longer timeout "
            r"\(psfmatch batch --scheduler-timeout, connect_timeout=\); omit --scheduler \(client=None\) to start a "
            r"local cluster instead", str(outcome[0]))
        assert held  # (it did accept)
    finally:
        stop.set()
        thread.join()
        for sock in held:
            sock.close()
        server.close()


def test_a_batch_that_a_rerun_cannot_finish_is_reported_failed_with_the_remedy(client, tmp_path):
    """-r auto on plain images without --psf left a report 'interrupted ... re-run the same command to finish it',
    and the survey's 'exposure does not contain a Psf model' gave no remedy."""
    plain = [_plain_image(tmp_path / f"{n}.fits", i) for i, n in enumerate("ab")]
    remedy = (f"{plain[0]} carries no PSF model; give its PSF with psfmatch batch --psf FILE|SPEC (one for every "
              "input), or as a second column of --input-list (one per input); in Python, match_many(psf=...)")
    error = (f"no exposure's PSF could be surveyed to choose a reference PSF; first failure: {plain[0]}: "
             f"MissingPsfError: {remedy}")
    with pytest.raises(InvalidInputError, match=re.escape(error)):
        choose_reference_psf(plain)
    report = tmp_path / "out" / "report.json"
    with pytest.raises(InvalidInputError, match=re.escape(error)):
        match_many(plain, "auto", tmp_path / "out", client=client, progress=False, report_path=report)
    saved = json.loads(report.read_text())
    assert saved["state"] == "failed" and saved["exposures"] == [] and saved["counts"]["pending"] == 2
    assert saved["note"] == (f"this batch failed before any exposure was matched: InvalidInputError: {error}; "
                             "re-running the same command fails the same way: do what the error says, then run the "
                             "batch again")
    from psfmatch.batch import _rerun_finishes  # (a lost engine or Ctrl-C: interrupted; an error: failed)

    assert _rerun_finishes(KeyboardInterrupt()) and _rerun_finishes(ConnectionResetError())
    assert not _rerun_finishes(InvalidInputError("bad")) and not _rerun_finishes(ValueError("a bug"))


def test_paths_that_are_not_paths_are_refused_typed_naming_the_argument(tmp_path):
    """None (an unset option) as a path, or as one of the paths, escaped as os.fspath's bare TypeError."""
    given = str(tmp_path / "a.fits")
    out = str(tmp_path / "out.fits")
    file_path = r"must be a file path \(str or os\.PathLike\); got None; pass the file's name"
    cases = [
        (lambda: match_one(None, REFERENCE, out), rf"^match_one's path {file_path}"),
        (lambda: match_one(given, REFERENCE, None), rf"^match_one's out_path {file_path}"),
        (lambda: match_many([given, None], REFERENCE, tmp_path / "m"), rf"^paths\[1\] {file_path}"),
        (lambda: match_many([given], REFERENCE, tmp_path / "m", report_path=3),
         r"^match_many's report_path must be a file path \(str or os\.PathLike\); got int 3;"),
        (lambda: match_many(None, REFERENCE, tmp_path / "m"),
         r"^paths must be a file path or a sequence of file paths; got None; pass e.g. \['a.fits', 'b.fits'\]$"),
        (lambda: coadd([given], None), rf"^coadd's out_path {file_path}"),
        (lambda: coadd([None], out), rf"^matched_paths\[0\] {file_path}"),
        (lambda: coadd(None, out), r"^matched_paths must be a file path or a sequence of file paths; got None"),
        (lambda: coadd(3, out), r"^matched_paths must be a file path or a sequence of file paths; got int"),
        (lambda: choose_reference_psf(None), r"^choose_reference_psf needs a sequence of exposures .*; got NoneType$"),
    ]
    for call, match in cases:
        with pytest.raises(InvalidInputError, match=match):
            call()
    assert list(tmp_path.iterdir()) == []


def test_an_in_memory_exposure_without_a_psf_is_named_with_the_remedy():
    """choose_reference_psf / survey_psf said only 'exposure does not contain a Psf model': not which one, nor
    what to do."""
    from psfmatch.batch import survey_psf

    good = Exposure(np.zeros((64, 64), np.float32), psf=GaussianPsf(25, 25, 1.5))
    bare = Exposure(np.zeros((64, 80), np.float32), xy0=(10, 20))
    missing = (r"the Exposure of box Box2I\(minimum=\(10, 20\), dimensions=\(80, 64\)\) does not contain a Psf "
               r"model; attach its PSF \(exposure.setPsf\(psf\)\) or survey a \(psf, exposure.getBBox\(\)\) pair "
               r"instead")
    survey = survey_psf(bare)
    assert not survey["ok"] and survey["error_type"] == "MissingPsfError"
    assert re.fullmatch(missing, survey["error_message"])
    with pytest.raises(InvalidInputError, match=r"first failure: sources\[0\] \(Exposure\): MissingPsfError: "
                                                + missing):
        choose_reference_psf([bare])
    choice = choose_reference_psf([good, bare])
    assert choice.n_exposures == 1 and choice.failures[0]["path"] == "sources[1] (Exposure)"
    assert re.fullmatch(missing, choice.failures[0]["error_message"])
    pair = survey_psf((None, Box2I((0, 0), (5, 5))))
    assert pair["error_message"] == ("the (psf, bbox) pair of box Box2I(minimum=(0, 0), dimensions=(5, 5)) has psf "
                                     "None; give the PSF model as its first item")


def test_the_batch_report_is_strict_json(tmp_path):
    """A QA number whose moments failed is NaN in the metadata; the report held Python's NaN, which jq and
    JavaScript refuse: it is null now, and numpy numbers are plain numbers."""
    from psfmatch.batch import _write_json_atomic

    path = tmp_path / "report.json"
    _write_json_atomic({"qa": {"sizeMismatchWorst": float("nan"), "shift": np.float32(0.25),
                               "worst": [np.float64(-np.inf), 3]}}, path)

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"qa": {"sizeMismatchWorst": None, "shift": 0.25, "worst": [None, 3]}}
