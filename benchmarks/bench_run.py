#!/usr/bin/env python3
"""Benchmark of ``ModelPsfMatchTask.run`` against one FFT convolution of the image plane.

For each size (1024, 2048, 4096 by default; 8192 with ``--with-8192``) the script
builds a synthetic exposure -- a float32 image of stars drawn with a PSF that
varies across the field, sky noise, a variance plane, and a mask with BAD
columns, cosmic rays, saturated cores, DETECTED footprints and a NO_DATA
(NaN) strip -- and then, in the same process and interleaved:

* the baseline: ``scipy.signal.fftconvolve`` of the image plane with one
  fixed 21x21 kernel (``mode="same"``);
* the full ``run()`` with the default configuration (Alard-Lupton basis,
  kernel 21, spatial order 2, 128 px cells): fit (PSF stamps, per-candidate
  and spatial solutions, QA) and apply (image, exact variance, mask).

All sizes are built first and timed round-robin, so that the time per
megapixel compares sizes measured under the same machine conditions (its speed
drifts by tens of percent over minutes).  Each round times every size, a small
size several times in groups of two spread over the round (``round_schedule``:
the host runs two threads at the speed of one in episodes of seconds, and a
small size's runs in one block sampled one moment per round); each group
follows one untimed run of its size and is followed by the same number of
baselines.  Within a group the runs follow each other, as a survey's exposures
do: a baseline timed between two runs leaves the caches and the allocator in a
state no stream of exposures sees, and made the next 1024 x 1024 run 11%
slower.  After each round a short probe measures the host's two-thread
speedup (``host_probe``), printed at the end.  It prints the medians of fit,
apply and run wall times, the ratios
run/baseline and fit/baseline, the ratio of CPU times (all threads of the run
against the single-threaded baseline: the work ratio, which a busy machine
distorts less than wall time), the peak memory of one ``run()``
(``tracemalloc``, which sees numpy's buffers, in a separate untimed call) and
the run time per megapixel.  The machine and its load are printed too.

``PSFMATCH_NUM_THREADS=1 python benchmarks/bench_run.py`` runs the library on
one thread (by default it uses every core the process may run on).

``--psf FILE`` times the fit with a real PSF model instead of the demo's
(any file :func:`psfmatch.psf.read_psf` reads, e.g. a PSFEx ``.psf``): the
exposure's bounding box is mapped linearly onto the model's own domain (a
PSFEx model's ``POLZERO +- POLSCAL / 2``), so the model varies as it does over its
CCD whatever the benchmark's size, and the reference is a round Gaussian of
1.3 times the model's adaptive sigma at its centre (a well-posed match).  The
stars stay drawn with the demo PSF: the timing does not depend on them.  Real
models have large stamps (63 px for a DECam PSFEx model, against 25 for the
demo), which is what the fit's cost follows.

Usage::

    python benchmarks/bench_run.py                 # 1024, 2048, 4096
    python benchmarks/bench_run.py --size 4096     # one size
    python benchmarks/bench_run.py --with-8192     # also 8192 (about 3 GiB of RSS)
    python benchmarks/bench_run.py --repeat 7 --json out.json
    python benchmarks/bench_run.py --psf model.psf --size 2048 4096 --auto-kernel
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import resource
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np
import scipy
import scipy.fft
import scipy.signal

from psfmatch import Exposure, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.demo import demo_psf, demo_reference_psf
from psfmatch.geom import Box2I
from psfmatch.psf import read_psf
from psfmatch.psf.base import Psf


def make_exposure(size, seed=0):
    """A ``size x size`` float32 exposure with a spatially varying PSF and a realistic mask."""
    rng = np.random.default_rng(seed)
    H = W = int(size)
    bbox = Box2I((0, 0), (W, H))
    psf = demo_psf(bbox)
    sky, sky_sigma = 1000.0, 10.0
    n_stars = max(8, H * W // 4000)
    xs = rng.integers(12, W - 12, n_stars)
    ys = rng.integers(12, H - 12, n_stars)
    flux = 10 ** rng.uniform(3.0, 6.0, n_stars)
    truth = np.zeros((H, W), dtype=np.float32)
    # the PSF is drawn once per 256-px block (it varies smoothly): stars at integer positions
    stamps = {}
    for x, y, f in zip(xs, ys, flux):
        key = (x // 256, y // 256)
        if key not in stamps:
            stamps[key] = psf.computeKernelImage((key[0] * 256 + 128, key[1] * 256 + 128)).astype(np.float32)
        st = stamps[key]
        h = st.shape[0] // 2
        truth[y - h:y + h + 1, x - h:x + h + 1] += np.float32(f) * st
    variance = (sky + truth) / 1.0  # gain 1: Poisson variance of sky + source
    image = truth + sky + rng.standard_normal((H, W), dtype=np.float32) * np.sqrt(variance)
    exp = Exposure(image, variance=variance, psf=psf)
    m = exp.getMask()
    bit = {name: np.int32(m.getPlaneBitMask(name)) for name in ("BAD", "SAT", "CR", "DETECTED", "NO_DATA")}
    mask = exp.mask
    mask[truth > 5 * sky_sigma] |= bit["DETECTED"]
    mask[truth > 20000.0] |= bit["SAT"]  # the cores of the brightest stars
    for c in rng.integers(0, W, max(1, W // 1024)):
        mask[:, c] |= bit["BAD"]
    for _ in range(max(4, H * W // 200000)):  # short cosmic-ray tracks
        y, x = rng.integers(2, H - 8), rng.integers(2, W - 8)
        length = rng.integers(2, 7)
        mask[y, x:x + length] |= bit["CR"]
        exp.image[y, x:x + length] += np.float32(5000.0)
    nd = max(16, W // 64)  # a NO_DATA strip along the left edge
    exp.image[:, :nd] = np.nan
    mask[:, :nd] |= bit["NO_DATA"]
    return exp


class DomainMappedPsf(Psf):
    """``psf`` seen from an exposure whose bounding box is mapped linearly onto ``domain`` (x0, y0, x1, y1)."""

    name = "DomainMappedPsf"

    def __init__(self, psf, bbox, domain):
        self._psf = psf
        self._bbox = bbox
        self._domain = domain

    def _map(self, xs, ys):
        x0, y0, x1, y1 = self._domain
        u = (np.asarray(xs, dtype=float) - self._bbox.getMinX()) / max(1, self._bbox.getWidth() - 1)
        v = (np.asarray(ys, dtype=float) - self._bbox.getMinY()) / max(1, self._bbox.getHeight() - 1)
        return x0 + u * (x1 - x0), y0 + v * (y1 - y0)

    def isSpatiallyVarying(self):
        return self._psf.isSpatiallyVarying()

    def _kernel_image(self, x, y):
        mx, my = self._map(x, y)
        return self._psf.computeKernelImage((float(mx), float(my)))

    def _kernel_images(self, xs, ys):
        mx, my = self._map(xs, ys)
        return self._psf.computeKernelImages(list(zip(mx.tolist(), my.tolist())))

    def getAveragePosition(self):
        return self._bbox.getCenter()

    def resized(self, width, height):
        return DomainMappedPsf(self._psf.resized(width, height), self._bbox, self._domain)


def real_psf(path, exposure):
    """The model in ``path`` mapped onto ``exposure``'s box, and a round Gaussian reference 1.3x its width."""
    from psfmatch.psf import GaussianPsf

    model = read_psf(path)
    c = model.getAveragePosition()
    polscal = getattr(model, "polscal", None)
    if polscal is not None and getattr(model, "degree", 0) > 0:
        domain = (c.x - polscal[0] / 2, c.y - polscal[1] / 2, c.x + polscal[0] / 2, c.y + polscal[1] / 2)
    else:
        domain = (c.x, c.y, c.x, c.y)
    psf = DomainMappedPsf(model, exposure.getBBox(), domain)
    sigma = model.computeShape(c).getDeterminantRadius()
    size = int(2 * np.ceil(5 * 1.3 * sigma) + 1)
    return psf, GaussianPsf(size, size, 1.3 * sigma)


