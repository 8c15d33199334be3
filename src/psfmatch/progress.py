"""Optional progress bars for long loops.

Library loops wrap their iterables in :func:`progress_bar`.  Bars are off
unless switched on, per call (``enabled=True``) or for the whole process with
:func:`set_enabled` (the ``psfmatch`` command does so when standard error is a
terminal).  They are drawn by ``tqdm`` when it is installed; without it the
iterable is returned unchanged.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "set_enabled", "is_enabled"]

_enabled = False


def set_enabled(flag: bool) -> None:
    """Switch progress bars on or off for every loop that does not say otherwise."""
    global _enabled
    _enabled = bool(flag)


def is_enabled() -> bool:
    """Whether progress bars are on by default."""
    return _enabled


def progress_bar(iterable, *, desc=None, total=None, enabled=None, leave=False):
    """Wrap ``iterable`` in a progress bar on standard error when bars are enabled.

    Parameters
    ----------
    iterable : iterable
        What to loop over.
    desc : str, optional
        Label of the bar.
    total : int, optional
        Number of items (taken from ``len(iterable)`` when it has one).
    enabled : bool, optional
        Force the bar on or off; by default :func:`is_enabled`.
    leave : bool
        Keep the finished bar on screen.

    Returns
    -------
    iterable
        A ``tqdm`` bar, or ``iterable`` itself when bars are off or tqdm is missing.
    """
    if not (_enabled if enabled is None else enabled):
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=leave, file=sys.stderr, dynamic_ncols=True)
