"""The matching kernel saved, loaded and exported on a grid."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import Box2I, Exposure, LinearCombinationKernel, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.errors import CorruptFileError, InvalidInputError, OutputExistsError, UnsupportedFormatError
from psfmatch.geom import Box2D
from psfmatch.io import (kernel_image_grid, read_exposure, read_kernel, write_exposure, write_kernel,
                         write_kernel_image_grid)
from psfmatch.kernel.basis import KernelBasis
from psfmatch.kernel.spatial import SpatialFunction
from psfmatch.psf import GaussianPsf, VariableGaussianPsf
from psfmatch.psf.image_psf import ImagePsf


def handmade_kernel(kind="chebyshev1", order=2):
    rng = np.random.default_rng(4)
    images = rng.normal(size=(4, 7, 7))
    images[0] = np.pad(np.ones((1, 1)), 3)
    images[1:] -= images[1:].mean(axis=(1, 2), keepdims=True)
    basis = KernelBasis(images, "alard-lupton", {"ALBasisSigGauss": [0.7, 1.5], "ALBasisDegGauss": [2, 1]})
    bbox = Box2I((100, 200), (300, 250))
    sf = SpatialFunction(kind, order, Box2D(bbox))
    coeffs = rng.normal(size=(4, sf.nterms))
    coeffs[0] = 0.0
    coeffs[0, 0] = 1.0
    return LinearCombinationKernel(basis, coeffs, sf, kernel_sum=0.93, bbox=bbox)


POSITIONS = [(100.0, 200.0), (250.5, 333.25), (399.0, 449.0), (-50.0, 700.0)]


@pytest.mark.parametrize("kind", ["chebyshev1", "polynomial"])
def test_round_trip_is_exact(tmp_path, kind):
    k = handmade_kernel(kind)
    k.writeFits(tmp_path / "k.fits")
    back = LinearCombinationKernel.readFits(tmp_path / "k.fits")
    np.testing.assert_array_equal(back.basis.images, k.basis.images)
    assert back.basis.kind == k.basis.kind and back.basis.description == k.basis.description
    np.testing.assert_array_equal(back.coefficients, k.coefficients)
    assert back.spatial_function == k.spatial_function
    assert back.bbox == k.bbox and back.kernel_sum == k.kernel_sum
    for pos in POSITIONS:
        np.testing.assert_array_equal(back.computeImage(pos), k.computeImage(pos))
        assert back.getSum(pos) == pytest.approx(0.93)


def test_constant_kernel_without_box(tmp_path):
    basis = KernelBasis(np.pad(np.ones((1, 1, 1)), ((0, 0), (2, 2), (2, 2))), "delta-function", {})
    k = LinearCombinationKernel(basis, np.ones((1, 1)))
    write_kernel(k, tmp_path / "k.fits")
    back = read_kernel(tmp_path / "k.fits")
    assert back.spatial_function is None and back.bbox is None
    np.testing.assert_array_equal(back.computeImage((5, 5)), k.computeImage((5, 5)))


def test_kernel_from_the_task_round_trips(tmp_path):
    bbox = Box2I((0, 0), (384, 384))
    exposure = Exposure(np.zeros((384, 384), np.float32),
                        psf=VariableGaussianPsf(21, 21, bbox, sigma=(1.6, 0.15, -0.1)))
    config = ModelPsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 1
    kernel = ModelPsfMatchTask(config).run(exposure, VariableGaussianPsf(31, 31, bbox, sigma=(2.6,))).psfMatchingKernel
    kernel.writeFits(tmp_path / "k.fits")
    back = read_kernel(tmp_path / "k.fits")
    assert back.isSpatiallyVarying()
    xs, ys = np.array([0.0, 191.5, 383.0, 50.0]), np.array([0.0, 191.5, 383.0, 300.0])
    np.testing.assert_array_equal(back.computeImages(xs, ys), kernel.computeImages(xs, ys))
    np.testing.assert_array_equal(back.computeImageLsst((10, 20)), kernel.computeImageLsst((10, 20)))


def test_image_grid_export(tmp_path):
    k = handmade_kernel()
    xs, ys, images = kernel_image_grid(k, nx=3, ny=2)
    # cell centres of a 3 x 2 tiling of the fitted box (100..399, 200..449)
    np.testing.assert_allclose(np.unique(xs), [149.5, 249.5, 349.5])
    np.testing.assert_allclose(np.unique(ys), [262.0, 387.0])
    np.testing.assert_array_equal(images, k.computeImages(xs, ys))
    k.writeImageGridFits(tmp_path / "grid.fits", nx=3, ny=2)
    with fits.open(tmp_path / "grid.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data, images)
        assert hdul[0].header["CONVENTN"] == "convolution"
        np.testing.assert_array_equal(hdul["POSITIONS"].data["x"], xs)
        np.testing.assert_allclose(hdul["POSITIONS"].data["sum"], 0.93)
    k.writeImageGridFits(tmp_path / "lsst.fits", positions=([120.0], [210.0]), lsst=True)
    with fits.open(tmp_path / "lsst.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data[0], k.computeImage((120.0, 210.0))[::-1, ::-1])
        assert hdul[0].header["CONVENTN"] == "lsst-correlation"
    with pytest.raises(OutputExistsError, match="pass overwrite=True"):
        k.writeImageGridFits(tmp_path / "lsst.fits", positions=([120.0], [210.0]))


def test_errors(tmp_path):
    k = handmade_kernel()
    path = tmp_path / "k.fits"
    k.writeFits(path)
    with pytest.raises(OutputExistsError, match="exists already; pass overwrite=True"):
        k.writeFits(path)
    k.writeFits(path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_kernel(tmp_path / "missing.fits")
    fits.PrimaryHDU(np.ones((3, 3))).writeto(tmp_path / "img.fits")
    with pytest.raises(UnsupportedFormatError, match="PMFORMAT = None; not a psfmatch kernel file"):
        read_kernel(tmp_path / "img.fits")
    (tmp_path / "junk.fits").write_text("junk")
    with pytest.raises(CorruptFileError, match="not a readable FITS file"):
        read_kernel(tmp_path / "junk.fits")
    broken = tmp_path / "broken.fits"
    k.writeFits(broken)
    with fits.open(broken) as hdul:
        fits.HDUList([hdul[0].copy(), hdul["BASIS"].copy()]).writeto(tmp_path / "nocoef.fits")
    with pytest.raises(CorruptFileError, match="the COEFFS HDU is missing"):
        read_kernel(tmp_path / "nocoef.fits")
    with fits.open(broken, mode="update") as hdul:
        del hdul[0].header["KSUM"]
    with pytest.raises(CorruptFileError, match="keyword KSUM is missing"):
        read_kernel(broken)
    with fits.open(broken, mode="update") as hdul:
        hdul[0].header["KSUM"] = 0.93  # as written (KSUMSTR holds it exactly)
        del hdul[0].header["SPMAXY"]
    with pytest.raises(CorruptFileError, match="keyword SPMAXY is missing from the spatial function"):
        read_kernel(broken)
    with fits.open(broken, mode="update") as hdul:
        hdul[0].header["SPMAXY"] = 449.5
        hdul[0].header["NBASIS"] = 5
    with pytest.raises(CorruptFileError, match="NBASIS = 5 but BASIS holds 4 kernels"):
        read_kernel(broken)
    with fits.open(broken, mode="update") as hdul:
        hdul[0].header["NBASIS"] = 4
        hdul[0].header["SPORDER"] = 1
    with pytest.raises(CorruptFileError, match="inconsistent kernel .*6 spatial terms"):
        read_kernel(broken)
    with fits.open(broken, mode="update") as hdul:
        hdul[0].header["SPORDER"] = 2
        hdul[0].header["SPKIND"] = "legendre"  # (SpatialFunction's InvalidConfigError escaped the reader)
    with pytest.raises(CorruptFileError, match="invalid spatial function .*spatialModelType must be one of"):
        read_kernel(broken)
    with pytest.raises(InvalidInputError, match="expected a LinearCombinationKernel"):
        write_kernel(np.ones((3, 3)), tmp_path / "x.fits")
    constant = LinearCombinationKernel(KernelBasis(np.ones((1, 3, 3)), "delta-function", {}), np.ones((1, 1)))
    with pytest.raises(InvalidInputError, match="no bounding box; pass bbox= or positions="):
        kernel_image_grid(constant)
    with pytest.raises(InvalidInputError, match="nx and ny must be positive integers"):
        kernel_image_grid(k, nx=0)
    with pytest.raises(InvalidInputError, match="two arrays of one length"):
        kernel_image_grid(k, positions=([1.0, 2.0], [3.0]))


def _overwrite_data(path, hdu_name, value):
    """Overwrite the first value of an HDU's data in the file's bytes, leaving its DATASUM as written."""
    with fits.open(path) as hdul:
        offset = hdul.fileinfo(hdul.index_of(hdu_name))["datLoc"]
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 8] = np.array([value], dtype=">f8").tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("hdu_name", ["BASIS", "COEFFS"])
def test_data_damaged_after_writing_are_rejected(tmp_path, hdu_name):
    # bytes changed in the data (a finite value, as an inserted or overwritten block gives) no longer
    # match the DATASUM that write_kernel stored
    path = tmp_path / "k.fits"
    handmade_kernel().writeFits(path)
    _overwrite_data(path, hdu_name, 12345.0)
    with pytest.raises(CorruptFileError, match=rf"\[{hdu_name}\]: the data do not match their DATASUM checksum"
                                               ".*write the kernel again"):
        read_kernel(path)


def test_file_without_checksums_and_edited_headers_still_read(tmp_path):
    k = handmade_kernel()
    path = tmp_path / "k.fits"
    k.writeFits(path)
    with fits.open(path, mode="update") as hdul:  # a header edited with another tool
        hdul[0].header["OBSERVER"] = "someone"
    np.testing.assert_array_equal(read_kernel(path).computeImage(POSITIONS[1]), k.computeImage(POSITIONS[1]))
    with fits.open(path) as hdul:  # written again by a tool that stores no checksums
        plain = fits.HDUList([h.copy() for h in hdul])
        for h in plain:
            for key in ("CHECKSUM", "DATASUM"):
                h.header.remove(key, ignore_missing=True)
        plain.writeto(tmp_path / "plain.fits")
    np.testing.assert_array_equal(read_kernel(tmp_path / "plain.fits").computeImage(POSITIONS[1]),
                                  k.computeImage(POSITIONS[1]))


def test_coefficients_that_overflow_are_rejected(tmp_path):
    # finite coefficients whose images overflow to inf over the fitted box: a damaged file even
    # when its checksums agree (written again with fresh ones)
    path = tmp_path / "k.fits"
    handmade_kernel().writeFits(path)
    with fits.open(path) as hdul:
        hdus = fits.HDUList([h.copy() for h in hdul])
    hdus["COEFFS"].data[1, 0] = 1.5e308
    hdus.writeto(tmp_path / "huge.fits", checksum=True)
    with pytest.raises(CorruptFileError, match=r"the kernel image at \(.*\) is not finite \(coefficients up to "
                                               r"1\.5e\+308 in size\): the file is damaged"):
        read_kernel(tmp_path / "huge.fits")


# a kernelSum (a zero-point ratio 10**(-0.4 dm), say) whose 17 digits a FITS float card (20 characters) cannot hold
LONG_SUM = 1.2345678901234568e-05


def test_kernel_sum_round_trips_to_the_last_bit(tmp_path):
    k = handmade_kernel().with_kernel_sum(LONG_SUM)
    k.writeFits(tmp_path / "k.fits")
    header = fits.getheader(tmp_path / "k.fits")
    assert header["KSUM"] != LONG_SUM and header["KSUMSTR"] == "1.2345678901234568e-05"  # the card is cut off
    back = read_kernel(tmp_path / "k.fits")
    assert back.kernel_sum == LONG_SUM
    for pos in POSITIONS:
        np.testing.assert_array_equal(back.computeImage(pos), k.computeImage(pos))
    # the kernel-image grid stores it exactly too
    write_kernel_image_grid(k, tmp_path / "grid.fits", nx=2, ny=2)
    assert float(fits.getheader(tmp_path / "grid.fits")["KSUMSTR"]) == LONG_SUM
    # a file without the exact card (written before it existed) reads the float card
    with fits.open(tmp_path / "k.fits", mode="update") as hdul:
        del hdul[0].header["KSUMSTR"]
    assert read_kernel(tmp_path / "k.fits").kernel_sum == header["KSUM"]


@pytest.mark.parametrize("edit, match", [
    ({"KSUMSTR": "abc"}, r"KSUMSTR = 'abc' \(the exact value of KSUM\) is not a number.*delete KSUMSTR"),
    ({"KSUMSTR": "nan"}, r"KSUMSTR = 'nan' disagrees with KSUM = 0.93"),
    ({"KSUM": 1.0}, r"KSUMSTR = '0.93' disagrees with KSUM = 1.0: one of them was edited; set both"),
    ({"KSUM": 0.94}, r"KSUMSTR = '0.93' disagrees with KSUM = 0.94"),
    ({"KSUM": 0.92999999999999}, r"KSUMSTR = '0.93' disagrees with KSUM = 0.92999999999999"),
])
def test_edited_exact_kernel_sum_is_refused(tmp_path, edit, match):
    path = tmp_path / "k.fits"
    handmade_kernel().writeFits(path)
    with fits.open(path, mode="update") as hdul:
        hdul[0].header.update(edit)
    with pytest.raises(CorruptFileError, match=match):
        read_kernel(path)


def test_image_psf_pixel_scale_round_trips_exactly(tmp_path):
    scale = 7.305555555555556e-05  # 0.263 arcsec in degrees: 16 digits
    psf = ImagePsf(GaussianPsf(21, 21, 1.7).computeKernelImage((0, 0)), pixel_scale=scale)
    write_exposure(Exposure(np.ones((16, 16), np.float32), psf=psf), tmp_path / "e.fits")
    assert read_exposure(tmp_path / "e.fits").getPsf().pixel_scale == scale
    with fits.open(tmp_path / "e.fits", mode="update") as hdul:
        hdul["PSF"].header["PIXSCALE"] = 0.2
    with pytest.raises(CorruptFileError, match=r"e.fits\[PSF\]: PIXSCSTR = '7.305555555555556e-05' disagrees with "
                                               r"PIXSCALE = 0.2"):
        read_exposure(tmp_path / "e.fits")


@pytest.mark.parametrize("kwargs, match", [
    ({"bbox": Box2D(Box2I((100, 200), (300, 250)))},
     r"bbox must be a non-empty Box2I; got Box2D\(\(99.5, 199.5\), .*give the Box2I of the pixels"),
    ({"bbox": ((100, 200), (300, 250))}, r"bbox must be a non-empty Box2I; got \(\(100, 200\), \(300, 250\)\)"),
    ({"bbox": Box2I((100, 200), (0, 250))}, r"bbox must be a non-empty Box2I; got Box2I\(minimum=\(100, 200\)"),
    ({"nx": float("nan")}, r"nx and ny must be positive integers; got nx = nan"),
    ({"ny": float("inf")}, r"nx and ny must be positive integers; got ny = inf"),
    ({"nx": None}, r"nx and ny must be positive integers; got nx = None"),
    ({"nx": 2.5}, r"nx and ny must be positive integers; got nx = 2.5"),
    ({"ny": "3"}, r"nx and ny must be positive integers; got ny = '3'"),
    ({"nx": True}, r"nx and ny must be positive integers; got nx = True"),
])
def test_image_grid_arguments_are_validated(tmp_path, kwargs, match):
    k = handmade_kernel()
    with pytest.raises(InvalidInputError, match=match):
        kernel_image_grid(k, **kwargs)
    with pytest.raises(InvalidInputError, match=match):
        write_kernel_image_grid(k, tmp_path / "grid.fits", **kwargs)
    if "bbox" not in kwargs:
        with pytest.raises(InvalidInputError, match=match):
            k.writeImageGridFits(tmp_path / "grid.fits", **kwargs)
    assert list(tmp_path.iterdir()) == []
    # an integral float or numpy integer is a valid size, and the grid is the box's tiling
    xs, ys, _ = kernel_image_grid(k, nx=2.0, ny=np.int64(1))
    np.testing.assert_array_equal(xs, [174.5, 324.5])
    np.testing.assert_array_equal(ys, [324.5, 324.5])


def _one_basis():
    return KernelBasis(np.ones((2, 5, 5)) / 25, "custom", {})


@pytest.mark.parametrize("make, match", [
    (lambda: LinearCombinationKernel(_one_basis(), [1.0, np.nan]),
     r"the kernel's coefficients must be finite; coefficient \(1, 0\) is nan"),
    (lambda: LinearCombinationKernel(_one_basis(), [[1.0], [-np.inf]]),
     r"the kernel's coefficients must be finite; coefficient \(1, 0\) is -inf"),
    (lambda: LinearCombinationKernel(_one_basis(), [1.0, 0.0], kernel_sum=np.nan),
     r"kernel_sum must be finite; got nan"),
    (lambda: LinearCombinationKernel(_one_basis(), [1.0, 0.0], kernel_sum=np.inf),
     r"kernel_sum must be finite; got inf"),
    (lambda: LinearCombinationKernel(_one_basis(), [1.0, 0.0], kernel_sum="2"),
     r"kernel_sum must be a number; got '2'"),
    (lambda: LinearCombinationKernel(_one_basis(), [1.0, 0.0], kernel_sum=None),
     r"kernel_sum must be a number; got None"),
    (lambda: LinearCombinationKernel(_one_basis(), [1.0, 0.0], bbox=((0, 0), (100, 100))),
     r"bbox must be a Box2I \(the box the kernel was fitted on\) or None; got \(\(0, 0\), \(100, 100\)\)"),
    (lambda: LinearCombinationKernel(_one_basis(), [1.0, 0.0], bbox=Box2D((0, 0), (100, 100))),
     r"bbox must be a Box2I .* got Box2D"),
    # malformed arguments are refused when the kernel is made, not when it is first evaluated
    (lambda: LinearCombinationKernel(_one_basis(), np.ones((2, 1, 1))),
     r"coefficients must be 1-d \(one per basis kernel\) or 2-d .*; got shape \(2, 1, 1\)"),
    (lambda: LinearCombinationKernel(_one_basis(), [[1.0, 2.0], [3.0]]), r"coefficients must be numbers"),
    (lambda: LinearCombinationKernel(None, [1.0]), r"basis must be a KernelBasis .*; got NoneType"),
    (lambda: LinearCombinationKernel(_one_basis(), np.ones((2, 3)), "chebyshev1"),
     r"spatial_function must be a SpatialFunction .* or None; got str 'chebyshev1'"),
    (lambda: handmade_kernel().with_kernel_sum(float("nan")), r"kernel_sum must be finite; got nan"),
    (lambda: handmade_kernel().with_kernel_sum(-np.inf), r"kernel_sum must be finite; got -inf"),
])
def test_kernel_refuses_values_it_could_not_store(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


@pytest.mark.parametrize("bad, shown", [(None, "None"), (2.5, "float 2.5"), (["k.fits"], r"list \['k.fits'\]")])
def test_a_kernel_path_that_is_not_a_path_is_refused_typed(tmp_path, bad, shown):
    """None, a number or a list as the path escaped as os.fspath's bare TypeError."""
    k = handmade_kernel()
    for who, call in [("write_kernel", lambda: write_kernel(k, bad)), ("write_kernel", lambda: k.writeFits(bad)),
                      ("read_kernel", lambda: read_kernel(bad)),
                      ("write_kernel_image_grid", lambda: write_kernel_image_grid(k, bad, nx=2, ny=2))]:
        with pytest.raises(InvalidInputError, match=rf"^{who}'s path must be a file path \(str or os\.PathLike\); "
                                                    rf"got {shown}; pass the file's name"):
            call()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("positions, match", [
    (([1.0], [2.0], [3.0]), r"positions must be two arrays \(xs, ys\) of one length; got \(\[1.0\], \[2.0\], "
                            r"\[3.0\]\)$"),
    ([(10, 20), (30, 40), (50, 60)], r"got \[\(10, 20\), \(30, 40\), \(50, 60\)\] \(a list of \(x, y\) pairs\? "
                                     r"pass np.transpose\(pairs\)\)"),
    (5.0, r"positions must be two arrays \(xs, ys\) of one length; got 5.0"),
    ("xy", r"positions must be two arrays \(xs, ys\) of one length; got 'xy'"),
    ((["a"], ["b"]), r"positions must hold numbers \(parent x and y\); got \['a'\] and \['b'\]"),
    (([1.0, np.nan], [2.0, 3.0]), r"kernel_image_grid's positions needs finite positions; position 1 is \(nan, 3.0\)"),
    (([[1.0]], [[2.0]]),
     r"kernel_image_grid's positions needs x and y of the same length \(1-d\); got shapes \(1, 1\) and \(1, 1\)"),
])
def test_image_grid_positions_are_validated(tmp_path, positions, match):
    """Three arrays, (x, y) pairs, a scalar or strings escaped as ValueError / TypeError, although the docstring
    promised InvalidInputError; nothing bounded the number of images."""
    k = handmade_kernel()
    with pytest.raises(InvalidInputError, match=match):
        kernel_image_grid(k, positions=positions)
    with pytest.raises(InvalidInputError, match=match):
        write_kernel_image_grid(k, tmp_path / "grid.fits", positions=positions)
    assert list(tmp_path.iterdir()) == []
    # two (x, y) arrays: the images at those positions
    xs, ys, images = kernel_image_grid(k, positions=([100.0, 250.5], (200.0, 333.25)))
    np.testing.assert_allclose(images[1], k.computeImage((250.5, 333.25)), rtol=1e-12, atol=1e-12)


