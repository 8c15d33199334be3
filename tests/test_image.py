"""Geometry, masks, masked images and exposures."""

import warnings

import numpy as np
import pytest

from psfmatch import Box2D, Box2I, Exposure, InvalidInputError, Mask, MaskedImage, Point2D
from psfmatch.geom import as_point
from psfmatch.psf import GaussianPsf


def test_point_unpacks_and_converts():
    p = Point2D(1.5, -2.0)
    x, y = p
    assert (x, y) == (1.5, -2.0) and p.getX() == 1.5
    assert as_point((3, 4)) == Point2D(3.0, 4.0)
    with pytest.raises(InvalidInputError, match="must be finite"):
        as_point((np.nan, 1))
    with pytest.raises(InvalidInputError, match=r"an \(x, y\) pair"):
        as_point(5)


def test_box():
    b = Box2I((10, 20), (30, 40))
    assert (b.getMinX(), b.getMaxX(), b.getMinY(), b.getMaxY()) == (10, 39, 20, 59)
    assert b.getCenter() == Point2D(24.5, 39.5)
    assert b.contains((39.4, 20)) and not b.contains((39.6, 20))
    assert Box2D(b).getMinX() == 9.5 and Box2D(b).getMaxY() == 59.5
    assert b.intersection(Box2I((0, 0), (15, 25))) == Box2I.from_corners(10, 20, 14, 24)
    assert b.slices(xy0=(10, 20)) == (slice(0, 40), slice(0, 30))
    with pytest.raises(InvalidInputError, match="non-negative integers"):
        Box2I((0, 0), (-1, 3))


