"""The ``psfmatch`` command line: a thin shell over the library."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def _cmd_demo(args) -> int:
    from .demo import demo_reference_psf, make_demo_exposure
    from .qa import format_report
    from .task import ModelPsfMatchTask

    exposure = make_demo_exposure(args.size, seed=args.seed)
    result = ModelPsfMatchTask().run(exposure, demo_reference_psf())
    print(f"psfmatch demo: matched a {args.size}x{args.size} exposure (PSF sigma 1.6-2.0 px, elliptical) "
          "to a round Gaussian of sigma 2.6 px")
    print(format_report(result.metadata))
    return 0


def _parser():
    p = argparse.ArgumentParser(prog="psfmatch", description="PSF-match exposures to a model PSF.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="match a synthetic exposure and print the QA summary")
    d.add_argument("--size", type=int, default=512, help="exposure width and height (default 512)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 success, 1 failure, 2 usage error)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from .errors import PsfMatchError
    try:
        return args.func(args)
    except PsfMatchError as exc:
        if args.verbose:
            raise
        print(f"psfmatch: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
