"""Tests that pin down behaviour of the batch layer (:mod:`psfmatch.batch`, :mod:`psfmatch.batch_cli`) that a
mutation run found unchecked: each test here failed against at least one mutant of the code that the rest of
the suite let pass (the mutant is named in the test's docstring).

They need no Dask cluster of processes: :func:`~psfmatch.batch.match_one` runs in-process, the coadd uses
dask's threaded scheduler, and the command-line tests share one in-process ``LocalCluster``.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("dask.array", reason="the coadd needs dask.array")

from astropy.io import fits  # noqa: E402

from psfmatch import Exposure, ModelPsfMatchConfig  # noqa: E402
from psfmatch.batch import MATCHED, SKIPPED, coadd, input_fingerprint, match_one  # noqa: E402
from psfmatch.demo import make_demo_exposure  # noqa: E402
from psfmatch.errors import InvalidInputError  # noqa: E402
from psfmatch.image import DEFAULT_MASK_PLANES  # noqa: E402
from psfmatch.io.fits import read_exposure, write_exposure  # noqa: E402
from psfmatch.psf import GaussianPsf  # noqa: E402

SIZE = 96
REFERENCE = GaussianPsf(31, 31, 2.6)


def _write(path, image, variance, mask=None, psf=REFERENCE, planes=None, dtype=np.float32):
    exp = Exposure(np.asarray(image, dtype), mask, np.asarray(variance, dtype), psf=psf, mask_planes=planes)
    write_exposure(exp, path, overwrite=True)
    return str(path)


def _config():
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = 48
    config.kernel.active.sizeCellY = 48
    config.kernel.active.spatialKernelOrder = 0
    return config


@pytest.fixture(scope="module")
def exposure_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mutants_inputs") / "exp.fits"
    write_exposure(make_demo_exposure(SIZE, seed=3, n_stars=4), path)
    return str(path)


def _match(path, out, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return match_one(path, kwargs.pop("reference", REFERENCE), out, kwargs.pop("config", None) or _config(),
                         **kwargs)


# ---------------------------------------------------------------------------
# the coadd


def test_a_coadd_with_one_float64_input_keeps_float64_precision(tmp_path):
    """Mutant: the output is float64 only when *every* input is (``any`` -> ``all``): one float32 input
    rounded the whole coadd to float32 (a relative error of 1e-8 where 1e-15 is due)."""
    shape = (20, 24)
    rng = np.random.default_rng(11)
    a_img = 1000.0 + rng.normal(0.0, 1e-3, shape)  # float64 digits that float32 cannot hold
    a_var = np.full(shape, 0.25)
    b_img = np.full(shape, 1000.0, np.float32)
    b_var = np.full(shape, 4.0, np.float32)
    a = _write(tmp_path / "a.fits", a_img, a_var, dtype=np.float64)
    b = _write(tmp_path / "b.fits", b_img, b_var)
    coadd([a, b], tmp_path / "c.fits", tile_size=16)
    with fits.open(tmp_path / "c.fits") as hdul:
        assert hdul["IMAGE"].header["BITPIX"] == -64 and hdul["VARIANCE"].header["BITPIX"] == -64
    co = read_exposure(tmp_path / "c.fits")
    wa, wb = 1.0 / a_var, 1.0 / b_var.astype(np.float64)
    expected = (wa * a_img + wb * b_img) / (wa + wb)
    np.testing.assert_allclose(co.image, expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(co.variance, 1.0 / (wa + wb), rtol=1e-13, atol=0)


def test_psfs_that_differ_by_a_fraction_of_a_percent_are_not_one_reference(tmp_path):
    """Mutant: the PSF tolerance loosened from 1e-6 to 1e-2 of the peak: exposures matched to Gaussians of
    sigma 2.600 and 2.605 (a 0.4% different peak) were coadded as if matched to one reference."""
    one = np.ones((20, 20))
    a = _write(tmp_path / "a.fits", one, one, psf=GaussianPsf(31, 31, 2.6))
    b = _write(tmp_path / "b.fits", one, one, psf=GaussianPsf(31, 31, 2.605))
    with pytest.raises(InvalidInputError, match=r"do not carry the same PSF \(kernel images differ by 0\.00"):
        coadd([a, b], tmp_path / "c.fits")
    assert not (tmp_path / "c.fits").exists()
    same = _write(tmp_path / "same.fits", one, one, psf=GaussianPsf(31, 31, 2.6))
    coadd([a, same], tmp_path / "c.fits")  # (the same model passes)


def test_an_excluded_plane_is_found_by_name_in_each_inputs_own_registry(tmp_path):
    """Mutant: the bits of ``exclude_planes`` were taken from the output's registry (the first input's),
    not from each input's own: an input holding BAD at another bit kept its BAD pixels in the coadd (and
    lost good pixels whose bit there means another plane)."""
    shape = (20, 20)
    default_bad = DEFAULT_MASK_PLANES["BAD"]
    other_planes = dict(DEFAULT_MASK_PLANES)
    # the second input's registry: BAD and SAT trade bits
    other_planes["BAD"], other_planes["SAT"] = DEFAULT_MASK_PLANES["SAT"], DEFAULT_MASK_PLANES["BAD"]
    assert other_planes["BAD"] != default_bad
    m_a = np.zeros(shape, np.int32)
    m_b = np.zeros(shape, np.int32)
    m_b[3, 3] = 1 << other_planes["BAD"]  # BAD in b: excluded
    m_b[4, 4] = 1 << other_planes["SAT"]  # SAT in b (at the default BAD bit): kept
    a = _write(tmp_path / "a.fits", np.full(shape, 1.0), np.full(shape, 1.0), m_a)
    b = _write(tmp_path / "b.fits", np.full(shape, 4.0), np.full(shape, 2.0), m_b, planes=other_planes)
    coadd([a, b], tmp_path / "c.fits", exclude_planes=["BAD"], tile_size=16)
    co = read_exposure(tmp_path / "c.fits")
    # (3, 3): only a contributes
    assert co.image[3, 3] == pytest.approx(1.0) and co.variance[3, 3] == pytest.approx(1.0)
    # (4, 4): both, inverse-variance weighted: (1/1 * 1 + 1/2 * 4) / (1 + 1/2) = 2; variance 1 / 1.5
    assert co.image[4, 4] == pytest.approx(2.0) and co.variance[4, 4] == pytest.approx(1 / 1.5)
    # SAT is set in one input only: the AND leaves it unset; the pixel keeps no BAD either
    assert co.mask[4, 4] == 0 and co.mask[3, 3] == 0


def test_a_coadd_records_the_number_of_inputs_in_ncombine(tmp_path):
    """Mutant: ``NCOMBINE`` (the FITS card other tools read for the number of coadded exposures) one short."""
    one = np.ones((20, 20))
    paths = [_write(tmp_path / f"{k}.fits", one, one) for k in range(3)]
    coadd(paths, tmp_path / "c.fits")
    assert fits.getheader(tmp_path / "c.fits", 0)["NCOMBINE"] == 3
    assert read_exposure(tmp_path / "c.fits").metadata["coadd"]["nInputs"] == 3


def test_an_input_without_a_psf_is_not_coadded_with_one_that_has_one(tmp_path):
    """Mutant: an input carrying no PSF passed the same-PSF check beside one that carries the reference (it was
    not matched to it, or its PSF was lost)."""
    one = np.ones((20, 20))
    a = _write(tmp_path / "a.fits", one, one)
    b = _write(tmp_path / "b.fits", one, one, psf=None)
    for paths in ([a, b], [b, a]):
        with pytest.raises(InvalidInputError, match=r"do not carry the same PSF \(one of them has no PSF\)"):
            coadd(paths, tmp_path / "c.fits")
    assert not (tmp_path / "c.fits").exists()
    coadd([a, b], tmp_path / "c.fits", require_same_psf=False)  # allowed when asked: the first input's PSF
    assert read_exposure(tmp_path / "c.fits").getPsf() is not None


# ---------------------------------------------------------------------------
# resume: what makes an output stale


def test_an_output_of_another_marker_version_is_redone(exposure_file, tmp_path, monkeypatch):
    """Mutant: the marker version was not compared: outputs written under an older marker (an older layout
    or rule) were skipped as complete after an upgrade."""
    import psfmatch.batch

    out = tmp_path / "o.fits"
    assert _match(exposure_file, out).status == MATCHED
    assert _match(exposure_file, out).status == SKIPPED
    monkeypatch.setattr(psfmatch.batch, "MARKER_VERSION", psfmatch.batch.MARKER_VERSION + 1)
    r = _match(exposure_file, out)
    assert r.status == MATCHED and r.reason.startswith("stale output: marker version"), r.reason
    with fits.open(out) as hdul:
        assert hdul[0].header["BATCHVER"] == psfmatch.batch.MARKER_VERSION
    assert _match(exposure_file, out).status == SKIPPED


def test_a_changed_kernel_sum_redoes_the_output_with_the_new_flux(exposure_file, tmp_path):
    """Mutant: kernelSum left out of the configuration hash: a re-run with another kernelSum kept the
    output matched with the old one (its flux off by their ratio)."""
    out = tmp_path / "o.fits"
    assert _match(exposure_file, out, kernelSum=1.0).status == MATCHED
    flux1 = float(np.nansum(read_exposure(out).image))
    r = _match(exposure_file, out, kernelSum=2.0)
    assert r.status == MATCHED and r.reason == "stale output: configuration or kernelSum changed"
    flux2 = float(np.nansum(read_exposure(out).image))
    assert flux2 == pytest.approx(2.0 * flux1, rel=1e-3)
    assert _match(exposure_file, out, kernelSum=2.0).status == SKIPPED


def test_an_output_whose_planes_differ_in_shape_is_not_complete(exposure_file, tmp_path):
    """Mutant: the planes' shapes not compared: an output whose MASK was cropped (by a cut-out tool, say; its
    markers and checksums intact) was skipped as complete, and broke the coadd later."""
    from psfmatch.batch import check_matched_output

    out = tmp_path / "o.fits"
    assert _match(exposure_file, out).status == MATCHED
    with fits.open(out) as hdul:
        hdus = [h.copy() for h in hdul]
    mask = next(h for h in hdus if h.name == "MASK")
    mask.data = mask.data[:, :-1].copy()
    fits.HDUList(hdus).writeto(out, overwrite=True, checksum=True)
    ok, reason, _ = check_matched_output(out)
    assert not ok and reason.startswith("inconsistent output: plane shapes"), reason
    r = _match(exposure_file, out)
    assert r.status == MATCHED and r.reason.startswith("inconsistent output"), r.reason
    redone = read_exposure(out)
    assert redone.mask.shape == redone.image.shape == (SIZE, SIZE)


def test_the_sha256_fingerprint_covers_the_whole_file(tmp_path):
    """Mutant: only the first 4 MiB chunk hashed: a change beyond it went unseen by ``--fingerprint sha256``."""
    path = tmp_path / "big.bin"
    data = bytearray(os.urandom(4096)) * 1300  # 5.3 MB: two chunks
    path.write_bytes(bytes(data))
    first = input_fingerprint(path, "sha256")
    assert first == "sha256:" + hashlib.sha256(bytes(data)).hexdigest()[:48]
    data[5_000_000] ^= 0xFF
    path.write_bytes(bytes(data))
    assert input_fingerprint(path, "sha256") == "sha256:" + hashlib.sha256(bytes(data)).hexdigest()[:48] != first


def test_an_input_that_is_a_batch_output_matched_with_a_given_psf_is_skipped_on_a_rerun(exposure_file, tmp_path):
    """Mutant: the input's own ``BATCHPSF`` card (it is the output of a batch with ``--psf``) was kept in its
    output, matched now with the file's own PSF: every re-run found that output stale and redid it."""
    first = tmp_path / "first.fits"
    assert _match(exposure_file, first, psf=GaussianPsf(31, 31, 1.8)).status == MATCHED
    with fits.open(first) as hdul:
        assert "BATCHPSF" in hdul[0].header
    second = tmp_path / "second.fits"
    wider = GaussianPsf(31, 31, 3.4)
    assert _match(str(first), second, reference=wider).status == MATCHED
    with fits.open(second) as hdul:
        assert "BATCHPSF" not in hdul[0].header
    r = _match(str(first), second, reference=wider)
    assert r.status == SKIPPED, r.reason


