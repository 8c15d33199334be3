"""Fuzz psfmatch's file readers with mutated real files: only psfmatch's typed errors may come out.

Usage::

    python benchmarks/fuzz_readers.py [--iterations 5000] [--seed 0] [--data ../shared/data]
                                      [--warnings both|error|ignore] [--timeout 60] [--save-dir DIR]
                                      [--json report.json]

Seed files
    The PSFEx models under ``<data>/psfex/`` (``*.psf`` and the tractor
    ``psfex-decam-00392360-S31.fits``), the PSF images under
    ``<data>/psf_images/`` (read from the shared folder, never copied: some
    are GPL), and files written here with psfmatch: an exposure with a
    spatially varying PSF (``Exposure.writeFits``, the PSF stored as a PSFEx
    table), a matched exposure (analytic PSF, metadata), a kernel
    (``LinearCombinationKernel.writeFits``) and a synthetic PSFEx model.
    Without the shared folder only the generated seeds are used.

Mutations (:func:`mutate`, one to three per input)
    byte changes (anywhere or in the first header), truncation (anywhere or at
    a block boundary), a header card's value replaced by a nasty one
    (``PSF_SAMP = 0``, ``POLDEG1 = -1``, ``PSFAXIS3``/``NAXIS``/``BITPIX``
    changes, huge numbers, strings where numbers belong...), a card blanked
    out (a missing keyword), a 2880-byte block deleted or duplicated, random
    bytes inserted (misaligning everything after), and rarely a file of
    random bytes.

Checks (:func:`check_file`)
    Every reader is called on every mutated file: ``read_psf``,
    ``read_psfex``, ``read_image_psf``, ``Exposure.readFits`` and
    ``LinearCombinationKernel.readFits``.  The outcome is ``ok``, ``typed``
    (a :class:`~psfmatch.PsfMatchError`) or a *leak*: any other exception,
    a hang (longer than ``--timeout`` seconds), or a successfully read PSF
    whose ``computeKernelImage`` at a few positions is neither a valid stamp
    (odd, finite, unit sum) nor a ``PsfEvaluationError`` (likewise a read
    kernel must give finite images).  With ``--warnings error`` warnings are
    turned into exceptions (a caller running ``python -W error``), with
    ``ignore`` they are silenced; ``both`` alternates.

The exit status is 1 when anything leaked.  ``tests/test_fuzz_readers.py``
runs the same checks on a few hundred inputs drawn by hypothesis.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))

BLOCK = 2880

#: Header keywords whose values the card mutator changes.
KEYS = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "PCOUNT", "GCOUNT", "TFIELDS",
        "TFORM1", "TTYPE1", "TDIM1", "EXTNAME", "EXTEND", "BSCALE", "BZERO",
        "PSF_SAMP", "POLNAXIS", "POLNGRP", "POLGRP1", "POLGRP2", "POLNAME1", "POLNAME2", "POLZERO1", "POLZERO2",
        "POLSCAL1", "POLSCAL2", "POLDEG1", "PSFNAXIS", "PSFAXIS1", "PSFAXIS2", "PSFAXIS3",
        "PMFORMAT", "PMPSFTYP", "PMPARAMS", "PMSTAMPW", "PMSTAMPH", "PMRESIZW", "PMRESIZH", "KSUM", "BASKIND",
        "NBASIS", "NSPATIAL", "SPKIND", "SPORDER", "SPMINX", "SPMAXY", "BBW", "BBH", "LTV1", "CRVAL1A", "CTYPE1A",
        "MP_BAD", "MP_NO_DATA", "PIXSCALE", "SECPIX", "CD1_1", "CDELT1", "CTYPE1")

#: Replacement values (the value field of a card, as written in a header).
VALUES = (b"0", b"-1", b"1", b"2", b"3", b"7", b"64", b"-64", b"1000000", b"99999999999", b"1E30", b"-1E30",
          b"1E-30", b"0.5", b"2.5", b"1E400", b"NAN", b"T", b"F", b"''", b"'abc'", b"'X_IMAGE'", b"'MAG_AUTO'",
          b"'BINTABLE'", b"'IMAGE   '", b"'(1, 1, 1)'", b"'(99999, 99999, 6)'", b"'1E'", b"'GaussianPsf'",
          b"'{\"width\": 99999}'", b"'psfmatch-kernel'", b"'psfmatch-exposure'")

#: Positions (0-based parent pixels) where a PSF read successfully is evaluated.
POSITIONS = ((0.0, 0.0), (10.0, 20.0), (1000.0, 2000.0), (2047.0, 4095.0), (-50.0, 7000.0))


# ---------------------------------------------------------------------------
# seed files


def _synthetic_psfex_hdul():
    from astropy.io import fits

    y, x = np.mgrid[-12:13, -12:13].astype(float)
    g = np.exp(-(x * x + y * y) / (2 * 1.8 ** 2))
    basis = np.array([g, 0.1 * x * g / 5, 0.02 * g, 0.1 * y * g / 5, 0.01 * g, 0.02 * g], dtype=np.float32)
    col = fits.Column(name="PSF_MASK", format=f"{basis.size}E", dim="(25, 25, 6)", array=basis[None])
    hdu = fits.BinTableHDU.from_columns([col], name="PSF_DATA")
    for key, value in (("POLNAXIS", 2), ("POLGRP1", 1), ("POLNAME1", "X_IMAGE"), ("POLZERO1", 1024.5),
                       ("POLSCAL1", 2048.0), ("POLGRP2", 1), ("POLNAME2", "Y_IMAGE"), ("POLZERO2", 2048.5),
                       ("POLSCAL2", 4096.0), ("POLNGRP", 1), ("POLDEG1", 2), ("PSF_SAMP", 0.9),
                       ("PSFNAXIS", 3), ("PSFAXIS1", 25), ("PSFAXIS2", 25), ("PSFAXIS3", 6)):
        hdu.header[key] = value
    return fits.HDUList([fits.PrimaryHDU(), hdu])


def make_seed_files(workdir):
    """Write the generated seed files into ``workdir``; returns their paths."""
    from psfmatch import Box2I, Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
    from psfmatch.psf import GaussianPsf, VariableGaussianPsf

    rng = np.random.default_rng(3)
    bbox = Box2I((0, 0), (96, 96))
    psf = VariableGaussianPsf(15, 15, bbox, sigma=[1.5, 0.1, 0.05], e1=[0.03, 0.02, 0.0], e2=[-0.02])
    exposure = Exposure(rng.normal(size=(96, 96)).astype(np.float32), variance=np.ones((96, 96), np.float32),
                        psf=psf, xy0=(5, 7), metadata={"id": 3, "filter": "r"})
    config = ModelPsfMatchConfig()
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 48
    config.kernel.active.kernelSize = 11
    config.kernel.active.spatialKernelOrder = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ModelPsfMatchTask(config=config).run(exposure, GaussianPsf(21, 21, 2.2))
    paths = {
        "exposure-psfex.fits": lambda p: exposure.writeFits(p),
        "matched.fits": lambda p: result.psfMatchedExposure.writeFits(p),
        "kernel.fits": lambda p: result.psfMatchingKernel.writeFits(p),
        "synthetic.psf": lambda p: _synthetic_psfex_hdul().writeto(p),
    }
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, write in paths.items():
            path = os.path.join(workdir, name)
            if not os.path.exists(path):
                write(path)
            out.append(path)
    return out


def shared_seed_files(data_dir=DEFAULT_DATA):
    """The real files of the shared data folder used as seeds (empty when the folder is absent)."""
    if not os.path.isdir(data_dir):
        return []
    files = sorted(glob.glob(os.path.join(data_dir, "psfex", "**", "*.psf"), recursive=True))
    tractor = os.path.join(data_dir, "psfex", "dstndstn__tractor", "psfex-decam-00392360-S31.fits")
    if os.path.exists(tractor):
        files.append(tractor)
    files += sorted(glob.glob(os.path.join(data_dir, "psf_images", "**", "*.fits"), recursive=True))
    return files


def load_seeds(workdir, data_dir=DEFAULT_DATA, max_bytes=400_000):
    """``{name: bytes}`` of every seed file (files above ``max_bytes`` skipped to keep inputs quick)."""
    seeds = {}
    for path in shared_seed_files(data_dir) + make_seed_files(workdir):
        if os.path.getsize(path) <= max_bytes:
            with open(path, "rb") as fh:
                seeds[os.path.basename(path)] = fh.read()
    return seeds


# ---------------------------------------------------------------------------
# mutations: ``chooser`` needs ``randrange(n)`` and ``choice(seq)`` (random.Random, or hypothesis in the tests)


def _cards(data, keys=KEYS):
    """Byte offsets of header cards ``KEY = value`` whose key is in ``keys`` (80-byte aligned)."""
    wanted = {k.encode().ljust(8) for k in keys}
    return [i for i in range(0, len(data) - 80, 80) if data[i:i + 8] in wanted and data[i + 8:i + 10] == b"= "]


def _flip(data, ch):
    b = bytearray(data)
    header_only = ch.randrange(2) == 0
    span = min(len(b), BLOCK) if header_only else len(b)
    for _ in range(1 + ch.randrange(16)):
        b[ch.randrange(span)] = ch.randrange(256)
    return bytes(b), f"flip {'header' if header_only else 'any'} bytes"


def _truncate(data, ch):
    if ch.randrange(2):
        n = ch.randrange(len(data))
    else:
        n = BLOCK * ch.randrange(max(1, len(data) // BLOCK))
    return data[:n], f"truncate at {n}"


def _card_value(data, ch):
    offsets = _cards(data)
    if not offsets:
        return _flip(data, ch)
    i = ch.choice(offsets)
    value = ch.choice(VALUES)
    b = bytearray(data)
    b[i + 10:i + 80] = value.rjust(20).ljust(70)[:70]
    return bytes(b), f"{data[i:i + 8].decode().strip()} = {value.decode()}"


def _card_delete(data, ch):
    offsets = _cards(data)
    if not offsets:
        return _truncate(data, ch)
    i = ch.choice(offsets)
    b = bytearray(data)
    b[i:i + 80] = b" " * 80
    return bytes(b), f"delete {data[i:i + 8].decode().strip()}"


def _blocks(data, ch):
    nblocks = len(data) // BLOCK
    if nblocks < 2:
        return _flip(data, ch)
    j = ch.randrange(nblocks)
    block = data[j * BLOCK:(j + 1) * BLOCK]
    if ch.randrange(2):
        return data[:j * BLOCK] + data[(j + 1) * BLOCK:], f"delete block {j}"
    return data[:j * BLOCK] + block + data[j * BLOCK:], f"duplicate block {j}"


def _insert(data, ch):
    i = ch.randrange(len(data) + 1)
    junk = bytes(ch.randrange(256) for _ in range(1 + ch.randrange(100)))
    return data[:i] + junk + data[i:], f"insert {len(junk)} bytes at {i}"


def _garbage(data, ch):
    n = ch.choice((0, 1, 80, BLOCK, 2 * BLOCK + 17))
    return bytes(ch.randrange(256) for _ in range(n)), f"{n} random bytes"


MUTATORS = (_flip, _flip, _truncate, _card_value, _card_value, _card_value, _card_delete, _blocks, _insert,
            _garbage)


def mutate(data, ch):
    """Apply one to three mutations; returns ``(bytes, description)``."""
    steps = []
    for _ in range(1 + ch.randrange(3)):
        if not data:
            break
        data, what = ch.choice(MUTATORS)(data, ch)
        steps.append(what)
    return data, "; ".join(steps)


# ---------------------------------------------------------------------------
# the checks


class Hang(BaseException):
    """Raised by the alarm when a read takes longer than the timeout (a BaseException: no handler masks it)."""


@contextlib.contextmanager
def time_limit(seconds):
    """Raise :class:`Hang` after ``seconds`` (Unix, main thread; no limit elsewhere)."""
    if not seconds or not hasattr(signal, "SIGALRM") or not _main_thread():
        yield
        return

    def alarm(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


def _readers():
    from psfmatch import Exposure, LinearCombinationKernel
    from psfmatch.psf import read_image_psf, read_psf, read_psfex

    return (("read_psf", read_psf), ("read_psfex", read_psfex), ("read_image_psf", read_image_psf),
            ("Exposure.readFits", Exposure.readFits), ("LinearCombinationKernel.readFits",
                                                       LinearCombinationKernel.readFits))


def _evaluate(obj):
    """Use what a reader returned; returns a problem description, or None when everything is valid."""
    from psfmatch import PsfEvaluationError

    if hasattr(obj, "getPsf"):
        obj = obj.getPsf()
        if obj is None:
            return None
    if hasattr(obj, "computeImages"):  # a kernel
        for pos in POSITIONS[:3]:
            img = obj.computeImage(pos)
            if not np.all(np.isfinite(img)):
                return f"kernel image at {pos} is not finite"
        return None
    for pos in POSITIONS:
        try:
            img = obj.computeKernelImage(pos)
        except PsfEvaluationError:
            continue
        h, w = img.shape
        if h % 2 == 0 or w % 2 == 0 or not np.all(np.isfinite(img)) or abs(img.sum() - 1.0) > 1e-6:
            return f"invalid kernel image at {pos}: shape {img.shape}, sum {img.sum()!r}"
    return None


def check_file(path, warnings_mode="ignore", timeout=60.0):
    """Call every reader on ``path``: a list of ``(reader, outcome, detail)``.

    ``outcome`` is ``"ok"``, ``"typed"`` (a PsfMatchError, ``detail`` its class name) or ``"leak"``
    (``detail`` the exception type, where it was raised, and the message).
    """
    from psfmatch import PsfMatchError, PsfMatchWarning

    out = []
    for name, reader in _readers():
        try:
            with time_limit(timeout), warnings.catch_warnings():
                warnings.simplefilter("error" if warnings_mode == "error" else "ignore")
                obj = reader(path)
                problem = _evaluate(obj)
            if problem:
                out.append((name, "leak", f"BadOutput: {problem}"))
            else:
                out.append((name, "ok", type(obj).__name__))
        except (PsfMatchError, PsfMatchWarning) as exc:  # a typed error, or a typed warning made an error
            out.append((name, "typed", type(exc).__name__))
        except (Exception, Hang) as exc:  # everything else is a finding
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
            out.append((name, "leak", f"{type(exc).__name__} at {where}: {' '.join(str(exc).split())[:200]}"))
    return out


# ---------------------------------------------------------------------------
# the command


def run(iterations, seed=0, data_dir=DEFAULT_DATA, warnings_mode="both", timeout=60.0, save_dir=None,
        progress=True):
    """Fuzz ``iterations`` mutated inputs; returns the report (a dict)."""
    workdir = tempfile.mkdtemp(prefix="psfmatch-fuzz-")
    try:
        seeds = load_seeds(workdir, data_dir)
        names = sorted(seeds)
        rng = random.Random(seed)
        counts = {}
        leaks = []
        t0 = time.perf_counter()
        for it in range(iterations):
            name = rng.choice(names)
            data, what = mutate(seeds[name], rng)
            ext = os.path.splitext(name)[1] or ".fits"
            path = os.path.join(workdir, f"input{ext}")
            with open(path, "wb") as fh:
                fh.write(data)
            mode = warnings_mode if warnings_mode != "both" else ("error" if it % 2 else "ignore")
            for reader, outcome, detail in check_file(path, mode, timeout):
                key = f"{reader}:{outcome}"
                counts[key] = counts.get(key, 0) + 1
                if outcome == "leak":
                    leaks.append({"iteration": it, "seed": name, "mutation": what, "warnings": mode,
                                  "reader": reader, "detail": detail})
                    if save_dir:
                        os.makedirs(save_dir, exist_ok=True)
                        shutil.copy(path, os.path.join(save_dir, f"leak-{it:06d}{ext}"))
            if progress and (it + 1) % 500 == 0:
                print(f"  {it + 1} inputs, {len(leaks)} leaks, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return {"iterations": iterations, "seed": seed, "seed_files": names, "warnings": warnings_mode,
                "reads": sum(counts.values()), "counts": dict(sorted(counts.items())), "leaks": leaks,
                "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=5000, help="mutated inputs to try (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--data", default=DEFAULT_DATA, help="the shared data folder (default ../shared/data)")
    p.add_argument("--warnings", choices=("both", "error", "ignore"), default="both",
                   help="turn warnings into errors ('error'), ignore them ('ignore'), or alternate ('both', default)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a read counts as a hang")
    p.add_argument("--save-dir", help="copy every input that leaked into this folder")
    p.add_argument("--json", help="write the report as JSON")
    args = p.parse_args(argv)
    import logging

    logging.getLogger("psfmatch").setLevel(logging.ERROR)  # the readers' notes (estimated variances...)
    report = run(args.iterations, args.seed, args.data, args.warnings, args.timeout, args.save_dir)
    print(f"{report['iterations']} mutated inputs from {len(report['seed_files'])} seed files, "
          f"{report['reads']} reads in {report['seconds']} s (warnings: {report['warnings']})")
    for key, n in report["counts"].items():
        print(f"  {key:45s} {n}")
    print(f"leaks: {len(report['leaks'])}")
    for leak in report["leaks"][:50]:
        print(f"  #{leak['iteration']} {leak['seed']} [{leak['mutation']}] {leak['reader']}: {leak['detail']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 1 if report["leaks"] else 0


if __name__ == "__main__":
    sys.exit(main())