def test_mask_planes():
    m = Mask(shape=(4, 5))
    assert m.getPlaneBitMask("BAD") == 1 and m.getPlaneBitMask(["SAT", "NO_DATA"]) == 2 | 256
    for name in ("BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "SUSPECT", "NO_DATA"):
        assert name in m.getMaskPlaneDict()
    bit = m.addMaskPlane("STREAK")
    assert m.getPlaneBitMask("STREAK") == 1 << bit and bit not in DEFAULT_BITS
    with pytest.raises(InvalidInputError, match="unknown mask plane 'FOO'"):
        m.getPlaneBitMask("FOO")
    b = Mask.from_bool(np.eye(3, dtype=bool), "CR")
    assert np.array_equal(b.array, np.eye(3, dtype=int) * 8)
    with pytest.raises(InvalidInputError, match="not boolean"):
        Mask(np.eye(3, dtype=bool))


def test_wide_integer_masks_keep_every_bit_or_are_refused():
    # values of wider types become int32 by their low 32 bits: bit 31 as a positive int64, a sign-extended
    # negative and a uint32 keep every bit
    wide = np.array([[1 << 31, -1], [5, 0]], dtype=np.int64)
    np.testing.assert_array_equal(Mask(wide).array, np.array([[-(1 << 31), -1], [5, 0]], dtype=np.int32))
    assert Mask(np.array([[1 << 31]], dtype=np.uint32)).array[0, 0] == -(1 << 31)
    assert Mask(np.array([[3]], dtype=np.uint64)).array[0, 0] == 3
    # a bit above 31 used to be dropped without a word
    for bad, span in [(np.array([[1 << 40, 1]], dtype=np.int64), "1..1099511627776"),
                      (np.array([[-(1 << 40), 1]], dtype=np.int64), "-1099511627776..1"),
                      (np.array([[1 << 32, 0]], dtype=np.uint64), "0..4294967296")]:
        with pytest.raises(InvalidInputError, match=rf"mask values span {span}: bits above 31 are set.*move those "
                                                    "planes to free bits below 32"):
            Mask(bad)
        with pytest.raises(InvalidInputError, match=rf"mask values span {span}"):
            Exposure(np.zeros(bad.shape, np.float32), mask=bad)


DEFAULT_BITS = set(range(9))


def test_masked_image_shapes_and_copies():
    img = np.ones((5, 6), np.float32)
    with pytest.raises(InvalidInputError, match=r"image is \(5, 6\), variance is \(5, 5\)"):
        MaskedImage(img, variance=np.ones((5, 5)))
    with pytest.raises(InvalidInputError, match="must be a 2-d array"):
        MaskedImage(np.ones(5))
    mi = MaskedImage(img, xy0=(3, 4))
    mi.image[0, 0] = 7
    assert img[0, 0] == 1  # the caller's array is copied, never written
    assert mi.getBBox() == Box2I((3, 4), (6, 5))
    assert mi.variance.dtype == np.float32 and mi.mask.dtype == np.int32
    assert MaskedImage(np.ones((2, 2), int)).image.dtype == np.float32


def test_exposure_api():
    psf = GaussianPsf(11, 11, 2.0)
    from astropy.wcs import WCS
    wcs = WCS(naxis=2)
    e = Exposure(np.zeros((8, 9)), psf=psf, wcs=wcs, xy0=(1, 2), metadata={"filter": "g", "id": 3})
    assert e.hasPsf() and e.getPsf() is psf and e.psf is psf and e.getWcs() is wcs
    with pytest.raises(InvalidInputError, match="WCS"):
        Exposure(np.zeros((8, 9)), wcs="WCS")
    assert e.getFilter() == "g" and e.getId() == 3 and e.getPhotoCalib() is None
    assert e.getBBox() == Box2I((1, 2), (9, 8))
    e.setPsf(None)
    assert not e.hasPsf()
    with pytest.raises(InvalidInputError, match="needs a computeKernelImage"):
        e.setPsf("not a psf")


def test_exposure_from_masked_image_copies_unless_told_not_to():
    mi = MaskedImage(np.arange(12.0).reshape(3, 4), variance=np.ones((3, 4)), xy0=(5, 6))
    mi.getMask().addMaskPlane("EXTRA")
    mi.mask[1, 1] = mi.getMask().getPlaneBitMask("EXTRA")
    psf = GaussianPsf(11, 11, 2.0)
    copied = Exposure.from_masked_image(mi, psf=psf, metadata={"id": 1})
    shared = Exposure.from_masked_image(mi, copy=False, psf=psf, metadata={"id": 1})
    for e in (copied, shared):
        assert e.getXY0() == (5, 6) and e.getPsf() is psf and e.getId() == 1
        np.testing.assert_array_equal(e.image, mi.image)
        np.testing.assert_array_equal(e.mask, mi.mask)
        assert e.getMask().getPlaneBitMask("EXTRA") == mi.getMask().getPlaneBitMask("EXTRA")
    assert not np.shares_memory(copied.image, mi.image) and not np.shares_memory(copied.variance, mi.variance)
    assert shared.image is mi.image and shared.variance is mi.variance and shared.mask is mi.mask


def test_constructors_adopt_planes_of_the_right_type_with_copy_false():
    img32 = np.ones((4, 5), dtype=np.float32)
    var32 = np.full((4, 5), 2.0, dtype=np.float32)
    msk = np.zeros((4, 5), dtype=np.int32)
    adopted = Exposure(img32, msk, var32, copy=False)
    assert adopted.image is img32 and adopted.variance is var32 and adopted.mask is msk
    copied = Exposure(img32, msk, var32)  # the default copies
    assert not any(np.shares_memory(a, b) for a, b in
                   ((copied.image, img32), (copied.variance, var32), (copied.mask, msk)))
    # other types are converted (so copied) even with copy=False: nothing aliases a differently typed input
    big = np.arange(20, dtype=">f4").reshape(4, 5)
    ints = np.arange(20, dtype=np.int16).reshape(4, 5)
    var64 = np.full((4, 5), 3.0)
    mask64 = np.ones((4, 5), dtype=np.int64)
    mi = MaskedImage(big, mask64, var64, copy=False)
    assert mi.image.dtype == np.float32 and mi.image.dtype.isnative and not np.shares_memory(mi.image, big)
    assert mi.variance.dtype == np.float32 and not np.shares_memory(mi.variance, var64)  # the image's type
    assert mi.mask.dtype == np.int32 and not np.shares_memory(mi.mask, mask64)
    np.testing.assert_array_equal(mi.image, np.arange(20.0).reshape(4, 5))
    assert MaskedImage(ints, copy=False).image.dtype == np.float32
    # float64 in FITS byte order (astropy's data are ">f8") stays float64, brought to the native order; it
    # used to fall through to the "other types" and lose its precision to float32
    fine = np.full((4, 5), 1.0 + 1e-12, dtype=">f8")
    for copy in (True, False):
        mi = MaskedImage(fine, variance=fine, copy=copy)
        assert mi.image.dtype == np.float64 and mi.image.dtype.isnative and not np.shares_memory(mi.image, fine)
        assert mi.variance.dtype == np.float64 and mi.variance.dtype.isnative
        np.testing.assert_array_equal(mi.image, fine)  # every bit (in float32 the 1e-12 would be lost)
        assert mi.image[0, 0] - 1.0 > 5e-13
    # a Mask object is taken as it is, or copied
    m = Mask(msk, copy=False)
    assert m.array is msk and MaskedImage(img32, m, copy=False).getMask() is m
    assert MaskedImage(img32, m).getMask() is not m
    # the checks still run
    with pytest.raises(InvalidInputError, match="must have one shape; image is \\(4, 5\\), variance is \\(5, 4\\)"):
        MaskedImage(img32, variance=np.ones((5, 4), dtype=np.float32), copy=False)
    with pytest.raises(InvalidInputError, match="image must be a 2-d array; got 1 dimension"):
        MaskedImage(np.ones(5, dtype=np.float32), copy=False)


def test_narrow_signed_masks_keep_their_bits():
    """An int16 plane with bit 15 set (-32768) is 0x8000: sign extension used to set bits 16..31 as well."""
    planes = {"BAD": 0, "SAT": 1, "FLAG15": 15, "STREAK": 20}
    dq = np.zeros((3, 4), np.int16)
    dq[1, 2] = np.int16(-32768)
    dq[0, 0] = 3
    m = Mask(dq, planes=planes)
    assert int(m.array[1, 2]) == 0x8000 and int(m.array[0, 0]) == 3 and m.array.dtype == np.int32
    assert m.planes_set("FLAG15")[1, 2] and not m.planes_set("STREAK").any()
    assert int(Mask(np.array([[-128, 1]], np.int8)).array[0, 0]) == 0x80
    big_endian = np.array([[-32768, 5]], ">i2")
    np.testing.assert_array_equal(Mask(big_endian).array, [[0x8000, 5]])
    exp = Exposure(np.ones((3, 4), np.float32), mask=dq, mask_planes=planes)
    assert not exp.getMask().planes_set("STREAK").any()
    assert dq[1, 2] == -32768  # the caller's array is untouched
    # int32 keeps bit 31 as the sign bit, as before
    assert int(Mask(np.array([[-(1 << 31)]], np.int32)).array[0, 0]) == -(1 << 31)


@pytest.mark.parametrize("name, message", [
    ("\u00c5\u00c4", r"holds the characters \['\u00c4', '\u00c5'\]; use printable ASCII"),
    ("Y" * 64, "has 64 characters; give 1 to 63"),
    ("", "has 0 characters; give 1 to 63"),
    ("A=B", r"holds the characters \['='\]"),
    ("WILD?", r"holds the characters \['\?'\]"),
    (" LEAD", "holds leading or trailing blanks"),
    ("bad", "differs from the plane 'BAD' only in case, which FITS keywords ignore"),
    (5, "must be a string; got int 5"),
])
def test_plane_names_a_fits_file_cannot_hold_are_refused(name, message):
    m = Mask(shape=(2, 2))
    with pytest.raises(InvalidInputError, match=message):
        m.addMaskPlane(name)
    assert m.getMaskPlaneDict() == Mask(shape=(2, 2)).getMaskPlaneDict()
    assert m.addMaskPlane("Y" * 63) == 9 and m.addMaskPlane("Streak 2") == 10


def test_exposure_copy_has_its_own_wcs():
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [5.0, 5.0]
    e = Exposure(np.zeros((4, 4), np.float32), wcs=w, metadata={"id": 1})
    c = e.copy()
    assert c.getWcs() is not w and list(c.getWcs().wcs.crpix) == [5.0, 5.0]
    c.getWcs().wcs.crpix = [100.0, 100.0]  # e.g. re-registering the copy
    assert list(e.getWcs().wcs.crpix) == [5.0, 5.0]
    assert Exposure(np.zeros((2, 2), np.float32)).copy().getWcs() is None


# ---------------------------------------------------------------------------
# bit 31, plane assignment, views and typed errors


def _planes_with(name, bit):
    planes = dict(Mask(shape=(1, 1)).getMaskPlaneDict())
    planes[name] = bit
    return planes


def test_a_plane_at_bit_31_works_with_every_mask_helper():
    """getPlaneBitMask gave 2**31, which no int32 mask holds: the helpers raised a bare OverflowError."""
    planes = _planes_with("STREAK", 31)
    m = Mask(shape=(4, 5), planes=planes)
    assert m.getPlaneBitMask("STREAK") == -(1 << 31)  # the int32 value, as afw's MaskPixel
    assert m.getPlaneBitMask(["STREAK", "BAD"]) == -(1 << 31) | 1
    m.array[1, 2] |= m.getPlaneBitMask("STREAK")
    assert m.planes_set("STREAK").sum() == 1 and m.planes_set(["STREAK"])[1, 2]
    b = Mask.from_bool(np.eye(2, dtype=bool), plane="STREAK", planes=planes)
    np.testing.assert_array_equal(b.array, np.eye(2, dtype=np.int32) * np.int32(-(1 << 31)))
    exp = Exposure(np.zeros((8, 8), np.float32), mask_planes=planes)
    exp.mask[5, 7] |= exp.getMask().getPlaneBitMask("STREAK")  # the idiom of the io docs
    assert int(exp.mask[5, 7]) & 0xFFFFFFFF == 1 << 31
    # with all 32 planes registered, addMaskPlane hands out bit 31
    m = Mask(shape=(2, 2))
    bits = [m.addMaskPlane(f"P{i}") for i in range(23)]
    assert bits[-1] == 31 and m.getPlaneBitMask("P22") == -(1 << 31)


def test_the_task_runs_with_no_data_at_bit_31():
    from psfmatch import ModelPsfMatchConfig, ModelPsfMatchTask

    rng = np.random.default_rng(3)
    image = rng.normal(size=(96, 96)).astype(np.float32)
    image[40, 50] = np.nan
    exp = Exposure(image, variance=np.ones_like(image), mask_planes=_planes_with("NO_DATA", 31),
                   psf=GaussianPsf(25, 25, 1.5))
    config = ModelPsfMatchConfig()
    config.autoKernel = False
    config.kernel.active.kernelSize = 11
    config.kernel.active.sizeCellX = config.kernel.active.sizeCellY = 48
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ModelPsfMatchTask(config=config).run(exp, GaussianPsf(25, 25, 2.5)).psfMatchedExposure
    nodata = out.getMask().planes_set("NO_DATA")
    assert out.getMask().getMaskPlaneDict()["NO_DATA"] == 31
    assert nodata[40, 50] and nodata[0, 0] and not nodata[20, 20]
    assert np.isnan(out.image[40, 50]) and np.isfinite(out.image[20, 20])


def test_show_spatial_cells_draws_a_plane_at_bit_31():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from psfmatch.cells import SpatialCellSet
    from psfmatch.display import show_spatial_cells

    planes = _planes_with("STREAK", 31)
    exp = Exposure(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), mask_planes=planes)
    exp.mask[10:12, 20:22] |= exp.getMask().getPlaneBitMask("STREAK")
    fig = show_spatial_cells(exp, SpatialCellSet(exp.getBBox(), 32, 32))
    labels = [t.get_text() for leg in fig.findobj(matplotlib.legend.Legend) for t in leg.get_texts()]
    assert any(label.startswith("STREAK: 4 px") for label in labels)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_assigning_a_plane_checks_it_and_copies_into_the_plane():
    """exposure.image / .variance and Mask.array were plain attributes: any shape or type was taken."""
    e = Exposure(np.ones((6, 8), np.float32), variance=np.ones((6, 8), np.float32))
    for plane in ("image", "variance"):
        with pytest.raises(InvalidInputError, match=rf"{plane} of shape \(5, 5\) cannot replace the \(6, 8\) {plane} "
                                                    r"of this Exposure: .*assign one of shape \(6, 8\), or make a new "
                                                    "Exposure"):
            setattr(e, plane, np.zeros((5, 5), np.float32))
        with pytest.raises(InvalidInputError, match=f"{plane} must hold real numbers; got dtype <U1"):
            setattr(e, plane, np.full((6, 8), "a"))
        with pytest.raises(InvalidInputError, match=f"{plane} is a numpy masked array"):
            setattr(e, plane, np.ma.masked_array(np.ones((6, 8))))
    with pytest.raises(InvalidInputError, match=r"Mask\.array of shape \(3, 3\) cannot replace the mask's \(6, 8\)"):
        e.getMask().array = np.zeros((3, 3), np.int32)
    with pytest.raises(InvalidInputError, match="not boolean; convert a boolean mask with Mask.from_bool"):
        e.getMask().array = np.zeros((6, 8), bool)
    assert e.image.shape == e.variance.shape == e.mask.shape == (6, 8) and np.all(e.image == 1)
    # values are converted to the plane's type and copied in: the caller's array is not aliased
    new = np.arange(48, dtype=np.int64).reshape(6, 8)
    plane = e.image
    e.image = new
    assert e.image is plane and e.image.dtype == np.float32 and np.array_equal(e.image, new)
    new[0, 0] = 99
    assert e.image[0, 0] == 0
    e.variance = np.full((6, 8), 2.0)  # float64 into the float32 variance
    assert e.variance.dtype == np.float32 and np.all(e.variance == 2)
    e.image += 1  # in-place arithmetic still works
    assert e.image[0, 1] == 2
    bits = np.zeros((6, 8), np.int64)
    bits[1, 1] = 1 << 31
    e.getMask().array = bits
    assert e.mask[1, 1] == -(1 << 31) and e.mask.dtype == np.int32
    # finite values the plane's type cannot hold are refused, naming the plane and the remedy
    with pytest.raises(InvalidInputError, match=r"variance holds finite values up to 1e\+40, which float32 pixels "
                                                r"cannot hold .*this Exposure holds float32 pixels: make a new one "
                                                "from float64 planes"):
        e.variance = np.full((6, 8), 1e40)
    assert np.all(e.variance == 2)
    # a read-only plane (handed over with copy=False) is refused: replacing it would leave the views sharing it
    # (getMaskedImage) with the old values
    ro = np.ones((6, 8), np.float32)
    ro.flags.writeable = False
    r = Exposure(ro, copy=False)
    with pytest.raises(InvalidInputError, match=r"the image plane is a read-only array \(handed over with "
                                                r"copy=False\) and cannot be assigned: make the Exposure from a copy"):
        r.image = np.zeros((6, 8))
    assert np.all(r.image == 1) and np.all(ro == 1)