def test_image_grid_size_is_bounded_before_anything_is_allocated(tmp_path):
    from psfmatch.errors import MemoryLimitError

    k = handmade_kernel()
    with pytest.raises(MemoryLimitError, match=r"^nx \* ny = 100000 \* 100000 asks for 10000000000 kernel images of "
                                               r"7x7 \(3.65e\+03 GiB\), more than the limit of 8 GiB "
                                               r"\(max_memory_bytes\); use a smaller nx and ny \(at most 21913098 "
                                               r"images\), or raise max_memory_bytes$"):
        kernel_image_grid(k, nx=100000, ny=100000)
    # the limit is the caller's: 100 images of 7x7 take 39200 bytes
    with pytest.raises(MemoryLimitError, match=r"positions asks for 100 kernel images of 7x7 .* more than the limit of "
                                               r"3.65e-05 GiB \(max_memory_bytes\); pass fewer positions \(at most "
                                               r"99 images\)"):
        write_kernel_image_grid(k, tmp_path / "g.fits", positions=(np.arange(100.0), np.arange(100.0)),
                                max_memory_bytes=39199)
    assert list(tmp_path.iterdir()) == []
    xs, _, images = kernel_image_grid(k, positions=(np.arange(100.0), np.arange(100.0)), max_memory_bytes=39200)
    assert images.shape == (100, 7, 7)
    with pytest.raises(InvalidInputError, match=r"max_memory_bytes must be a positive number of bytes; got 0"):
        kernel_image_grid(k, max_memory_bytes=0)


