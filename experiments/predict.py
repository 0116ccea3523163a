"""``python -m experiments.predict RUN_DIR --input FILE [--key K] --output OUT.npy [--resolution S]``.

The trained model of a run directory (or an exported directory) applied to the user's raw inputs:
``FILE`` is a ``.npy`` array, or a ``.npz`` archive with ``--key`` naming the array, of shape
``(n, *grid, channels)``; the outputs, decoded to physical units, are written to ``OUT.npy``
(``experiments.load.Run.predict``). ``--resolution S`` subsamples finer inputs to resolution S first.
Bad input is reported on one line (exit status 2).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from experiments.errors import UserInputError


def read_inputs(path: pathlib.Path, key: str | None) -> np.ndarray:
    """The array of a ``.npy`` file, or the array ``key`` of a ``.npz`` archive."""
    if not path.is_file():
        raise UserInputError(f"--input {path}: no such file")
    if path.suffix == ".npy":
        if key is not None:
            raise UserInputError(f"--key {key!r} is for .npz archives; {path} is a single .npy array")
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if key is None or key not in archive.files:
                what = "name the array with --key" if key is None else f"it has no array {key!r}"
                raise UserInputError(f"--input {path}: {what}; its arrays are {archive.files}")
            return archive[key]
    raise UserInputError(f"--input {path}: expected a .npy or .npz file")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.predict", description=__doc__.split("\n\n")[1])
    p.add_argument("run_dir", type=pathlib.Path, metavar="RUN_DIR", help="a run directory or an exported one")
    p.add_argument("--input", type=pathlib.Path, required=True, metavar="FILE", help=".npy, or .npz with --key")
    p.add_argument("--key", help="the array of a .npz input")
    p.add_argument("--output", type=pathlib.Path, required=True, metavar="OUT.npy")
    p.add_argument("--resolution", type=int, metavar="S", help="subsample the inputs to resolution S first")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.output.suffix != ".npy":
            raise UserInputError(f"--output {args.output}: name a .npy file")
        inputs = read_inputs(args.input, args.key)
        from experiments.load import load_run

        outputs = load_run(args.run_dir).predict(inputs, resolution=args.resolution)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.output, outputs)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: outputs of shape {outputs.shape}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