def test_numpy_array_of_a_mask_is_a_copy():
    """np.array(mask) returned the mask's own buffer (Mask.__array__ ignored numpy's copy argument)."""
    e = Exposure(np.zeros((4, 4), np.float32))
    for bits in (np.array(e.getMask()), np.array(e.getMask(), copy=True)):
        bits[:] = 255
        assert not np.shares_memory(bits, e.mask) and e.mask[0, 0] == 0
    assert np.asarray(e.getMask()) is e.mask  # no copy asked for, none made
    assert np.asarray(e.getMask(), dtype=np.int64).dtype == np.int64
    with pytest.raises(ValueError, match="cannot be given as int64 without a copy"):
        np.array(e.getMask(), dtype=np.int64, copy=False)


def test_get_masked_image_shares_the_exposure_planes():
    """It returned a deep copy, so edits through it (the afw idiom) were lost."""
    e = Exposure(np.zeros((4, 4), np.float32), xy0=(3, 4))
    mi = e.getMaskedImage()
    mi.image[:] = 5.0
    mi.variance[0, 0] = 2.0
    mi.mask[0, 0] |= mi.getMask().getPlaneBitMask("BAD")
    mi.getMask().addMaskPlane("STREAK")
    mi.image = np.full((4, 4), 6.0)  # assignment writes into the shared plane
    assert np.all(e.image == 6.0) and e.variance[0, 0] == 2.0 and e.mask[0, 0] == 1
    assert "STREAK" in e.getMask().getMaskPlaneDict() and mi.getBBox() == e.getBBox()
    independent = e.getMaskedImage().copy()
    independent.image[:] = -1
    assert np.all(e.image == 6.0)


