"""A survey night with ``psfmatch batch`` and :mod:`psfmatch.batch`: match, interrupt, resume, re-configure, coadd.

Four small exposures of one constant star field (Gaussian PSFs of sigma 1.5 - 2.1 px, zero points 25 - 26.5),
matched to one reference on an in-process Dask cluster (its scheduler address is given to the command line,
also to a ``psfmatch`` subprocess), then coadded.  Physics is checked with analytic identities: the matched
(noise-free) exposures and their coadd equal the stars drawn with the reference PSF at the target zero point,
the coadd variance is ``1 / sum(1 / V_i)``, the automatic reference follows its rule.

The defects this review found were fixed; their tests say so in their docstrings.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="psfmatch batch needs dask[distributed]")
pytest.importorskip("dask.array", reason="the coadd needs dask.array")

from astropy.io import fits  # noqa: E402

import psfmatch.batch as batch  # noqa: E402
from psfmatch import Exposure, ModelPsfMatchConfig  # noqa: E402
from psfmatch.errors import PsfMatchWarning  # noqa: E402
from psfmatch.batch import coadd, match_many, match_one  # noqa: E402
from psfmatch.demo import render_stars  # noqa: E402
from psfmatch.io import read_exposure, write_exposure  # noqa: E402
from psfmatch.psf import GaussianPsf  # noqa: E402

N = 256
SIGMAS = (1.5, 1.7, 1.9, 2.1)
ZPS = (25.0, 25.5, 26.0, 26.5)
TARGET_ZP = 27.0
SKY_VAR = 25.0
CELLS = ["-c", "kernel.active.sizeCellX=64", "-c", "kernel.active.sizeCellY=64"]
PSFMATCH = os.path.join(os.path.dirname(sys.executable), "psfmatch")

_rng = np.random.default_rng(2027)
STAR_X = _rng.uniform(30, N - 30, 12)
STAR_Y = _rng.uniform(30, N - 30, 12)
STAR_F = 10 ** _rng.uniform(3.5, 4.5, 12)  # counts at the target zero point


def _config():
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 64
    return config


def _write_night(folder, noise=True, seed=5):
    """Four exposures of one star field, each with its PSF and zero point (noise-free when ``noise`` is False)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (sigma, zp) in enumerate(zip(SIGMAS, ZPS)):
        psf = GaussianPsf(25, 25, sigma)
        image = render_stars((N, N), psf, STAR_X, STAR_Y, STAR_F * 10 ** (0.4 * (zp - TARGET_ZP)))
        if noise:
            image = image + rng.normal(size=(N, N)) * math.sqrt(SKY_VAR)
        header = fits.Header()
        header["MAGZERO"] = zp
        exp = Exposure(image.astype(np.float32), None, np.full((N, N), SKY_VAR, np.float32), psf=psf,
                       metadata={"fitsHeader": header})
        path = os.path.join(str(folder), f"visit{i}.fits")
        write_exposure(exp, path, overwrite=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def scheduler(inprocess_client):
    """An in-process cluster (one worker thread) reachable over TCP, for match_many and psfmatch batch alike."""
    return inprocess_client


@pytest.fixture
def night(tmp_path):
    return _write_night(tmp_path / "raw")


def _cli(scheduler, *argv):
    """``psfmatch batch`` in-process (psfmatch.cli.main); returns the exit status."""
    from psfmatch.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(["batch", *argv, "--scheduler", scheduler.scheduler.address, *CELLS])


def _report(outdir):
    with open(os.path.join(str(outdir), "psfmatch-batch-report.json")) as fh:
        return json.load(fh)


def _mtimes(paths):
    return [os.stat(p).st_mtime_ns for p in paths]


# ---------------------------------------------------------------------------
# the whole night, as a subprocess: auto reference, zero points, coadd


def test_cli_night_on_one_zero_point_coadds_to_the_reference_stars_with_inverse_variance(scheduler, tmp_path):
    raw = _write_night(tmp_path / "raw", noise=False)
    out, co = tmp_path / "matched", tmp_path / "coadd.fits"
    proc = subprocess.run([PSFMATCH, "batch", *raw, "-r", "auto", "-o", str(out), "--zero-point", "27",
                           "--coadd", str(co), "--scheduler", scheduler.scheduler.address, *CELLS],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 exposure(s): 4 matched, 0 skipped (already complete), 0 failed" in proc.stdout
    # the automatic reference: sigma^2 = 1.1^2 * max(sigma_i)^2 + 0.7^2, found on visit3
    rep = _report(out)
    sigma_ref = math.sqrt(1.21 * max(SIGMAS) ** 2 + 0.49)
    assert rep["reference"]["choice"]["sigma"] == pytest.approx(sigma_ref, rel=1e-3)
    assert os.path.basename(rep["reference"]["choice"]["broadest"]["path"]) == "visit3.fits"
    # every input on zero point 27: kernelSum = 10**(0.4 (27 - ZP_i)), in the report and in the output
    for e, zp in zip(rep["exposures"], ZPS):
        assert e["kernel_sum"] == pytest.approx(10 ** (0.4 * (TARGET_ZP - zp)), rel=1e-9)
        assert read_exposure(e["output"]).metadata["psfmatchBatch"]["kernelSum"] == pytest.approx(e["kernel_sum"])
    matched = [read_exposure(e["output"]) for e in rep["exposures"]]
    coadded = read_exposure(co)
    # the stars drawn with the reference PSF at the target zero point: flux conserved, PSF the reference
    expected = render_stars((N, N), GaussianPsf(41, 41, sigma_ref), STAR_X, STAR_Y, STAR_F)
    inner = (slice(24, -24), slice(24, -24))
    peak = expected.max()
    for m in matched:
        assert np.nanmax(np.abs(m.image[inner] - expected[inner])) < 2e-3 * peak
    assert np.nanmax(np.abs(coadded.image[inner] - expected[inner])) < 2e-3 * peak
    # variance 1 / sum(1 / V_i); the matched variance is kernelSum^2 sum K^2 V
    with np.errstate(divide="ignore"):
        want = 1.0 / sum(1.0 / m.variance.astype(np.float64) for m in matched)
    np.testing.assert_allclose(coadded.variance[inner], want[inner], rtol=1e-5)
    with fits.open(co) as hdul:
        assert hdul[0].header["NCOMBINE"] == 4
        assert hdul[0].header["MAGZERO"] == pytest.approx(TARGET_ZP)
    assert coadded.getPsf().getSigma() == pytest.approx(sigma_ref, rel=1e-9)


def test_batch_help_describes_resume_exit_status_and_coadd():
    proc = subprocess.run([PSFMATCH, "batch", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for phrase in ("a re-run skips the inputs whose outputs are complete", "coadd the matched exposures",
                   "Exit status: 0 when every input matched, 1 when any failed", "2 on a usage error"):
        assert phrase in text


def test_batch_help_names_the_exit_status_of_an_interrupted_batch():
    """The help texts gave exit statuses 0/1/2 only; an interrupted batch exits 130 (Ctrl-C) or 143 (SIGTERM)."""
    proc = subprocess.run([PSFMATCH, "batch", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(proc.stdout.split())
    assert "130 when interrupted (Ctrl-C), 143 when stopped by SIGTERM" in text
    proc = subprocess.run([PSFMATCH, "--help"], capture_output=True, text=True, timeout=60)
    assert "130 interrupted (Ctrl-C), 143 stopped by SIGTERM" in " ".join(proc.stdout.split())


# ---------------------------------------------------------------------------
# the report against the outputs


def test_report_counts_qa_and_kernel_sums_are_those_of_the_outputs(scheduler, night, tmp_path):
    out = tmp_path / "m"
    assert _cli(scheduler, *night, "-r", "gaussian:sigma=2.6", "-o", str(out), "--zero-point", "27") == 0
    rep = _report(out)
    assert rep["state"] == "complete"
    assert rep["counts"] == {"matched": 4, "skipped": 0, "failed": 0}
    assert sorted(f for f in os.listdir(out) if f.endswith(".fits")) == [f"visit{i}.fits" for i in range(4)]
    for e in rep["exposures"]:
        stored = read_exposure(e["output"]).metadata["psfmatchBatch"]
        assert e["qa"]["qa"] == json.loads(json.dumps(stored["qa"]["qa"]))
        assert e["kernel_sum"] == pytest.approx(stored["kernelSum"], rel=1e-12)
        assert stored["input"] == e["path"]
    # a re-run: all skipped, each report's QA and kernelSum read back from its output
    assert _cli(scheduler, *night, "-r", "gaussian:sigma=2.6", "-o", str(out), "--zero-point", "27") == 0
    again = _report(out)
    assert again["counts"] == {"matched": 0, "skipped": 4, "failed": 0}
    for first, second in zip(rep["exposures"], again["exposures"]):
        assert second["reason"] == "complete"
        assert second["qa"]["qa"]["flags"] == first["qa"]["qa"]["flags"]
        assert second["qa"]["qa"]["candidates"]["residualMaxWorst"] == pytest.approx(
            first["qa"]["qa"]["candidates"]["residualMaxWorst"])
        assert second["kernel_sum"] == pytest.approx(first["kernel_sum"], rel=1e-12)


# ---------------------------------------------------------------------------
# interruptions and resumes


def _kill_leftovers(out, night):
    """What a run killed (SIGKILL) while writing leaves: a hidden temporary file, an output cut short."""
    whole = open(os.path.join(str(out), "visit1.fits"), "rb").read()
    with open(os.path.join(str(out), "visit1.fits"), "wb") as fh:
        fh.write(whole[: len(whole) // 2])
    leftover = os.path.join(str(out), ".visit0.fits.k1ll3d.tmp")
    with open(leftover, "wb") as fh:
        fh.write(whole[:5000])
    return leftover


def test_a_rerun_after_a_kill_redoes_the_output_cut_short_and_skips_the_others(scheduler, night, tmp_path):
    out = tmp_path / "m"
    args = (*night, "-r", "gaussian:sigma=2.6", "-o", str(out))
    assert _cli(scheduler, *args) == 0
    outputs = [os.path.join(str(out), os.path.basename(p)) for p in night]
    _kill_leftovers(out, night)
    before = _mtimes(outputs)
    assert _cli(scheduler, *args) == 0
    rep = _report(out)
    assert [e["status"] for e in rep["exposures"]] == ["skipped", "matched", "skipped", "skipped"]
    assert "truncated" in rep["exposures"][1]["reason"]
    after = _mtimes(outputs)
    assert [a == b for a, b in zip(before, after)] == [True, False, True, True]
    assert batch.check_matched_output(outputs[1])[0]


def test_the_rerun_that_finishes_a_killed_batch_leaves_no_partial_file(scheduler, night, tmp_path):
    """The re-run that finished a killed batch used to leave the killed run's partial hidden temporary file
    (.visit0.fits.*.tmp) in outdir for good; it is removed once the re-run's writers are done."""
    out = tmp_path / "m"
    args = (*night, "-r", "gaussian:sigma=2.6", "-o", str(out))
    assert _cli(scheduler, *args) == 0
    leftover = _kill_leftovers(out, night)
    past = time.time() - 3600  # an hour old: no live writer holds it
    os.utime(leftover, (past, past))
    foreign = os.path.join(str(out), ".other.fits.k1ll3d.tmp")  # not an output of this batch: kept
    shutil.copy(leftover, foreign)
    assert _cli(scheduler, *args) == 0
    assert _report(out)["counts"]["failed"] == 0
    assert sorted(os.listdir(out)) == [".other.fits.k1ll3d.tmp", "psfmatch-batch-report.json",
                                       *[f"visit{i}.fits" for i in range(4)]]


def test_sigterm_mid_night_exits_143_reports_interrupted_and_a_rerun_finishes_with_the_coadd(
        scheduler, night, tmp_path, monkeypatch):
    """The worker runs in this process: after its second exposure it sends SIGTERM to the psfmatch process."""
    out, co = tmp_path / "m", tmp_path / "co.fits"
    original = batch.match_one
    state = {"n": 0, "proc": None}

    def match_then_terminate(*args, **kwargs):
        rep = original(*args, **kwargs)
        state["n"] += 1
        if state["n"] == 2:
            os.kill(state["proc"].pid, signal.SIGTERM)
            time.sleep(0.5)
        return rep

    monkeypatch.setattr(batch, "match_one", match_then_terminate)
    cmd = [PSFMATCH, "batch", *night, "-r", "gaussian:sigma=2.6", "-o", str(out), "--coadd", str(co),
           "--zero-point", "27",
           "--scheduler", scheduler.scheduler.address, *CELLS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state["proc"] = proc
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    rep = _report(out)
    assert rep["state"] == "interrupted"
    done = [e["path"] for e in rep["exposures"]]
    assert sorted(done + rep["pending"]) == sorted(os.path.abspath(p) for p in night)
    assert rep["counts"]["pending"] == len(rep["pending"]) >= 2
    assert "re-run the same command" in rep["note"]
    assert not os.path.exists(co)
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary file from the clean stop
    monkeypatch.setattr(batch, "match_one", original)
    time.sleep(0.6)  # (the worker finishes the exposure it was on)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rep = _report(out)
    assert rep["state"] == "complete" and rep["counts"]["failed"] == 0
    assert rep["counts"]["skipped"] >= 1 and rep["counts"]["matched"] + rep["counts"]["skipped"] == 4
    assert read_exposure(co).getPsf().getSigma() == pytest.approx(2.6)


# ---------------------------------------------------------------------------
# re-runs with a changed configuration or a changed input


def test_a_changed_configuration_or_zero_point_redoes_and_the_same_one_skips(scheduler, night, tmp_path):
    out = tmp_path / "m"
    base = (*night, "-r", "gaussian:sigma=2.6", "-o", str(out))
    assert _cli(scheduler, *base) == 0
    assert _cli(scheduler, *base, "-c", "kernel.active.spatialKernelOrder=1") == 0
    rep = _report(out)
    assert {e["reason"] for e in rep["exposures"]} == {"stale output: configuration or kernelSum changed"}
    assert _cli(scheduler, *base, "-c", "kernel.active.spatialKernelOrder=1") == 0
    assert _report(out)["counts"]["skipped"] == 4
    # the same change through a -C file is the same configuration: skipped
    overrides = tmp_path / "night.py"
    overrides.write_text("config.kernel.active.spatialKernelOrder = 1\n")
    assert _cli(scheduler, *base, "-C", str(overrides)) == 0
    assert _report(out)["counts"]["skipped"] == 4
    # a zero point: every output redone with its own kernelSum
    assert _cli(scheduler, *base, "-C", str(overrides), "--zero-point", "27") == 0
    rep = _report(out)
    assert rep["counts"]["matched"] == 4
    assert [e["kernel_sum"] for e in rep["exposures"]] == pytest.approx(
        [10 ** (0.4 * (TARGET_ZP - zp)) for zp in ZPS], rel=1e-9)


def test_a_truncated_input_fails_by_name_no_coadd_and_exit_1(scheduler, night, tmp_path, capsys):
    out, co = tmp_path / "m", tmp_path / "co.fits"
    args = (*night, "-r", "gaussian:sigma=2.6", "-o", str(out), "--zero-point", "27")
    assert _cli(scheduler, *args) == 0
    data = open(night[2], "rb").read()
    with open(night[2], "wb") as fh:
        fh.write(data[: len(data) // 2])
    capsys.readouterr()
    assert _cli(scheduler, *args, "--coadd", str(co)) == 1
    printed = capsys.readouterr().out
    assert f"FAILED {os.path.abspath(night[2])}: CorruptFileError:" in printed
    assert "coadd: not written: 1 of 4 input(s) failed" in printed
    assert not os.path.exists(co)
    rep = _report(out)
    assert rep["counts"] == {"matched": 0, "skipped": 3, "failed": 1}
    failed = rep["exposures"][2]
    assert failed["status"] == "failed" and failed["output"] is None and "truncated" in failed["error_message"]


def test_an_unreadable_input_does_not_change_the_reference_of_the_other_outputs(scheduler, night, tmp_path, capsys):
    """With -r auto, one input that became unreadable used to change the reference of the whole night: every
    complete output was redone against a narrower reference chosen without it (and again once it was fixed).
    The reference of the complete outputs is now kept, and the report says why and names the input."""
    out = tmp_path / "m"
    args = (*night, "-r", "auto", "-o", str(out))
    assert _cli(scheduler, *args) == 0
    first = _report(out)["reference"]["choice"]["sigma"]
    outputs = [os.path.join(str(out), os.path.basename(p)) for p in night]
    before = _mtimes(outputs[:3])
    data = open(night[3], "rb").read()  # visit3: the broadest PSF, which set the reference
    with open(night[3], "wb") as fh:
        fh.write(data[: len(data) // 2])
    capsys.readouterr()
    assert _cli(scheduler, *args) == 1
    printed = " ".join(capsys.readouterr().out.split())
    rep = _report(out)
    assert rep["exposures"][3]["status"] == "failed"
    # the other three were complete for the night's reference: kept, not redone against another one
    assert [e["status"] for e in rep["exposures"][:3]] == ["skipped"] * 3
    assert _mtimes(outputs[:3]) == before
    assert rep["reference"]["choice"]["sigma"] == pytest.approx(first)
    assert rep["reference"]["kept"].startswith("kept from 4 complete output(s) rather than the rule's sigma = ")
    assert [f["path"] for f in rep["reference"]["surveyFailures"]] == [night[3]]
    assert "kept from 4 complete output(s)" in printed
    assert f"not surveyed for the reference: 1 input(s): {night[3]} (CorruptFileError)" in printed
    # once the input is whole again the survey gives the same reference: nothing is redone
    with open(night[3], "wb") as fh:
        fh.write(data)
    assert _cli(scheduler, *args) == 0
    rep = _report(out)
    assert [e["status"] for e in rep["exposures"]] == ["skipped"] * 3 + ["matched"]
    assert rep["reference"]["choice"]["sigma"] == pytest.approx(first) and "kept" not in rep["reference"]


# ---------------------------------------------------------------------------
# coadding what the batch flagged


def test_a_coadd_of_an_ill_posed_match_warns(tmp_path):
    """coadd() used to combine a matched exposure whose own QA flags ILL_POSED (a deconvolution: its PSF is not
    the reference) without a word, and labelled the coadd with the reference PSF."""
    config = _config()
    config.autoKernel = False
    outs = []
    for i, sigma in enumerate((1.6, 2.6)):
        psf = GaussianPsf(25, 25, sigma)
        image = render_stars((128, 128), psf, STAR_X[:5] / 2, STAR_Y[:5] / 2, STAR_F[:5])
        path = str(tmp_path / f"v{i}.fits")
        write_exposure(Exposure(image.astype(np.float32), None, np.full((128, 128), SKY_VAR, np.float32), psf=psf),
                       path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = match_one(path, GaussianPsf(31, 31, 2.2), str(tmp_path / f"m{i}.fits"), config)
        outs.append(rep.output)
    assert "ILL_POSED" in rep.qa["qa"]["flags"]  # the second exposure: sigma 2.6 onto 2.2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = coadd(outs, str(tmp_path / "co.fits"))
    messages = [str(w.message) for w in caught if issubclass(w.category, PsfMatchWarning)]
    assert any(f"coadd: 1 of 2 input(s) carry QA flags from their own match: {outs[1]} (ILL_POSED" in m
               for m in messages)
    assert list(report.flagged_inputs) == [outs[1]] and "ILL_POSED" in report.flagged_inputs[outs[1]]


def test_match_many_in_python_resumes_and_its_summary_counts_what_it_did(scheduler, night, tmp_path):
    out = tmp_path / "m"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = match_many(night[:2], GaussianPsf(31, 31, 2.6), out, config=_config(), client=scheduler,
                           progress=False)
        again = match_many(night, GaussianPsf(31, 31, 2.6), out, config=_config(), client=scheduler,
                           progress=False)
    assert repr(first) == "BatchReport(2 exposures: 2 matched, 0 skipped, 0 failed)"
    assert [r.status for r in again] == ["skipped", "skipped", "matched", "matched"]
    assert again.summary().startswith("psfmatch batch: 4 exposure(s): 2 matched, 2 skipped (already complete), "
                                      "0 failed;")
    assert again.output_paths() == [os.path.join(str(out), os.path.basename(p)) for p in night]


def test_the_summary_and_the_coadd_line_name_the_flagged_exposures_also_with_q(scheduler, night, tmp_path, capsys):
    """A reference narrower than two of the night's PSFs (sigma 1.8 against 1.9 and 2.1): those matches are
    ILL_POSED. The summary names them (FLAGGED), and the coadd line says that they were combined, on standard
    error even with -q."""
    out, co = tmp_path / "m", tmp_path / "co.fits"
    capsys.readouterr()
    assert _cli(scheduler, *night, "-r", "gaussian:sigma=1.8", "-o", str(out), "--coadd", str(co),
                "-c", "autoKernel=False", "--zero-point", "27") == 0
    printed = capsys.readouterr().out
    flagged = [line for line in printed.splitlines() if line.startswith("  FLAGGED ")]
    assert [line.split()[1].rstrip(":") for line in flagged] == night[2:]
    assert all("ILL_POSED" in line for line in flagged)
    assert "coadd: 2 of 4 input(s) combined despite QA flags from their match: " in printed
    os.remove(co)
    assert _cli(scheduler, *night, "-r", "gaussian:sigma=1.8", "-o", str(out), "--coadd", str(co),
                "-c", "autoKernel=False", "--zero-point", "27", "-q") == 0
    captured = capsys.readouterr()
    assert "FLAGGED" not in captured.out and "coadd: 2 of 4 input(s) combined despite QA flags" in captured.err
