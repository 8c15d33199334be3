"""Batch behaviours that a second mutation-testing pass found unpinned: the coadd's reading of tile-compressed,
scaled-integer and damaged compressed inputs, the engine failure message, the checks that an output spares the
files the batch reads, and the automatic reference PSF's parameters and stamp.

Each test here failed against a deliberate mutation of ``psfmatch.batch`` (named in its docstring).
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

pytest.importorskip("dask.array", reason="the coadd needs dask.array")

from astropy.io import fits  # noqa: E402

from psfmatch import Exposure  # noqa: E402
from psfmatch.batch import coadd  # noqa: E402
from psfmatch.errors import CorruptFileError  # noqa: E402
from psfmatch.io.fits import read_exposure, write_exposure  # noqa: E402
from psfmatch.psf import GaussianPsf  # noqa: E402

PSF = GaussianPsf(11, 11, 2.0)
H, W = 37, 53  # not square, and not a multiple of the tile size: tiles of 16 px are cut at both edges


def _write(path, image, variance, mask=None):
    exp = Exposure(np.asarray(image, np.float32), mask, np.asarray(variance, np.float32), psf=PSF)
    write_exposure(exp, path, overwrite=True)
    return str(path)


def _planes(seed):
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 5.0, (H, W)) + np.arange(W)[None, :] * 0.5  # a gradient along x: a swap shows
    variance = rng.uniform(1.0, 4.0, (H, W))
    return image.astype(np.float32), variance.astype(np.float32)


def _direct_coadd(planes):
    """The inverse-variance weighted mean and its variance, straight from the planes (every pixel good)."""
    w = [1.0 / v.astype(np.float64) for _, v in planes]
    sum_w = np.sum(w, axis=0)
    return np.sum([wi * i.astype(np.float64) for wi, (i, _) in zip(w, planes)], axis=0) / sum_w, 1.0 / sum_w


# ---------------------------------------------------------------------------
# the coadd's inputs


def test_a_coadd_of_tile_compressed_inputs_equals_the_direct_weighted_mean(tmp_path):
    """Tile-compressed (.fits.fz) inputs are read a window at a time through ``section``: each tile must be
    the tile's own rows and columns (mutant: the section read with the row slice for both axes)."""
    planes = [_planes(seed) for seed in range(3)]
    packed = [_write(tmp_path / f"in{i}.fits.fz", *p) for i, p in enumerate(planes)]
    with fits.open(packed[0]) as hdul:
        assert isinstance(hdul["IMAGE"], fits.CompImageHDU)  # really tile-compressed
    coadd(packed, tmp_path / "coadd.fits", tile_size=16)
    out = read_exposure(tmp_path / "coadd.fits")
    image, variance = _direct_coadd(planes)
    np.testing.assert_allclose(out.image, image, rtol=1e-6)
    np.testing.assert_allclose(out.variance, variance, rtol=1e-6)


def test_a_coadd_of_a_scaled_integer_input_uses_its_physical_values(tmp_path):
    """An IMAGE plane stored as 16-bit integers with BSCALE/BZERO is coadded at its physical values
    (``BZERO + BSCALE * stored``), as read_exposure reads it.  The coadd opened its inputs with memmap=True,
    which made astropy refuse such a plane (ValueError: Cannot load a memory-mapped image: BZERO/BSCALE/BLANK
    header keywords present)."""
    rng = np.random.default_rng(7)
    stored = rng.integers(-3000, 3000, (H, W)).astype(np.int16)
    physical = stored * 0.25 + 100.0
    variance = np.full((H, W), 2.0, np.float32)
    plain = _write(tmp_path / "plain.fits", physical, variance)
    with fits.open(plain) as hdul:
        hdul["IMAGE"].data = stored
        hdul["IMAGE"].header["BSCALE"] = 0.25
        hdul["IMAGE"].header["BZERO"] = 100.0
        hdul.writeto(tmp_path / "scaled.fits", output_verify="ignore")
    np.testing.assert_array_equal(read_exposure(tmp_path / "scaled.fits").image, physical)
    coadd([tmp_path / "scaled.fits"], tmp_path / "coadd.fits", tile_size=16)
    np.testing.assert_allclose(read_exposure(tmp_path / "coadd.fits").image, physical, rtol=1e-6)