def baseline(image, kernel):
    """Wall and CPU seconds of ``fftconvolve(image, kernel, mode='same')``."""
    c0, t0 = time.process_time(), time.perf_counter()
    scipy.signal.fftconvolve(image, kernel, mode="same")
    return time.perf_counter() - t0, time.process_time() - c0


def timed_run(task, exposure, reference):
    """Wall seconds of the whole run, of the fit and of the apply; CPU seconds of the run (all threads)."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = task.run(exposure, reference)
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    md = result.metadata
    return total, float(md["fitTime"]), float(md["convolveTime"]), cpu, result


def peak_memory(task, exposure, reference):
    """Peak bytes traced during one ``run()`` (the exposure itself is allocated before)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = task.run(exposure, reference)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return peak


def inner_repeats(size, largest):
    """Timed runs of ``size`` per round: about a quarter of the pixels of the largest size, 1 to 8 runs."""
    return max(1, min(8, (largest // size) ** 2 // 4))


#: Timed runs of one size that follow each other within a round (see :func:`round_schedule`).
GROUP = 2


def round_schedule(sizes, largest):
    """One round: ``[(size, runs), ...]``, each size's :func:`inner_repeats` runs in groups of :data:`GROUP`.

    The groups of a size are spread evenly over the round (a group at
    ``(i + 1/2) / n_groups`` of the sequence), so that the runs of a small size
    sample several moments of the round instead of one: this host runs two
    threads at the speed of one in episodes of 0.5-5 s (``host_probe``), and
    eight 1024 px runs in a row (0.6 s) fell into one episode or none, which
    made the median of five rounds a sample of five moments.
    """
    groups = []
    for size in sizes:
        n = inner_repeats(size, largest)
        counts = [GROUP] * (n // GROUP) + ([n % GROUP] if n % GROUP else [])
        groups += [((i + 0.5) / len(counts), size, c) for i, c in enumerate(counts)]
    return [(size, count) for _, size, count in sorted(groups)]


def host_probe(n=8):
    """The host's two-thread speedup now: ``2 t1 / t2`` for ``n`` pairs of 360 px FFTs per thread.

    About 1.8-1.95 when the machine's two cores run two threads at once; near
    1.0 in the episodes when the host gives them the speed of one.
    """
    block = np.random.default_rng(0).normal(size=(360, 360)).astype(np.float32)

    def work():
        for _ in range(n):
            scipy.fft.irfft2(scipy.fft.rfft2(block))

    def two():
        threads = [threading.Thread(target=work) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    def one():
        t0 = time.perf_counter()
        work()
        return time.perf_counter() - t0

    return 2 * min(one() for _ in range(2)) / min(two() for _ in range(2))


def describe_machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()
    mem = ""
    try:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    return (f"{cpu}, {ncpu} cores{mem}; Python {platform.python_version()}, numpy {np.__version__}, "
            f"scipy {scipy.__version__}; load average {os.getloadavg()[0]:.2f} at start")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs="*", default=None,
                    help="exposure sizes (default: 1024 2048 4096, plus 8192 with --with-8192)")
    ap.add_argument("--with-8192", action="store_true", help="also run 8192 x 8192")
    ap.add_argument("--repeat", type=int, default=5, help="rounds of timing; each times every size, small sizes several times (medians are quoted)")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc peak-memory run")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--psf", help="a real PSF model file (e.g. PSFEx .psf) for the exposures, mapped onto each "
                                   "exposure's box; the reference becomes a Gaussian 1.3x its width")
    ap.add_argument("--auto-kernel", action="store_true",
                    help="leave config.autoKernel at its default (True): the kernel size, basis and spatial "
                         "order are then chosen per exposure, so the work differs from the issue's configuration")
    args = ap.parse_args(argv)
    sizes = args.size or [1024, 2048, 4096]
    # the benchmark times the work: a quality warning repeated for every run (a real model matched to a
    # Gaussian may leave a residual above qaMaxResidual) would bury the table
    from psfmatch.errors import KernelQualityWarning

    warnings.simplefilter("ignore", KernelQualityWarning)
    logging.getLogger("psfmatch.diagnostics").setLevel(logging.ERROR)
    if args.with_8192 and 8192 not in sizes:
        sizes = sizes + [8192]

    print(f"machine: {describe_machine()}")
    print("config: default ModelPsfMatchConfig (AL, kernel 21, spatial order 2, 128 px cells)"
          + (", autoKernel on" if args.auto_kernel else ", autoKernel=False")
          + "; baseline: scipy.signal.fftconvolve(image, 21x21, mode='same')")
    kernel = np.random.default_rng(1).random((21, 21)).astype(np.float32)
    kernel /= kernel.sum()
    reference = demo_reference_psf()
    config = ModelPsfMatchConfig()
    if hasattr(config, "autoKernel") and not args.auto_kernel:
        config.autoKernel = False  # the configuration: AL, kernel 21, order 2, 128 px cells
    task = ModelPsfMatchTask(config=config)
    rows = []
    header = (f"{'size':>6} {'cands':>6} {'base s':>8} {'fit s':>8} {'apply s':>8} {'run s':>8} "
              f"{'run/base':>9} {'fit/base':>9} {'cpu r/b':>9} {'peak MiB':>9} {'s/MP':>7}")
    # every size is built first and the sizes are timed round-robin: the time per megapixel compares
    # sizes measured under the same conditions (this machine's speed drifts over minutes); small sizes
    # are timed several times per round so that each size's median rests on a similar span of time
    exposures = {size: make_exposure(size, args.seed) for size in sizes}
    references = {size: reference for size in sizes}
    if args.psf:
        for size in sizes:
            psf, references[size] = real_psf(args.psf, exposures[size])
            exposures[size].setPsf(psf)
        print(f"PSF: {args.psf} ({read_psf(args.psf)!r}); reference {references[sizes[0]]!r}", flush=True)
    print(header, flush=True)
    planes = {size: np.nan_to_num(exposures[size].image, nan=0.0) for size in sizes}
    samples = {size: {k: [] for k in ("baseline", "baseline_cpu", "fit", "apply", "run", "run_cpu")}
               for size in sizes}
    ncand = {}
    for size in sizes:  # warm-up (imports, caches, FFT plans)
        timed_run(task, exposures[size], references[size])
        baseline(planes[size], kernel)
    largest = max(sizes)
    schedule = round_schedule(sizes, largest)
    probes = []
    for _ in range(max(1, args.repeat)):
        for size, count in schedule:
            smp = samples[size]
            # an untimed run first: the previous size's arrays have left the caches and the allocator
            # in a state that a stream of same-size exposures (the real use) never sees.  For the same
            # reason the runs of a group follow each other and the baselines come after them: a
            # baseline between two runs (its 10-20 MB of transforms) made the next 1024 px run 11%
            # slower, a state a survey's stream of exposures does not see either
            timed_run(task, exposures[size], references[size])
            for _ in range(count):
                gc.collect()
                total, tf, tc, cpu, result = timed_run(task, exposures[size], references[size])
                ncand[size] = result.metadata.get("nCandidatesUsed", 0)
                del result
                smp["run"].append(total)
                smp["fit"].append(tf)
                smp["apply"].append(tc)
                smp["run_cpu"].append(cpu)
            baseline(planes[size], kernel)  # untimed, like the first run
            for _ in range(count):
                gc.collect()
                tb, cb = baseline(planes[size], kernel)
                smp["baseline"].append(tb)
                smp["baseline_cpu"].append(cb)
        probes.append(host_probe())
    for size in sizes:
        peak = float("nan") if args.no_memory else peak_memory(task, exposures[size], references[size])
        med = {name: float(np.median(v)) for name, v in samples[size].items()}
        row = {"size": size, "candidates": ncand[size], **med,
               "run_over_baseline": med["run"] / med["baseline"],
               "fit_over_baseline": med["fit"] / med["baseline"],
               "cpu_run_over_baseline": med["run_cpu"] / med["baseline_cpu"],
               "peak_memory_MiB": peak / 2**20, "seconds_per_megapixel": med["run"] / (size * size / 1e6),
               "samples": samples[size]}
        rows.append(row)
        print(f"{size:>6} {ncand[size]:>6} {med['baseline']:>8.3f} {med['fit']:>8.3f} {med['apply']:>8.3f} "
              f"{med['run']:>8.3f} {row['run_over_baseline']:>9.2f} {row['fit_over_baseline']:>9.2f} "
              f"{row['cpu_run_over_baseline']:>9.2f} {row['peak_memory_MiB']:>9.0f} "
              f"{row['seconds_per_megapixel']:>7.4f}", flush=True)
    del exposures, planes
    gc.collect()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spm = [r["seconds_per_megapixel"] for r in rows]
    if len(spm) > 1:
        print(f"time per megapixel: min {min(spm):.4f} s, max {max(spm):.4f} s "
              f"(spread {max(spm) / min(spm) - 1:.0%})")
        # the fastest run of each size: noise only ever adds time, so this is the spread of the work
        best = [min(r["samples"]["run"]) / (r["size"] ** 2 / 1e6) for r in rows]
        print(f"time per megapixel of each size's fastest run: min {min(best):.4f} s, max {max(best):.4f} s "
              f"(spread {max(best) / min(best) - 1:.0%}; the medians above are the figures to quote)")
        # CPU seconds of all the run's threads: the work per megapixel, whatever the cores did meanwhile
        # (wall time adds how well the threads overlap, and the host's noise)
        cpm = [r["run_cpu"] / (r["size"] ** 2 / 1e6) for r in rows]
        print(f"CPU time per megapixel (medians): min {min(cpm):.4f} s, max {max(cpm):.4f} s "
              f"(spread {max(cpm) / min(cpm) - 1:.0%})")
    print(f"host two-thread speedup after each round: {' '.join(f'{p:.2f}' for p in probes)} "
          "(about 1.9 when both cores run; near 1 in the host's one-core episodes)")
    print(f"process max RSS: {maxrss:.0f} MiB; load average {os.getloadavg()[0]:.2f} at end")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": describe_machine(), "rows": rows, "schedule": schedule,
                       "host_two_thread_speedup": probes}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
