"""Least-squares solutions for the matching kernel: per candidate, spatial, and PCA.

The model for one candidate is ``S (*) K ~ R``: the science stamp ``S``
convolved with the kernel ``K = sum_i a_i B_i`` should equal the reference
stamp ``R``.  With ``fitRegion = "full"`` (the default) the comparison runs over
every pixel where either side can be non-zero: ``S`` is zero-padded (a PSF
model is zero outside its stamp) and so is ``R``.  The normal equations then
need no basis convolution at all:

.. math::

    M_{ij} = \\sum_\\tau A_S(\\tau) X_{ij}(\\tau), \\qquad
    b_i = \\sum_u B_i(u) C_{SR}(u),

with ``A_S`` the autocorrelation of ``S``, ``X_ij`` the cross-correlation of
basis kernels ``i`` and ``j`` (computed once) and ``C_SR`` the
cross-correlation of ``S`` with ``R``.  A thousand candidates cost a few batched
small FFTs and one matrix product.  ``fitRegion = "stamp"`` or ``"valid"``
(LSST's central ``(P - k + 1)^2`` pixels) build the design matrix explicitly.

The kernel sum is constrained inside the fit: the basis is brought to a form
where only the first kernel has a non-zero sum (1) and its coefficient is fixed
to 1.  Every solve is a least-squares solve on the
column-scaled design matrix through its singular value decomposition, obtained
from the eigen-decomposition of the scaled Gram matrix ``D^-1 M D^-1 = V s^2
V^T``; singular values below ``rcond * s_max`` are dropped (minimum-norm
solution), so a rank-deficient system never raises.  The rank and the
condition number ``s_max / s_min`` (of the kept values) are recorded.

Regularized delta-function kernels (Becker et al. 2012) add ``lambda p^T H p``
(``p`` the kernel pixels) to each candidate's objective.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy import fft as sfft

from .parallel import available_cores, map_shared
from .errors import InvalidInputError
from .kernel.basis import KernelBasis, renormalize_kernel_list
from .psf.base import stamp_half_support

__all__ = [
    "NormalEquations",
    "GramBuilder",
    "constrained_basis",
    "solve_gram",
    "solve_candidates",
    "solve_spatial",
    "pca_basis",
    "lambda_for",
    "spectral_cache_room",
    "trim_spectral_cache",
]


@dataclass
class NormalEquations:
    """Stacked normal equations of many candidates: ``M`` (n, N, N), ``b`` (n, N), ``yy`` (n,)."""

    M: np.ndarray
    b: np.ndarray
    yy: np.ndarray

    def __len__(self):
        return len(self.yy)

    def take(self, index) -> "NormalEquations":
        return NormalEquations(self.M[index], self.b[index], self.yy[index])




#: The BLAS libraries that :func:`single_threaded_blas` drives (filled on first use).
_BLAS_CONTROLLER: list = []

#: Spectral products of recently used bases (:meth:`GramBuilder._spectral_basis`), shared by the fits
#: of a process: the default basis is the same for every exposure, and the automatic kernel tries the
#: same bases on every exposure of a survey.  The least recently used are dropped beyond
#: :data:`_SPECTRAL_CACHE_BYTES`.  (A limit of eight entries, used until 2026-12, was fewer than the
#: nine to eleven bases an automatic fit tries with a real PSF model, used in turn, so that every fit
#: recomputed all of them: 50-60 ms of a 63 px DECam PSFEx model's 0.4-0.8 s fit.)
_SPECTRAL_CACHE: dict = {}
#: Bytes the entries of :data:`_SPECTRAL_CACHE` may hold together: the bases an automatic fit tries
#: with a 63 px DECam PSFEx model take 103 MiB (nine bases, up to 96-point transforms) to 174 MiB
#: (eleven, up to 108-point); the demo's four, 13 MiB.  Too small a limit makes every fit
#: recompute every basis (each one evicts the next one needed).
_SPECTRAL_CACHE_BYTES = 256 * 2**20
_SPECTRAL_LOCK = threading.Lock()
#: The rooms of the open :func:`spectral_cache_room` contexts: while any is open, the cache holds no more
#: than the smallest (a fit under ``maxMemoryGiB`` keeps its entries within the memory its estimate leaves).
_SPECTRAL_CACHE_ROOMS: list = []


def _entry_bytes(entry) -> int:
    return sum(_entry_bytes(x) if isinstance(x, tuple) else x.nbytes for x in entry)


def _trim_locked(nbytes):
    """Drop the least recently used entries until the cache holds at most ``nbytes`` (the lock held)."""
    total = sum(_entry_bytes(e) for e in _SPECTRAL_CACHE.values())
    while total > nbytes and _SPECTRAL_CACHE:
        total -= _entry_bytes(_SPECTRAL_CACHE.pop(next(iter(_SPECTRAL_CACHE))))


def trim_spectral_cache(nbytes):
    """Drop the least recently used spectral products until the cache holds at most ``nbytes``.

    Called by the task before a fit under ``maxMemoryGiB`` with the memory its estimate leaves
    (:func:`~psfmatch.task.estimate_fit_memory` counts the products of the fit's own basis, not those
    kept from earlier fits).  ``None``: no limit, nothing is dropped.
    """
    if nbytes is None:
        return
    with _SPECTRAL_LOCK:
        _trim_locked(max(0, int(nbytes)))


@contextlib.contextmanager
def spectral_cache_room(nbytes):
    """Hold the spectral cache to at most ``nbytes`` while the context is open (``None``: no change).

    The cache is trimmed on entry, and an entry that does not fit the room is not kept (its
    :class:`GramBuilder` still uses it); rooms of nested or concurrent contexts hold together (the
    smallest wins).  The automatic kernel runs its trials under ``maxMemoryGiB`` in such a context.
    """
    if nbytes is None:
        yield
        return
    room = max(0, int(nbytes))
    with _SPECTRAL_LOCK:
        _SPECTRAL_CACHE_ROOMS.append(room)
        _trim_locked(min(_SPECTRAL_CACHE_ROOMS))
    try:
        yield
    finally:
        with _SPECTRAL_LOCK:
            if room in _SPECTRAL_CACHE_ROOMS:  # (a forked child starts without its parent's rooms)
                _SPECTRAL_CACHE_ROOMS.remove(room)


def _spectral_cache_get(key, images):
    """The cached products for ``key`` (marked as the most recently used), or None."""
    with _SPECTRAL_LOCK:
        hit = _SPECTRAL_CACHE.pop(key, None)
        if hit is None or not np.array_equal(hit[0], images):
            return None
        _SPECTRAL_CACHE[key] = hit
        return hit


def _spectral_cache_put(key, entry):
    """Keep ``entry`` (arrays, or tuples of arrays), dropping the least recently used beyond the byte limit.

    Inside a :func:`spectral_cache_room`, the cache holds at most the room: an entry larger than the room is
    not kept (an entry larger than the byte limit alone is kept, everything else dropped).
    """
    with _SPECTRAL_LOCK:
        _SPECTRAL_CACHE.pop(key, None)
        if _SPECTRAL_CACHE_ROOMS:
            room = min(_SPECTRAL_CACHE_ROOMS)
            if _entry_bytes(entry) > room:
                return
            _trim_locked(room - _entry_bytes(entry))
        _SPECTRAL_CACHE[key] = entry
        total = sum(_entry_bytes(e) for e in _SPECTRAL_CACHE.values())
        while total > _SPECTRAL_CACHE_BYTES and len(_SPECTRAL_CACHE) > 1:
            total -= _entry_bytes(_SPECTRAL_CACHE.pop(next(iter(_SPECTRAL_CACHE))))


#: Open :func:`single_threaded_blas` contexts, in any thread, and the BLAS thread counts saved by the first.
_BLAS_STATE = {"depth": 0, "saved": None}
_BLAS_LOCK = threading.Lock()


@contextlib.contextmanager
def _blas_threads(libs, n):
    """BLAS on ``n`` threads while any such context is open (the count is process-wide, not per thread).

    The first context to open saves the counts and the last to close restores
    them, so fits running in several threads at once leave the process's BLAS
    as they found it whatever order they finish in.
    """
    with _BLAS_LOCK:
        if _BLAS_STATE["depth"] == 0:
            _BLAS_STATE["saved"] = [lc.get_num_threads() for lc in libs]
            _set_counts(libs, [n] * len(libs))
        _BLAS_STATE["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["depth"] -= 1
            if _BLAS_STATE["depth"] == 0:
                _set_counts(libs, _BLAS_STATE["saved"])


#: OpenBLAS's ``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27) under the names its builds export.
_SETTER_NAMES = ("openblas_set_num_threads_local", "openblas_set_num_threads_local64_",
                 "scipy_openblas_set_num_threads_local64_", "scipy_openblas_set_num_threads_local")


def _set_blas_threads(lc, n):
    """Set the thread count of the BLAS behind threadpoolctl's controller ``lc``, from any thread.

    OpenBLAS ignores ``openblas_set_num_threads`` (what threadpoolctl calls)
    from any thread but the main one once the main one has called it: a fit
    run in a user's thread pool after one on the main thread kept every core
    for its small dense problems, slower, and summed in another order than
    the same fit on the main thread.  ``openblas_set_num_threads_local`` sets
    the same process-wide count from any thread; other libraries go through
    threadpoolctl.
    """
    setter = _local_setter(lc)
    if setter is None:
        lc.set_num_threads(n)
    else:
        setter(int(n))


def _set_counts(libs, counts):
    """:func:`_set_blas_threads` for every controller of ``libs``, ``counts`` in the same order."""
    for lc, n in zip(libs, counts):
        _set_blas_threads(lc, n)


@functools.lru_cache(maxsize=None)
def _local_setter(lc):
    """The ``openblas_set_num_threads_local`` of controller ``lc``'s library, or None."""
    import ctypes

    dynlib = getattr(lc, "dynlib", None)
    setter = next((getattr(dynlib, name) for name in _SETTER_NAMES if hasattr(dynlib, name)), None)
    if setter is not None:
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
    return setter