def test_unknown_plane_names_in_a_list_are_refused():
    """planes_set(['SATT']) selected nothing without a word, while planes_set('SATT') raised."""
    m = Mask(shape=(3, 3))
    with pytest.raises(InvalidInputError, match=r"unknown mask plane 'SATT'; this mask has \['BAD', 'CR'"):
        m.planes_set(["SATT"])
    with pytest.raises(InvalidInputError, match=r"unknown mask planes 'SATT', 'X'; this mask has \["):
        m.planes_set(["SAT", "SATT", "X"])
    with pytest.raises(InvalidInputError, match="unknown mask plane 'SATT'"):
        m.getPlaneBitMask(["SAT", "SATT"])
    assert not m.planes_set([]).any() and m.planes_set([]).shape == (3, 3)


def test_a_masked_array_plane_is_refused():
    """Its mask was dropped: the masked (bad) values became ordinary pixels."""
    data = np.ones((4, 4), np.float32)
    data[1, 1] = 1e6
    arr = np.ma.masked_array(data, mask=data > 100)
    with pytest.raises(InvalidInputError, match=r"image is a numpy masked array, whose mask would be lost; give its "
                                                r"data and its mask separately, e\.g\. Exposure\(arr\.data, "
                                                r"mask=Mask\.from_bool\(np\.ma\.getmaskarray\(arr\), 'BAD'\)\)"):
        Exposure(arr)
    with pytest.raises(InvalidInputError, match="variance is a numpy masked array"):
        MaskedImage(data, variance=np.ma.masked_array(data))
    e = Exposure(arr.data, mask=Mask.from_bool(np.ma.getmaskarray(arr), "BAD"))  # the remedy works
    assert e.getMask().planes_set("BAD")[1, 1] and e.getMask().planes_set("BAD").sum() == 1


