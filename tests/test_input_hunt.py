"""Input/output defects found by an end-to-end hunt of the command line.

- a science image given as a PSF file was identified as a PSF image and read as one (a 513x513 "PSF"
  of sigma 174 px; ``psfmatch run`` then matched to it and exited 0);
- a ``.fits.gz`` output recorded a temporary file's name in its gzip header (``gunzip -N`` restored
  ``..z.fits.gz.<random>.partial.gz.<random>.tmp``);
- an override file calling ``sys.exit(3)`` made ``psfmatch`` exit 3 (``exit()`` also closed stdin).
"""

import gzip
import io
import os
import re
import sys

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Box2I, ModelPsfMatchTask
from psfmatch.cli import main
from psfmatch.config import ModelPsfMatchConfig, load_overrides
from psfmatch.demo import make_demo_exposure
from psfmatch.errors import InvalidConfigError, UnsupportedFormatError
from psfmatch.io import read_exposure, read_kernel, write_exposure, write_kernel
from psfmatch.io.fits import atomic_write
from psfmatch.psf import GaussianPsf, ImagePsf, read_image_psf, read_psf

def _gaussian(n, sigma, x0=None, y0=None):
    c = (n - 1) / 2.0
    x0 = c if x0 is None else x0
    y0 = c if y0 is None else y0
    y, x = np.mgrid[:n, :n]
    return np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2.0 * sigma**2))


def _science_frame(n=512, seed=7):
    """A sky-subtracted frame with noise and stars scattered over it: no PSF."""
    rng = np.random.default_rng(seed)
    frame = rng.normal(0.0, 5.0, (n, n))
    for x0, y0 in rng.uniform(20, n - 20, (60, 2)):
        frame += 2000.0 * _gaussian(n, 1.8, x0, y0)
    return frame.astype(np.float32)


@pytest.fixture(scope="module")
def science_file(tmp_path_factory):
    """A DES-like file: an empty primary HDU and a SCI image (what ``psfmatch inspect-psf`` was given)."""
    path = tmp_path_factory.mktemp("sci") / "des_small.fits"
    sci = fits.ImageHDU(_science_frame(), name="SCI")
    sci.header["EXPTIME"] = 90.0
    fits.HDUList([fits.PrimaryHDU(), sci]).writeto(path)
    return str(path)


# ---------------------------------------------------------------------------
# 1. a science image is not a PSF model


def test_a_science_frame_identified_as_an_image_is_refused(science_file):
    with pytest.raises(UnsupportedFormatError) as info:
        read_psf(science_file)
    msg = str(info.value)
    assert msg.startswith(f"{science_file}: read as a PSF image (no other PSF format matched), but it does not "
                          "look like one: a 512x512 image (EXTNAME 'SCI') with ")
    # what was seen: about a quarter of the flux in the central box, a width of a large fraction of the frame
    share = int(msg.split(" with ")[1].split("%")[0])
    assert 15 <= share < 50
    sigma = float(msg.split("adaptive-moment sigma of about ")[1].split(" px")[0])
    assert sigma > 100
    # the remedies: the exposure's PSF model, or the image format forced
    assert "Give the exposure's PSF model" in msg
    assert 'image:FILE on the command line, read_psf(path, format="image") in Python' in msg


def test_a_science_frame_is_read_when_the_image_format_is_forced(science_file):
    for psf in (read_psf(science_file, format="image"), read_psf(science_file, require_psf_like=False),
                read_image_psf(science_file)):
        assert isinstance(psf, ImagePsf) and psf.array.shape == (513, 513)