def test_a_truncated_gzip_input_is_a_corrupt_file_error_and_leaves_nothing(tmp_path):
    """A damaged whole-file-compressed input fails typed, naming the file (mutant: EOFError let through)."""
    image, variance = _planes(0)
    good = _write(tmp_path / "good.fits", image, variance)
    with open(good, "rb") as fh:
        packed = gzip.compress(fh.read())
    bad = tmp_path / "bad.fits.gz"
    bad.write_bytes(packed[:-20])  # the headers readable, the end of the stream cut off
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CorruptFileError, match=r"bad\.fits\.gz: cannot decompress it: the file is damaged or "
                                               r"truncated \(EOFError"):
        coadd([good, bad], out / "coadd.fits", tile_size=16)
    assert os.listdir(out) == []  # neither the coadd nor the decompressed copies


# ---------------------------------------------------------------------------
# outputs that would replace a file the batch reads


def _no_cluster(monkeypatch):
    """Make match_many fail loudly if it gets past its checks to the cluster."""
    import psfmatch.batch

    def must_not_start(*args, **kwargs):
        raise AssertionError("the cluster was started: the checks let the batch through")

    monkeypatch.setattr(psfmatch.batch, "dask_client", must_not_start)


def _psf_file(path):
    write_exposure(Exposure(np.zeros((4, 4), np.float32), psf=PSF), path, overwrite=True)
    return str(path)


def test_an_output_is_refused_over_a_psf_file_not_written_yet_named_through_a_linked_folder(tmp_path, monkeypatch):
    """A PSF file that does not exist yet (one per input: read by the workers) is told apart by name only, the
    links of both folders resolved (mutants: the PSF file's folder, or outdir, compared unresolved)."""
    from psfmatch.batch import match_many
    from psfmatch.errors import InvalidInputError

    _no_cluster(monkeypatch)
    (tmp_path / "raw").mkdir()
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    a = _write(tmp_path / "raw" / "a.fits", *_planes(0))
    message = (r"the output .*{}/a\.fits of .*raw/a\.fits would overwrite the science PSF of .*raw/a\.fits \(psf=, "
               r"--psf or --input-list\) .*{}/a\.fits")
    with pytest.raises(InvalidInputError, match=message.format("real", "link")):
        match_many([a], PSF, real, psf=[f"psfex:{link / 'a.fits'}"], progress=False)
    with pytest.raises(InvalidInputError, match=message.format("link", "real")):
        match_many([a], PSF, link, psf=[f"psfex:{real / 'a.fits'}"], progress=False)
    assert os.listdir(real) == []


def test_a_report_that_is_a_hard_link_to_a_psf_file_is_refused(tmp_path, monkeypatch):
    """The report is compared with the PSF files by device and inode too, not only by name (mutant: by name only)."""
    from psfmatch.batch import match_many
    from psfmatch.errors import InvalidInputError

    _no_cluster(monkeypatch)
    a = _write(tmp_path / "a.fits", *_planes(0))
    psf = _psf_file(tmp_path / "psf.fits")
    os.link(psf, tmp_path / "report.json")
    before = open(psf, "rb").read()
    with pytest.raises(InvalidInputError, match=r"report_path .*report\.json would overwrite the science PSF "
                                                r"\(psf=, --psf\) .*psf\.fits \(the same file, also through a link\)"):
        match_many([a], PSF, tmp_path / "out", psf=f"psfmatch:{psf}", report_path=tmp_path / "report.json",
                   progress=False)
    assert open(psf, "rb").read() == before and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# the engine's failures