# ---------------------------------------------------------------------------
# psfmatch batch: options that change the result


@pytest.fixture(scope="module")
def scheduler():
    distributed = pytest.importorskip("distributed", reason="psfmatch batch needs dask[distributed]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                           protocol="tcp", host="127.0.0.1", dashboard_address=":0",
                                           silence_logs=40)
        client = distributed.Client(cluster)
    try:
        yield cluster.scheduler_address
    finally:
        client.close()
        cluster.close()


def _batch(argv):
    import argparse

    from psfmatch.batch_cli import add_batch_parser, run_batch_command

    parser = argparse.ArgumentParser(prog="psfmatch")
    add_batch_parser(parser.add_subparsers(dest="command"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_batch_command(parser.parse_args(["batch", *argv]))


CELLS = ["-c", "kernel.active.sizeCellX=48", "-c", "kernel.active.sizeCellY=48",
         "-c", "kernel.active.spatialKernelOrder=0"]


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """Two exposures on one grid; the first has a BAD pixel at (y, x) = (50, 40)."""
    d = tmp_path_factory.mktemp("mutants_cli_inputs")
    paths = []
    for i in range(2):
        exp = make_demo_exposure(SIZE, seed=20 + i, n_stars=4)
        if i == 0:
            exp.mask[50, 40] |= exp.getMask().getPlaneBitMask("BAD")
        p = str(d / f"e{i}.fits")
        write_exposure(exp, p)
        paths.append(p)
    return paths


def test_cli_batch_passes_kernel_sum_fingerprint_force_and_the_coadd_options_through(scheduler, two_inputs,
                                                                                     tmp_path, capsys):
    """Mutants of ``psfmatch batch`` that dropped an option on its way to match_many / coadd: ``--kernel-sum``
    (matched with 1), ``--fingerprint`` (stat), ``--force`` (skipped), ``--coadd-tile`` (1024) and
    ``--coadd-exclude`` (nothing excluded): each still exited 0."""
    out = tmp_path / "out"
    co = tmp_path / "co.fits"
    argv = [*two_inputs, "-r", "gaussian:sigma=2.6", "-o", str(out), "--scheduler", scheduler, *CELLS,
            "--kernel-sum", "2", "--fingerprint", "sha256", "--coadd", str(co), "--coadd-tile", "32",
            "--coadd-exclude", "BAD"]
    assert _batch(argv) == 0
    # --kernel-sum 2: the output is what match_one makes with kernelSum=2
    config = _config()
    ref = tmp_path / "ref.fits"
    assert _match(two_inputs[0], ref, config=config, kernelSum=2.0).status == MATCHED
    mine, theirs = read_exposure(out / "e0.fits"), read_exposure(ref)
    np.testing.assert_allclose(mine.image, theirs.image, rtol=1e-6, atol=1e-6)
    # --fingerprint sha256: the marker holds the hash of the input's bytes
    with open(two_inputs[0], "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:48]
    with fits.open(out / "e0.fits") as hdul:
        assert hdul[0].header["BATCHFPR"] == "sha256:" + digest
    # --coadd-tile 32
    coadded = read_exposure(co)
    assert coadded.metadata["coadd"]["tileSize"] == 32
    # --coadd-exclude BAD: where e0's matched pixel is BAD only e1 contributes
    m0, m1 = read_exposure(out / "e0.fits"), read_exposure(out / "e1.fits")
    bad = (m0.mask & m0.getMask().getPlaneBitMask("BAD")) != 0
    assert bad[50, 40]
    assert coadded.variance[50, 40] == pytest.approx(m1.variance[50, 40], rel=1e-6)
    assert coadded.image[50, 40] == pytest.approx(m1.image[50, 40], rel=1e-6, abs=1e-6)
    # --force: a re-run redoes both inputs
    capsys.readouterr()
    assert _batch([*two_inputs, "-r", "gaussian:sigma=2.6", "-o", str(out), "--scheduler", scheduler, *CELLS,
                   "--kernel-sum", "2", "--fingerprint", "sha256", "--force"]) == 0
    import json

    with open(out / "psfmatch-batch-report.json") as fh:
        report = json.load(fh)
    assert [e["status"] for e in report["exposures"]] == [MATCHED, MATCHED]
    assert [e["reason"] for e in report["exposures"]] == ["forced", "forced"]


def test_cli_batch_auto_reference_follows_its_kind_margin_and_floor(scheduler, two_inputs, tmp_path):
    """Mutants that dropped ``--reference-kind``, ``--reference-margin`` or ``--reference-floor``: the batch
    matched to the default rule's reference (a Gaussian, margin 0.1, floor 0.7) and exited 0."""
    import json

    from psfmatch.batch import choose_reference_psf

    out = tmp_path / "out"
    assert _batch([*two_inputs, "-r", "auto", "--reference-kind", "doublegaussian", "--reference-margin", "0.5",
                   "--reference-floor", "0.3", "-o", str(out), "--scheduler", scheduler, *CELLS]) == 0
    expected = choose_reference_psf(two_inputs, kind="doublegaussian", margin=0.5, floor=0.3)
    with open(out / "psfmatch-batch-report.json") as fh:
        choice = json.load(fh)["reference"]["choice"]
    assert (choice["kind"], choice["margin"], choice["floor"]) == ("doublegaussian", 0.5, 0.3)
    # the rule: sigma**2 = (1 + margin)**2 lambda_max + floor**2
    assert choice["sigma"] ** 2 == pytest.approx(1.5 ** 2 * choice["lambda_max"] + 0.3 ** 2, rel=1e-9)
    assert choice["psf"] == repr(expected.psf)
    record = read_exposure(out / "e0.fits").metadata["psfmatchBatch"]
    assert record["reference"]["repr"] == repr(expected.psf)
