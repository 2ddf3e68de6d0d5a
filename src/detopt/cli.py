"""Command line: parse, validate, call the library. Only commands that work are listed."""

from __future__ import annotations

import argparse
import os
import platform
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    """Print versions and machine facts (paste them into bug reports)."""
    import numba
    import numpy
    import torch

    import detopt

    rows = [
        ("detopt", detopt.__version__),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
        ("cpu cores", str(os.cpu_count())),
        ("torch", torch.__version__),
        ("torch threads", str(torch.get_num_threads())),
        ("cuda available", str(torch.cuda.is_available())),
        ("numpy", numpy.__version__),
        ("numba", numba.__version__),
        ("numba threads", str(numba.config.NUMBA_NUM_THREADS)),
        ("numba cache dir", numba.config.CACHE_DIR or "(next to the sources)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detopt",
        description="Make object detectors more accurate and faster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="print versions and machine facts")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