class KilledWorker(Exception):
    """Stands for distributed's KilledWorker, which _engine_failure recognises by its class name."""


def test_a_killed_worker_message_names_each_workers_memory_limit_and_fractions_of_the_machine():
    """Limits per worker (a list, from a cluster of workers with different limits) are all named; 1 (and 0.5) is
    a fraction of the machine's memory, as Dask reads it, not 1 byte; one worker without a limit among limited
    ones is not "no memory limit"; without engine information the remedy is a local cluster's
    (mutants: the list read as one value, ``v < 1``, ``any`` for ``all``, the default of started_cluster)."""
    from psfmatch.batch import _engine_failure

    exc = KilledWorker("task lost")
    text = _engine_failure(exc, {"started_cluster": False, "memory_limit_per_worker": [2 ** 30, 2 ** 31]})
    assert "killed at their memory limit of 1.00 GiB / 2.00 GiB per worker" in text
    assert text.endswith("give the cluster's workers more memory, or run fewer of them on each machine "
                         "(distributed: task lost)")
    assert "memory limit of 1 of the machine's memory per worker" in _engine_failure(
        exc, {"memory_limit_per_worker": 1.0})
    assert "memory limit of 0.5 of the machine's memory per worker" in _engine_failure(
        exc, {"memory_limit_per_worker": 0.5})
    mixed = _engine_failure(exc, {"memory_limit_per_worker": [0, 2 ** 30]})
    assert "memory limit of no limit / 1.00 GiB per worker" in mixed and "no memory limit" not in mixed
    assert "have no memory limit, so most likely the machine ran out of memory" in _engine_failure(
        exc, {"memory_limit_per_worker": [0, "0"]})
    assert "raise the memory limit per worker (psfmatch batch --memory-limit" in _engine_failure(exc)
    assert _engine_failure(ValueError(""), {}) == "ValueError"  # other failures: their own message, or type


# ---------------------------------------------------------------------------
# a tile-compressed (.fz) coadd


