"""Paper tables and sweep summaries: ``python -m experiments.table NAME [args] [--out DIR]``.

    python -m experiments.table fno_darcy                      # the FNO paper's Darcy table alone
    python -m experiments.table fno_darcy outputs/2026-01-02/10-00-00 [more run dirs]
    python -m experiments.table sweep multirun/2026-01-02/10-00-00

Prints the table as Markdown, writes ``<NAME>.md``, ``<NAME>.csv`` and ``<NAME>.png`` to the output
directory (default ``outputs/tables/<NAME>/<YYYY-mm-dd_HH-MM-SS>/`` under the current directory)
and ends with the line ``wrote <dir>``. Bad input (an unknown table, a missing directory) is one line
on stderr and exit status 2. The tables are ``experiments/tables/<NAME>.py``.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

from experiments import tables
from experiments.errors import UserInputError


def default_out_dir(name: str) -> pathlib.Path:
    """``outputs/tables/<name>/<timestamp>/``, with a suffix if that directory already exists."""
    base = pathlib.Path("outputs") / "tables" / name / time.strftime("%Y-%m-%d_%H-%M-%S")
    out, n = base, 1
    while out.exists():
        out, n = base.with_name(f"{base.name}_{n}"), n + 1
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    out_help = "output directory (default: outputs/tables/<NAME>/<timestamp>/)"
    p.add_argument("--out", type=pathlib.Path, default=None, metavar="DIR", help=out_help)
    sub = p.add_subparsers(dest="name", metavar="NAME", required=True)
    for name, description in tables.TABLES.items():
        module = tables.load(name)
        q = sub.add_parser(name, help=description, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(q)
        # Accepted before or after NAME; SUPPRESS keeps a value given before NAME.
        q.add_argument("--out", type=pathlib.Path, default=argparse.SUPPRESS, metavar="DIR",
                       help=out_help)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if not argv:
            raise UserInputError(f"name a table: python -m experiments.table NAME [args]; "
                                 f"available tables:\n{tables.available()}")
        if not argv[0].startswith("-"):
            tables.load(argv[0])            # an unknown name: the list of tables, not argparse's
        args = parser().parse_args(argv)
        table = tables.load(args.name).build(args)
        out = args.out if args.out is not None else default_out_dir(args.name)
        table.write(out)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table.markdown)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
