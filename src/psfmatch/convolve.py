"""Applying a spatially varying kernel to a masked image (SPEC section 6).

Image: ``out(x) = sum_u K_x(u) I(x - u)`` with the exact spatial variation:
the kernel refactors as ``K_x = sum_j f_j(x) R_j``
(:meth:`~psfmatch.kernel.LinearCombinationKernel.term_images`), so
``out = sum_j f_j (I (*) R_j)``: one forward transform of each tile and one
inverse per spatial term, whatever the number of basis kernels.

Variance: ``sum_u K_x(u)^2 V(x - u)``, exactly: ``K_x^2 = sum_{j,k} f_j f_k R_j R_k``
and the products ``f_j f_k`` expand on the spatial basis of twice the order
(:meth:`~psfmatch.kernel.SpatialFunction.product_tensor`), so the variance
costs one inverse transform per term of that basis (15 for order 2).

Mask: every output pixel ORs the bits of the input pixels under the kernel
footprint, the set of kernel pixels with ``|K| >= threshold * max|K|``
anywhere in the field (``maskDilationThreshold``; 0 reproduces LSST, which
uses every non-zero pixel).

Border and missing data: the outer ``kernelSize // 2`` pixels, and every output
pixel whose full kernel support covers a non-finite image or variance pixel or
a NO_DATA pixel, get image NaN, variance +inf and the NO_DATA bit (the border's
mask is NO_DATA only, as afw's ``doCopyEdge=False``).  Nothing is filled silently.

The work is tiled (overlap-save), so memory is bounded by the tile size for
any exposure size.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from .errors import MemoryLimitError
from .image import MaskedImage
from .kernel.kernel import LinearCombinationKernel

__all__ = ["convolve_masked_image", "mask_footprint", "estimate_memory"]


def _spatial_parts(kernel: LinearCombinationKernel):
    """Term images for the image and the variance, and their (p, q) separable exponents."""
    R = kernel.term_images()  # (ns, k, k)
    sf = kernel.spatial_function
    if sf is None:
        return R, [(0, 0)], R * R, [(0, 0)], None, None
    P = sf.product_tensor()  # (ns, ns, ns2)
    W = np.einsum("jkp,jab,kab->pab", P, R, R)
    sq = sf.squared()
    return R, sf.terms, W, sq.terms, sf, sq


def mask_footprint(kernel: LinearCombinationKernel, threshold: float, bbox=None, n_grid=5) -> np.ndarray:
    """Boolean ``k x k`` footprint: pixels where ``max_x |K_x| >= threshold * max_{x,u} |K_x(u)|``.

    The maximum over the field is taken on an ``n_grid x n_grid`` grid of
    positions over ``bbox`` (the kernel's box by default) plus its corners.
    ``threshold = 0`` selects every pixel that is non-zero somewhere.
    """
    box = bbox if bbox is not None else kernel.bbox
    if box is None or not kernel.isSpatiallyVarying():
        amax = np.abs(kernel.computeImage((0.0, 0.0) if box is None else box.getCenter()))
    else:
        xs = np.linspace(box.getMinX(), box.getMaxX(), n_grid)
        ys = np.linspace(box.getMinY(), box.getMaxY(), n_grid)
        gx, gy = np.meshgrid(xs, ys)
        amax = np.abs(kernel.computeImages(gx.ravel(), gy.ravel())).max(axis=0)
    top = amax.max()
    if top == 0:
        fp = np.zeros_like(amax, dtype=bool)
        fp[amax.shape[0] // 2, amax.shape[1] // 2] = True
        return fp
    if threshold <= 0:
        return amax > 0
    return amax >= threshold * top


def estimate_memory(shape, kernel_size, n_terms, n_var_terms, tile) -> int:
    """Bytes needed to convolve an image of ``shape``: the full-size planes plus one tile's transforms."""
    h, w = shape
    full = h * w * (8 + 8 + 4 + 4 + 4 + 4 + 1 + 1)  # work image/variance, outputs, masks, flags
    t = tile + kernel_size
    per_tile = t * t * 8 * (2 + 2 * (1 + n_terms + n_var_terms))
    return int(full + per_tile)


def _or_dilate(mask, footprint):
    """``out(x) = OR_{u in footprint} mask(x - u)`` for an int32 bit array (centre of footprint = u = 0)."""
    if not mask.any():
        return mask.copy()
    kh, kw = footprint.shape
    cy, cx = kh // 2, kw // 2
    offs = np.argwhere(footprint) - [cy, cx]  # (dy, dx)
    H, W = mask.shape
    out = np.zeros_like(mask)
    nz = np.count_nonzero(mask)
    if nz * len(offs) < mask.size:
        ys, xs = np.nonzero(mask)
        vals = mask[ys, xs]
        for dy, dx in offs:
            yy, xx = ys + dy, xs + dx
            ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            np.bitwise_or.at(out, (yy[ok], xx[ok]), vals[ok])
        return out
    for dy, dx in offs:
        ys_out = slice(max(0, dy), H + min(0, dy))
        xs_out = slice(max(0, dx), W + min(0, dx))
        ys_in = slice(max(0, -dy), H + min(0, -dy))
        xs_in = slice(max(0, -dx), W + min(0, -dx))
        out[ys_out, xs_out] |= mask[ys_in, xs_in]
    return out


def convolve_masked_image(masked_image: MaskedImage, kernel: LinearCombinationKernel, *,
                          mask_threshold: float = 1e-3, tile: int = 512, max_memory_bytes=None,
                          workers=None) -> MaskedImage:
    """Convolve image, variance and mask with a (spatially varying) kernel; see the module docstring.

    Parameters
    ----------
    masked_image : MaskedImage
        Input (not modified).
    kernel : LinearCombinationKernel
        Evaluated at parent pixel coordinates (the image's ``xy0`` is honoured).
    mask_threshold : float
        Footprint threshold for mask propagation (``maskDilationThreshold``).
    tile : int
        Side of the FFT tiles (overlap-save).
    max_memory_bytes : int, optional
        Raise :class:`MemoryLimitError` before allocating if the estimate exceeds it.
    workers : int, optional
        Threads for ``scipy.fft``.

    Returns
    -------
    MaskedImage
        Same box and dtype as the input.
    """
    img = masked_image.image
    var = masked_image.variance
    mask_obj = masked_image.getMask()
    mask = mask_obj.array
    H, W = img.shape
    k = kernel.getWidth()
    h = k // 2
    R, terms, Wimg, var_terms, sf, sq = _spatial_parts(kernel)
    if max_memory_bytes is not None:
        need = estimate_memory(img.shape, k, len(terms), len(var_terms), tile)
        if need > max_memory_bytes:
            raise MemoryLimitError(
                f"convolving a {W}x{H} image needs about {need / 2**30:.2f} GiB, more than the limit of "
                f"{max_memory_bytes / 2**30:.2f} GiB; raise config.maxMemoryGiB or lower config.convolveTileSize")
    no_data_bit = mask_obj.getPlaneBitMask("NO_DATA") if "NO_DATA" in mask_obj.getMaskPlaneDict() else 0
    bad = ~np.isfinite(img) | ~np.isfinite(var)
    if no_data_bit:
        bad |= (mask & no_data_bit) != 0
    work_img = np.where(bad, 0.0, img).astype(np.float64)
    work_var = np.where(bad, 0.0, var).astype(np.float64)

    out_img = np.empty((H, W), dtype=img.dtype)
    out_var = np.empty((H, W), dtype=var.dtype)
    x0, y0 = masked_image.getXY0()
    core = max(1, tile - 2 * h)
    L_y = sfft.next_fast_len(min(core, H) + 2 * h, real=True)
    L_x = sfft.next_fast_len(min(core, W) + 2 * h, real=True)
    core_y, core_x = L_y - 2 * h, L_x - 2 * h

    def kernel_ffts(stack):
        pad = np.zeros((len(stack), L_y, L_x))
        pad[:, :k, :k] = stack
        pad = np.roll(pad, (-h, -h), axis=(1, 2))  # kernel centre at index (0, 0)
        return sfft.rfft2(pad, axes=(1, 2), workers=workers)

    f_img = kernel_ffts(R)
    f_var = kernel_ffts(Wimg)
    padded_img = np.pad(work_img, h)
    padded_var = np.pad(work_var, h)
    for ty in range(0, H, core_y):
        ny = min(core_y, H - ty)
        for tx in range(0, W, core_x):
            nx = min(core_x, W - tx)
            ycoords = y0 + ty + np.arange(ny)
            xcoords = x0 + tx + np.arange(nx)
            for src, kf, tlist, basis, dst in ((padded_img, f_img, terms, sf, out_img),
                                               (padded_var, f_var, var_terms, sq, out_var)):
                block = np.zeros((L_y, L_x))
                block[:ny + 2 * h, :nx + 2 * h] = src[ty:ty + ny + 2 * h, tx:tx + nx + 2 * h]
                fb = sfft.rfft2(block, workers=workers)
                conv = sfft.irfft2(fb[None] * kf, s=(L_y, L_x), axes=(1, 2), workers=workers)
                conv = conv[:, h:h + ny, h:h + nx]
                if basis is None:
                    acc = conv[0]
                else:
                    X = basis.evaluate_1d(xcoords, 0)
                    Y = basis.evaluate_1d(ycoords, 1)
                    acc = np.zeros((ny, nx))
                    for j, (p, q) in enumerate(tlist):
                        acc += conv[j] * Y[q][:, None] * X[p][None, :]
                dst[ty:ty + ny, tx:tx + nx] = acc

    # mask propagation
    footprint = mask_footprint(kernel, mask_threshold)
    prop = _or_dilate(mask & ~no_data_bit if no_data_bit else mask, footprint)
    bad_out = ndimage.maximum_filter(bad.view(np.uint8), size=k, mode="constant", cval=0).astype(bool) if bad.any() \
        else np.zeros_like(bad)
    out_mask = prop
    border = np.zeros((H, W), dtype=bool)
    if h > 0:
        border[:h, :] = border[-h:, :] = border[:, :h] = border[:, -h:] = True
    out_mask[bad_out] |= no_data_bit
    out_mask[border] = no_data_bit
    dead = bad_out | border
    out_img[dead] = np.nan
    out_var[dead] = np.inf
    return MaskedImage(out_img, type(mask_obj)(out_mask, planes=mask_obj.getMaskPlaneDict()), out_var,
                       xy0=masked_image.getXY0())


def direct_convolve(masked_image: MaskedImage, kernel: LinearCombinationKernel):
    """Slow reference: evaluate the kernel at every output pixel and sum directly.

    For tests only (it loops over pixels in Python); returns image and variance
    arrays with the border left at NaN / inf.
    """
    img = np.asarray(masked_image.image, dtype=np.float64)
    var = np.asarray(masked_image.variance, dtype=np.float64)
    H, W = img.shape
    k = kernel.getWidth()
    h = k // 2
    x0, y0 = masked_image.getXY0()
    out_i = np.full((H, W), np.nan)
    out_v = np.full((H, W), np.inf)
    for y in range(h, H - h):
        for x in range(h, W - h):
            K = kernel.computeImage((x + x0, y + y0))
            # convolution: out(x) = sum_u K(u) I(x - u) -> flip the kernel over the window
            win_i = img[y - h:y + h + 1, x - h:x + h + 1][::-1, ::-1]
            win_v = var[y - h:y + h + 1, x - h:x + h + 1][::-1, ::-1]
            out_i[y, x] = np.sum(K * win_i)
            out_v[y, x] = np.sum(K * K * win_v)
    return out_i, out_v