def test_kernel_from_dict_round_trips_and_refuses_malformed_descriptions():
    """A non-mapping or a dict missing a key escaped as AttributeError / KeyError."""
    import json

    k = handmade_kernel()
    d = json.loads(json.dumps(k.to_dict()))
    back = LinearCombinationKernel.from_dict(d)
    assert back.bbox == k.bbox and back.spatial_function == k.spatial_function and back.kernel_sum == k.kernel_sum
    np.testing.assert_array_equal(back.computeImage((250.5, 333.25)), k.computeImage((250.5, 333.25)))

    with pytest.raises(InvalidInputError, match=r"^LinearCombinationKernel.from_dict needs a mapping \(the dict "
                                                r"LinearCombinationKernel.to_dict returns\); got NoneType$"):
        LinearCombinationKernel.from_dict(None)
    with pytest.raises(InvalidInputError, match=r"the description lacks the key\(s\) 'coefficients'; pass the dict "
                                                r"LinearCombinationKernel.to_dict returns"):
        LinearCombinationKernel.from_dict({key: v for key, v in d.items() if key != "coefficients"})
    with pytest.raises(InvalidInputError, match=r"the 'basis' entry is None"):
        LinearCombinationKernel.from_dict({**d, "basis": None})
    with pytest.raises(InvalidInputError, match=r"the 'basis_kind' entry is None"):  # (it made "None kernels")
        LinearCombinationKernel.from_dict({**d, "basis_kind": None})
    assert LinearCombinationKernel.from_dict({**d, "kernel_sum": None}).kernel_sum == 1.0  # as the docstring says
    with pytest.raises(InvalidInputError, match=r"the spatial function's order 10000000 does not match the "
                                                r"coefficients' 6 spatial terms"):  # (checked before it is built)
        LinearCombinationKernel.from_dict({**d, "spatial_function": {**d["spatial_function"], "order": 10 ** 7}})
    with pytest.raises(InvalidInputError, match=r"the 'bbox' entry cannot be decoded \(KeyError: 'width'\)"):
        LinearCombinationKernel.from_dict({**d, "bbox": {"x0": 0, "y0": 0}})
    with pytest.raises(InvalidInputError, match=r"the 'spatial_function' entry cannot be decoded \(KeyError: 'bbox'\)"):
        LinearCombinationKernel.from_dict({**d, "spatial_function": {"kind": "chebyshev1", "order": 2}})
    with pytest.raises(InvalidInputError, match=r"the 'coefficients' entry cannot be decoded \(ValueError"):
        LinearCombinationKernel.from_dict({**d, "coefficients": [[1.0, 2.0], [3.0]]})


