"""Two findings of an end-to-end hunt of ``psfmatch batch``.

* Ctrl-C: a terminal sends SIGINT to its whole foreground process group, so the embedded
  ``LocalCluster``'s worker processes got it too and each died with a page of traceback, while
  the client handles the interruption itself.  The workers must ignore SIGINT, the caller keep
  its handler (and get its ``KeyboardInterrupt``), and the cluster still be closed.
* ``--coadd`` on inputs that are not on one pixel grid was refused only after every input had
  been matched: the grids are now compared from the headers before any work.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the batch tests need dask[distributed]")

from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

import psfmatch.batch  # noqa: E402
from psfmatch import Exposure  # noqa: E402
from psfmatch.batch import coadd, dask_client, match_many  # noqa: E402
from psfmatch.batch_cli import add_batch_parser, run_batch_command  # noqa: E402
from psfmatch.demo import make_demo_exposure  # noqa: E402
from psfmatch.errors import GridMismatchError  # noqa: E402
from psfmatch.io.fits import read_exposure, write_exposure  # noqa: E402
from psfmatch.psf import GaussianPsf  # noqa: E402

REFERENCE = GaussianPsf(31, 31, 2.6)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="psfmatch")
    add_batch_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def _forbid(monkeypatch, name, why):
    def must_not_run(*args, **kwargs):
        raise AssertionError(why)

    monkeypatch.setattr(psfmatch.batch, name, must_not_run)


def _gone(pid, timeout=15.0) -> bool:
    """Whether process ``pid`` has ended (and been reaped) within ``timeout`` seconds."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------
# Ctrl-C and the embedded cluster


def _check_workers_ignore_sigint(c):
    """Each worker ignores SIGINT: it is sent one, and then still answers, as the same process."""
    handlers = c.run(lambda: repr(signal.getsignal(signal.SIGINT)))  # (asyncio's handler does not pickle)
    assert set(handlers.values()) == {repr(signal.SIG_IGN)}, handlers
    pids = c.run(os.getpid)
    for pid in pids.values():
        os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the workers too
    time.sleep(0.5)
    assert c.run(os.getpid) == pids  # alive, none restarted by its nanny
    assert c.submit(sum, [1, 2], pure=False).result(timeout=60) == 3
    return list(pids.values())


@pytest.mark.slow
def test_local_cluster_workers_ignore_ctrl_c_and_the_caller_is_interrupted_and_cleans_up():
    before = signal.getsignal(signal.SIGINT)
    pids = []
    with pytest.raises(KeyboardInterrupt):
        with dask_client(n_workers=1) as (c, info):
            assert info["started_cluster"]
            assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is never changed
            pids = _check_workers_ignore_sigint(c)
            os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C reaches the caller: KeyboardInterrupt
            time.sleep(5)
            pytest.fail("the caller got no KeyboardInterrupt after the cluster's start-up")
    assert signal.getsignal(signal.SIGINT) is before
    assert pids and all(_gone(pid) for pid in pids), "a worker process outlived the interrupted cluster"

    # the same from a thread that cannot change signal handlers (a GUI's, a notebook's worker thread): the
    # caller's handler is left alone, and the workers are told to ignore SIGINT once started
    outcome = {}

    def in_thread():
        try:
            with dask_client(n_workers=1) as (c, _):
                outcome["pids"] = _check_workers_ignore_sigint(c)
        except BaseException as exc:  # (reported by the main thread)
            outcome["error"] = exc

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(120)
    assert not t.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    assert signal.getsignal(signal.SIGINT) is before
    assert all(_gone(pid) for pid in outcome["pids"])