def test_a_fz_coadd_keeps_the_planes_headers_and_checksums_every_hdu(tmp_path):
    """The compressed planes keep their headers (origin, WCS, unit, mask plane names) and every HDU carries a
    CHECKSUM and DATASUM that match (mutants: the planes compressed with an empty header; no checksums)."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [20.0, 15.0]
    wcs.wcs.cdelt = [-5e-5, 5e-5]
    paths = []
    for i in range(2):
        image, variance = _planes(i)
        exp = Exposure(image, None, variance, psf=PSF, xy0=(300, -40), wcs=wcs)
        exp.getMask().addMaskPlane("MYPLANE")
        exp.metadata["fitsHeader"] = fits.Header()
        paths.append(str(tmp_path / f"in{i}.fits"))
        write_exposure(exp, paths[-1])
        with fits.open(paths[-1], mode="update") as hdul:
            hdul["IMAGE"].header["BUNIT"] = "adu"
    coadd(paths, tmp_path / "coadd.fits", tile_size=16)
    coadd(paths, tmp_path / "coadd.fits.fz", tile_size=16)
    plain, packed = read_exposure(tmp_path / "coadd.fits"), read_exposure(tmp_path / "coadd.fits.fz")
    assert packed.getXY0() == plain.getXY0() == (300, -40)
    assert "MYPLANE" in packed.getMask().getMaskPlaneDict()
    assert packed.getMask().getMaskPlaneDict() == plain.getMask().getMaskPlaneDict()
    assert packed.getWcs() is not None
    np.testing.assert_allclose(packed.getWcs().wcs.crval, [150.0, 2.0])
    np.testing.assert_allclose(packed.getWcs().wcs.crpix, plain.getWcs().wcs.crpix)
    assert fits.getheader(tmp_path / "coadd.fits.fz", "IMAGE").get("BUNIT") == "adu"
    with fits.open(tmp_path / "coadd.fits.fz", disable_image_compression=True) as hdul:
        assert all("CHECKSUM" in h.header and "DATASUM" in h.header for h in hdul)
        assert all(h.verify_checksum() == 1 and h.verify_datasum() == 1 for h in hdul)


# ---------------------------------------------------------------------------
# the automatic reference PSF


def _gaussian_pair(sigma, e1=0.0, e2=0.0, slope=0.0):
    from psfmatch.geom import Box2I
    from psfmatch.psf import VariableGaussianPsf

    bbox = Box2I((0, 0), (300, 200))
    return VariableGaussianPsf(41, 41, bbox, sigma=[sigma, slope, 0.0], e1=[e1], e2=[e2]), bbox


def test_the_reference_stamp_follows_the_rule_of_the_outer_sigma():
    """stamp = max(21, 2 ceil(4 sigma_outer) + 1), sigma_outer the wing's for a double Gaussian with b > 0
    (mutants: 3 sigma, a floor of 19, the wing ignored, the wing counted with b = 0, b not passed on)."""
    from psfmatch.batch import choose_reference_psf

    def choose(sigma, **kwargs):
        return choose_reference_psf([_gaussian_pair(sigma)], margin=0.0, floor=0.0, grid=1, **kwargs)

    broad = choose(5.1)  # (sigmas away from a step of the ceiling)
    assert broad.sigma == pytest.approx(5.1, rel=2e-3)
    assert broad.stamp == 2 * int(np.ceil(4 * broad.sigma)) + 1 == 43
    assert broad.psf.computeKernelImage((0.0, 0.0)).shape == (43, 43)
    assert choose(1.0).stamp == 21  # the smallest stamp
    wing = choose(3.1, kind="doublegaussian", wing_ratio=2.0, b=0.3)
    assert wing.stamp == 2 * int(np.ceil(4 * 2.0 * wing.sigma)) + 1 == 51
    assert wing.psf.getB() == wing.b == 0.3 and wing.psf.getSigma2() == pytest.approx(2.0 * wing.sigma)
    no_wing = choose(3.1, kind="doublegaussian", wing_ratio=2.0, b=0.0)
    assert no_wing.stamp == 2 * int(np.ceil(4 * no_wing.sigma)) + 1 == 27


def test_the_reference_survey_takes_the_largest_eigenvalue_of_a_tilted_psf_and_the_centre_for_grid_one():
    """A PSF elongated along the diagonal (ixy != 0, ixx = iyy) has its broadest axis variance
    sigma^2 (1 + e2); grid=1 surveys the box's centre (mutants: the off-diagonal term dropped; grid 1 at a corner)."""
    from psfmatch.batch import choose_reference_psf, survey_psf

    tilted = survey_psf(_gaussian_pair(2.0, e2=0.3), grid=3)
    assert tilted["ok"] and tilted["ixy"] == pytest.approx(1.2, rel=5e-3)
    assert tilted["lambda_max"] == pytest.approx(4.0 * 1.3, rel=5e-3)
    varying = _gaussian_pair(2.0, slope=0.5)  # sigma 1.5 at the left edge, 2.5 at the right
    centre = survey_psf(varying, grid=1)
    assert centre["n_positions"] == 1 and (centre["x"], centre["y"]) == pytest.approx((149.5, 99.5), abs=0.51)
    assert centre["lambda_max"] == pytest.approx(4.0, rel=1e-2)
    both = choose_reference_psf([varying, _gaussian_pair(1.0)], grid=2, margin=0.0, floor=0.0)
    assert both.n_positions == 8 and both.broadest["x"] == 299
    assert both.max_determinant_radius == pytest.approx(max(survey_psf(varying, grid=2)["max_determinant_radius"],
                                                            survey_psf(_gaussian_pair(1.0), grid=2)[
                                                                "max_determinant_radius"]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(stamp=22), r"stamp must be an odd integer >= 3; got 22"),
    (dict(kind="doublegaussian", wing_ratio=1.0), r"a double Gaussian needs wing_ratio > 1 and b >= 0; got 1\.0, 0\.1"),
    (dict(grid=0), r"grid must be an integer >= 1 .*got 0"),
    (dict(psfs=[None, None]), r"psfs has 2 entries for 1 sources; give one per source"),
])
def test_bad_reference_parameters_are_refused_naming_the_value(kwargs, match):
    """(mutants: an even stamp, wing_ratio 1, grid 0 or a psfs list of another length let through)"""
    from psfmatch.batch import choose_reference_psf
    from psfmatch.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=match):
        choose_reference_psf([_gaussian_pair(2.0)], **kwargs)