def _blas_libs():
    """threadpoolctl's controllers of the process's BLAS libraries (empty without threadpoolctl)."""
    if not _BLAS_CONTROLLER:
        libs = []
        try:
            from threadpoolctl import ThreadpoolController

            libs = [lc for lc in ThreadpoolController().lib_controllers if lc.user_api == "blas"]
        except Exception:  # not installed, or no BLAS it knows
            libs = []
        _BLAS_CONTROLLER.append(libs)
    return _BLAS_CONTROLLER[0]


@contextlib.contextmanager
def _all_cores_blas():
    """BLAS on every core psfmatch may use for one large dense problem, then back to the count it had.

    Inside a fit BLAS runs on one thread (:func:`single_threaded_blas`); an
    eigen-decomposition of a 1680 x 1680 delta-function system is large enough
    to share: 0.66 s on one thread (``syevr``), 0.37 s on two (``syevd``).
    The count is the process's: fits running meanwhile in other threads get
    the cores for their products too, which changes their sums by rounding
    only (the one case in which concurrent fits are not bit for bit the
    serial ones).  It never exceeds the count in force when the fit began, so
    a caller's ``threadpool_limits(1)`` (or ``OPENBLAS_NUM_THREADS=1``) keeps
    the solve on one thread and its result independent of the core count.
    """
    libs, n = _blas_libs(), available_cores()
    if not libs or n < 2:
        yield
        return
    with _BLAS_LOCK:
        saved = [lc.get_num_threads() for lc in libs]
        # never more than the caller allowed: the counts in force when the fit began (a threadpool_limits(1)
        # or OPENBLAS_NUM_THREADS=1 of the user's), which single_threaded_blas saved
        allowed = _BLAS_STATE["saved"] if _BLAS_STATE["depth"] > 0 and _BLAS_STATE.get("saved") else saved
        _set_counts(libs, [max(1, min(n, int(a))) for a in allowed])
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _set_counts(libs, saved)


