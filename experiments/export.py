"""``python -m experiments.export RUN_DIR OUT_DIR``: a trained model as a self-contained directory.

``OUT_DIR`` (new or empty) receives the resolved config, the parameters as an Orbax checkpoint, the
normaliser statistics (npz) and the package versions (json); ``experiments.load_run(OUT_DIR)`` and
``python -m experiments.predict OUT_DIR ...`` load it without the run directory or the data cache
(``experiments.load.export_run``). Bad input is reported on one line (exit status 2).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from experiments.errors import UserInputError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=pathlib.Path, metavar="RUN_DIR", help="a run directory of experiments.train")
    p.add_argument("out_dir", type=pathlib.Path, metavar="OUT_DIR", help="a new (or empty) directory")
    args = p.parse_args(argv)
    from experiments.load import export_run

    try:
        out = export_run(args.run_dir, args.out_dir)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