@pytest.mark.parametrize("make, match", [
    (lambda img: Exposure(img, xy0=(float("inf"), 0)), r"xy0 must be a pair of finite integers; got \(inf, 0\)"),
    (lambda img: Exposure(img, xy0=(1.5, 0)), r"xy0 must be a pair of finite integers"),
    (lambda img: Exposure(img, xy0=None), r"xy0 must be a pair of integers; got None"),
    (lambda img: Mask(shape=(2, 2), planes=["A"]),
     r"mask planes must be a mapping of plane name to bit number.*got list \['A'\]"),
    (lambda img: Mask(shape=(2, 2), planes={"A": 2.5}),
     r"mask plane 'A' has bit 2\.5; bits must be integers in 0\.\.31"),
    (lambda img: Mask(shape=(2, 2), planes={"A": "3"}), r"mask plane 'A' has bit '3'; bits must be integers"),
    (lambda img: Mask(shape=(2, 2), planes={"A": True}), r"mask plane 'A' has bit True"),
    (lambda img: Mask(shape=(2, 2), planes={"A": 32}), r"mask plane 'A' has bit 32"),
    (lambda img: Mask(shape=(2, 2), planes={"A": 1, "B": 1}),
     r"mask planes 'A' and 'B' both have bit 1; give each plane its own bit"),
    (lambda img: Exposure(img, mask_planes={"A=B": 1}), r"mask plane name 'A=B' holds the characters \['='\]"),
    (lambda img: Exposure(img, mask_planes={"BAD": 0, "bad": 1}), "differs from the plane 'BAD' only in case"),
    (lambda img: Exposure(img, metadata=[1, 2]), r"metadata must be a mapping of names to values \(a dict\); got list"),
    (lambda img: Exposure(img, psf=GaussianPsf),
     r"setPsf needs a PSF model, not the class GaussianPsf; give an instance, e\.g\. GaussianPsf\(31, 31, 2\.6\)"),
    (lambda img: MaskedImage(img, mask=np.zeros(img.shape, bool)),
     r"mask must be an integer bit-plane array, not boolean; convert a boolean mask with Mask\.from_bool"),
    (lambda img: Exposure(img, variance=np.full(img.shape, 1e40)),
     r"variance holds finite values up to 1e\+40, which float32 pixels cannot hold \(the largest is 3\.403e\+38\); "
     r"give the image as float64"),
    (lambda img: Exposure(Exposure(img)), r"image must be an array; got Exposure\(bbox=.*Exposure\.from_masked_image"),
])
def test_bad_constructor_arguments_raise_typed_errors(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make(np.zeros((6, 6), np.float32))


def test_valid_plane_registries_and_metadata_are_kept():
    m = Mask(shape=(2, 2), planes={"A": np.int64(3), "B": 31.0})
    assert m.getMaskPlaneDict() == {"A": 3, "B": 31} and all(type(b) is int for b in m.getMaskPlaneDict().values())
    from astropy.io import fits

    header = fits.Header({"OBJECT": "M31"})
    assert Exposure(np.zeros((2, 2)), metadata=header).metadata == {"OBJECT": "M31"}
    # a float64 variance of a float64 image keeps its values; -inf/inf/nan stay as they are with float32
    v = np.array([[np.inf, -np.inf], [np.nan, 1.0]])
    got = Exposure(np.zeros((2, 2), np.float32), variance=v).variance
    assert got.dtype == np.float32 and np.isposinf(got[0, 0]) and np.isneginf(got[0, 1]) and np.isnan(got[1, 0])
    assert Exposure(np.zeros((2, 2)), variance=np.full((2, 2), 1e40)).variance[0, 0] == 1e40


def test_plane_names_that_are_not_a_name_or_a_list_are_refused():
    m = Mask(shape=(2, 2))
    with pytest.raises(InvalidInputError, match="mask planes must be given as a name or a list of names; got None"):
        m.getPlaneBitMask(None)
    with pytest.raises(InvalidInputError, match=r"unknown mask plane None; this mask has \["):
        m.planes_set([None, "BAD"])


def test_copy_names_metadata_entries_that_cannot_be_copied():
    """Exposure.copy() of metadata holding a lock raised copy's bare TypeError ("cannot pickle '_thread.lock'")."""
    import threading

    exp = Exposure(np.zeros((8, 8), np.float32), metadata={"FILTER": "r", "guard": threading.Lock()})
    with pytest.raises(InvalidInputError, match=r"the exposure's metadata cannot be copied to the copy "
                                                r"\(TypeError: .*\): remove or convert the entries \['guard'\]"):
        exp.copy()
    exp.metadata.pop("guard")
    assert exp.copy().metadata == {"FILTER": "r"}


def test_deepcopy_is_copy():
    """copy.deepcopy(exposure) raised copy's bare TypeError for metadata holding a lock, where exposure.copy() names
    the entry; it also copied the PSF model, which copy() shares."""
    import copy
    import threading

    psf = GaussianPsf(11, 11, 1.5)
    exp = Exposure(np.ones((8, 8), np.float32), psf=psf, metadata={"FILTER": "r"})
    dup = copy.deepcopy(exp)
    assert dup.getPsf() is psf and dup.metadata == {"FILTER": "r"} and dup.metadata is not exp.metadata
    assert not np.shares_memory(dup.image, exp.image) and np.array_equal(dup.image, exp.image)
    pair = copy.deepcopy([exp, exp])
    assert pair[0] is pair[1]  # (the memo: one exposure copied once)
    exp.metadata["guard"] = threading.Lock()
    with pytest.raises(InvalidInputError, match=r"remove or convert the entries \['guard'\]"):
        copy.deepcopy(exp)
