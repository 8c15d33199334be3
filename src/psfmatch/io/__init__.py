"""Files in and out: exposures (FITS), astropy NDData/CCDData, kernels (FITS).

Algorithms never touch files; these readers and writers sit at the edge.
Every writer is atomic and refuses to overwrite an
existing file unless ``overwrite=True``.

- :func:`read_exposure`, :func:`write_exposure`: :mod:`psfmatch.io.fits`
  (psfmatch's multi-extension layout, LSST-style files, plain images);
  :func:`read_exposure_info`: an exposure file's geometry, WCS, mask planes
  and PSF without its pixels.
- :func:`exposure_from_nddata`, :func:`exposure_to_nddata`: :mod:`psfmatch.io.nddata`.
- :func:`write_kernel`, :func:`read_kernel`, :func:`write_kernel_image_grid`:
  :mod:`psfmatch.io.kernel_fits`.
- How PSFs are stored in exposure files: :mod:`psfmatch.io.psf_persist`.
- :func:`atomic_write`: the atomic-write helper, for other writers.
"""

from .fits import ExposureFileInfo, atomic_write, read_exposure, read_exposure_info, write_exposure
from .kernel_fits import kernel_image_grid, read_kernel, write_kernel, write_kernel_image_grid
from .nddata import exposure_from_nddata, exposure_to_nddata
from .psf_persist import psf_from_hdul, psf_to_hdus

__all__ = [
    "atomic_write",
    "read_exposure",
    "read_exposure_info",
    "ExposureFileInfo",
    "write_exposure",
    "exposure_from_nddata",
    "exposure_to_nddata",
    "write_kernel",
    "read_kernel",
    "kernel_image_grid",
    "write_kernel_image_grid",
    "psf_to_hdus",
    "psf_from_hdul",
]