def test_a_kernel_file_with_a_spatial_order_above_20_reads_back(tmp_path):
    """Orders above 20 were legal before the cap: such a file read as a CorruptFileError."""
    bbox = Box2I((100, 200), (300, 250))
    sf = SpatialFunction.from_dict({"kind": "chebyshev1", "order": 21, "bbox": Box2D(bbox).to_dict()})  # (uncapped)
    rng = np.random.default_rng(21)
    basis = handmade_kernel().basis
    coeffs = rng.normal(size=(len(basis), sf.nterms)) * 1e-3
    coeffs[0] = 0.0
    coeffs[0, 0] = 1.0  # (the first basis kernel alone has a sum: the kernel's sum is kernel_sum everywhere)
    k = LinearCombinationKernel(basis, coeffs, sf, kernel_sum=0.93, bbox=bbox)
    write_kernel(k, tmp_path / "k21.fits")
    with fits.open(tmp_path / "k21.fits") as hdul:
        assert hdul[0].header["SPORDER"] == 21
    back = read_kernel(tmp_path / "k21.fits")
    assert back.spatial_function == sf and back.spatial_function.nterms == 22 * 23 // 2
    np.testing.assert_array_equal(back.coefficients, coeffs)
    for pos in POSITIONS[:3]:  # (inside the box)
        np.testing.assert_array_equal(back.computeImage(pos), k.computeImage(pos))
        assert back.getSum(pos) == pytest.approx(0.93)
