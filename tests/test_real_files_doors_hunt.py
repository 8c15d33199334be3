"""Every real PSF file of ../shared/data through every door a user has.

Doors: ``read_psf`` (and ``read_psfex`` / ``read_image_psf``), the SPEC forms of the command line
(``psfex:FILE``, ``image:FILE,option=value``, ``piff:FILE``, ``psfmatch:FILE``), ``psfmatch inspect-psf``
(``--at``, ``--json``, ``--plot``), ``psfmatch run --psf SPEC``, ``choose_reference_psf``, and an exposure
file written and read back with the PSF attached.

Numbers are checked against independent computations: GalSim's own PSFEx reader (``galsim.des.DES_PSFEx``),
GalSim's adaptive moments (``galsim.hsm``), the files' headers read with astropy, and the published GalSim
measurement of the DES model.  The files are read from ../shared/data (never copied: some are GPL);
every test skips when that folder is absent.
"""

import json
import math
import warnings

import numpy as np
import pytest
from astropy.io import fits

from psfmatch.cli import main, parse_psf_spec
from psfmatch.errors import (CorruptFileError, InvalidInputError, MissingDependencyError, PsfMatchWarning,
                             UnsupportedFormatError)
from psfmatch.geom import Box2I
from psfmatch.image import Exposure
from psfmatch.io import read_exposure, read_exposure_info, write_exposure
from psfmatch.psf import read_psf
from psfmatch.psf.adapters import has_piff
from psfmatch.psf.psfex import read_psfex

PSFEX = {
    "des": ("psfex", "GalSim-developers__GalSim", "DECam_00154912_12_psfcat.psf"),
    "esheldon": ("psfex", "esheldon__psfex", "test_psfcat.psf"),
    "piff_decam": ("psfex", "rmjarvis__Piff", "DECam_00241238_01_psfcat.psf"),
    "tractor_s2": ("psfex", "dstndstn__tractor", "c4d_140717_065122_ooi_i_ls11-S2-se.psf"),
    "tractor_z": ("psfex", "dstndstn__tractor", "c4d_140818_002108_ooi_z_v1.ext27.psf"),
    "tractor_s31": ("psfex", "dstndstn__tractor", "psfex-decam-00392360-S31.fits"),
}
GS = "GalSim-developers__GalSim"
IRAC = "astropy__photutils-datasets"
IMAGES = {  # name: (parts, reader options)
    "irac1": (("psf_images", IRAC, "irac_ch1_flight.fits"), {}),
    "irac2": (("psf_images", IRAC, "irac_ch2_flight.fits"), {}),
    "irac3": (("psf_images", IRAC, "irac_ch3_flight.fits"), {}),
    "irac4": (("psf_images", IRAC, "irac_ch4_flight.fits"), {}),
    "aegis606": (("psf_images", GS, "AEGIS_F606w_PSF_images_01.fits"), {}),
    "aegis814_hdu2": (("psf_images", GS, "AEGIS_F814w_PSF_images_01.fits"), {"hdu": 2}),
    "cosmos": (("psf_images", GS, "147246.0_150.416558_1.998697.psf.fits"), {}),
    "sdss": (("psf_images", GS, "147246.0_150.416558_1.998697.sdsspsf.fits"), {"background": 1000}),
    "shera": (("psf_images", GS, "shera_target_PSF.fits"), {}),
    "realgal0": (("psf_images", GS, "real_galaxy_PSF_images.fits"), {}),
    "realgal_39x37": (("psf_images", GS, "real_galaxy_PSF_images.fits"), {"hdu": 1}),
}
PIFF = ("piff", "rmjarvis__Piff", "D00240560_r_c01_r2362p01_piff.fits")
INVALID = ("psfex", GS, "invalid_psfcat.psf")
HEADER_ONLY = ("psfex", GS, "DECam_00154912_12_header.fits")


def _spec(kind, path, options):
    return f"{kind}:{path}" + "".join(f",{k}={v}" for k, v in options.items())


def _hsm(image):
    """GalSim adaptive moments of a stamp: sigma, distortion (e1, e2), centroid offset from the centre pixel."""
    galsim = pytest.importorskip("galsim")
    m = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(image), scale=1.0))
    ny, nx = image.shape
    return (m.moments_sigma, m.observed_shape.e1, m.observed_shape.e2,
            m.moments_centroid.x - 1 - (nx - 1) / 2, m.moments_centroid.y - 1 - (ny - 1) / 2)


