"""psfmatch against the PSF-matching tools a user would pick instead, on the same inputs.

Run::

    python benchmarks/compare_peers.py [--cases gauss,ellip,moffat,irac,des] [--repeat 3]
                                       [--json out.json] [--markdown out.md]

Peers (optional; ``pip install -r benchmarks/requirements.txt``), each skipped with the reason
when it is not installed:

- photutils (3.0.x): ``make_kernel`` without a window and with each documented window
  (``HanningWindow()``, ``TukeyWindow(0.4)``, ``CosineBellWindow(0.35)``,
  ``SplitCosineBellWindow(0.4, 0.2)``, ``TopHatWindow(0.35)``), and ``make_wiener_kernel``
  (scalar and ``penalty="laplacian"``), all at their default regularization;
- pypher: ``homogenization_kernel`` (Wiener filter with a Laplacian penalty, ``reg_fact=1e-4``);
- GalSim: the exact analytic kernel where one exists (Gaussian -> Gaussian: a Gaussian of
  covariance ``C_ref - C_sci``, drawn point-sampled like the PSFs).

psfmatch runs twice: ``autoKernel=True`` (the automatic choice) and ``autoKernel=False`` with
LSST's defaults (Alard-Lupton, kernelSize 21, widths 0.7, 1.5, 3.0 px): the hand-tuned
configuration LSST users start from.

Same inputs, same metrics.  Every case is a pair of arrays (or, for the DES case, a PSFEx model
evaluated at given positions); each method gets exactly those arrays.  For a kernel ``K`` (as
the method returns it) and the science and reference stamps ``S`` and ``R`` (``P x P``), the
matched PSF is ``S (*) K`` on its full ``(P + k - 1)^2`` support, ``R`` is zero-padded, and:

``max``
    ``max |S (*) K - R| / max R``;
``L2``
    ``||S (*) K - R||_2 / ||R||_2``;
``sum``
    ``sum K`` as returned (photutils and pypher normalize, psfmatch constrains it to 1);
``neg``
    ``sum |min(K, 0)| / sum |K|`` (negative lobes: ringing);
``sumK2``
    ``sum K^2`` of the unit-sum kernel: the factor by which white pixel noise variance is
    multiplied (lower is smoother);
``time``
    wall-clock seconds of the method's own call (best of ``--repeat``); for psfmatch the whole
    ``fitKernel`` (survey, ill-posed check, automatic choice, fit and QA).

Kernel sizes.  photutils' and pypher's kernels are as large as the PSF stamp.  Each is shown at
that native size, and cropped (centred) to the kernel size psfmatch's automatic mode chose,
renormalized to unit sum ("@k"), so that every method is compared at the same kernel size.

The spatially varying case (``des``): the DES PSFEx model of DECam exposure 154912 CCD 12
(shared data) over its 2048 x 4096 CCD, matched to a round Gaussian of sigma 2.6 px.  Only
psfmatch fits a spatial model; the peers compute one kernel from the PSF at the CCD centre, which
is what a user of those tools would apply to the whole CCD.  All methods are scored at positions
*between* psfmatch's cells (its held-out positions) and at the CCD corners; the worst value is
reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import platform
import sys
import time
import warnings

import numpy as np
from scipy import fft as sfft

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))

from psfmatch import Box2I, ModelPsfMatchConfig, ModelPsfMatchTask  # noqa: E402
from psfmatch.cells import SpatialCellSet  # noqa: E402
from psfmatch.psf import GaussianPsf, ImagePsf, MoffatPsf  # noqa: E402
from psfmatch.psf.analytic import elliptical_gaussian  # noqa: E402
from psfmatch.psf.base import pad_or_crop  # noqa: E402

# ---------------------------------------------------------------------------
# metrics (identical for every method)


def matched(S, K):
    """``S (*) K`` on the full support, shape (P + k - 1)^2."""
    P, k = S.shape[0], K.shape[0]
    n = P + k - 1
    L = sfft.next_fast_len(n, real=True)
    return sfft.irfft2(sfft.rfft2(S, s=(L, L)) * sfft.rfft2(K, s=(L, L)), s=(L, L))[:n, :n]


def metrics(S, R, K):
    """max and L2 residuals, kernel sum, negative fraction and noise gain of kernel ``K``."""
    K = np.asarray(K, dtype=np.float64)
    ksum = float(K.sum())
    Ku = K / ksum
    P, k = S.shape[0], K.shape[0]
    h = k // 2
    D = matched(S, Ku)
    D[h:h + P, h:h + P] -= R
    return {"max": float(np.abs(D).max() / R.max()), "L2": float(np.sqrt(np.sum(D * D) / np.sum(R * R))),
            "sum": ksum, "neg": float(np.clip(-Ku, 0, None).sum() / np.abs(Ku).sum()),
            "sumK2": float(np.sum(Ku * Ku))}


def crop(K, k):
    """Centre-crop (or zero-pad) a kernel to k x k and renormalize it to unit sum."""
    out = pad_or_crop(np.asarray(K, dtype=np.float64), k, k)
    return out / out.sum()


def best_time(fn, repeat):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_peer(label, fn, S, R, repeat, rows):
    """``(kernel as float64, best time)`` of peer ``fn`` on ``(S, R)``, or None after recording in
    ``rows`` why it did not run (``fn`` is a string: not installed) or failed (a result too)."""
    if isinstance(fn, str):
        rows.append({"method": label, "skipped": fn})
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Kp, t = best_time(lambda: fn(S, R), repeat)
    except Exception as exc:  # a peer failing on a case is a result too
        rows.append({"method": label, "skipped": f"failed: {type(exc).__name__}: {exc}"})
        return None
    return np.asarray(Kp, dtype=np.float64), t


# ---------------------------------------------------------------------------
# inputs


def elliptical(n, sig_minor, sig_major, theta_deg):
    t = math.radians(theta_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    cov = rot @ np.diag([sig_major ** 2, sig_minor ** 2]) @ rot.T
    return elliptical_gaussian(n, n, cov[0, 0], cov[1, 1], cov[0, 1]), cov


def constant_cases():
    """(name, description, S, R, exact-kernel covariance or None) for the spatially constant cases."""
    out = {}
    S = GaussianPsf(31, 31, 1.5).computeKernelImage((0, 0))
    R = GaussianPsf(31, 31, 2.5).computeKernelImage((0, 0))
    out["gauss"] = ("Gaussian sigma 1.5 -> 2.5 px (31x31)", S, R, np.diag([2.5 ** 2 - 1.5 ** 2] * 2))
    S, cs = elliptical(31, 1.6, 2.1, 30.0)
    R = GaussianPsf(31, 31, 3.0).computeKernelImage((0, 0))
    out["ellip"] = ("elliptical Gaussian (1.6, 2.1 px, 30 deg) -> round 3.0 px (31x31)", S, R, 9.0 * np.eye(2) - cs)
    S = MoffatPsf(41, 41, 3.5, 3.5).computeKernelImage((0, 0))
    R = MoffatPsf(41, 41, 5.0, 2.5).computeKernelImage((0, 0))
    out["moffat"] = ("Moffat beta 3.5 FWHM 3.5 -> beta 2.5 FWHM 5 px (41x41)", S, R, None)
    irac = os.path.join(SHARED, "psf_images", "astropy__photutils-datasets")
    if os.path.exists(os.path.join(irac, "irac_ch1_flight.fits")):
        from astropy.io import fits

        S = fits.getdata(os.path.join(irac, "irac_ch1_flight.fits")).astype(np.float64)
        R = fits.getdata(os.path.join(irac, "irac_ch4_flight.fits")).astype(np.float64)
        out["irac"] = ("Spitzer IRAC channel 1 -> channel 4 (81x81)", S / S.sum(), R / R.sum(), None)
    else:
        out["irac"] = ("Spitzer IRAC channel 1 -> channel 4", None, None, f"shared data not found under {irac}")
    return out


# ---------------------------------------------------------------------------
# methods


def peer_methods():
    """name -> (callable(S, R) -> kernel) or a string saying why the peer is skipped."""
    methods = {}
    try:
        import photutils
        from photutils import psf_matching as pm

        ver = photutils.__version__
        windows = [("none", None), ("HanningWindow()", pm.HanningWindow()), ("TukeyWindow(0.4)", pm.TukeyWindow(0.4)),
                   ("CosineBellWindow(0.35)", pm.CosineBellWindow(0.35)),
                   ("SplitCosineBellWindow(0.4, 0.2)", pm.SplitCosineBellWindow(0.4, 0.2)),
                   ("TopHatWindow(0.35)", pm.TopHatWindow(0.35))]
        for label, w in windows:
            methods[f"photutils {ver} make_kernel, window {label}"] = (
                lambda S, R, w=w: pm.make_kernel(S, R, window=w))
        methods[f"photutils {ver} make_wiener_kernel"] = lambda S, R: pm.make_wiener_kernel(S, R)
        methods[f"photutils {ver} make_wiener_kernel, penalty laplacian"] = (
            lambda S, R: pm.make_wiener_kernel(S, R, penalty="laplacian"))
    except ImportError as exc:
        methods["photutils"] = f"skipped: photutils is not installed ({exc}); pip install 'photutils==3.0.*'"
    try:
        import pypher
        from pypher.pypher import homogenization_kernel

        ver = getattr(pypher, "__version__", "")
        methods[f"pypher {ver} homogenization_kernel".replace("  ", " ")] = (
            lambda S, R: homogenization_kernel(R, S, reg_fact=1e-4)[0])
    except ImportError as exc:
        methods["pypher"] = f"skipped: pypher is not installed ({exc}); pip install pypher"
    return methods


def galsim_exact(cov, k):
    """The exact Gaussian matching kernel of covariance ``cov``, drawn point-sampled by GalSim on k x k."""
    import galsim
    from scipy.linalg import sqrtm

    J = np.real(sqrtm(np.asarray(cov, dtype=float)))
    g = galsim.Gaussian(sigma=1.0).transform(J[0, 0], J[0, 1], J[1, 0], J[1, 1])
    img = g.drawImage(nx=k, ny=k, scale=1.0, method="no_pixel").array.astype(np.float64)
    return img / img.sum()


def psfmatch_fit(S, R, auto, bbox=Box2I((0, 0), (256, 256))):
    config = ModelPsfMatchConfig()
    config.autoKernel = auto
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelPsfMatchTask(config=config).fitKernel(ImagePsf(S), ImagePsf(R), bbox)


def describe_psfmatch(fit):
    md = fit.metadata
    if md["kernelBasisSet"] == "alard-lupton":
        sig = ", ".join(f"{s:.3g}" for s in md["ALBasisSigGauss"])
        basis = f"AL ({sig}) deg {tuple(md['ALBasisDegGauss'])}"
    else:
        lam = md.get("autoKernel", {}).get("chosen", {}).get("lambdaScaling")
        basis = "DF" + (f" lambda {lam:g}" if lam is not None else "")
    return f"{basis}, order {md['spatialKernelOrder']}"


# ---------------------------------------------------------------------------
# the cases


def run_constant(name, desc, S, R, cov, repeat, peers):
    rows = []
    auto_fit, t_auto = best_time(lambda: psfmatch_fit(S, R, True), repeat)
    k = auto_fit.kernel.getWidth()
    centre = (128, 128)
    K = auto_fit.kernel.computeImage(centre)
    rows.append({"method": f"psfmatch autoKernel ({describe_psfmatch(auto_fit)})", "k": k, **metrics(S, R, K),
                 "time": t_auto})
    lsst_fit, t_lsst = best_time(lambda: psfmatch_fit(S, R, False), repeat)
    K = lsst_fit.kernel.computeImage(centre)
    rows.append({"method": "psfmatch autoKernel=False (LSST defaults: AL 0.7, 1.5, 3.0)",
                 "k": lsst_fit.kernel.getWidth(), **metrics(S, R, K), "time": t_lsst})
    if cov is not None:
        try:
            Kx, t = best_time(lambda: galsim_exact(cov, k), repeat)
            rows.append({"method": "GalSim exact analytic Gaussian kernel", "k": k, **metrics(S, R, Kx), "time": t})
        except ImportError as exc:
            rows.append({"method": "GalSim exact analytic kernel", "skipped": f"GalSim is not installed ({exc})"})
    for label, fn in peers.items():
        got = run_peer(label, fn, S, R, repeat, rows)
        if got is None:
            continue
        Kp, t = got
        if not np.all(np.isfinite(Kp)):
            rows.append({"method": label, "skipped": "non-finite kernel"})
            continue
        rows.append({"method": label, "k": Kp.shape[0], **metrics(S, R, Kp), "time": t})
        if Kp.shape[0] != k:
            rows.append({"method": f"{label} @k", "k": k, **metrics(S, R, crop(Kp, k)), "time": t})
    return {"case": name, "description": desc, "chosenKernelSize": k, "rows": rows,
            "autoKernel": auto_fit.metadata.get("autoKernel", {}).get("chosen")}


def run_des(repeat, peers, max_positions=160):
    path = os.path.join(SHARED, "psfex", "GalSim-developers__GalSim", "DECam_00154912_12_psfcat.psf")
    desc = "DES PSFEx model (DECam 154912 CCD 12, 2048x4096) -> round Gaussian sigma 2.6 px"
    if not os.path.exists(path):
        return {"case": "des", "description": desc, "skipped": f"shared data not found: {path}"}
    try:
        from psfmatch.psf import read_psf
    except ImportError as exc:
        return {"case": "des", "description": desc, "skipped": f"no PSFEx reader in psfmatch.psf: {exc}"}
    sci = read_psf(path)
    ref = GaussianPsf(31, 31, 2.6)
    bbox = Box2I((0, 0), (2048, 4096))
    fits_, times = {}, {}
    for auto in (True, False):
        config = ModelPsfMatchConfig()
        config.autoKernel = auto
        task = ModelPsfMatchTask(config=config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits_[auto], times[auto] = best_time(lambda: task.fitKernel(sci, ref, bbox), repeat)
    k = fits_[True].kernel.getWidth()
    cells = SpatialCellSet(bbox, 128, 128)
    pts = cells.between_positions()
    if len(pts) > max_positions:
        pts = [pts[i] for i in np.round(np.linspace(0, len(pts) - 1, max_positions)).astype(int)]
    pts = [(p.x, p.y) for p in pts] + [(0.0, 0.0), (2047.0, 0.0), (0.0, 4095.0), (2047.0, 4095.0)]
    P = max(fits_[True].psfSize, fits_[False].psfSize, 31)
    stamps = []
    for x, y in pts:
        S = pad_or_crop(sci.computeKernelImage((x, y)), P, P)
        R = ref.resized(P, P).computeKernelImage((x, y))
        stamps.append((S, R))
    centre = bbox.getCenter()
    S_c = pad_or_crop(sci.computeKernelImage(centre), P, P)
    R_c = ref.resized(P, P).computeKernelImage(centre)

    def worst_over_field(kernel_at):
        per = [metrics(S, R, kernel_at(i)) for i, (S, R) in enumerate(stamps)]
        return {m: (max(p[m] for p in per) if m in ("max", "L2", "neg", "sumK2") else per[0][m])
                for m in per[0]}

    rows = []
    for auto, label in ((True, f"psfmatch autoKernel ({describe_psfmatch(fits_[True])}), spatial model"),
                        (False, "psfmatch autoKernel=False (LSST defaults), spatial model")):
        kern = fits_[auto].kernel
        m = worst_over_field(lambda i: kern.computeImage(pts[i]))
        rows.append({"method": label, "k": kern.getWidth(), **m, "time": times[auto]})
    for label, fn in peers.items():
        got = run_peer(label, fn, S_c, R_c, repeat, rows)
        if got is None:
            continue
        Kp, t = got
        rows.append({"method": f"{label} (centre kernel everywhere)", "k": Kp.shape[0],
                     **worst_over_field(lambda i: Kp), "time": t})
        if Kp.shape[0] != k:
            Kk = crop(Kp, k)
            rows.append({"method": f"{label} @k (centre kernel everywhere)", "k": k,
                         **worst_over_field(lambda i: Kk), "time": t})
    return {"case": "des", "description": desc + f"; scored at {len(pts)} positions between the cells and the corners",
            "chosenKernelSize": k, "rows": rows, "autoKernel": fits_[True].metadata.get("autoKernel", {}).get("chosen")}


# ---------------------------------------------------------------------------
# output


def markdown(results):
    lines = []
    for res in results:
        lines.append(f"**{res['case']}**: {res['description']}")
        lines.append("")
        if "skipped" in res:
            lines.append(f"skipped: {res['skipped']}")
            lines.append("")
            continue
        lines.append("| method | k | max | L2 | sum | neg | sumK2 | time (s) |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['method']} | | {r['skipped']} | | | | | |")
                continue
            lines.append(f"| {r['method']} | {r['k']} | {r['max']:.2e} | {r['L2']:.2e} | {r['sum']:.6f} | "
                         f"{r['neg']:.3f} | {r['sumK2']:.4f} | {r['time']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="gauss,ellip,moffat,irac,des")
    ap.add_argument("--repeat", type=int, default=3, help="time each method this many times and keep the best")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--markdown", help="write the markdown tables here")
    args = ap.parse_args(argv)
    logging.getLogger("psfmatch").setLevel(logging.ERROR)  # the tables say what the fits' notes would
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    peers = peer_methods()
    for label, fn in peers.items():
        if isinstance(fn, str):
            print(f"{label}: {fn}", file=sys.stderr)
    if importlib.util.find_spec("galsim") is None:
        print("GalSim: skipped (not installed); pip install galsim", file=sys.stderr)
    cases = constant_cases()
    results = []
    for name in wanted:
        t0 = time.perf_counter()
        if name == "des":
            res = run_des(args.repeat, peers)
        elif name in cases:
            desc, S, R, cov = cases[name]
            if S is None:
                res = {"case": name, "description": desc, "skipped": cov}
            else:
                res = run_constant(name, desc, S, R, cov, args.repeat, peers)
        else:
            raise SystemExit(f"unknown case {name!r}; cases are gauss, ellip, moffat, irac, des")
        results.append(res)
        print(f"[{name}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
        print(markdown([res]), flush=True)
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "results": results}, fh, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(markdown(results))


if __name__ == "__main__":
    main()
