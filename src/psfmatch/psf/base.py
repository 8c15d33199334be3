"""The PSF protocol and the base class that derives everything from kernel images.

A PSF model in psfmatch needs only one method, ``computeKernelImage(position)``,
returning the effective PSF (pixel response included) on an odd-sized stamp,
centred on its centre pixel ``(n // 2)``, with unit sum.  Everything else of
the protocol is derived here from those images:

``computeKernelImage(position)``
    centred stamp, odd width and height, unit sum, float64.
``computeImage(position)``
    the same PSF placed at the sub-pixel ``position`` on a stamp centred on the
    nearest pixel; :meth:`Psf.computeImageBBox` gives its parent bounding box.
``computeBBox(position)``
    the kernel image's box in the PSF's local frame, centred on (0, 0).
``computeShape(position)``
    adaptive second moments (:class:`psfmatch.moments.Quadrupole`).
``getAveragePosition()``
    a representative position (the centre of a spatially varying model's domain).
``isSpatiallyVarying()``
    whether the images depend on the position; True unless the model says
    otherwise, since a constant model's stamp is realized once and shared.
``resized(width, height)``
    the same model on a stamp of another (odd) size.

:func:`as_psf` wraps any user object that has ``computeKernelImage`` so that it
supports the whole protocol.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import threading

import numpy as np
from scipy import ndimage

from ..errors import InvalidInputError, PsfComputeShapeError, PsfEvaluationError
from ..geom import Box2I, Point2D, as_point
from ..moments import Quadrupole, adaptive_moments

__all__ = ["Psf", "PsfAdapter", "as_psf", "validate_kernel_image", "pad_or_crop", "shift_image",
           "compute_kernel_images", "compute_kernel_image_pairs", "kernel_image_pair_stacks", "pad_or_crop_stack",
           "stamp_half_support", "unique_stamps"]

log = logging.getLogger(__name__)


def validate_kernel_image(image, who="PSF", position=None, normalize=True) -> np.ndarray:
    """Check a PSF kernel image against the protocol and return it as unit-sum float64.

    Raises
    ------
    PsfEvaluationError
        If the image is not 2-d, is empty, has an even side, holds non-finite
        values, or has a non-positive sum.  The message names ``who`` and the position.
    """
    where = "" if position is None else f" at ({position[0]:.6g}, {position[1]:.6g})"
    try:
        arr = np.array(image, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise PsfEvaluationError(f"{who} kernel image{where} is not a numeric array: {exc}") from None
    if arr.ndim != 2:
        raise PsfEvaluationError(f"{who} kernel image{where} must be 2-d; got shape {arr.shape}")
    if arr.size == 0:
        raise PsfEvaluationError(f"{who} kernel image{where} is empty (shape {arr.shape})")
    h, w = arr.shape
    if h % 2 == 0 or w % 2 == 0:
        raise PsfEvaluationError(
            f"{who} kernel image{where} has even size {w}x{h}; kernel images must be odd-sized and centred "
            "on their centre pixel (wrap an even image in ImagePsf, which re-centres it)")
    if not np.all(np.isfinite(arr)):
        raise PsfEvaluationError(f"{who} kernel image{where} contains NaN or inf values")
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if not np.isfinite(total):
        raise PsfEvaluationError(f"{who} kernel image{where} has a sum that overflows (values up to "
                                 f"{np.abs(arr).max():.3g}); a PSF stamp should hold modest values")
    if not total > 0:
        raise PsfEvaluationError(f"{who} kernel image{where} has non-positive sum {total:.6g}; a PSF needs positive flux")
    if normalize:
        arr /= total
    return arr


def _defining_depth(cls, name):
    """Index in ``cls.__mro__`` of the class that defines ``name``."""
    return next(i for i, c in enumerate(cls.__mro__) if name in c.__dict__)


@functools.lru_cache(maxsize=None)
def _overrides_model(cls) -> bool:
    """True when ``cls`` extends a psfmatch PSF model and redefines one of that model's methods.

    Such a subclass may compute other images than the model it extends (an
    elliptical ``GaussianPsf``, a ``PsfexPsf`` whose ``coefficients`` clamp the
    position, a model that fails in some region), so the model's shortcuts --
    ``resized`` rebuilding it from its parameters, ``isSpatiallyVarying``
    declaring it constant, persistence storing its parameters -- must not
    serve it.  Special methods (``__init__``, ``__repr__``...) and plain class
    attributes (``name``) do not count.
    """
    mro = cls.__mro__
    model = next(c for c in mro if c.__module__.startswith(__package__ + "."))
    for c in mro[:mro.index(model)]:
        for key, value in vars(c).items():
            if key.startswith("__") or not hasattr(model, key):
                continue
            if callable(value) or isinstance(value, (property, staticmethod, classmethod, functools.cached_property)):
                return True
    return False


def _model_depth(cls):
    """Index in ``cls.__mro__`` of the psfmatch PSF class that ``cls`` extends (itself, for psfmatch's own)."""
    return next(i for i, c in enumerate(cls.__mro__) if c.__module__.startswith(__package__ + "."))


#: Per thread, the ids of the PSF objects whose redefined ``computeKernelImage`` is running (see
#: :meth:`Psf._public_kernel`).
_PUBLIC_ACTIVE = threading.local()


@functools.lru_cache(maxsize=None)
def _public_kernel_redefined(cls) -> bool:
    """True when ``cls`` redefines the public ``computeKernelImage`` below the psfmatch PSF class it extends.

    Such a subclass's kernel images are what its ``computeKernelImage``
    returns, whatever the model's own evaluation (``_kernel_image``,
    ``_kernel_images``) gives: :meth:`Psf.computeKernelImages` then evaluates
    it position by position through that method, and :meth:`Psf.computeImage`
    shifts that method's image unless the subclass also redefines ``_image_at``.
    """
    return _defining_depth(cls, "computeKernelImage") < _model_depth(cls)


@functools.lru_cache(maxsize=None)
def _image_from_public_kernel(cls) -> bool:
    """True when :meth:`Psf.computeImage` of ``cls`` must shift its redefined ``computeKernelImage``'s image.

    That is when ``computeKernelImage`` is redefined below the model and below
    the class whose ``_image_at`` would otherwise draw the shifted image.
    """
    depth = _defining_depth(cls, "computeKernelImage")
    return _public_kernel_redefined(cls) and depth < _defining_depth(cls, "_image_at")


@functools.lru_cache(maxsize=None)
def _vectorized_is_current(cls) -> bool:
    """True when ``cls``'s ``_kernel_images`` is at least as derived as its ``_kernel_image`` and ``_image_at``.

    A subclass that overrides the one-position evaluation (to change the model,
    or to fail in some region) but inherits a parent's vectorized evaluation
    must not be served by the parent's: it is then evaluated position by position.
    """
    depth = _defining_depth(cls, "_kernel_images")
    return all(depth <= _defining_depth(cls, name) for name in ("_kernel_image", "_image_at"))


def _validate_stack(stack, psf, xs, ys) -> np.ndarray:
    """:func:`validate_kernel_image` for a vectorized stack: unit-sum float64, or the first bad stamp's error."""
    arr = np.array(stack, dtype=np.float64, copy=True)
    if arr.ndim != 3 or arr.shape[0] != len(xs):
        raise PsfEvaluationError(f"{psf.name} vectorized kernel images have shape {arr.shape}; expected "
                                 f"({len(xs)}, height, width)")
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum(axis=(1, 2))
    # a NaN or an infinity in a stamp makes its sum NaN or infinite, so a finite sum vouches for every pixel
    ok = np.isfinite(total) & (total > 0)
    if arr.shape[1] % 2 == 0 or arr.shape[2] % 2 == 0 or arr.shape[1] * arr.shape[2] == 0 or not ok.all():
        i = int(np.flatnonzero(~ok)[0]) if not ok.all() else 0
        validate_kernel_image(arr[i], psf.name, (xs[i], ys[i]))  # raises with the specific message
    arr /= total[:, None, None]
    return arr


def compute_kernel_images(psf, positions):
    """Kernel images of ``psf`` at ``positions``, with the positions where it fails.

    Uses the model's vectorized :meth:`Psf.computeKernelImages` when it has one
    (any :class:`Psf`); when that fails, or for other objects, every position is
    evaluated on its own so that only the failing ones are lost.

    Returns
    -------
    images : list
        ``images[i]`` is the stamp at ``positions[i]`` (a 2-d array), or None where it failed.
    errors : dict
        ``{i: PsfEvaluationError}`` for the failures.
    """
    positions = list(positions)
    if not positions:
        return [], {}
    batch = getattr(psf, "computeKernelImages", None)
    if callable(batch):
        try:
            return list(batch(positions)), {}
        except PsfEvaluationError:
            pass  # find which positions fail, one by one
    images, errors = [], {}
    for i, p in enumerate(positions):
        try:
            images.append(psf.computeKernelImage(p))
        except PsfEvaluationError as exc:
            images.append(None)
            errors[i] = exc
    return images, errors


def compute_kernel_image_pairs(science, reference, positions):
    """Science and reference kernel images at ``positions``, with the positions where either fails.

    The reference is evaluated only where the science PSF could be, and once
    (at the first such position) when it is not spatially varying; then every
    position shares that stamp, or its error.

    Returns
    -------
    science_images, reference_images : list
        2-d arrays, or None at the failed positions.
    errors : dict
        ``{i: PsfEvaluationError}``; the science PSF's error where both fail.
    """
    positions = list(positions)
    sci, errors = compute_kernel_images(science, positions)
    ok = [i for i in range(len(positions)) if i not in errors]
    ref = [None] * len(positions)
    if not ok:
        return sci, ref, errors
    if not bool(getattr(reference, "isSpatiallyVarying", lambda: True)()):
        one, err = compute_kernel_images(reference, [positions[ok[0]]])
        imgs, ref_err = [one[0]] * len(ok), ({j: err[0] for j in range(len(ok))} if err else {})
    else:
        imgs, ref_err = compute_kernel_images(reference, [positions[i] for i in ok])
    for j, i in enumerate(ok):
        if j in ref_err:
            errors[i] = ref_err[j]
        else:
            ref[i] = imgs[j]
    return sci, ref, errors


def kernel_image_pair_stacks(science, reference, positions, size, errors_out=None):
    """Science and reference stamps, both padded or cropped to ``size``, where both PSFs evaluate.

    Returns ``(S, R, kept)``: (m, size, size) stacks and the indices of
    ``positions`` they belong to (:func:`compute_kernel_image_pairs` drops the others, whose errors are
    added to the dict ``errors_out`` when one is given).
    """
    sci, ref, errors = compute_kernel_image_pairs(science, reference, positions)
    if errors_out is not None:
        errors_out.update(errors)
    kept = [i for i in range(len(sci)) if i not in errors]
    return (pad_or_crop_stack([sci[i] for i in kept], size, size),
            pad_or_crop_stack([ref[i] for i in kept], size, size), kept)


def unique_stamps(stack):
    """The distinct stamps of a stack, compared bit for bit: ``(first, inverse)``.

    ``first`` holds the index of each distinct stamp's first appearance, in
    order, and ``inverse[i]`` the position in ``first`` of the stamp equal to
    ``stack[i]``, so that ``stack[first][inverse]`` is ``stack``.

    Stamps are grouped first by their central 64 values, so that a spatially
    varying PSF, whose stamps differ there, costs one short key per stamp
    instead of hashing every stamp whole (1024 stamps of 63 px: 22 -> 1 ms);
    a group of stamps that agree there is compared whole, in one pass when
    they are all equal (a constant PSF).
    """
    a = np.ascontiguousarray(stack)
    n = len(a)
    if n == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    flat = a.reshape(n, -1)
    c = flat.shape[1] // 2
    probe = flat[:, max(0, c - 32):c + 32]
    groups: dict = {}
    for i in range(n):
        groups.setdefault(probe[i].tobytes(), []).append(i)
    first = np.arange(n)
    for members in groups.values():
        if len(members) < 2:
            continue
        idx = np.array(members)
        bits = flat[idx]  # compared bit for bit, as bytes are (0.0 and -0.0 differ)
        bits = bits.view(np.uint64 if bits.shape[1] * bits.itemsize % 8 == 0 else np.uint8)
        if (bits == bits[0]).all():
            first[idx] = idx[0]
            continue
        seen: dict = {}
        for i in members:
            first[i] = seen.setdefault(flat[i].tobytes(), i)
    uniq = np.flatnonzero(first == np.arange(n))
    return uniq, np.searchsorted(uniq, first)


def stamp_half_support(stack) -> int:
    """Largest (Chebyshev) distance from the centre pixel of a non-zero pixel in a stack of square stamps."""
    P = stack.shape[-1]
    c = P // 2
    nz = np.any(stack != 0, axis=tuple(range(stack.ndim - 2)))
    rows = np.flatnonzero(nz.any(axis=1))
    cols = np.flatnonzero(nz.any(axis=0))
    if rows.size == 0:
        return 0
    return int(max(c - rows[0], rows[-1] - c, c - cols[0], cols[-1] - c))


def pad_or_crop(image, width, height) -> np.ndarray:
    """Centre ``image`` on a ``height x width`` canvas, zero-padding or cropping symmetrically.

    The centre pixel stays the centre pixel; sizes must be odd.
    """
    image = np.asarray(image)
    src, dst = _centring_slices(image.shape, width, height)
    out = np.zeros((height, width), dtype=image.dtype)
    out[dst] = image[src]
    return out


def _centring_slices(shape, width, height):
    """Slices ``(source, destination)`` that centre a stamp of ``shape`` on a ``height x width`` canvas."""
    h, w = shape
    if width % 2 == 0 or height % 2 == 0:
        raise InvalidInputError(f"stamp sizes must be odd; got {width}x{height}")
    # offsets of the source in the destination (negative: crop)
    oy, ox = height // 2 - h // 2, width // 2 - w // 2
    sy0, sx0 = max(0, -oy), max(0, -ox)
    dy0, dx0 = max(0, oy), max(0, ox)
    ny, nx = min(h - sy0, height - dy0), min(w - sx0, width - dx0)
    return ((slice(sy0, sy0 + ny), slice(sx0, sx0 + nx)), (slice(dy0, dy0 + ny), slice(dx0, dx0 + nx)))


def pad_or_crop_stack(images, width, height) -> np.ndarray:
    """:func:`pad_or_crop` of every stamp of ``images`` (a stack or a list of 2-d arrays): a new (n, height, width) array.

    Stamps of one shape (the usual case) are placed in one operation.
    """
    if len(images) == 0:
        return np.zeros((0, height, width))
    shapes = {np.shape(im) for im in images}
    if len(shapes) > 1:
        return np.array([pad_or_crop(im, width, height) for im in images])
    arr = np.asarray(images)
    src, dst = _centring_slices(arr.shape[1:], width, height)
    out = np.zeros((len(arr), height, width), dtype=arr.dtype)
    out[(slice(None),) + dst] = arr[(slice(None),) + src]
    return out


def shift_image(image, dx, dy, pad=None) -> np.ndarray:
    """Shift ``image`` by ``(dx, dy)`` pixels with a Fourier phase ramp (flux conserving).

    The image is zero-padded by ``pad`` pixels (default: enough for the shift
    plus a margin) before the shift to keep wrap-around out of the stamp, then
    cropped back to its shape.
    """
    image = np.asarray(image, dtype=np.float64)
    if dx == 0 and dy == 0:
        return image.copy()
    h, w = image.shape
    if pad is None:
        pad = int(math.ceil(max(abs(dx), abs(dy)))) + 8
    big = np.pad(image, pad)
    shifted = ndimage.fourier_shift(np.fft.fft2(big), (dy, dx))
    out = np.fft.ifft2(shifted).real
    return out[pad:pad + h, pad:pad + w]


class Psf:
    """Base class of psfmatch's PSF models.

    Subclasses implement ``_kernel_image`` (and may override
    ``_image_at``, :meth:`getAveragePosition`, :meth:`isSpatiallyVarying`
    and :meth:`resized`); the base class validates the stamps and derives the
    rest of the protocol.  A model is taken to vary across the field unless
    its :meth:`isSpatiallyVarying` returns False.
    """

    #: Name used in error messages.
    name = "PSF"

    # --- to implement ---------------------------------------------------
    def _kernel_image(self, x: float, y: float) -> np.ndarray:
        raise NotImplementedError

    def _image_at(self, x: float, y: float, dx: float, dy: float) -> np.ndarray:
        """The PSF at (x, y), shifted by the sub-pixel offset (dx, dy) from the stamp centre."""
        return shift_image(self._kernel_at(x, y), dx, dy)

    # --- the protocol ---------------------------------------------------
    def _evaluate(self, method, x, y, *args):
        """``method(x, y, *args)``; a model's own failure is raised as PsfEvaluationError naming the position."""
        try:
            return method(x, y, *args)
        except PsfEvaluationError:
            raise
        except Exception as exc:  # a model failing at a position is reported with that position
            raise PsfEvaluationError(
                f"{self.name} could not be evaluated at ({x:.6g}, {y:.6g}): {type(exc).__name__}: {exc}") from exc

    def _checked_kernel(self, x, y):
        """The model's own ``_kernel_image`` at (x, y), validated and unit-sum."""
        return validate_kernel_image(self._evaluate(self._kernel_image, x, y), self.name, (x, y))

    def _public_kernel(self, x, y):
        """The public ``computeKernelImage`` at (x, y), validated, its failure a PsfEvaluationError naming (x, y).

        While it runs, this object's batched and shifted-image paths serve the model's own images
        (:meth:`_serves_public` is False): a redefined ``computeKernelImage`` built on
        ``self.computeImage`` or ``self.computeKernelImages`` gets the model's, not itself again.
        """
        active = _PUBLIC_ACTIVE.__dict__.setdefault("ids", set())
        key = id(self)
        active.add(key)
        try:
            image = self._evaluate(lambda px, py: self.computeKernelImage(Point2D(px, py)), x, y)
        finally:
            active.discard(key)
        return validate_kernel_image(image, self.name, (x, y))

    def _serves_public(self) -> bool:
        """Whether the batched and shifted-image paths go through a redefined ``computeKernelImage``
        (:func:`_public_kernel_redefined`), i.e. unless called from inside it (this thread)."""
        return _public_kernel_redefined(type(self)) and id(self) not in _PUBLIC_ACTIVE.__dict__.get("ids", ())

    def _kernel_at(self, x, y):
        """The kernel image at (x, y) as ``computeKernelImage`` gives it: the model's own evaluation, or a
        subclass's redefined ``computeKernelImage`` (see :func:`_public_kernel_redefined`)."""
        if self._serves_public():
            return self._public_kernel(x, y)
        return self._checked_kernel(x, y)

    def _kernel_images(self, xs, ys):
        """Vectorized ``_kernel_image``: an (n, h, w) stack, or None where the model has none."""
        return None

    def computeKernelImages(self, positions) -> np.ndarray:
        """:meth:`computeKernelImage` at many positions at once: a stack (n, h, w).

        A model that does not vary is evaluated once; models with a vectorized
        evaluation (``_kernel_images``, e.g. :class:`VariableGaussianPsf`)
        realize every stamp in a few array operations; the others are evaluated
        one position at a time.  Every stamp is validated as by
        :meth:`computeKernelImage`.  A subclass that redefines
        :meth:`computeKernelImage` is evaluated through it, one position at a
        time: its stamps are the ones that method returns.

        Raises
        ------
        InvalidInputError
            If ``positions`` is not a sequence of positions (``[(x0, y0), (x1, y1), ...]``).
        PsfEvaluationError
            If the model fails at one of the positions (the message names the first),
            or its stamps do not all have one shape.
        """
        if isinstance(positions, (str, bytes)) or not hasattr(positions, "__iter__"):
            raise InvalidInputError(f"computeKernelImages takes a sequence of positions, as in [(x0, y0), (x1, y1)]; "
                                    f"got {type(positions).__name__} {positions!r} (computeKernelImage takes one)")
        pts = [as_point(p) for p in positions]
        if not pts:
            return np.empty((0, 1, 1))
        xs = np.array([p[0] for p in pts], dtype=np.float64)
        ys = np.array([p[1] for p in pts], dtype=np.float64)
        if not self.isSpatiallyVarying():  # a constant model: one stamp serves every position
            one = self._kernel_at(xs[0], ys[0])
            return np.array(np.broadcast_to(one, (len(pts),) + one.shape))
        cls = type(self)
        try:
            fast = _vectorized_is_current(cls) and not self._serves_public()
            stack = self._kernel_images(xs, ys) if fast else None
        except PsfEvaluationError:
            raise
        except Exception:  # a vectorized failure: the one-by-one path names the position and the cause
            stack = None
        if stack is None:
            imgs = [self._kernel_at(x, y) for x, y in zip(xs, ys)]
            shapes = {im.shape for im in imgs}
            if len(shapes) > 1:
                raise PsfEvaluationError(f"{self.name} kernel images differ in shape between positions "
                                         f"({sorted(shapes)}); computeKernelImages needs one shape")
            return np.array(imgs)
        return _validate_stack(stack, self, xs, ys)

    def computeKernelImage(self, position=None) -> np.ndarray:
        """The PSF at ``position``, centred on the centre pixel of an odd stamp, unit sum, float64.

        Parameters
        ----------
        position : Point2D or (x, y), optional
            Parent pixel position; defaults to :meth:`getAveragePosition`.
        """
        x, y = self.getAveragePosition() if position is None else as_point(position)
        return self._checked_kernel(x, y)

    def computeImage(self, position=None) -> np.ndarray:
        """The PSF placed at the sub-pixel ``position``.

        The stamp has the kernel image's size and is centred on the pixel nearest
        ``position``; its parent bounding box is :meth:`computeImageBBox`.  Its sum is 1.

        Raises
        ------
        PsfEvaluationError
            If the model fails at ``position`` (the message names the model, the
            position and the model's own error) or its image there is not finite
            or has no flux.
        """
        x, y = self.getAveragePosition() if position is None else as_point(position)
        xi, yi = math.floor(x + 0.5), math.floor(y + 0.5)
        if _image_from_public_kernel(type(self)) and self._serves_public():  # not the model's _image_at
            img = shift_image(self._public_kernel(x, y), x - xi, y - yi)
        else:
            img = self._evaluate(self._image_at, x, y, x - xi, y - yi)
        try:
            img = np.asarray(img, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PsfEvaluationError(f"{self.name} image at ({x:.6g}, {y:.6g}) is not a numeric array: {exc}") \
                from None
        with np.errstate(over="ignore", invalid="ignore"):
            total = img.sum()
        if not (np.all(np.isfinite(img)) and np.isfinite(total) and total > 0):
            raise PsfEvaluationError(f"{self.name} image at ({x:.6g}, {y:.6g}) is not finite or has no flux")
        return img / total

    def computeImageBBox(self, position=None) -> Box2I:
        """Parent bounding box of :meth:`computeImage` at ``position``."""
        x, y = self.getAveragePosition() if position is None else as_point(position)
        xi, yi = math.floor(x + 0.5), math.floor(y + 0.5)
        local = self.computeBBox((x, y))
        return local.shifted(xi, yi)

    def computeBBox(self, position=None) -> Box2I:
        """Bounding box of the kernel image in the local frame: centred on (0, 0)."""
        h, w = self.computeKernelImage(position).shape
        return Box2I((-(w // 2), -(h // 2)), (w, h))

    def computeShape(self, position=None) -> Quadrupole:
        """Adaptive second moments of the kernel image at ``position``.

        Raises
        ------
        PsfComputeShapeError
            If the PSF cannot be evaluated there or the moments do not converge.
        """
        pos = self.getAveragePosition() if position is None else as_point(position)
        try:
            img = self.computeKernelImage(pos)
        except PsfEvaluationError as exc:
            raise PsfComputeShapeError(pos, str(exc)) from exc
        ixx, iyy, ixy, xc, yc, ok = adaptive_moments(img)
        if not ok:
            raise PsfComputeShapeError(pos, "adaptive moments did not converge (a PSF narrower than about 0.8 px "
                                            "sigma is too undersampled for them, as is a stamp without a clear core)")
        return Quadrupole(float(ixx), float(iyy), float(ixy), float(xc), float(yc))

    def getAveragePosition(self) -> Point2D:
        """A representative position: (0, 0) for a constant model."""
        return Point2D(0.0, 0.0)

    def isSpatiallyVarying(self) -> bool:
        """Whether the kernel images depend on the position.

        True here, so that a subclass implementing only ``_kernel_image``
        is evaluated at every position; a constant model returns False, and
        ``computeKernelImages`` then realizes one stamp for all positions.
        """
        return True

    def resized(self, width: int, height: int) -> "Psf":
        """This model on a ``width x height`` stamp (odd sizes), zero-padded or cropped about the centre."""
        _check_odd_size(width, height)
        return _ResizedPsf(self, int(width), int(height))

    # --- value equality -------------------------------------------------
    def _eq_key(self):
        """The parameters that define the model, compared by ``==`` and hashed; None: compared by identity.

        Arrays enter as :func:`_array_key`.  A model whose key is None (this
        base class, so a user's subclass of :class:`Psf`) equals only itself.
        """
        return None

    def _value_key(self):
        """:meth:`_eq_key`, or None for a subclass that redefines its model's methods without defining its own
        key: its images may depend on state the model's key does not hold (it is compared by identity)."""
        cls = type(self)
        if "_eq_key" not in cls.__dict__ and _overrides_model(cls):
            return None
        return self._eq_key()

    def __eq__(self, other):
        """Equal when ``other`` is of the same class (not a subclass) and has the same parameters."""
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        key = self._value_key()
        return key is not None and key == other._value_key()

    def __hash__(self):
        key = self._value_key()
        if key is None:
            return object.__hash__(self)
        try:
            return hash((type(self), key))
        except TypeError:  # a parameter that cannot be hashed (a user's object): equal models share the type
            return hash(type(self))

    def __repr__(self):
        return f"{type(self).__name__}()"


def _array_key(array) -> tuple:
    """An array as a hashable value for :meth:`Psf._eq_key`: its shape, dtype and bytes."""
    a = np.ascontiguousarray(array)
    return a.shape, a.dtype.str, a.tobytes()


def _check_odd_size(width, height):
    """Raise InvalidInputError unless ``width`` and ``height`` are positive odd integers (of any numeric type)."""
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iuf":
            v = v[()]  # a 0-d numeric array, as numpy hands out
        ok = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)
        if not (ok and int(v) == v and v >= 1 and int(v) % 2 == 1):
            raise InvalidInputError(f"PSF stamp {name} must be a positive odd integer; got {v!r}")


def _stamp_size(stamp_size, who="stamp_size") -> tuple:
    """``(width, height)`` of a stamp size given as one odd integer or a pair of them."""
    if np.ndim(stamp_size) == 0:
        w = h = stamp_size
    else:
        try:
            w, h = stamp_size
        except (TypeError, ValueError):
            raise InvalidInputError(f"{who} must be an odd integer or a (width, height) pair of odd integers; "
                                    f"got {stamp_size!r}") from None
    _check_odd_size(w, h)
    return int(w), int(h)


class _ResizedPsf(Psf):
    """Another model's kernel images padded or cropped to a fixed size."""

    def __init__(self, psf, width, height):
        self._psf = psf
        self._w, self._h = width, height
        self.name = getattr(psf, "name", type(psf).__name__)

    def _kernel_image(self, x, y):
        return pad_or_crop(self._psf.computeKernelImage(Point2D(x, y)), self._w, self._h)

    def getAveragePosition(self):
        return self._psf.getAveragePosition()

    def isSpatiallyVarying(self):
        return self._psf.isSpatiallyVarying()

    def resized(self, width, height):
        _check_odd_size(width, height)
        return _ResizedPsf(self._psf, int(width), int(height))

    def _eq_key(self):
        return self._psf, self._w, self._h

    def __repr__(self):
        return f"{self._psf!r}.resized({self._w}, {self._h})"


class PsfAdapter(Psf):
    """Wrap a user object that has only ``computeKernelImage(position)``.

    Everything the object lacks is derived from its kernel images.  The object
    receives a :class:`~psfmatch.geom.Point2D`, which also unpacks as ``x, y``.
    """

    def __init__(self, obj, who=None):
        if isinstance(obj, type):  # a class's computeKernelImage is an unbound function, not a model
            start = "expected a PSF model" if who is None else f"{who} must be a PSF model"
            raise InvalidInputError(f"{start}, not the class {obj.__name__}; give an instance, e.g. "
                                    "GaussianPsf(31, 31, 2.6)")
        if not callable(getattr(obj, "computeKernelImage", None)):
            start = "a PSF model" if who is None else f"{who} must be a PSF model: a PSF model"
            raise InvalidInputError(f"{start} needs a computeKernelImage(position) method; {type(obj).__name__} has "
                                    "none (give e.g. GaussianPsf(31, 31, 2.6), or read a model file with read_psf)")
        self.obj = obj
        self.name = type(obj).__name__

    def _kernel_image(self, x, y):
        return self.obj.computeKernelImage(Point2D(x, y))

    def getAveragePosition(self):
        fn = getattr(self.obj, "getAveragePosition", None)
        if callable(fn):
            try:
                return as_point(fn())
            except Exception:  # a partial implementation: fall back to the origin
                pass
        return Point2D(0.0, 0.0)

    def isSpatiallyVarying(self):
        """The object's own answer; True (evaluated at every position) when it has none or it fails."""
        fn = getattr(self.obj, "isSpatiallyVarying", None)
        if not callable(fn):
            return True
        try:
            return bool(fn())
        except Exception as exc:  # a partial implementation: take it as varying, which is always correct
            log.debug("%s.isSpatiallyVarying() failed (%s: %s); taking the model as spatially varying",
                      self.name, type(exc).__name__, exc)
            return True

    def resized(self, width, height):
        """The object's own ``resized(width, height)`` when it has one (as LSST's task calls it), else padding.

        A model that draws itself at any size (an analytic one) keeps its wings
        on a larger stamp, where zero-padding its image would cut them.  Should
        the object's ``resized`` fail, its images are padded or cropped instead,
        with a logged warning.
        """
        _check_odd_size(width, height)
        fn = getattr(self.obj, "resized", None)
        if callable(fn):
            try:
                out = as_psf(fn(int(width), int(height)))
                shape = out.computeKernelImage(out.getAveragePosition()).shape
                if shape == (int(height), int(width)):
                    return out
                log.warning("%s.resized(%d, %d) gave %dx%d stamps; padding or cropping its images instead",
                            self.name, width, height, shape[1], shape[0])
            except Exception as exc:  # a partial implementation: pad or crop its images
                log.warning("%s.resized(%d, %d) failed (%s: %s); padding or cropping its images instead",
                            self.name, width, height, type(exc).__name__, exc)
        return super().resized(width, height)

    def _eq_key(self):
        return (self.obj,)

    def __repr__(self):
        return f"PsfAdapter({self.obj!r})"


def as_psf(obj, who=None) -> Psf:
    """Return ``obj`` if it is a :class:`Psf`, else wrap it in a :class:`PsfAdapter`.

    Parameters
    ----------
    obj : PSF model
        A :class:`Psf`, or any object with ``computeKernelImage(position)``.
    who : str, optional
        The argument that holds the model, named by the error message (e.g. ``"referencePsfModel"``).

    Raises
    ------
    InvalidInputError
        If ``obj`` is a class (``GaussianPsf`` instead of ``GaussianPsf(31, 31, 2.6)``)
        or has no ``computeKernelImage`` method.
    """
    if isinstance(obj, Psf):
        return obj
    return PsfAdapter(obj, who)


def model_domain(psf):
    """The region a spatially varying model was fitted on, or None when it states none.

    A model states it with ``getBBox()`` (a PSFEx model: ``POLZERO +- POLSCAL / 2``;
    :class:`~psfmatch.psf.VariableGaussianPsf`: its box).  Wrappers are looked through: a
    model resized to another stamp (:meth:`Psf.resized`) and a :class:`PsfAdapter` have the
    domain of the model they wrap.  A ``getBBox`` that fails or returns no non-empty
    :class:`~psfmatch.geom.Box2I` counts as none.
    """
    while True:
        get = getattr(psf, "getBBox", None)
        if callable(get):
            try:
                box = get()
            except Exception:  # a partial implementation, or a constant model: no region
                return None
            return box if isinstance(box, Box2I) and not box.isEmpty() else None
        if isinstance(psf, _ResizedPsf):
            psf = psf._psf
        elif isinstance(psf, PsfAdapter):
            psf = psf.obj
        else:
            return None