def _cli_json(capsys, *argv):
    capsys.readouterr()
    assert main(["inspect-psf", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------
# PSFEx: headers, sampling, centring, against GalSim's reader


@pytest.mark.parametrize("name", sorted(PSFEX))
def test_psfex_geometry_follows_the_files_own_header(shared_data, name):
    path = shared_data(*PSFEX[name])
    h = fits.getheader(path, "PSF_DATA")
    psf = read_psf(path)
    z = (h["POLZERO1"], h["POLZERO2"])
    s = (h["POLSCAL1"], h["POLSCAL2"])
    # 1-based SExtractor contexts -> 0-based psfmatch positions
    assert tuple(psf.getAveragePosition()) == pytest.approx((z[0] - 1, z[1] - 1), abs=1e-9)
    box = psf.getBBox()
    assert box.getMinX() == math.floor(z[0] - 1 - s[0] / 2) and box.getMaxX() == math.ceil(z[0] - 1 + s[0] / 2)
    assert box.getMinY() == math.floor(z[1] - 1 - s[1] / 2) and box.getMaxY() == math.ceil(z[1] - 1 + s[1] / 2)
    assert psf.psf_samp == pytest.approx(h["PSF_SAMP"], rel=1e-12)
    assert psf.degree == h["POLDEG1"] and psf.basis.shape == (h["PSFAXIS3"], h["PSFAXIS2"], h["PSFAXIS1"])

    def odd_cover(n):
        m = math.ceil(n - 1e-9)
        return m if m % 2 else m + 1

    k = psf.computeKernelImage((300.25, 700.75))
    assert k.shape == (odd_cover(h["PSFAXIS2"] * h["PSF_SAMP"]), odd_cover(h["PSFAXIS1"] * h["PSF_SAMP"]))
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    # the raw basis combination sums to about 1 / PSF_SAMP^2 (README: about 4.1 for PSF_SAMP = 0.5)
    raw = np.asarray(fits.getdata(path, "PSF_DATA")["PSF_MASK"][0], dtype=float)[0].sum()
    assert raw * h["PSF_SAMP"] ** 2 == pytest.approx(1.0, abs=0.1)
    assert psf.computeSampledImage().sum() == pytest.approx(raw, rel=1e-6)  # at POLZERO: the first basis image


@pytest.mark.parametrize("name", ["tractor_s2", "tractor_s31"])
def test_psfex_with_unit_sampling_at_polzero_is_exactly_the_first_basis_image(shared_data, name):
    path = shared_data(*PSFEX[name])
    b0 = np.asarray(fits.getdata(path, "PSF_DATA")["PSF_MASK"][0], dtype=float)[0]
    psf = read_psf(path)
    k = psf.computeKernelImage(psf.getAveragePosition())
    np.testing.assert_allclose(k, b0 / b0.sum(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(PSFEX))
def test_psfex_kernel_images_equal_galsims_des_psfex(shared_data, name):
    pytest.importorskip("galsim")
    galsim_des = pytest.importorskip("galsim.des")
    import galsim

    path = shared_data(*PSFEX[name])
    psf = read_psf(path)
    ref = galsim_des.DES_PSFEx(path)
    for x, y in [(100.5, 200.25), (1800.0, 3900.0), (10.0, 10.0), tuple(psf.getAveragePosition())]:
        k = psf.computeKernelImage((x, y))
        g = ref.getPSF(galsim.PositionD(x + 1, y + 1)).drawImage(nx=k.shape[1], ny=k.shape[0], scale=1.0,
                                                                  method="no_pixel").array
        g = g / g.sum()
        assert np.abs(k - g).max() < 2e-5 * k.max(), (name, x, y)


def test_des_psfex_moments_agree_with_galsims_published_measurement(shared_data, capsys):
    """GalSim's test: at (1195.64, 1276.63) 1-based, sigma 1.807 px, g = (0.022, -0.131), +-0.03 each."""
    path = shared_data(*PSFEX["des"])
    x, y = 1195.64 - 1, 1276.63 - 1
    q = read_psf(path).computeShape((x, y))
    at = _cli_json(capsys, path, "--at", f"{x},{y}")["at"]
    for sigma, e1, e2 in [(q.sigma, q.e1, q.e2), (at["sigma"], at["e1"], at["e2"])]:
        e = math.hypot(e1, e2)
        g = math.tanh(math.atanh(e) / 2) / e  # distortion -> reduced shear
        assert sigma == pytest.approx(1.807, abs=0.03)
        assert e1 * g == pytest.approx(0.022, abs=0.03) and e2 * g == pytest.approx(-0.131, abs=0.03)
    assert (at["x"], at["y"]) == (pytest.approx(x), pytest.approx(y))


def test_psfex_read_with_swapped_context_names_gives_the_same_model(shared_data):
    """POLNAME1 = Y_IMAGE: the same degree-6 model written with its axes swapped (built in memory)."""
    path = shared_data(*PSFEX["tractor_z"])
    ref = read_psfex(path)
    with fits.open(path) as hdul:
        h = hdul["PSF_DATA"].header.copy()
        data = np.array(hdul["PSF_DATA"].data["PSF_MASK"][0])
    d = h["POLDEG1"]

    def idx(i, j):
        return i + j * (d + 1) - j * (j - 1) // 2

    swapped = np.empty_like(data)
    for j in range(d + 1):
        for i in range(d + 1 - j):
            swapped[idx(i, j)] = data[idx(j, i)]
    for a, b in (("POLNAME1", "POLNAME2"), ("POLZERO1", "POLZERO2"), ("POLSCAL1", "POLSCAL2")):
        h[a], h[b] = h[b], h[a]
    col = fits.Column(name="PSF_MASK", format=f"{swapped.size}E", dim=f"({data.shape[2]},{data.shape[1]},{data.shape[0]})",
                      array=swapped[None])
    table = fits.BinTableHDU.from_columns([col], header=h, name="PSF_DATA")
    got = read_psfex(fits.HDUList([fits.PrimaryHDU(), table]))
    for pos in [(100.0, 200.0), (1800.0, 3900.0), (1020.0, 2047.0)]:
        np.testing.assert_array_equal(got.computeKernelImage(pos), ref.computeKernelImage(pos))


def test_invalid_psfex_file_is_refused_with_the_contradiction_through_every_door(shared_data, capsys):
    path = shared_data(*INVALID)
    for call in (lambda: read_psf(path), lambda: read_psfex(path), lambda: parse_psf_spec(f"psfex:{path}")):
        with pytest.raises(CorruptFileError, match=r"PSFAXIS3 = 3 contradicts POLDEG1 = 2.*6 basis images"):
            call()
    with pytest.raises(UnsupportedFormatError, match=r"PSFEx PSF model .*not an image"):
        read_psf(path, format="image")
    capsys.readouterr()
    assert main(["inspect-psf", path]) == 1
    assert "PSFAXIS3 = 3 contradicts POLDEG1 = 2" in capsys.readouterr().err


def test_a_wcs_header_file_is_no_psf_through_every_door(shared_data):
    path = shared_data(*HEADER_ONLY)
    with pytest.raises(UnsupportedFormatError, match=r"not recognized as any PSF format.*psfex:FILE, image:FILE"):
        read_psf(path)
    with pytest.raises(UnsupportedFormatError, match=r"no PSF_DATA binary table"):
        parse_psf_spec(f"psfex:{path}")
    with pytest.raises(UnsupportedFormatError, match=r"none 2-d: give a file with a 2-d image"):
        parse_psf_spec(f"image:{path}")


# ---------------------------------------------------------------------------
# PSF images: scale cards, centring, SPEC options


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_psf_recentred_is_centred_unit_sum_and_keeps_its_size(shared_data, name):
    parts, options = IMAGES[name]
    path = shared_data(*parts)
    raw = np.asarray(fits.getdata(path, options.get("hdu", 0)), dtype=float) - options.get("background", 0)
    psf = parse_psf_spec(_spec("image", path, {**options, "recenter": "true"}))
    k = psf.computeKernelImage()
    assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1 and k.sum() == pytest.approx(1.0, abs=1e-12)
    sigma, _, _, cx, cy = _hsm(k)
    assert abs(cx) < 0.01 and abs(cy) < 0.01
    assert sigma == pytest.approx(_hsm(raw)[0], rel=2e-3)  # recentring (a Fourier shift) widens nothing


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_inspect_psf_json_numbers_agree_with_galsim_hsm(shared_data, capsys, name):
    parts, options = IMAGES[name]
    path = shared_data(*parts)
    info = _cli_json(capsys, _spec("image", path, options))["at"]
    k = read_psf(path, format="image", **options).computeKernelImage()
    sigma, e1, e2, cx, cy = _hsm(k)
    assert (info["width"], info["height"]) == (k.shape[1], k.shape[0])
    assert info["sigma"] == pytest.approx(sigma, rel=1e-5)
    assert info["fwhm"] == pytest.approx(sigma * 2 * math.sqrt(2 * math.log(2)), rel=1e-5)
    assert (info["e1"], info["e2"]) == (pytest.approx(e1, abs=1e-5), pytest.approx(e2, abs=1e-5))
    assert (info["centroidX"], info["centroidY"]) == (pytest.approx(cx, abs=1e-4), pytest.approx(cy, abs=1e-4))
    assert info["spatiallyVarying"] is False


@pytest.mark.parametrize("name", sorted(PSFEX))
def test_inspect_psf_json_of_psfex_agrees_with_galsim_hsm_at_a_corner(shared_data, capsys, name):
    path = shared_data(*PSFEX[name])
    psf = read_psf(path)
    box = psf.getBBox()
    x, y = box.getMinX() + 50.5, box.getMaxY() - 40.25
    out = _cli_json(capsys, f"psfex:{path}", f"--at={x},{y}")
    info = out["at"]
    sigma, e1, e2, cx, cy = _hsm(psf.computeKernelImage((x, y)))
    assert (info["x"], info["y"]) == (x, y)
    assert info["sigma"] == pytest.approx(sigma, rel=1e-5)
    assert (info["e1"], info["e2"], info["centroidX"], info["centroidY"]) == (
        pytest.approx(e1, abs=1e-5), pytest.approx(e2, abs=1e-5), pytest.approx(cx, abs=1e-4),
        pytest.approx(cy, abs=1e-4))
    assert info["spatiallyVarying"] is True and out["variation"]["n"] == 25
    # README: adaptive sizes over these fields run from about 1.4 px (esheldon) to 2.6 px (tractor S31)
    assert 1.3 < info["sigma"] < 2.7


def test_image_pixel_scales_come_from_the_cards_or_the_option(shared_data):
    irac = {c: shared_data("psf_images", IRAC, f"irac_ch{c}_flight.fits") for c in (1, 4)}
    for c, path in irac.items():
        assert read_psf(path).pixel_scale == fits.getheader(path)["SECPIX"]
    cosmos = shared_data(*IMAGES["cosmos"][0])
    assert read_psf(cosmos).pixel_scale is None  # no scale card
    assert parse_psf_spec(f"image:{cosmos},pixel_scale=0.03").pixel_scale == 0.03
    with pytest.raises(InvalidInputError, match=r"states no pixel scale.*pass pixel_scale="):
        parse_psf_spec(f"image:{cosmos},target_pixel_scale=0.396")
    # rebinned 2x (0.03 -> 0.06 arcsec/px): flux kept, unweighted second moments scale by the ratio^2 and gain
    # the new pixel's 1/12 (less the old pixel's, ratio^2 / 12), the first moment scales by the ratio
    fine = read_psf(cosmos).computeKernelImage()
    coarse = parse_psf_spec(f"image:{cosmos},pixel_scale=0.03,target_pixel_scale=0.06")
    assert coarse.pixel_scale == 0.06 and coarse.computeKernelImage().sum() == pytest.approx(1.0, abs=1e-12)
    r = 0.5
    (vx0, vy0, cx0, cy0), (vx1, vy1, cx1, cy1) = _moments(fine), _moments(coarse.computeKernelImage())
    # (5e-3: the diffraction wing at the stamp edge weighs heavily in unweighted moments; a pixel counted twice
    # or forgotten, 1 / 12 coarse px^2, is 1 %)
    assert vx1 == pytest.approx(vx0 * r * r + (1 - r * r) / 12, rel=5e-3)
    assert vy1 == pytest.approx(vy0 * r * r + (1 - r * r) / 12, rel=5e-3)
    assert (cx1, cy1) == (pytest.approx(cx0 * r, abs=2e-3), pytest.approx(cy0 * r, abs=2e-3))


def _moments(a):
    """Unweighted variances and centroid offset from the centre pixel."""
    y, x = np.mgrid[:a.shape[0], :a.shape[1]]
    s = a.sum()
    cx, cy = (a * x).sum() / s, (a * y).sum() / s
    return ((a * (x - cx) ** 2).sum() / s, (a * (y - cy) ** 2).sum() / s, cx - (a.shape[1] - 1) / 2,
            cy - (a.shape[0] - 1) / 2)


def test_even_hst_stamp_keeps_its_adaptive_centroid_and_size_when_made_odd(shared_data):
    path = shared_data(*IMAGES["aegis606"][0])
    for hdu in (0, 1, 2):
        raw = np.asarray(fits.getdata(path, hdu), dtype=float)
        assert raw.shape == (20, 20)
        k = read_psf(path, hdu=hdu).computeKernelImage()
        assert k.shape == (21, 21)
        s0, _, _, cx0, cy0 = _hsm(raw)  # offsets from the geometric centre 9.5
        s1, _, _, cx1, cy1 = _hsm(k)  # ... and from the centre pixel 10
        assert (cx1, cy1) == (pytest.approx(cx0, abs=1e-4), pytest.approx(cy0, abs=1e-4))
        assert s1 == pytest.approx(s0, rel=1e-4)


def test_hdu_option_reads_the_non_square_real_galaxy_psfs(shared_data, capsys):
    path = shared_data(*IMAGES["realgal0"][0])
    for hdu in (1, 2, 3):
        shape = fits.getdata(path, hdu).shape
        psf = parse_psf_spec(f"image:{path},hdu={hdu}")
        assert psf.computeKernelImage().shape == shape  # odd already: (ny, nx) kept, not transposed
    info = _cli_json(capsys, f"image:{path},hdu=1")["at"]
    assert (info["width"], info["height"]) == (37, 39)
    with pytest.raises(UnsupportedFormatError, match=r"no HDU 100"):
        parse_psf_spec(f"image:{path},hdu=100")


def test_inspect_psf_plot_writes_a_figure_for_a_psfex_model_and_an_image_spec(shared_data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    model = shared_data(*PSFEX["tractor_z"])
    sdss = shared_data(*IMAGES["sdss"][0])
    png, svg = tmp_path / "m.png", tmp_path / "s.svg"
    assert main(["inspect-psf", model, "--at", "100,4000", "--plot", str(png), "-q"]) == 0
    assert main(["inspect-psf", f"image:{sdss},background=1000", "--plot", str(svg), "-q"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()[:2000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "s.svg"]  # no temporary left behind
    # the figure would overwrite the PSF file itself: refused, the file untouched
    before = (tmp_path / "m.png").read_bytes()
    capsys.readouterr()
    assert main(["inspect-psf", f"image:{png}", "--plot", str(png), "--overwrite"]) != 0
    assert png.read_bytes() == before


def test_sdss_soft_bias_changes_the_inspected_size_and_warns_without_background(shared_data, capsys):
    path = shared_data(*IMAGES["sdss"][0])
    with pytest.warns(PsfMatchWarning, match=r"border sits at 1000 .*background=1000"):
        biased = read_psf(path)
    assert biased.computeShape().sigma > 10
    info = _cli_json(capsys, f"image:{path}, background = 1000")["at"]
    raw = np.asarray(fits.getdata(path), dtype=float) - 1000
    assert info["sigma"] == pytest.approx(_hsm(raw)[0], rel=1e-4) and info["sigma"] == pytest.approx(1.29, abs=0.01)


# ---------------------------------------------------------------------------
# exposure files carrying each PSF


_POSITIONS = [(1000.0, 2000.0), (1040.3, 2050.7), (10.0, 10.0), (2000.0, 4000.0)]


@pytest.mark.parametrize("name", sorted(PSFEX) + sorted(IMAGES))
def test_exposure_file_round_trips_each_real_psf_exactly(shared_data, tmp_path, name):
    if name in PSFEX:
        psf = read_psf(shared_data(*PSFEX[name]))
    else:
        parts, options = IMAGES[name]
        psf = read_psf(shared_data(*parts), format="image", **options)
    out = tmp_path / "e.fits"
    write_exposure(Exposure(np.zeros((20, 30), np.float32), psf=psf, xy0=(1000, 2000)), out)
    for back in (read_exposure(out).getPsf(), read_exposure_info(out).psf, read_psf(out),
                 parse_psf_spec(f"psfmatch:{out}")):
        assert type(back) is type(psf) and back == psf
        assert getattr(back, "pixel_scale", None) == getattr(psf, "pixel_scale", None)
        for pos in _POSITIONS:
            np.testing.assert_array_equal(back.computeKernelImage(pos), psf.computeKernelImage(pos))


def test_exposure_file_round_trips_reader_option_variants(shared_data, tmp_path):
    psfex = shared_data(*PSFEX["piff_decam"])
    irac = shared_data(*IMAGES["irac2"][0])
    variants = [read_psf(psfex, origin=0), read_psf(psfex, stamp_size=(31, 41)),
                read_psf(shared_data(*PSFEX["esheldon"])).resized(15, 15),
                read_psf(irac, target_pixel_scale=0.4), read_psf(irac).resized(31, 31)]
    for i, psf in enumerate(variants):
        out = tmp_path / f"v{i}.fits"
        write_exposure(Exposure(np.zeros((8, 8), np.float32), psf=psf, xy0=(500, 600)), out)
        back = read_exposure(out).getPsf()
        assert back == psf and tuple(back.getAveragePosition()) == tuple(psf.getAveragePosition())
        for pos in _POSITIONS:
            np.testing.assert_array_equal(back.computeKernelImage(pos), psf.computeKernelImage(pos))


# ---------------------------------------------------------------------------
# psfmatch run --psf SPEC, choose_reference_psf


def _star_field(psf, n, xy0, step=37, flux=1000.0, seed=1):
    rng = np.random.default_rng(seed)
    img = np.zeros((n, n))
    stars = []
    for y in range(25, n - 20, step):
        for x in range(25, n - 20, step):
            fx, fy = x + xy0[0] + rng.uniform(-0.5, 0.5), y + xy0[1] + rng.uniform(-0.5, 0.5)
            st, bb = psf.computeImage((fx, fy)), psf.computeImageBBox((fx, fy))
            x0, y0 = bb.getMinX() - xy0[0], bb.getMinY() - xy0[1]
            img[y0:y0 + st.shape[0], x0:x0 + st.shape[1]] += flux * st
            stars.append((fx, fy))
    return img, stars


def test_run_with_a_psfex_spec_gives_stars_of_the_reference_width(shared_data, tmp_path, capsys):
    from psfmatch.moments import adaptive_moments

    model = shared_data(*PSFEX["des"])
    psf = read_psf(model)
    xy0 = (900, 1900)
    img, stars = _star_field(psf, 200, xy0)
    write_exposure(Exposure(img.astype(np.float32), variance=np.full(img.shape, 1e-4, np.float32), xy0=xy0),
                   tmp_path / "in.fits")
    assert main(["run", str(tmp_path / "in.fits"), "--psf", f"psfex:{model}", "-r", "gaussian:sigma=2.6",
                 "-o", str(tmp_path / "out.fits"), "-q"]) == 0
    out = read_exposure(tmp_path / "out.fits")
    assert tuple(out.getXY0()) == xy0
    a = np.asarray(out.image)
    for fx, fy in stars:
        cx, cy = int(round(fx)) - xy0[0], int(round(fy)) - xy0[1]
        st = a[cy - 12:cy + 13, cx - 12:cx + 13]
        ixx, iyy, ixy = adaptive_moments(st)[:3]
        assert st.sum() == pytest.approx(1000.0, rel=3e-3)
        assert ixx == pytest.approx(2.6 ** 2, rel=0.01) and iyy == pytest.approx(2.6 ** 2, rel=0.01)
        assert abs(ixy) < 0.03  # the DES PSF's ixy of -0.9 px^2 is gone
    assert read_psf(tmp_path / "out.fits").getSigma() == 2.6  # the output carries the reference PSF


def _lambda_max_hsm(image):
    """Largest covariance eigenvalue from GalSim's adaptive moments (sigma = det^(1/4), distortion e)."""
    sigma, e1, e2, _, _ = _hsm(image)
    e = math.hypot(e1, e2)
    trace = 2 * sigma ** 2 / math.sqrt(1 - e * e)
    return trace / 2 * (1 + e)


def test_choose_reference_psf_over_the_real_psfex_models_follows_its_rule(shared_data, tmp_path):
    from psfmatch.batch import choose_reference_psf

    names = ["des", "tractor_s31", "piff_decam"]
    psfs = [read_psf(shared_data(*PSFEX[n])) for n in names]
    box = Box2I((0, 0), (2048, 4096))
    choice = choose_reference_psf([(p, box) for p in psfs])
    lam = max(_lambda_max_hsm(p.computeKernelImage((x, y))) for p in psfs
              for y in np.linspace(0, 4095, 5) for x in np.linspace(0, 2047, 5))
    assert choice.lambda_max == pytest.approx(lam, rel=1e-4)
    assert choice.sigma == pytest.approx(math.sqrt(1.1 ** 2 * lam + 0.7 ** 2), rel=1e-4)
    assert choice.psf.getSigma() == choice.sigma and choice.n_positions == 75 and not choice.failures
    # the same through files without a PSF and psfex: SPECs (as batch's --input-list gives them)
    paths = []
    for i in range(len(names)):
        paths.append(str(tmp_path / f"e{i}.fits"))
        write_exposure(Exposure(np.zeros((40, 40), np.float32), xy0=(1000, 2000)), paths[-1])
    by_file = choose_reference_psf(paths, psfs=[f"psfex:{shared_data(*PSFEX[n])}" for n in names])
    lam = max(_lambda_max_hsm(p.computeKernelImage((x, y))) for p in psfs
              for y in np.linspace(2000, 2039, 5) for x in np.linspace(1000, 1039, 5))
    assert by_file.lambda_max == pytest.approx(lam, rel=1e-4) and by_file.broadest["path"] == paths[1]


# ---------------------------------------------------------------------------
# Piff (not installed): a typed error with the install hint, at every door

needs_no_piff = pytest.mark.skipif(has_piff(), reason="Piff is installed: the missing-dependency path is not taken")
_HINT = r"needs the optional package 'piff'.*pip install 'psfmatch\[piff\]'"


@needs_no_piff
def test_piff_file_gives_the_install_hint_through_every_python_door(shared_data, tmp_path):
    from psfmatch.batch import choose_reference_psf
    from psfmatch.psf.adapters import PiffPsf

    path = shared_data(*PIFF)
    for call in (lambda: read_psf(path), lambda: read_psf(path, format="piff"), lambda: PiffPsf(path),
                 lambda: parse_psf_spec(f"piff:{path}"), lambda: parse_psf_spec(path),
                 lambda: parse_psf_spec(f"piff:{path},chipnum=1")):
        with pytest.raises(MissingDependencyError, match=_HINT):
            call()
    with pytest.raises(UnsupportedFormatError, match=r"Piff PSF model .*piff:FILE"):
        parse_psf_spec(f"image:{path}")
    exp = tmp_path / "e.fits"
    write_exposure(Exposure(np.zeros((16, 16), np.float32)), exp)
    with pytest.raises(InvalidInputError, match=r"MissingDependencyError: .*pip install 'psfmatch\[piff\]'"):
        choose_reference_psf([str(exp)], psfs=[f"piff:{path}"])


@needs_no_piff
@pytest.mark.parametrize("argv", [
    ["inspect-psf", "{P}"], ["inspect-psf", "piff:{P}", "--json"], ["inspect-psf", "piff:{P}", "--plot", "{T}/f.png"],
    ["run", "{E}", "--psf", "piff:{P}", "-r", "gaussian:sigma=3", "-o", "{T}/o.fits", "--kernel-out", "{T}/k.fits"],
    ["run", "{E}", "--psf", "{P}", "-r", "gaussian:sigma=3", "-o", "{T}/o.fits"],
    ["run", "{E}", "--psf", "gaussian:sigma=2", "-r", "piff:{P}", "-o", "{T}/o.fits"],
])
def test_piff_file_gives_the_install_hint_on_the_command_line_and_writes_nothing(shared_data, tmp_path, capsys, argv):
    path = shared_data(*PIFF)
    exp = tmp_path / "in" / "e.fits"
    exp.parent.mkdir()
    write_exposure(Exposure(np.ones((32, 32), np.float32), variance=np.ones((32, 32), np.float32)), exp)
    argv = [a.format(P=path, T=tmp_path, E=exp) for a in argv]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "needs the optional package 'piff'" in err and "pip install 'psfmatch[piff]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# ---------------------------------------------------------------------------
# defects


def test_psf_images_of_different_pixel_scales_warn_even_without_an_exposure_wcs(shared_data):
    """Was a defect (fixed): science and reference PSF images with recorded pixel scales 8x apart are matched without
    a warning when the exposure has no WCS."""
    from psfmatch.config import ModelPsfMatchConfig, apply_overrides
    from psfmatch.task import ModelPsfMatchTask

    sci = read_psf(shared_data(*IMAGES["shera"][0]), pixel_scale=0.24, recenter=True)  # ground, 0.24"/px
    ref = read_psf(shared_data("psf_images", GS, "AEGIS_F814w_PSF_images_01.fits"), pixel_scale=0.03,
                   recenter=True)  # HST, 0.03"/px: in arcsec 8x narrower than it is in pixels here
    config = ModelPsfMatchConfig()
    apply_overrides(config, ["kernel.active.kernelSize=15", "autoKernel=False"])
    exposure = Exposure(np.zeros((64, 64), np.float32), variance=np.ones((64, 64), np.float32), psf=sci)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ModelPsfMatchTask(config=config).run(exposure, ref)
    assert any(isinstance(w.message, PsfMatchWarning) and "0.24" in str(w.message) and "0.03" in str(w.message)
               for w in caught), [str(w.message)[:120] for w in caught]


@needs_no_piff
def test_missing_piff_error_names_the_file(shared_data):
    """Was a defect (fixed): the missing-Piff error does not name the file (or SPEC) that needed it."""
    path = shared_data(*PIFF)
    with pytest.raises(MissingDependencyError) as info:
        read_psf(path)
    assert "D00240560_r_c01_r2362p01_piff.fits" in str(info.value)


def test_psfex_spec_on_a_piff_file_says_it_is_a_piff_model(shared_data):
    """Was a defect (fixed): psfex:PIFF_FILE says 'pass ext=' instead of naming the Piff model and piff:FILE
    (image:FILE does)."""
    path = shared_data(*PIFF)
    with pytest.raises(UnsupportedFormatError, match=r"Piff.*piff:FILE"):
        parse_psf_spec(f"psfex:{path}")


@needs_no_piff
def test_choose_reference_psf_warns_when_an_exposure_is_left_out(shared_data, tmp_path, caplog):
    """Was a defect (fixed): choose_reference_psf drops an exposure it cannot survey (here: Piff missing) with only
    an INFO log; the reference ignores that exposure's PSF."""
    from psfmatch.batch import choose_reference_psf

    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"e{i}.fits"))
        write_exposure(Exposure(np.zeros((40, 40), np.float32), xy0=(1000, 2000)), paths[-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level("INFO"):
            choice = choose_reference_psf(paths, psfs=[f"psfex:{shared_data(*PSFEX['des'])}",
                                                       f"piff:{shared_data(*PIFF)}"])
    assert choice.n_exposures == 1 and choice.failures[0]["path"] == paths[1]  # what happens now
    loud = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records if r.levelname != "INFO"
                                               and r.levelname != "DEBUG"]
    assert any("e1.fits" in m for m in loud), loud


def test_recentred_space_psf_resampled_to_a_ground_scale_is_read_or_refused_helpfully(shared_data):
    """Was a defect (fixed): recenter=true with resampling of the HST PSF to a ground scale (the README's space ->
    ground pair) fails with an error naming neither file nor remedy."""
    cosmos = shared_data(*IMAGES["cosmos"][0])
    try:
        psf = parse_psf_spec(f"image:{cosmos},pixel_scale=0.03,target_pixel_scale=0.396,recenter=true")
    except InvalidInputError as exc:  # refusing is acceptable only with the file and what to do
        assert "147246.0_150.416558_1.998697.psf.fits" in str(exc) and "recenter=false" in str(exc), str(exc)
    else:
        k = psf.computeKernelImage()
        assert psf.pixel_scale == 0.396 and k.sum() == pytest.approx(1.0, abs=1e-12)
        _, _, cx, cy = _moments(k)
        assert abs(cx) < 0.02 and abs(cy) < 0.02


@pytest.mark.slow
def test_run_irac_ch1_to_ch4_through_image_specs_reproduces_ch4(shared_data, tmp_path):
    """README: ch1 -> ch4 reproduces ch4 to a relative L2 error of about 0.02-0.03."""
    ch1, ch4 = (shared_data("psf_images", IRAC, f"irac_ch{c}_flight.fits") for c in (1, 4))
    sci = read_psf(ch1, recenter=True)
    ref = read_psf(ch4, recenter=True)
    img = np.zeros((260, 260))
    stars = [(70, 70), (190, 70), (70, 190), (190, 190)]
    for x, y in stars:
        bb = sci.computeImageBBox((x, y))
        img[bb.getMinY():bb.getMinY() + 81, bb.getMinX():bb.getMinX() + 81] += 1000 * sci.computeImage((x, y))
    write_exposure(Exposure(img.astype(np.float32), variance=np.full(img.shape, 1e-6, np.float32)),
                   tmp_path / "in.fits")
    assert main(["run", str(tmp_path / "in.fits"), "--psf", f"image:{ch1},recenter=true",
                 "-r", f"image:{ch4},recenter=true", "-o", str(tmp_path / "out.fits"), "-q"]) == 0
    out = np.asarray(read_exposure(tmp_path / "out.fits").image)
    k4 = ref.computeKernelImage()
    for x, y in stars:
        st = out[y - 40:y + 41, x - 40:x + 41] / 1000
        assert np.linalg.norm(st - k4) / np.linalg.norm(k4) < 0.03
        assert st.sum() == pytest.approx(1.0, abs=0.005)
    back = read_psf(tmp_path / "out.fits")
    assert back == ref and back.pixel_scale == 0.305