def test_a_zero_margin_and_floor_are_taken():
    """margin and floor are >= 0: zero is a valid choice (mutant: ``<=`` refusing it)."""
    from psfmatch.batch import choose_reference_psf

    choice = choose_reference_psf([_gaussian_pair(2.0)], margin=0, floor=0, grid=1)
    assert choice.sigma == pytest.approx(2.0, rel=2e-3) and choice.margin == 0.0 and choice.floor == 0.0


def test_an_engine_failure_records_the_science_psf_given_for_its_input(tmp_path, monkeypatch):
    """The report of an exposure whose task the engine lost still says which science PSF it was given
    (mutant: the PSF label left out of an engine failure's report)."""
    distributed = pytest.importorskip("distributed")
    import psfmatch.batch
    from psfmatch.batch import FAILED, match_many

    def lost(job):
        raise KilledWorker("every worker that ran it died")

    monkeypatch.setattr(psfmatch.batch, "_match_task", lost)
    a = _write(tmp_path / "a.fits", *_planes(0))
    b = _write(tmp_path / "b.fits", *_planes(1))
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        reports = match_many([a, b], PSF, tmp_path / "out", client=c, progress=False,
                             psf=["gaussian:sigma=1.5", None])
    assert [r.status for r in reports] == [FAILED, FAILED]
    assert [r.reason for r in reports] == ["engine failure"] * 2
    assert [r.psf for r in reports] == ["gaussian:sigma=1.5", None]
    assert reports[0].error_type == "KilledWorker" and "every worker that ran it died" in reports[0].error_message


def test_a_batch_stopped_by_one_of_dasks_own_errors_is_finished_by_a_rerun():
    """A batch stopped by an error of Dask's distributed (its scheduler or connection lost...) is ``interrupted``:
    re-running the same command finishes it; psfmatch's own errors and other bugs are not
    (mutant: distributed's errors left out of the classification)."""
    from psfmatch.batch import _rerun_finishes
    from psfmatch.errors import InvalidInputError

    lost = type("FutureCancelledError", (Exception,), {"__module__": "distributed.client"})
    assert _rerun_finishes(lost("the scheduler went away"))
    assert _rerun_finishes(KeyboardInterrupt()) and _rerun_finishes(ConnectionResetError("reset"))
    assert not _rerun_finishes(InvalidInputError("bad input"))
    assert not _rerun_finishes(RuntimeError("a bug"))


def test_the_survey_counts_only_the_positions_it_measured():
    """n_positions counts the positions whose shape was measured, n_failed the others
    (mutant: the failed positions counted in n_positions)."""
    from psfmatch.batch import survey_psf
    from psfmatch.errors import PsfComputeShapeError
    from psfmatch.geom import Box2I

    class HalfDomain(GaussianPsf):
        def computeShape(self, position=None):
            if position is not None and position[0] > 100:
                raise PsfComputeShapeError(position, "outside the model's domain")
            return super().computeShape(position)

    s = survey_psf((HalfDomain(21, 21, 2.0), Box2I((0, 0), (201, 101))), grid=3)
    assert s["ok"] and (s["n_positions"], s["n_failed"]) == (6, 3)
