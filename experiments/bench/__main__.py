"""Throughput benchmarks: ``python -m experiments.bench <name> [--options]``.

Each prints one JSON line per measurement. Timings start after compilation and a warm-up, and every
timed call is synchronised with ``block_until_ready``.

    python -m experiments.bench fno                 # FNO-2D train step, batch 16, 64x64, width 32, modes 12
    python -m experiments.bench fno --batch 32 --resolution 128
    python -m experiments.bench fno --optimizer lion          # any option of configs/optim/
    python -m experiments.bench ssm                 # S4, S4D, S5, long conv: fwd+bwd, batch 16, 128 channels,
                                                    # L in {1024, 4096, 16384}; one line per (layer, L)
    python -m experiments.bench ssm --lengths 1024 --batch 4 --layers s5 longconv
"""
from __future__ import annotations

import argparse
import json
import sys

from experiments.bench.fno import bench_fno
from experiments.bench.ssm import LAYERS, bench_ssm

BENCHMARKS = {"fno": bench_fno, "ssm": bench_ssm}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="name", required=True)
    p = sub.add_parser("fno", help="FNO-2D training step (value_and_grad + optimizer update)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--modes", type=int, default=12)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    p.add_argument("--optimizer", default="adam", help="an option of configs/optim/ (default: adam)")
    p = sub.add_parser("ssm", help="sequence mixers (S4, S4D, S5, long conv): one layer's forward + backward")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--d-model", dest="d_model", type=int, default=128)
    p.add_argument("--d-state", dest="d_state", type=int, default=64,
                   help="N per channel (S4, S4D); P complex states shared by the channels (S5)")
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat (after warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    args = vars(parser.parse_args(argv))
    name = args.pop("name")
    result = BENCHMARKS[name](**args)
    for line in ([result] if isinstance(result, dict) else result):  # a dict, or one per measurement
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