def single_threaded_blas():
    """A context in which BLAS runs on one thread (through ``threadpoolctl``; a no-op without it).

    The fit's dense problems (a thousand 26 x 26 systems, a 156 x 156 spatial
    system, matrix products of a few hundred columns) are far too small to
    share between BLAS threads: on a machine whose cores are busy, OpenBLAS's
    threads wait for each other and such calls become ten to a hundred times
    slower; even on an idle 2-core machine the normal equations of a thousand
    candidates take twice as long.  ``threadpoolctl`` is a dependency of
    psfmatch; should it be missing, nothing changes but the speed.
    """
    libs = _blas_libs()
    if not libs:
        return contextlib.nullcontext()
    return _blas_threads(libs, 1)


def _lag_index(n_fft, max_lag):
    """Indices, in an n_fft-periodic axis, of lags -max_lag..max_lag."""
    return np.arange(-max_lag, max_lag + 1) % n_fft


def _parities(images, tol=1e-13):
    """+1 / -1 for images even / odd under inversion about the centre pixel, 0 for the others."""
    imgs = np.asarray(images, dtype=np.float64)
    flip = imgs[:, ::-1, ::-1]
    scale = tol * np.abs(imgs).max(axis=(1, 2), keepdims=True)
    even = np.all(np.abs(imgs - flip) <= scale, axis=(1, 2))
    odd = np.all(np.abs(imgs + flip) <= scale, axis=(1, 2))
    return np.where(even, 1, np.where(odd, -1, 0))


def _pairs(images, parities=None):
    """Index pairs ``(i <= j)`` of the Gram matrix that can be non-zero for *any* science stamp.

    ``M_ij = sum_tau A_S(tau) X_ij(tau)``: the autocorrelation ``A_S`` of a real
    stamp is even, and the cross-correlation ``X_ij`` of an even and an odd
    kernel is odd, so their sum vanishes identically.  The Alard-Lupton and
    most PCA kernels have a definite parity (a Gaussian times ``x^p y^q``), so
    about half of the pairs need not be computed.  With any kernel of no
    definite parity, every pair is kept.
    """
    nb = len(images)
    iu = np.triu_indices(nb)
    par = _parities(images) if parities is None else parities
    if np.all(par != 0):
        same = par[iu[0]] == par[iu[1]]
        iu = (iu[0][same], iu[1][same])
    return iu


#: The chunks of :meth:`GramBuilder.build` hold at most 256 candidates, fewer where one chunk's work arrays
#: (:func:`gram_chunk_work`) would exceed this many bytes: every thread works on a chunk at once, and a chunk of
#: 256 63 px stamps with a 41 px kernel needed 70 MiB (on each of 16 threads, 0.9 GiB of a fit estimated at 0.35).
CHUNK_BYTES = 24 * 2 ** 20

#: Work arrays of :meth:`GramBuilder._build_full` per candidate, in bytes per pixel of its ``n x n`` transform:
#: the half-plane spectra of the science and (unless shared) reference stamps (8 each) and the power spectrum
#: with its product (8); tracemalloc measured 16 (a shared reference) to 24.
GRAM_WORK_PER_PIXEL = 24


