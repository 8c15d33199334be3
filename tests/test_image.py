"""Geometry, masks, masked images and exposures."""

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
    e = Exposure(np.zeros((8, 9)), psf=psf, wcs="WCS", xy0=(1, 2), metadata={"filter": "g", "id": 3})
    assert e.hasPsf() and e.getPsf() is psf and e.psf is psf and e.getWcs() == "WCS"
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