def test_run_and_inspect_psf_refuse_a_science_frame_as_the_psf(science_file, tmp_path, capsys):
    """``psfmatch run exposure.fits --psf des_small.fits`` ran 44 s, exited 0 and wrote a garbage match."""
    exposure = tmp_path / "exposure.fits"
    make_demo_exposure(64, seed=2).writeFits(str(exposure))
    out = tmp_path / "m.fits"
    rc = main(["run", str(exposure), "--psf", science_file, "-r", "gaussian:sigma=2.6", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists()
    assert err.count("\n") == 1 and "does not look like one: a 512x512 image (EXTNAME 'SCI')" in err
    assert main(["inspect-psf", science_file]) == 1
    assert "does not look like one" in capsys.readouterr().err
    assert main(["inspect-psf", f"image:{science_file}"]) == 0  # forced: read as it is


def test_psf_images_are_not_refused(shared_data):
    """Real PSF images (IRAC, HST; the SDSS one on its 1000-count bias, 51x51, below the size checked),
    a PSF stamp 257 px wide and a broad PSF (sigma an eighth of its stamp) are read when identified."""
    for name in ("irac_ch1_flight.fits", "irac_ch4_flight.fits"):
        path = shared_data("psf_images", "astropy__photutils-datasets", name)
        assert isinstance(read_psf(path), ImagePsf)
    galsim = ("psf_images", "GalSim-developers__GalSim")
    for name in ("147246.0_150.416558_1.998697.psf.fits", "AEGIS_F814w_PSF_images_01.fits",
                 "real_galaxy_PSF_images.fits", "shera_target_PSF.fits", "147246.0_150.416558_1.998697.sdsspsf.fits"):
        assert isinstance(read_psf(shared_data(*galsim, name)), ImagePsf)


def test_large_psf_stamps_are_not_refused(tmp_path, shared_data):
    irac = fits.getdata(shared_data("psf_images", "astropy__photutils-datasets", "irac_ch4_flight.fits"))
    padded = np.zeros((257, 257))
    padded[88:169, 88:169] = irac
    broad = _gaussian(201, 201 / 8.0)  # 91 % of its flux in the central box
    for name, data in (("padded.fits", padded), ("broad.fits", broad)):
        fits.PrimaryHDU(data).writeto(tmp_path / name)
        psf = read_psf(tmp_path / name)
        assert psf.array.shape == data.shape and abs(psf.array.sum() - 1.0) < 1e-9


def test_the_check_applies_from_128_pixels(tmp_path):
    """An evenly lit image is a science frame at 128 px, and a stamp (not checked) at 127 px."""
    for n, refused in ((127, False), (128, True)):
        path = tmp_path / f"flat{n}.fits"
        fits.PrimaryHDU(np.full((n, n), 3.0)).writeto(path)
        if refused:
            with pytest.raises(UnsupportedFormatError, match=r"flat128.fits: .*a 128x128 image with 25% of its flux "
                                                             r"in its central 64x64 box"):
                read_psf(path)
        else:
            assert read_psf(path).array.shape == (127, 127)


def test_the_check_is_made_after_the_background_is_subtracted(tmp_path):
    """A PSF on a soft bias (as SDSS's, 1000 counts) spreads its counts over the stamp until the bias is
    subtracted."""
    path = tmp_path / "biased.fits"
    psf = 1e6 * _gaussian(255, 3.0) / _gaussian(255, 3.0).sum()
    fits.PrimaryHDU(psf + 1000.0).writeto(path)
    with pytest.raises(UnsupportedFormatError, match=r"biased.fits: .*a 255x255 image with 2\d% of its flux"):
        read_psf(path)
    back = read_psf(path, background=1000.0)
    np.testing.assert_allclose(back.array, psf / psf.sum(), atol=1e-9)


# ---------------------------------------------------------------------------
# 2. no temporary name in a gzip header


def _gzip_name(path):
    """The FNAME field of the (first) gzip member header of ``path`` (RFC 1952), or None when absent."""
    with open(path, "rb") as fh:
        head = fh.read(10)
        assert head[:3] == b"\x1f\x8b\x08", f"{path} is not a deflate gzip file"
        flags = head[3]
        if flags & 0x04:  # FEXTRA comes first
            fh.read(int.from_bytes(fh.read(2), "little"))
        if not flags & 0x08:
            return None
        name = b""
        while (c := fh.read(1)) not in (b"", b"\0"):
            name += c
        return name.decode("latin-1")


def test_a_gzip_exposure_and_kernel_record_no_temporary_name(tmp_path):
    exposure = make_demo_exposure(64, seed=4)
    path = tmp_path / "x.fits.gz"
    write_exposure(exposure, path)
    assert _gzip_name(path) in (None, "x.fits")
    back = read_exposure(path)
    for plane in ("image", "mask", "variance"):
        assert np.array_equal(getattr(back, plane), getattr(exposure, plane), equal_nan=True)
    assert back.getPsf() == exposure.getPsf()
    kernel = ModelPsfMatchTask().fitKernel(GaussianPsf(21, 21, 1.8), GaussianPsf(31, 31, 2.6),
                                           Box2I((0, 0), (64, 64))).kernel
    kpath = tmp_path / "k.fits.gz"
    write_kernel(kernel, kpath)
    assert _gzip_name(kpath) in (None, "k.fits")
    assert np.array_equal(read_kernel(kpath).computeImage((30.0, 20.0)), kernel.computeImage((30.0, 20.0)))
    assert sorted(os.listdir(tmp_path)) == ["k.fits.gz", "x.fits.gz"]  # no temporary file left


def test_atomic_write_clears_the_name_any_gzip_writer_records(tmp_path):
    path = tmp_path / "table.txt.gz"
    payload = np.random.default_rng(0).bytes(3 << 20)  # incompressible: several 1 MiB blocks to move up
    with atomic_write(path) as tmp:
        with gzip.open(tmp, "wb") as fh:
            fh.write(payload)
    assert _gzip_name(path) in (None, "table.txt")
    assert gzip.decompress(path.read_bytes()) == payload


def test_the_command_line_gzip_outputs_record_no_temporary_name(tmp_path, capsys):
    """The command line stages ``.z.fits.gz.<random>.partial.gz``, which write_exposure stages again."""
    exposure = tmp_path / "exposure.fits"
    make_demo_exposure(128, seed=5).writeFits(str(exposure))
    out, kout = tmp_path / "z.fits.gz", tmp_path / "zk.fits.gz"
    rc = main(["-q", "run", str(exposure), "-r", "gaussian:sigma=3.0", "-o", str(out), "--kernel-out", str(kout),
               "-c", "kernel.active.sizeCellX=64", "-c", "kernel.active.sizeCellY=64"])
    assert rc == 0, capsys.readouterr().err
    assert _gzip_name(out) in (None, "z.fits") and _gzip_name(kout) in (None, "zk.fits")
    assert read_exposure(out).image.shape == (128, 128)


# ---------------------------------------------------------------------------
# 3. an override file must not end the program


@pytest.mark.parametrize("body, shown", [("import sys\nsys.exit(3)\n", "SystemExit(3)"),
                                         ("exit()\n", "SystemExit()"),
                                         ("quit('done')\n", "SystemExit('done')"),
                                         ("raise SystemExit\n", "SystemExit()")])
def test_an_override_file_that_exits_is_refused(tmp_path, monkeypatch, body, shown):
    path = tmp_path / "over.py"
    path.write_text("config.padPsfBy = 4\n" + body)
    stdin = io.StringIO("")
    monkeypatch.setattr(sys, "stdin", stdin)
    with pytest.raises(InvalidConfigError, match=rf"config override file '{path}' tried to end the program: it raised "
                                                 rf"{re.escape(shown)}, as sys.exit\(\) and exit\(\) do; a config "
                                                 r"file sets fields .* and must not exit: remove the call"):
        load_overrides(ModelPsfMatchConfig(), path)
    assert not stdin.closed  # the interactive exit() closes stdin before it raises


def test_an_override_file_interrupted_passes_the_interrupt_on(tmp_path):
    path = tmp_path / "over.py"
    path.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load_overrides(ModelPsfMatchConfig(), path)


def test_the_command_line_fails_with_one_line_for_an_exiting_override_file(tmp_path, capsys):
    path = tmp_path / "over.py"
    path.write_text("import sys\nsys.exit(3)\n")
    assert main(["config", "-C", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tried to end the program: it raised SystemExit(3)" in err
