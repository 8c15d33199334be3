"""Fuzzing the FITS and PSFEx readers (issue 8): from mutated files only psfmatch's typed errors come out.

The mutations, the seed files and the checks are those of the standalone fuzzer
``benchmarks/fuzz_readers.py`` (which runs many more inputs; the README records
its counts).  Here hypothesis draws the mutations (byte changes, truncations,
header card values such as ``PSF_SAMP = 0``, ``POLDEG1 = -1``, ``NAXIS`` or
``BITPIX`` changes, missing cards, deleted or duplicated blocks, inserted bytes)
of the real files in ``../shared/data`` (PSFEx models, PSF images) and of files
written by psfmatch (an exposure, a matched exposure, a kernel, a PSFEx model);
the derandomized, database-free settings make the run deterministic.

Every reader (``read_psf``, ``read_psfex``, ``read_image_psf``,
``Exposure.readFits``, ``LinearCombinationKernel.readFits``) must either return
something usable (a PSF whose kernel images are valid stamps or raise
``PsfEvaluationError``; finite kernel images) or raise a ``PsfMatchError``;
half of the inputs are read with warnings turned into errors.  The regression
tests at the end replay what the fuzzer found.
"""

from __future__ import annotations

import importlib.util
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psfmatch import Exposure, LinearCombinationKernel
from psfmatch.errors import CorruptFileError, InvalidInputError, PsfMatchError
from psfmatch.psf import read_image_psf, read_psf, read_psfex

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("psfmatch_fuzz_readers", ROOT / "benchmarks" / "fuzz_readers.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)

SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fuzz.load_seeds(str(tmp_path_factory.mktemp("seeds")), str(SHARED))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


class HypothesisChooser:
    """The chooser interface of ``fuzz.mutate`` (``randrange``, ``choice``), drawn by hypothesis."""

    def __init__(self, data):
        self.data = data

    def randrange(self, n):
        return self.data.draw(st.integers(0, max(n, 1) - 1))

    def choice(self, seq):
        return seq[self.data.draw(st.integers(0, len(seq) - 1))]


def _assert_typed(path, mode, what):
    for reader, outcome, detail in fuzz.check_file(str(path), mode, timeout=60):
        assert outcome != "leak", f"{reader} on {what} ({mode} warnings): {detail}"


def test_seed_files_are_read(seeds, workdir):
    assert {"exposure-psfex.fits", "matched.fits", "kernel.fits", "synthetic.psf"} <= set(seeds)
    if SHARED.is_dir():
        assert "DECam_00154912_12_psfcat.psf" in seeds and "irac_ch1_flight.fits" in seeds
    for name, data in seeds.items():  # unmutated: the right reader succeeds, the others give typed errors
        path = workdir / f"seed{os.path.splitext(name)[1]}"
        path.write_bytes(data)
        results = fuzz.check_file(str(path), "error")
        assert all(outcome != "leak" for _, outcome, _ in results), results
        expected = "typed" if name.startswith("invalid_") else "ok"
        assert any(outcome == expected for _, outcome, _ in results), (name, results)


@settings(max_examples=300, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_files_give_only_typed_errors(seeds, workdir, data):
    name = data.draw(st.sampled_from(sorted(seeds)), label="seed")
    mutated, what = fuzz.mutate(seeds[name], HypothesisChooser(data))
    mode = data.draw(st.sampled_from(["ignore", "error"]), label="warnings")
    path = workdir / f"input{os.path.splitext(name)[1]}"
    path.write_bytes(mutated)
    _assert_typed(path, mode, f"{name} [{what}]")


def test_a_random_batch_like_the_standalone_fuzzer(seeds, workdir):
    """100 inputs drawn exactly as ``benchmarks/fuzz_readers.py --seed 20260101`` draws them."""
    rng = random.Random(20260101)
    names = sorted(seeds)
    for i in range(100):
        name = rng.choice(names)
        mutated, what = fuzz.mutate(seeds[name], rng)
        path = workdir / f"batch{os.path.splitext(name)[1]}"
        path.write_bytes(mutated)
        _assert_typed(path, "error" if i % 2 else "ignore", f"{name} [{what}]")


# ---------------------------------------------------------------------------
# what the fuzzer found (each used to leak an untyped exception, or to hang)


def _with_card(data, key, value):
    i = next(i for i in range(0, len(data), 80) if data[i:i + 8] == key.encode().ljust(8))
    return data[:i + 10] + value.encode().rjust(20).ljust(70) + data[i + 80:]


def _blank_card(data, key):
    i = data.index(key.encode().ljust(8) + b"= ")
    return data[:i] + b" " * 80 + data[i + 80:]


def _need(seeds, name):
    if name not in seeds:
        pytest.skip(f"{name} is not in the shared data")
    return seeds[name]


def test_found_naxis_huge_hung_astropy(seeds, workdir):
    # astropy loops over range(NAXIS): NAXIS = 99999999999 ran for hours (and grew to GBs)
    path = workdir / "naxis.fits"
    path.write_bytes(_with_card(_need(seeds, "irac_ch1_flight.fits"), "NAXIS", "99999999999"))
    for reader in (read_psf, read_image_psf, Exposure.readFits, read_psfex, LinearCombinationKernel.readFits):
        with pytest.raises(CorruptFileError, match=r"naxis.fits\[HDU 0\]: NAXIS = 99999999999 is not an integer"):
            reader(path)


def test_found_missing_tform_made_astropy_fail_internally(seeds, workdir):
    # astropy: UnboundLocalError "cannot access local variable 'recformat'"
    path = workdir / "tform.psf"
    path.write_bytes(_blank_card(seeds["synthetic.psf"], "TFORM1"))
    for reader in (read_psf, read_psfex):
        with pytest.raises(CorruptFileError, match=r"tform.psf\[HDU 1 PSF_DATA\]: the table header lacks TFORM1"):
            reader(path)


def test_found_long_column_name_assertion(seeds, workdir):
    # astropy validates column names with ``assert``: an AssertionError came out
    path = workdir / "ttype.psf"
    path.write_bytes(_with_card(seeds["synthetic.psf"], "TTYPE1", "'" + "X" * 67 + "'"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PsfMatchError):
            read_psfex(path)


def test_found_unparsable_pixel_scale_card(seeds, workdir):
    # a damaged SECPIX card: astropy's VerifyError came out of the pixel-scale lookup
    data = _need(seeds, "irac_ch1_flight.fits")
    i = data.index(b"SECPIX  = ")
    path = workdir / "secpix.fits"
    path.write_bytes(data[:i + 10] + b"\x8c\x01 garbage" + data[i + 20:])
    for reader in (read_image_psf, read_psf):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(CorruptFileError, match=r"secpix.fits.*cannot read the PSF image's pixel scale"):
                reader(path)


def test_found_psf_image_sum_overflow(workdir):
    # pixel values shifted by inserted bytes: the sum overflowed (a RuntimeWarning, or an all-zero PSF)
    from astropy.io import fits

    path = workdir / "overflow.fits"
    fits.PrimaryHDU(np.full((5, 5), 1e308)).writeto(path, overwrite=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CorruptFileError, match=r"overflow.fits: the PSF image's sum overflows"):
            read_image_psf(path)
    # and the variance estimated for a plain image: a scatter too large for the image's type
    fits.PrimaryHDU(np.where(np.indices((6, 6)).sum(axis=0) % 2, 1e38, -1e38).astype(np.float32)).writeto(
        path, overwrite=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CorruptFileError, match=r"overflow.fits\[PRIMARY\]: the pixels' scatter overflows float32"):
            Exposure.readFits(path)


def test_truncated_exposure_is_not_silently_incomplete(seeds, workdir):
    # astropy drops an HDU whose header is cut (with a warning): the exposure used to come back with an
    # estimated variance instead of its own, or without its metadata
    data = seeds["exposure-psfex.fits"]
    i = data.index(b"XTENSION= 'IMAGE   '", data.index(b"EXTNAME = 'VARIANCE'") - 800)
    for n, match in [(i + 1000, r"\[HDU 3 VARIANCE\]: the file ends inside this HDU's header"),
                     (i, r"the VARIANCE, METADATA HDU\(s\) of a psfmatch exposure file are missing")]:
        path = workdir / "cut.fits"
        path.write_bytes(data[:n])
        with pytest.raises(CorruptFileError, match=match):
            Exposure.readFits(path)


def test_found_junk_before_a_header_with_a_negative_axis_sent_astropy_round_in_circles(seeds, workdir):
    # kernel file: COEFFS NAXIS1 = -64, and a block of the BASIS data duplicated so that junk precedes the
    # COEFFS header.  astropy reads junk + header as one header, and the negative data size sends it
    # back to an earlier offset: it read the same HDUs forever (the standalone fuzzer's input #17938)
    data = seeds["kernel.fits"]
    start = data.rindex(b"XTENSION", 0, data.index(b"EXTNAME = 'COEFFS"))
    i = data.index(b"NAXIS1  = ", start)
    data = data[:i + 10] + b"-64".rjust(20).ljust(70) + data[i + 80:]
    data = data[:5 * 2880] + data[4 * 2880:5 * 2880] + data[5 * 2880:]
    path = workdir / "circles.fits"
    path.write_bytes(data)
    for reader in (read_psf, read_psfex, read_image_psf, Exposure.readFits, LinearCombinationKernel.readFits):
        with fuzz.time_limit(20), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(CorruptFileError, match=r"circles.fits\[HDU 2 COEFFS\]: NAXIS1 = -64 is not a "
                                                       r"non-negative integer"):
                reader(path)


def test_found_even_psf_image_with_cancelling_extreme_values(workdir):
    # an even image (re-centred by a half-pixel Fourier shift) whose huge positive and negative values
    # cancel in the sum: the FFT overflowed (a RuntimeWarning; with warnings ignored, a NaN PSF)
    from astropy.io import fits

    y, x = np.mgrid[0:20, 0:20]
    image = np.exp(-((x - 9.5) ** 2 + (y - 9.5) ** 2) / 8)
    image[0] = np.where(np.arange(20) % 2, 1e307, -1e307)  # sums to 0 exactly; sum |v| = 2e308 overflows
    path = workdir / "extreme.fits"
    fits.PrimaryHDU(image).writeto(path, overwrite=True)
    for mode in ("error", "ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter(mode)
            with pytest.raises(InvalidInputError, match="ImagePsf: re-centring the array overflowed or left no "
                                                        "flux"):
                read_image_psf(path)
    image[0] /= 1e300  # the same shape with tame values is a valid PSF
    fits.PrimaryHDU(image).writeto(path, overwrite=True)
    stamp = read_image_psf(path).computeKernelImage((0, 0))
    assert stamp.shape == (21, 21) and np.all(np.isfinite(stamp)) and abs(stamp.sum() - 1) < 1e-9


def test_found_kernel_data_shifted_into_huge_finite_coefficients(seeds, workdir):
    # kernel file: 45 bytes inserted in the padding of the COEFFS header shift its data by 45 bytes.  Every
    # value stayed finite (up to 1e307) and the kernel read, but its images at (1000, 2000) overflowed to inf
    # (the standalone fuzzer's input #14120, --seed 77); the data no longer match their DATASUM
    data = seeds["kernel.fits"]
    end = data.index(b"END" + b" " * 77, data.index(b"EXTNAME = 'COEFFS"))
    path = workdir / "shifted.fits"
    path.write_bytes(data[:end + 1394] + b" " * 45 + data[end + 1394:])
    # (astropy repairs, with a warning, the padding the insertion leaves at the end of the file: that repair
    # is logged, not raised, so the result is the same with warnings as errors)
    for mode in ("ignore", "error"):
        with warnings.catch_warnings():
            warnings.simplefilter(mode)
            with pytest.raises(CorruptFileError,
                               match=r"shifted.fits\[COEFFS\]: the data do not match their DATASUM checksum"):
                LinearCombinationKernel.readFits(path)


def test_found_unparsable_pmformat_card(seeds, workdir):
    # kernel file with a control byte after the PMFORMAT value: read_psf's check for psfmatch's own files
    # (which hold no PSF) parsed the card and let astropy's VerifyError out (the standalone fuzzer's
    # input #19672, --seed 3001)
    data = _need(seeds, "kernel.fits")
    i = data.index(b"PMFORMAT= 'psfmatch-kernel'") + len(b"PMFORMAT= 'psfmatch-kernel'")
    path = workdir / "pmformat.fits"
    path.write_bytes(data[:i] + b" \x08" + data[i + 2:])
    for mode in ("ignore", "error"):
        _assert_typed(path, mode, "an unparsable PMFORMAT card")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PsfMatchError):
            read_psf(path)


def test_found_kernel_box_at_infinity(seeds, workdir):
    # kernel file with SPMAXY = 1E400 (inf): the finiteness check sampled the box with linspace, whose
    # RuntimeWarning came out untyped with warnings as errors (the standalone fuzzer's input #12117, --seed 3006)
    data = _need(seeds, "kernel.fits")
    path = workdir / "spmaxy.fits"
    path.write_bytes(_with_card(data, "SPMAXY", "1E400"))
    for mode in ("ignore", "error"):
        _assert_typed(path, mode, "an infinite spatial box")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CorruptFileError, match=r"spatial function's box .* is not a finite, non-empty box"):
            LinearCombinationKernel.readFits(path)


def test_found_bytes_that_look_lzw_compressed(workdir):
    # 2880 random bytes over a file whose first two happened to be LZW's signature (0x1f 0x9d): astropy asked
    # for its optional decompressor and a bare ModuleNotFoundError came out (the standalone fuzzer's input
    # #11172, --seed 3007)
    pytest.importorskip("astropy")
    path = workdir / "lzw.fits"
    path.write_bytes(b"\x1f\x9d" + bytes(random.Random(1).randrange(256) for _ in range(2878)))
    for mode in ("ignore", "error"):
        _assert_typed(path, mode, "LZW-looking bytes")
    try:
        import uncompresspy  # noqa: F401
    except ImportError:
        from psfmatch.errors import MissingDependencyError
        with pytest.raises(MissingDependencyError, match=r"lzw.fits: cannot read the PSF: .*uncompresspy.*its first "
                                                         r"bytes say it is compressed; if it is not, the file is damaged"):
            read_psf(path)