@pytest.mark.slow
def test_a_worker_its_nanny_restarts_ignores_ctrl_c_too():
    """The workers were told to ignore SIGINT once, at start-up: one restarted by its nanny (after dying of memory,
    here of SIGKILL) took the next Ctrl-C and died with a traceback while the client cleaned up."""
    with dask_client(n_workers=1) as (c, _):
        (old,) = _check_workers_ignore_sigint(c)
        os.kill(old, signal.SIGKILL)
        t_end = time.monotonic() + 60
        pids = {}
        while time.monotonic() < t_end:
            try:
                pids = c.run(os.getpid, wait=True)
            except Exception:  # (the worker is gone, the new one not yet registered)
                pids = {}
            if pids and old not in pids.values():
                break
            time.sleep(0.2)
        assert pids and old not in pids.values(), "the nanny restarted no worker"
        (new,) = _check_workers_ignore_sigint(c)
        assert new != old


# ---------------------------------------------------------------------------
# --coadd: one pixel grid, checked before any exposure is matched


def _wcs(crval=(10.0, 20.0)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [20, 20]
    w.wcs.cdelt = [-5e-5, 5e-5]
    return w


def _write(path, shape=(40, 50), xy0=(0, 0), wcs="default"):
    wcs = _wcs() if isinstance(wcs, str) else wcs
    one = np.ones(shape, np.float32)
    write_exposure(Exposure(one, None, one, psf=REFERENCE, xy0=xy0, wcs=wcs), path, overwrite=True)
    return str(path)


def _plain(path, shape=(40, 50)):
    """A plain FITS image (no MASK/VARIANCE HDUs), as ``psfmatch batch --psf`` matches them."""
    hdr = _wcs().to_header()
    fits.PrimaryHDU(np.ones(shape, np.float32), header=hdr).writeto(path)
    return str(path)


OFF_GRID = {
    "shape": (lambda p: _write(p, shape=(40, 51)), r"has shape 51x40 \(width x height\), \S*a\.fits has 50x40"),
    "origin": (lambda p: _write(p, xy0=(5, 0)), r"has origin xy0 = \(5, 0\), \S*a\.fits has \(0, 0\)"),
    "wcs": (lambda p: _write(p, wcs=_wcs((10.0, 20.001))), r"has a WCS different from \S*a\.fits's"),
    "no wcs": (lambda p: _write(p, wcs=None), r"has no WCS and \S*a\.fits has one"),
    "plain image": (lambda p: _plain(p, shape=(41, 50)), r"has shape 50x41 \(width x height\), \S*a\.fits has 50x40"),
}


@pytest.mark.parametrize("kind", list(OFF_GRID))
def test_cli_coadd_of_inputs_off_one_grid_is_refused_before_any_match(kind, tmp_path, monkeypatch):
    _forbid(monkeypatch, "match_many", "matched although the inputs cannot be coadded")
    _forbid(monkeypatch, "dask_client", "a cluster was started although the inputs cannot be coadded")
    make, what = OFF_GRID[kind]
    a, b = _write(tmp_path / "a.fits"), _write(tmp_path / "b.fits")
    bad = make(tmp_path / "c.fits")
    out = tmp_path / "out"
    argv = ["batch", a, b, bad, "-r", "gaussian:sigma=2.6", "-o", str(out), "--coadd", str(tmp_path / "co.fits")]
    with pytest.raises(GridMismatchError, match=(
            rf"^--coadd \S*co\.fits: input \S*c\.fits {what}: a coadd needs every input on one pixel grid \(one "
            r"shape, origin xy0 and WCS\), so no exposure was matched; warp the inputs onto one grid first, or "
            r"leave c\.fits out of the batch, or leave --coadd out to match them without a coadd$")):
        run_batch_command(_parse(argv))
    assert not out.exists() and not (tmp_path / "co.fits").exists()  # no matched file, no report, no coadd
    # without --coadd the same inputs are matched (as far as this test lets them)
    with pytest.raises(AssertionError, match="matched although"):
        run_batch_command(_parse(argv[:-2]))


def test_match_many_require_same_grid_refuses_before_the_cluster_and_outdir(tmp_path, monkeypatch):
    _forbid(monkeypatch, "dask_client", "a cluster was started although the inputs cannot be coadded")
    a = _write(tmp_path / "a.fits")
    bad = _write(tmp_path / "bad.fits", xy0=(0, 3))
    with pytest.raises(GridMismatchError, match=r"^match_many\(require_same_grid=True\): input \S*bad\.fits has "
                                                r"origin xy0 = \(0, 3\).*pass require_same_grid=False to match them"):
        match_many([a, bad], REFERENCE, tmp_path / "out", require_same_grid=True)
    assert not (tmp_path / "out").exists()


def test_grid_check_agrees_with_the_coadd_and_leaves_unreadable_inputs_to_their_match(tmp_path):
    from psfmatch.batch import _check_coadd_grid

    # the early check must refuse exactly what the coadd refuses (same rules, same WCS tolerance)
    a = _write(tmp_path / "a.fits")
    variants = {
        "same": _write(tmp_path / "same.fits"),
        "wcs within tolerance": _write(tmp_path / "near.fits", wcs=_wcs((10.0, 20.0 + 1e-12))),
        "wcs beyond tolerance": _write(tmp_path / "far.fits", wcs=_wcs((10.0, 20.0 + 1e-9))),
        "origin": _write(tmp_path / "xy0.fits", xy0=(0, 1)),
        "shape": _write(tmp_path / "shape.fits", shape=(41, 50)),
        "no wcs": _write(tmp_path / "nowcs.fits", wcs=None),
    }
    for name, v in variants.items():
        try:
            coadd([a, v], tmp_path / f"co-{name}.fits")
            coadd_refuses = False
        except GridMismatchError:
            coadd_refuses = True
        try:
            _check_coadd_grid([a, v], "test", "x")
            check_refuses = False
        except GridMismatchError:
            check_refuses = True
        assert check_refuses == coadd_refuses, name
    assert [name for name in variants if not (tmp_path / f"co-{name}.fits").exists()] == [
        "wcs beyond tolerance", "origin", "shape", "no wcs"]
    # a missing or damaged input is its match's to report: the grid is checked on the others
    damaged = tmp_path / "damaged.fits"
    damaged.write_bytes(b"not FITS at all" * 300)
    _check_coadd_grid([str(tmp_path / "absent.fits"), str(damaged), a, variants["same"]], "test", "x")
    with pytest.raises(GridMismatchError, match=r"input \S*xy0\.fits has origin xy0 = \(0, 1\), \S*a\.fits has"):
        _check_coadd_grid([str(damaged), a, variants["origin"]], "test", "x")


@pytest.mark.filterwarnings("ignore::psfmatch.errors.KernelQualityWarning")  # (small exposures: not the point)
def test_cli_batch_on_one_grid_still_coadds(tmp_path):
    # one grid up to the coadd's WCS tolerance (1e-12 deg apart): an exact comparison would refuse it
    paths = []
    for i, crval in enumerate([(10.0, 20.0), (10.0, 20.0 + 1e-12)]):
        exp = make_demo_exposure(160, seed=i, n_stars=8)
        exp.setWcs(_wcs(crval))
        paths.append(str(tmp_path / f"e{i}.fits"))
        write_exposure(exp, paths[-1])
    cfg = ["-c", "kernel.active.sizeCellX=80", "-c", "kernel.active.sizeCellY=80"]
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                       dashboard_address=":0", silence_logs=40)
    try:
        argv = ["batch", *paths, "-r", "gaussian:sigma=2.6", "-o", str(tmp_path / "out"), "--coadd",
                str(tmp_path / "co.fits"), "--scheduler", cluster.scheduler_address, *cfg]
        assert run_batch_command(_parse(argv)) == 0
    finally:
        cluster.close()
    co = read_exposure(tmp_path / "co.fits")
    assert co.metadata["coadd"]["nInputs"] == 2 and co.getWcs() is not None
    assert co.getPsf().getSigma() == pytest.approx(2.6)
