"""How many threads psfmatch's own loops may use, and the threads they run on."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

__all__ = ["available_cores", "shared_pool", "map_shared"]

#: Name prefix of the threads of :func:`shared_pool`.
_PREFIX = "psfmatch-worker"

_POOLS: dict = {}
_LOCK = threading.Lock()
#: Values of ``$PSFMATCH_NUM_THREADS`` already warned about (once per value and process).
_BAD_ENV_SEEN: set = set()


def available_cores() -> int:
    """``$PSFMATCH_NUM_THREADS`` if set to a positive integer, else the cores this process may run on.

    Set ``PSFMATCH_NUM_THREADS=1`` when many exposures are processed in parallel processes.
    Any other non-empty value is ignored with a :class:`RuntimeWarning` (once per value).
    """
    env = os.environ.get("PSFMATCH_NUM_THREADS", "").strip()
    if env.isascii() and env.isdigit() and int(env) > 0:  # ('²'.isdigit() is True, int('²') fails)
        return int(env)
    try:
        n = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        n = max(1, os.cpu_count() or 1)
    if env and env not in _BAD_ENV_SEEN:
        _BAD_ENV_SEEN.add(env)
        warnings.warn(f"PSFMATCH_NUM_THREADS={env!r} is not a positive integer, so psfmatch uses all {n} cores "
                      "this process may run on; set it to a positive integer (1 when exposures are matched in "
                      "parallel processes) or unset it", RuntimeWarning, stacklevel=2)
    return n


def shared_pool(nthreads: int):
    """A persistent pool of ``nthreads`` threads shared by psfmatch's loops, or None to run serially.

    Starting threads costs several milliseconds each, a large part of the
    fit and of the convolution of a small exposure when every loop starts its
    own pool; the pool is therefore started once per process (and per size)
    and kept.  Returns None when ``nthreads < 2`` or when called from one of
    the pool's own threads (a task that waited on tasks of the same pool
    could deadlock it).  Tasks must not submit work to the pool themselves.
    """
    if nthreads < 2 or threading.current_thread().name.startswith(_PREFIX):
        return None
    with _LOCK:
        pool = _POOLS.get(nthreads)
        if pool is None:
            pool = _POOLS[nthreads] = ThreadPoolExecutor(max_workers=nthreads,
                                                         thread_name_prefix=f"{_PREFIX}-{nthreads}")
    return pool


def map_shared(fn, items, nthreads=None) -> list:
    """``[fn(x) for x in items]``, on :func:`shared_pool` threads when one is available (else in this thread).

    ``nthreads`` defaults to :func:`available_cores`; results keep the order of ``items``.
    """
    items = list(items)
    pool = shared_pool(available_cores() if nthreads is None else nthreads) if len(items) > 1 else None
    if pool is None:
        return [fn(x) for x in items]
    return list(pool.map(fn, items))


#: Held while psfmatch has the warning filters changed (see :func:`catch_warnings`).
_WARNINGS_LOCK = threading.RLock()


@contextlib.contextmanager
def catch_warnings(action=None, *, record=False):
    """``warnings.catch_warnings`` (with ``simplefilter(action)``) that psfmatch's threads take in turn.

    The warning filters are one process-wide list, and ``catch_warnings``
    restores on exit the list it saw on entry: two threads whose contexts
    overlap can leave the process with the other's temporary ``"ignore"``
    for good, silencing every warning after (readers run in threads by a
    user's pool or by dask).  psfmatch's own short sections (a card, a WCS, a
    unit) therefore hold one lock; a caller's own ``catch_warnings`` in another
    thread is beyond its reach (Python 3.14's context-local filters fix that).
    With ``"ignore"`` the warnings are recorded instead, and psfmatch's own
    (:class:`~psfmatch.errors.PsfMatchWarning` and its subclasses) are shown
    again on the way out: a run in another thread raises them meanwhile, and
    the filters are the whole process's (they were silenced).
    """
    if action != "ignore" or record:
        with _WARNINGS_LOCK, warnings.catch_warnings(record=record) as caught:
            if action is not None:
                warnings.simplefilter(action)
            yield caught
        return
    # "ignore": recorded instead, so that psfmatch's own warnings that a run raises in another thread meanwhile
    # (the filters are the whole process's) are shown again on the way out; the others are dropped as asked
    with _WARNINGS_LOCK:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield None
        from .errors import PsfMatchWarning

        for w in caught:
            if isinstance(w.category, type) and issubclass(w.category, PsfMatchWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _forget_pools():
    """In a forked child the parent's threads do not exist: start new pools (and locks) there."""
    global _LOCK, _WARNINGS_LOCK
    _POOLS.clear()
    _LOCK = threading.Lock()
    _WARNINGS_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)
