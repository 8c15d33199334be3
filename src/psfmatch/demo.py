"""A synthetic exposure with a spatially varying PSF, for the demo, tests and benchmarks."""

from __future__ import annotations

import numpy as np

from .geom import Box2I
from .image import Exposure
from .psf.analytic import GaussianPsf, VariableGaussianPsf

__all__ = ["make_demo_exposure", "demo_reference_psf", "render_stars"]


def demo_psf(bbox: Box2I, stamp=21) -> VariableGaussianPsf:
    """Gaussian PSF with sigma 1.6-2.0 px and |e| up to about 0.08 across ``bbox`` (e1, e2 each within 0.06)."""
    return VariableGaussianPsf(stamp, stamp, bbox,
                               sigma=[1.8, 0.15, 0.05, 0.0, 0.0, 0.0],
                               e1=[0.0, 0.04, -0.02], e2=[0.02, 0.0, 0.03])


def demo_reference_psf() -> GaussianPsf:
    """The demo's target: a round Gaussian of sigma 2.6 px."""
    return GaussianPsf(31, 31, 2.6)


def render_stars(shape, psf, xs, ys, fluxes, xy0=(0, 0), dtype=np.float64):
    """An image of point sources, each drawn with the local PSF at its sub-pixel position."""
    img = np.zeros(shape, dtype=dtype)
    H, W = shape
    for x, y, f in zip(xs, ys, fluxes):
        stamp = psf.computeImage((x, y))
        box = psf.computeImageBBox((x, y)).shifted(-xy0[0], -xy0[1])
        full = Box2I((0, 0), (W, H))
        inter = box.intersection(full)
        if inter.isEmpty():
            continue
        sy, sx = inter.slices()
        ty, tx = inter.slices(xy0=box.getMin())
        img[sy, sx] += f * stamp[ty, tx]
    return img


def make_demo_exposure(size=512, n_stars=None, seed=0, sky_sigma=5.0, with_defects=True,
                       dtype=np.float32) -> Exposure:
    """A ``size x size`` exposure: stars drawn with a spatially varying PSF, sky noise, a mask and variance.

    Parameters
    ----------
    size : int or (int, int)
        Width (and height).
    n_stars : int, optional
        Number of stars (default: about one per 2000 pixels).
    seed : int
        Random seed.
    sky_sigma : float
        Gaussian noise sigma; the variance plane is ``sky_sigma**2`` plus the stars' Poisson term.
    with_defects : bool
        Add a BAD column, a cosmic ray (CR) and a NO_DATA corner.
    """
    W, H = (size, size) if np.isscalar(size) else size
    bbox = Box2I((0, 0), (W, H))
    psf = demo_psf(bbox)
    rng = np.random.default_rng(seed)
    n = n_stars if n_stars is not None else max(4, W * H // 2000)
    xs = rng.uniform(15, W - 15, n)
    ys = rng.uniform(15, H - 15, n)
    fluxes = 10 ** rng.uniform(3, 5, n)
    truth = render_stars((H, W), psf, xs, ys, fluxes)
    variance = sky_sigma ** 2 + np.clip(truth, 0, None)
    image = truth + rng.normal(size=(H, W)) * np.sqrt(variance)
    exp = Exposure(image.astype(dtype), variance=variance.astype(dtype), psf=psf,
                   metadata={"id": 42, "filter": "r", "visitInfo": {"exposureTime": 30.0},
                             "photoCalib": {"calibrationMean": 1.0}})
    if with_defects:
        m = exp.getMask()
        exp.mask[:, W // 3] |= m.getPlaneBitMask("BAD")
        cy, cx = H // 2 + 7, W // 2 + 11
        exp.image[cy, cx:cx + 3] += 5000.0
        exp.mask[cy, cx:cx + 3] |= m.getPlaneBitMask("CR")
        nd = max(4, min(W, H) // 16)
        exp.image[:nd, :nd] = np.nan
        exp.mask[:nd, :nd] |= m.getPlaneBitMask("NO_DATA")
    exp.metadata["demoStars"] = {"x": xs.tolist(), "y": ys.tolist(), "flux": fluxes.tolist()}
    return exp