def gram_chunk_size(n_grid, n_basis, chunk=256) -> int:
    """Candidates per chunk of :meth:`GramBuilder.build` on ``n_grid``-point transforms: at most ``chunk``,
    fewer where a chunk's work arrays would exceed :data:`CHUNK_BYTES`."""
    per = GRAM_WORK_PER_PIXEL * int(n_grid) ** 2 + 8 * int(n_basis) * (int(n_basis) + 1)
    return int(max(1, min(int(chunk), CHUNK_BYTES // per)))


def gram_chunk_work(n_grid, n_basis, n_candidates) -> int:
    """Bytes of the work arrays of one chunk of :meth:`GramBuilder.build` (one thread's share) for
    ``n_candidates`` candidates on ``n_grid``-point transforms, with their equations."""
    n = min(int(n_candidates), gram_chunk_size(n_grid, n_basis))
    return n * (GRAM_WORK_PER_PIXEL * int(n_grid) ** 2 + 8 * int(n_basis) * (int(n_basis) + 1))


class GramBuilder:
    """Builds the normal equations of candidates for one basis and one fit region.

    Parameters
    ----------
    basis : KernelBasis
        Raw basis (any form; the sum constraint is applied later).
    region : {"full", "stamp", "valid"}
        Which pixels constrain the fit (see the module docstring).
    """

    def __init__(self, basis: KernelBasis, region: str = "full"):
        if region not in ("full", "stamp", "valid"):
            raise InvalidInputError(f"fitRegion must be 'full', 'stamp' or 'valid'; got {region!r}")
        self.basis = basis
        self.region = region
        self.k = basis.kernel_size
        self.h = self.k // 2
        self.nb = len(basis)
        self._delta = basis.kind == "delta-function"
        self._X = None
        self._df_index = None

    # --- precomputation --------------------------------------------------
    def _cross_correlations(self):
        """X[i, j, t] = sum_u B_i(u) B_j(u + t) for lags t in [-(k-1), k-1]^2 (row-major)."""
        if self._X is None:
            k = self.k
            n = sfft.next_fast_len(2 * k - 1, real=True)
            fb = sfft.rfft2(self.basis.images, s=(n, n))
            lag = _lag_index(n, k - 1)
            X = np.empty((self.nb, self.nb, (2 * k - 1) ** 2))
            for i in range(self.nb):
                xi = sfft.irfft2(np.conj(fb[i])[None] * fb, s=(n, n))
                X[i] = xi[:, lag][:, :, lag].reshape(self.nb, -1)
            self._X = X.reshape(self.nb * self.nb, -1)
        return self._X

    def _df_lag_index(self):
        if self._df_index is None:
            k = self.k
            r, c = np.divmod(np.arange(k * k), k)
            dy = r[None, :] - r[:, None] + (k - 1)
            dx = c[None, :] - c[:, None] + (k - 1)
            self._df_index = dy * (2 * k - 1) + dx
        return self._df_index

    # --- normal equations ------------------------------------------------
    def build(self, science, reference, chunk=256) -> NormalEquations:
        """Normal equations of the candidates with stamps ``science`` and ``reference`` (n, P, P).

        The candidates are taken in chunks of at most ``chunk``, fewer for large stamps or kernels
        (:func:`gram_chunk_size`); the chunks of the spectral path run on the cores together.
        """
        S = np.asarray(science, dtype=np.float64)
        R = np.asarray(reference, dtype=np.float64)
        if S.ndim == 2:
            S, R = S[None], R[None]
        if S.shape != R.shape or S.shape[1] != S.shape[2]:
            raise InvalidInputError(f"science and reference stamps must be equal and square; got {S.shape}, {R.shape}")
        if self.region == "full":
            geom = self._full_geometry(S, R)
            chunk = gram_chunk_size(geom[0], self.nb, chunk)
        else:
            chunk = gram_chunk_size(sfft.next_fast_len(S.shape[1] + self.k - 1, real=True), self.nb, chunk)
        starts = list(range(0, len(S), chunk))

        def one(i):
            if self.region == "full":
                return self._build_full(S[i:i + chunk], R[i:i + chunk], geom)
            return self._build_design(S[i:i + chunk], R[i:i + chunk])

        with single_threaded_blas():
            # chunks of the spectral (AL, PCA) path run on the cores in parallel (numpy, pocketfft and a
            # one-thread BLAS release the GIL); the delta-function path keeps its large chunks sequential
            if self.region == "full" and not self._delta and len(starts) > 1:
                self._spectral_basis(geom[0])  # made once here, not raced for by the threads
                out = map_shared(one, starts)
            else:
                out = [one(i) for i in starts]
        return NormalEquations(np.concatenate([o.M for o in out]), np.concatenate([o.b for o in out]),
                               np.concatenate([o.yy for o in out]))

    def _spectral_basis(self, n):
        """Precomputed half-spectrum products for :meth:`_build_full` on an ``n x n`` grid.

        With ``w`` the Hermitian weights of the half spectrum (1 on the ``k_x = 0``
        and Nyquist columns, 2 elsewhere) and ``N = n^2``, Parseval's identity gives
        ``M_ij = sum_f w |S^(f)|^2 Re(B^_i conj B^_j)(f) / N`` and
        ``b_i = sum_f w Re(conj(B~^_i) C^_SR)(f) / N`` (``B~`` centred on lag 0).
        Returns the upper-triangle pair indices and the two real matrices.
        """
        cache = getattr(self, "_spec_cache", None)
        if cache is not None and cache[0] == n:
            return cache[1:]
        key = (n, self.basis.images.shape, hash(self.basis.images.tobytes()))
        hit = _spectral_cache_get(key, self.basis.images)
        if hit is not None:
            self._spec_cache = (n,) + hit[1:]
            return hit[1:]
        k, h, nb = self.k, self.h, self.nb
        nc = n // 2 + 1
        w = np.full(nc, 2.0)
        w[0] = 1.0
        if n % 2 == 0:
            w[-1] = 1.0
        w = np.broadcast_to(w, (n, nc)).ravel() / (n * n)
        pad = np.zeros((nb, n, n))
        pad[:, :k, :k] = self.basis.images
        # the kernels' spectra centred on lag 0; Re(B^_i conj B^_j) does not depend on where the kernels
        # sit (a common shift's phase cancels), so the same transforms serve M and b
        fbc = sfft.rfft2(np.roll(pad, (-h, -h), axis=(1, 2))).reshape(nb, -1)
        par = _parities(self.basis.images)
        iu = _pairs(self.basis.images, par)
        # Yt[f, p] = w(f) Re(B^_i conj B^_j)(f) for the pairs p = (i, j), built directly in the
        # (frequency, pair) layout the products need, by column gathers of a small (n*nc, nb) array
        if np.all(par != 0):
            # every kernel even or odd about its centre: its centred spectrum is real or imaginary, and a
            # pair of one parity (the only pairs kept) gives Re_i Re_j or Im_i Im_j
            v = np.ascontiguousarray(np.where(par[:, None] > 0, fbc.real, fbc.imag).T)
            Yt = np.take(v, iu[0], axis=1)
            Yt *= np.take(v, iu[1], axis=1)
        else:
            re, im = np.ascontiguousarray(fbc.real.T), np.ascontiguousarray(fbc.imag.T)
            Yt = np.take(re, iu[0], axis=1)
            Yt *= np.take(re, iu[1], axis=1)
            tmp = np.take(im, iu[0], axis=1)
            tmp *= np.take(im, iu[1], axis=1)
            Yt += tmp
        Yt *= w[:, None]
        Bre = np.ascontiguousarray((fbc.real * w).T)
        Bim = np.ascontiguousarray((fbc.imag * w).T)
        self._spec_cache = (n, iu, Yt, Bre, Bim)
        _spectral_cache_put(key, (self.basis.images.copy(), iu, Yt, Bre, Bim))
        return iu, Yt, Bre, Bim

    @staticmethod
    def _shared(stack):
        """The single stamp of ``stack`` if all are identical (e.g. a constant reference PSF), else None."""
        if len(stack) > 1 and np.array_equal(stack, np.broadcast_to(stack[0], stack.shape)):
            return stack[0]
        return None

    def _full_geometry(self, S, R):
        """Transform size and placement for :meth:`_build_full`: ``(n, a, offset_S, r, offset_R)``.

        Only the stamps' non-zero pixels matter: ``a`` and ``r`` are the largest
        distances from the centre pixel of a non-zero science and reference
        pixel (science PSFs zero-padded to ``psfSize`` have ``a < P // 2``).
        ``M`` needs the science autocorrelation (lags up to ``2a``) at lags up to
        ``2h``, ``b`` the cross-correlation (lags up to ``a + r``) at lags up to
        ``h``: a transform of side ``n >= max(2a + 2h + 1, a + r + h + 1)`` keeps
        those lags free of aliasing.  Both stamps are cropped to their supports
        and placed with their centres on the same pixel.
        """
        h = self.h
        R0 = self._shared(R)
        a = stamp_half_support(S)
        r = stamp_half_support(R0[None] if R0 is not None else R)
        c0 = max(a, r)
        n = sfft.next_fast_len(max(2 * a + 2 * h + 1, a + r + h + 1, 2 * c0 + 1), real=True)
        return n, a, c0 - a, r, c0 - r

    def _build_full(self, S, R, geom=None):
        """Normal equations over the full (zero-padded) stamps, without any basis convolution.

        For the AL and PCA bases the sums over lags are done in the Fourier
        domain (:meth:`_spectral_basis`): one batched transform of the science
        stamps and two matrix products, exact up to rounding because the
        transform size (:meth:`_full_geometry`) leaves the lags that matter free
        of aliasing.  A reference stamp shared by all candidates is transformed once.
        """
        k, h = self.k, self.h
        P = S.shape[1]
        n, a, oS, r, oR = geom if geom is not None else self._full_geometry(S, R)
        R0 = self._shared(R)
        c = P // 2

        def placed(x, half, off):
            buf = np.zeros(x.shape[:-2] + (n, n))
            buf[..., off:off + 2 * half + 1, off:off + 2 * half + 1] = x[..., c - half:c + half + 1,
                                                                         c - half:c + half + 1]
            return buf

        fs = sfft.rfft2(placed(S, a, oS))
        fr = sfft.rfft2(placed(R0 if R0 is not None else R, r, oR))
        if R0 is None:
            yy = np.einsum("nij,nij->n", R, R)
        else:
            yy = np.full(len(S), float(np.sum(R0 * R0)))
        if self._delta:
            A = sfft.irfft2(fs * np.conj(fs), s=(n, n))
            C = sfft.irfft2(np.conj(fs) * fr, s=(n, n))
            lag = _lag_index(n, k - 1)
            A_l = A[:, lag][:, :, lag].reshape(len(S), -1)
            lagh = _lag_index(n, h)
            C_l = C[:, lagh][:, :, lagh].reshape(len(S), -1)
            M = A_l[:, self._df_lag_index()]
            b = C_l.copy()
            return NormalEquations(M, b, yy)
        iu, Yt, Bre, Bim = self._spectral_basis(n)
        c = len(S)
        fs = fs.reshape(c, -1)
        # in place where the values are the same (GRAM_WORK_PER_PIXEL: the work arrays)
        power = fs.real * fs.real
        power += fs.imag * fs.imag
        Mu = power @ Yt
        del power
        M = np.zeros((c, self.nb, self.nb))  # pairs of opposite parity are exactly 0 (see _pairs)
        M[:, iu[0], iu[1]] = Mu
        M[:, iu[1], iu[0]] = Mu
        cs = np.multiply(np.conjugate(fs, out=fs), fr.reshape(-1 if R0 is not None else c, fs.shape[1]), out=fs)
        b = cs.real @ Bre + cs.imag @ Bim
        return NormalEquations(M, b, yy)

    def _build_design(self, S, R):
        k, h = self.k, self.h
        n_c, P, _ = S.shape
        n = sfft.next_fast_len(P + k - 1, real=True)
        fs = sfft.rfft2(S, s=(n, n))
        fb = sfft.rfft2(self.basis.images, s=(n, n))
        if self.region == "stamp":
            sl = slice(h, h + P)
            target = R
        else:  # LSST's valid region: pixels of the stamp unaffected by its border
            if P - k + 1 < 1:
                raise InvalidInputError(f"fitRegion='valid' needs psfSize >= kernelSize; got {P} < {k}")
            sl = slice(k - 1, P)
            target = R[:, h:P - h, h:P - h]
        M = np.empty((n_c, self.nb, self.nb))
        b = np.empty((n_c, self.nb))
        for c in range(n_c):
            conv = sfft.irfft2(fs[c][None] * fb, s=(n, n))[:, sl, sl].reshape(self.nb, -1)
            M[c] = conv @ conv.T
            b[c] = conv @ target[c].ravel()
        yy = np.einsum("nij,nij->n", target, target)
        return NormalEquations(M, b, yy)


def constrained_basis(basis: KernelBasis):
    """Bring ``basis`` to the form where only the first kernel has a non-zero sum, equal to 1.

    A pivot kernel ``B_p`` (the first kernel; the centre pixel for a
    delta-function basis) becomes ``B'_0 = B_p / s_p`` and every other kernel
    ``B'_i = B_i - (s_i / s_p) B_p``.  Fixing the coefficient of ``B'_0`` to 1
    then fixes the kernel sum to 1 exactly.

    Returns
    -------
    images : ndarray (n, k, k)
        The transformed basis, pivot first.
    order : ndarray of int
        Raw index of each transformed kernel.
    ratios : ndarray
        ``s_i / s_p`` for the kernels after the pivot.
    s_p : float
        The pivot's sum.
    """
    imgs = basis.images
    sums = imgs.sum(axis=(1, 2))
    if basis.kind == "delta-function":
        p = len(basis) // 2
    else:
        p = 0
    s_p = sums[p]
    if abs(s_p) < 1e-12:
        raise InvalidInputError("the basis has no kernel with a non-zero sum; the kernel sum cannot be constrained")
    others = np.array([i for i in range(len(basis)) if i != p], dtype=int)
    ratios = sums[others] / s_p
    ratios[np.abs(ratios) < 1e-14] = 0.0
    out = np.empty_like(imgs)
    out[0] = imgs[p] / s_p
    out[1:] = imgs[others] - ratios[:, None, None] * imgs[p][None]
    return out, np.concatenate([[p], others]), ratios, s_p


def transform_equations(eq: NormalEquations, order, ratios, s_p) -> NormalEquations:
    """Normal equations in the constrained basis of :func:`constrained_basis` (a rank-2 update).

    ``M'_ij = M_ij - r_i M_pj - r_j M_ip + r_i r_j M_pp`` for the kernels after
    the pivot ``p``, computed in place in that order.  When the other kernels
    keep their raw order (as :func:`constrained_basis` leaves them), their block
    is copied by slices instead of gathered, and a delta-function basis (every
    ``r = 1``) needs no products (1681 kernels: 90-260 -> 12 ms, the same
    values bit for bit).
    """
    p, others = order[0], order[1:]
    M, b = eq.M, eq.b
    Mpp = M[:, p, p]
    Mpo = M[:, p][:, others]  # (n, N-1)
    r = ratios
    n, N = len(M), len(order)
    Mt = np.empty((n, N, N))
    Mt[:, 0, 0] = Mpp / s_p ** 2
    row = (Mpo - r[None] * Mpp[:, None]) / s_p
    Mt[:, 0, 1:] = row
    Mt[:, 1:, 0] = row
    Moo = Mt[:, 1:, 1:]
    if np.array_equal(others, np.delete(np.arange(N), p)):
        Moo[:, :p, :p] = M[:, :p, :p]
        Moo[:, :p, p:] = M[:, :p, p + 1:]
        Moo[:, p:, :p] = M[:, p + 1:, :p]
        Moo[:, p:, p:] = M[:, p + 1:, p + 1:]
    else:
        Moo[...] = M[:, others][:, :, others]
    if np.all(r == 1.0):  # every kernel sums to 1 (delta functions): the products by r are exact, skip them
        Moo -= Mpo[:, None, :]
        Moo -= Mpo[:, :, None]
        Moo += Mpp[:, None, None]
    else:
        Moo -= r[None, :, None] * Mpo[:, None, :]
        Moo -= r[None, None, :] * Mpo[:, :, None]
        Moo += r[None, :, None] * r[None, None, :] * Mpp[:, None, None]
    bt = np.empty((n, N))
    bt[:, 0] = b[:, p] / s_p
    bt[:, 1:] = b[:, others] - r[None] * b[:, p][:, None]
    return NormalEquations(Mt, bt, eq.yy.copy())


def reduce_constrained(eq: NormalEquations) -> NormalEquations:
    """Fix the first coefficient to 1: ``M[1:,1:] a = b[1:] - M[1:,0]``; ``yy`` becomes ``|R - S (*) B_0|^2``."""
    M, b = eq.M, eq.b
    return NormalEquations(M[:, 1:, 1:], b[:, 1:] - M[:, 1:, 0], eq.yy - 2 * b[:, 0] + M[:, 0, 0])


def lambda_for(config, M, H):
    """Regularization strength per candidate: absolute ``lambdaValue`` or ``lambdaScaling tr(M)/tr(H)``."""
    if config.lambdaType == "absolute":
        return np.full(len(M), float(config.lambdaValue))
    trH = np.trace(H)
    return float(config.lambdaScaling) * np.trace(M, axis1=1, axis2=2) / trH


def solve_gram(M, b, rcond):
    """Minimum-norm least squares from normal equations via the SVD of the column-scaled design.

    Parameters
    ----------
    M : ndarray (..., N, N)
        Gram matrices ``C^T C`` (symmetric positive semi-definite).
    b : ndarray (..., N)
        ``C^T y``.
    rcond : float
        Singular values ``s < rcond * s_max`` of the scaled design are dropped; the cut is never
        below ``sqrt(N eps) s_max``, the resolution of singular values obtained from a Gram matrix.

    Returns
    -------
    x : ndarray (..., N)
    rank : ndarray of int
    cond : ndarray
        ``s_max / s_min`` over the kept singular values.
    """
    M = np.asarray(M, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if M.shape[-1] == 0:  # nothing free (e.g. a one-kernel PCA basis): the constrained kernel is the answer
        return np.zeros(b.shape), np.zeros(M.shape[:-2], dtype=int), np.ones(M.shape[:-2])
    d = np.sqrt(np.clip(np.diagonal(M, axis1=-2, axis2=-1), 0, None))
    d = np.where(d > 0, d, 1.0)
    Ms = M / (d[..., :, None] * d[..., None, :])
    bs = b / d
    # the Gram's eigenvalues carry an absolute error of about N eps lambda_max, so singular values
    # below sqrt(N eps) s_max cannot be told from zero whatever rcond asks
    cut = max(float(rcond), float(np.sqrt(M.shape[-1] * np.finfo(np.float64).eps)))
    large = M.shape[-1] >= _LARGE_SYSTEM and (M.ndim == 2 or M.shape[0] <= 8)
    if large:
        key = _system_key(M, b, cut)
        with _LARGE_LOCK:
            hit = _LARGE_SOLVED.get(key)
        if hit is not None:
            return tuple(np.copy(v) for v in hit)
    with single_threaded_blas():
        if large:
            # a few large systems (delta-function kernels), on every core
            with _all_cores_blas():
                x, rank, cond = _solve_large(Ms, bs, d, cut)
            with _LARGE_LOCK:
                _LARGE_SOLVED[key] = tuple(np.copy(v) for v in (x, rank, cond))
                while len(_LARGE_SOLVED) > 2:
                    _LARGE_SOLVED.pop(next(iter(_LARGE_SOLVED)))
            return x, rank, cond
        if M.ndim > 2 and M.shape[0] > 8:
            return _solve_gram_batched(Ms, bs, d, cut)
        if M.ndim == 2 and M.shape[-1] > 32:  # one large system (the spatial one): eigenvalues, then LU
            x, rank, cond = _solve_gram_batched(Ms[None], bs[None], d[None], cut)
            return x[0], rank[0], cond[0]
        w, V = _eigh(Ms)
    return _truncated_solution(w, V, bs, d, cut)


def _cut(w, cut):
    """Kept singular values ``s = sqrt(w) > cut * s_max`` of Gram eigenvalues ``w``, with rank and condition number."""
    s = np.sqrt(np.clip(w, 0, None))
    smax = s.max(axis=-1, keepdims=True)
    keep = (s > cut * smax) & (smax > 0)
    rank = keep.sum(axis=-1)
    smin = np.where(keep, s, np.inf).min(axis=-1)
    return keep, rank, np.where(rank > 0, smax[..., 0] / smin, np.inf)


def _pseudo_inverse(w, V, bs, keep):
    """``V diag(1/w) V^T bs`` over the kept eigenvalues of an eigen-decomposition ``(w, V)`` (stacks allowed)."""
    winv = np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)
    proj = np.einsum("...ji,...j->...i", V, bs) * winv
    return np.einsum("...ij,...j->...i", V, proj)


def _truncated_solution(w, V, bs, d, cut):
    """The pseudo-inverse solution from an eigen-decomposition ``(w, V)`` of scaled systems, and rank and condition."""
    keep, rank, cond = _cut(w, cut)
    return _pseudo_inverse(w, V, bs, keep) / d, rank, cond


def _solve_large(Ms, bs, d, cut):
    """:func:`solve_gram` for one or a few large scaled systems, as :func:`_solve_gram_batched` does for many small.

    The eigenvalues alone (``syevd``) give the rank and condition number; a
    full-rank system is then solved by Cholesky, and only a truncated one
    needs the eigenvectors.  For the 1680 unknowns of a 41 px delta-function
    kernel the eigenvalues and the Cholesky solve take 0.16 + 0.04 s on two
    cores against 0.34 s for the full decomposition, and the kernel agrees to
    5e-9 of its peak (the systems' scaled condition numbers reach 1e9:
    ``K eps``, as for the batched systems).
    """
    batch = Ms.shape[:-2]
    N = Ms.shape[-1]
    Ms, bs, d = Ms.reshape(-1, N, N), bs.reshape(-1, N), d.reshape(-1, N)
    x, rank, cond = np.empty_like(bs), np.empty(len(Ms), dtype=int), np.empty(len(Ms))
    for i in range(len(Ms)):
        w = scipy.linalg.eigh(Ms[i], eigvals_only=True, driver="evd", check_finite=False)
        _, rank[i], cond[i] = _cut(w, cut)
        if rank[i] == N:
            try:
                x[i] = scipy.linalg.solve(Ms[i], bs[i], assume_a="pos", check_finite=False) / d[i]
                continue
            except np.linalg.LinAlgError:  # not positive definite to working precision after all
                pass
        w, V = _eigh(Ms[i], driver="evd")
        x[i], rank[i], cond[i] = _truncated_solution(w, V, bs[i], d[i], cut)
    return x.reshape(batch + (N,)), rank.reshape(batch), cond.reshape(batch)


#: The last large systems solved, by a digest of their exact bytes: the automatic kernel's chosen
#: delta-function trial and the fit that follows it solve the very same system (0.4 s at 41 px).
_LARGE_SOLVED: dict = {}
_LARGE_LOCK = threading.Lock()


def _system_key(M, b, cut):
    """A digest of the system's exact bytes (32 bytes of BLAKE2b: a collision is not a practical concern)."""
    h = hashlib.blake2b(digest_size=32)
    for a in (M, b):
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(repr(a.shape).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest(), float(cut)


#: Systems of at least this many unknowns are decomposed with every core's BLAS (:func:`_all_cores_blas`).
_LARGE_SYSTEM = 400


def _eigh(A, driver="evr"):
    """Eigen-decomposition of a symmetric matrix or stack, via LAPACK (``syevr``) one matrix at a time.

    Same results as :func:`numpy.linalg.eigh` to rounding; numpy's divide-and-conquer
    ``syevd`` spends most of its time in threaded BLAS calls that are far too small to
    share between threads, and becomes an order of magnitude slower on a busy machine.
    For large matrices (``driver="evd"``, with several BLAS threads) the divide and
    conquer is the faster one.
    """
    if A.ndim == 2:
        return scipy.linalg.eigh(A, driver=driver, check_finite=False)
    w = np.empty(A.shape[:-1])
    V = np.empty(A.shape)
    for i in np.ndindex(A.shape[:-2]):
        w[i], V[i] = scipy.linalg.eigh(A[i], driver=driver, check_finite=False)
    return w, V



#: Stacks of at least this many systems have their eigenvalues computed on several threads.
_PARALLEL_EIG_MIN = 256


def _eigvalsh_parallel(Ms):
    """``numpy.linalg.eigvalsh`` of a stack, split between the cores for long stacks (LAPACK releases the GIL)."""
    nthreads = min(available_cores(), len(Ms) // (_PARALLEL_EIG_MIN // 2))
    if nthreads < 2:
        return np.linalg.eigvalsh(Ms)
    parts = np.array_split(np.arange(len(Ms)), nthreads)
    return np.concatenate(map_shared(lambda ix: np.linalg.eigvalsh(Ms[ix[0]:ix[-1] + 1]), parts))


def _solve_gram_batched(Ms, bs, d, cut):
    """:func:`solve_gram` for a stack of scaled systems, with the same results to rounding.

    The eigenvalues alone (``eigvalsh``) give the rank and condition number.
    Full-rank systems (no singular value cut: the usual case) are solved by
    batched LU; only the others go through the eigen-decomposition and its
    truncation.  With nothing cut the pseudo-inverse is the inverse, and both
    ways are backward stable: their solutions agree to about ``K eps`` (``K``
    the scaled Gram matrix's condition number, ``cond**2``), which is also how
    well either determines the solution.  (The automatic kernel's trials have
    spatial systems of ``K`` up to 1e12 whose full eigen-decomposition cost
    13 ms each, against 1-2 ms by LU.)
    (Batched ``eigh`` with eigenvectors is an order of magnitude slower than
    ``eigvalsh`` plus LU for small matrices, and far slower again when the BLAS
    runs several threads on such tiny problems.)
    """
    batch = Ms.shape[:-2]
    N = Ms.shape[-1]
    Ms = Ms.reshape(-1, N, N)
    bs = bs.reshape(-1, N)
    d = d.reshape(-1, N)
    keep, rank, cond = _cut(_eigvalsh_parallel(Ms), cut)
    x = np.empty_like(bs)
    fast = rank == N
    if fast.any():
        x[fast] = np.linalg.solve(Ms[fast], bs[fast][..., None])[..., 0]
    slow = ~fast
    if slow.any():
        wv, V = _eigh(Ms[slow])
        x[slow] = _pseudo_inverse(wv, V, bs[slow], keep[slow])
    x /= d
    return x.reshape(batch + (N,)), rank.reshape(batch), cond.reshape(batch)


def solve_candidates(eq: NormalEquations, rcond):
    """Each candidate's own coefficients (first fixed to 1) from reduced equations.

    Parameters
    ----------
    eq : NormalEquations
        Reduced equations (``reduce_constrained``), possibly including the regularization.
    rcond : float
        Relative cut on the eigenvalues, as for :func:`solve_gram`.

    Returns
    -------
    coeffs : ndarray (n, N+1)
        ``[1, a_1, ..., a_N]``.
    rank, cond : ndarray
        Each candidate's numerical rank and condition number.

    Notes
    -----
    The residual at the solution, ``|S (*) K - R|^2`` (plus the penalty if
    regularized), is ``eq.yy - 2 a.b + a.M.a`` with ``a = coeffs[:, 1:]``.
    """
    x, rank, cond = solve_gram(eq.M, eq.b, rcond)
    coeffs = np.concatenate([np.ones((len(x), 1)), x], axis=1)
    return coeffs, rank, cond


def solve_spatial(eq: NormalEquations, f, rcond):
    """Joint least squares of all candidates for spatially varying coefficients.

    With ``a_m(x) = sum_j theta_mj f_j(x)`` for the free coefficients (the first,
    constrained coefficient is the constant 1), the stacked problem has normal
    equations ``G = sum_k kron(M_k, f_k f_k^T)`` and ``g = sum_k kron(b_k, f_k)``
    (LSST's ``SpatialKernelSolution``, without its assumption being an
    approximation here: the PSF models are exact at the candidates).

    Parameters
    ----------
    eq : NormalEquations
        Reduced equations of the used candidates.
    f : ndarray (n, n_s)
        Spatial functions at the candidates.

    Returns
    -------
    theta : ndarray (N, n_s)
    rank : int
    cond : float
    """
    n, N = eq.b.shape
    ns = f.shape[1]
    with single_threaded_blas():
        # G[a, c, b, d] = sum_k M_k[a, b] f_k[c] f_k[d], as one matrix product (einsum's path search
        # alone costs tens of milliseconds)
        ff = (f[:, :, None] * f[:, None, :]).reshape(n, ns * ns)
        G = (eq.M.reshape(n, N * N).T @ ff).reshape(N, N, ns, ns).transpose(0, 2, 1, 3).reshape(N * ns, N * ns)
    g = np.einsum("ka,kc->ac", eq.b, f).reshape(N * ns)
    G = 0.5 * (G + G.T)
    x, rank, cond = solve_gram(G, g, rcond)
    return x.reshape(N, ns), int(rank), float(cond)


#: :func:`pca_basis` drops the components whose eigenvalue is below this fraction of the mean kernel's mean square
#: (of the largest eigenvalue without the mean).
PCA_TOLERANCE = 1e-10


def pca_basis(kernel_images, n_components, subtract_mean=True, tol=PCA_TOLERANCE, weights=None) -> KernelBasis:
    """Principal components of per-candidate kernels, renormalized like LSST's ``KernelPca``.

    Each kernel is scaled to unit sum; with ``subtract_mean`` the mean kernel
    is removed and becomes the first component.  Components are the
    eigen-images of the kernels' Gram matrix in decreasing eigenvalue order;
    those with an eigenvalue below ``tol`` times the largest (or all of them
    when every kernel is identical) are dropped.  The list then goes through
    :func:`~psfmatch.kernel.basis.renormalize_kernel_list` (first sums to 1,
    the others to 0 with unit L2 norm).

    ``weights`` (optional, one non-negative number per kernel): how many
    candidates each kernel stands for.  The result is then that of the list
    with kernel ``i`` repeated ``weights[i]`` times: the mean is the weighted
    mean ``sum_i w_i K_i / sum_i w_i`` and the Gram matrix is that of the
    rows ``sqrt(w_i) (K_i - mean)``, whose non-zero eigenvalues and
    eigen-images are those of the repeated list's.  The task passes the
    multiplicities of its distinct stamp pairs, so that every candidate
    counts once, as in LSST, whether or not a PSF model returns identical
    stamps at several cells.
    """
    K = np.asarray(kernel_images, dtype=np.float64)
    K = K / K.sum(axis=(1, 2), keepdims=True)
    n, k, _ = K.shape
    w8 = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w8.shape != (n,) or not np.all(np.isfinite(w8) & (w8 >= 0)) or not w8.sum() > 0:
        raise InvalidInputError(f"weights must be {n} finite non-negative numbers, not all zero (one per kernel); "
                                f"got {np.asarray(weights)!r}")
    flat = K.reshape(n, -1)
    comps = []
    if subtract_mean:
        mean = w8 @ flat / w8.sum()
        comps.append(mean)
        flat = flat - mean
    flat = flat * np.sqrt(w8)[:, None]
    gram = flat @ flat.T / flat.shape[1]
    w, V = np.linalg.eigh(gram)
    order = np.argsort(w)[::-1]
    w, V = w[order], V[:, order]
    top = w[0] if len(w) else 0.0
    ref_scale = float(np.mean(comps[0] ** 2)) if subtract_mean else float(top)
    for j in range(len(w)):
        if len(comps) >= n_components:
            break
        if not (w[j] > tol * ref_scale and w[j] > 0):
            break
        img = V[:, j] @ flat
        img /= np.max(np.abs(img))
        comps.append(img)
    images = renormalize_kernel_list(np.array(comps).reshape(-1, k, k))
    return KernelBasis(images, "pca", {"PcaNumComponents": len(images), "PcaSubtractMean": bool(subtract_mean)})


def _reset_after_fork():
    """In a forked child no fit is running: forget the parent's open BLAS contexts and locks.

    A fork taken while another thread was inside a fit copied its state (a
    context depth of 1, BLAS on one thread, perhaps a held lock): the child
    would have kept BLAS on one thread for good, or waited on a lock no thread
    of its own will release.
    """
    global _BLAS_LOCK, _SPECTRAL_LOCK, _LARGE_LOCK
    _BLAS_LOCK, _SPECTRAL_LOCK, _LARGE_LOCK = threading.Lock(), threading.Lock(), threading.Lock()
    _SPECTRAL_CACHE_ROOMS.clear()
    depth, saved = _BLAS_STATE["depth"], _BLAS_STATE["saved"]
    _BLAS_STATE["depth"], _BLAS_STATE["saved"] = 0, None
    if depth > 0 and saved and _BLAS_CONTROLLER:
        try:
            _set_counts(_BLAS_CONTROLLER[0], saved)
        except Exception:  # a library that cannot be told in the child: only the speed is at stake
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
