"""Throughput benchmarks: ``python -m experiments.bench <name> [--options]``.

Each prints one JSON line per measurement. Timings start after compilation and a warm-up, and every
timed call is synchronised with ``block_until_ready``.

    python -m experiments.bench fno                 # FNO-2D train step, batch 16, 64x64, width 32, modes 12
    python -m experiments.bench fno --batch 32 --resolution 128
    python -m experiments.bench fno --optimizer lion          # any option of configs/optim/
    python -m experiments.bench fno --impl fft dft            # one line per spectral-conv path (default)
    python -m experiments.bench ssm                 # S4, S4D, S5, long conv: fwd+bwd, batch 16, 128 channels,
                                                    # L in {1024, 4096, 16384}; one line per (layer, L)
    python -m experiments.bench ssm --lengths 1024 --batch 4 --layers s5 longconv
    python -m experiments.bench kernels             # Pallas FFT conv and scan vs XLA: B 16, H 256, L 1K-16K
    python -m experiments.bench kernels --lengths 1024 --batch 4 --channels 64 --kernels fftconv
    python -m experiments.bench ns_datagen          # Navier-Stokes solver: K in {64, 128} x batch in {1, 4, 16}
    python -m experiments.bench ns_datagen --resolutions 256 --batches 1 --dt 1e-4
    python -m experiments.bench darcy_datagen       # N = 100 lognormal Darcy systems, 64^2 and 128^2 unknowns:
                                                    # GMRES vs sorted Krylov recycling vs sparse LU
    python -m experiments.bench darcy_datagen --unknowns 256 --preconditioner jacobi
    python -m experiments.bench ns_accuracy         # 64^2 / 128^2 solves against the 256^2, dt 1e-4 one (slow)
"""
from __future__ import annotations

import argparse
import json
import sys

from experiments.allocator import tune_malloc
from experiments.bench.darcy_datagen import bench_darcy_datagen
from experiments.bench.fno import bench_fno
from experiments.bench.kernels import KERNELS, bench_kernels
from experiments.bench.ns_datagen import bench_ns_accuracy, bench_ns_datagen
from experiments.bench.ssm import LAYERS, bench_ssm

BENCHMARKS = {"fno": bench_fno, "ssm": bench_ssm, "kernels": bench_kernels, "ns_datagen": bench_ns_datagen,
              "ns_accuracy": bench_ns_accuracy,
              "darcy_datagen": bench_darcy_datagen}


def _fno_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--modes", type=int, default=12)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    p.add_argument("--optimizer", default="adam", help="an option of configs/optim/ (default: adam)")
    p.add_argument("--impl", nargs="+", default=["fft", "dft"], choices=["auto", "fft", "dft"],
                   help="spectral-convolution paths, measured in turn in one run (default: fft dft)")
    p.add_argument("--compute-dtype", dest="compute_dtype", default=None, help="e.g. bfloat16 (DFT path)")


def _ssm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--d-model", dest="d_model", type=int, default=128)
    p.add_argument("--d-state", dest="d_state", type=int, default=64,
                   help="N per channel (S4, S4D); P complex states shared by the channels (S5)")
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat (after warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")


def _ns_datagen_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolutions", type=int, nargs="+", default=[64, 128], help="solve grids K")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="samples solved together")
    p.add_argument("--steps", type=int, default=100, help="timed time steps per call (after compilation)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    p.add_argument("--dt", type=float, default=1e-4)
    p.add_argument("--nu", type=float, default=1e-3)
    p.add_argument("--t-final", dest="t_final", type=float, default=50.0,
                   help="horizon of one sample, for the samples/s extrapolation")


def _ns_accuracy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solves", nargs="+", default=["64:1e-4", "64:1e-3", "128:1e-4"], help="K:dt pairs")
    p.add_argument("--reference", default="256:1e-4", help="K:dt of the reference solve")
    p.add_argument("--n-samples", dest="n_samples", type=int, default=2)
    p.add_argument("--t-final", dest="t_final", type=int, default=50)
    p.add_argument("--nu", type=float, default=1e-3)
    p.add_argument("--times", type=int, nargs="+", default=[10, 50], help="snapshots compared")


def _kernels_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--channels", type=int, default=256, help="H of the convolution, P of the scan")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="convolution input")
    p.add_argument("--no-backward", dest="backward", action="store_false", help="forward only")
    p.add_argument("--interpret", action="store_true",
                   help="on CPU, also time the kernels in interpret mode (not a speed measure)")
    p.add_argument("--steps", type=int, default=5, help="timed calls per repeat (after warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")


def _darcy_datagen_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unknowns", type=int, nargs="+", default=[64, 128], help="unknowns per axis (grid side)")
    p.add_argument("--systems", type=int, default=100, help="N systems per grid")
    p.add_argument("--rtol", type=float, default=1e-8, help="relative residual ||b - Ax|| / ||b||")
    p.add_argument("--preconditioner", default="ilu", choices=["ilu", "jacobi", "none"])
    p.add_argument("--drop-tol", dest="drop_tol", type=float, default=1e-2, help="ILU drop tolerance")
    p.add_argument("--fill-factor", dest="fill_factor", type=float, default=2.0, help="ILU fill factor")
    p.add_argument("--restart", type=int, default=40, help="m, Krylov vectors per cycle (both methods)")
    p.add_argument("--recycle-dim", dest="recycle_dim", type=int, default=20, help="k, recycled vectors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-unsorted", dest="unsorted", action="store_false",
                   help="skip the unsorted recycling ablation")


# name -> (help, function adding its options): the keyword arguments of BENCHMARKS[name]
ARGUMENTS = {
    "fno": ("FNO-2D training step (value_and_grad + optimizer update)", _fno_arguments),
    "ssm": ("sequence mixers (S4, S4D, S5, long conv): one layer's forward + backward", _ssm_arguments),
    "ns_datagen": ("Navier-Stokes data generation: solver steps/s and samples/s", _ns_datagen_arguments),
    "ns_accuracy": ("Navier-Stokes: coarse solves (K:dt) against a reference solve", _ns_accuracy_arguments),
    "kernels": ("Pallas kernels (FFT conv, scan) against their XLA references", _kernels_arguments),
    "darcy_datagen": ("Darcy data generation: GMRES vs sorted Krylov recycling vs sparse LU",
                      _darcy_datagen_arguments),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="name", required=True)
    for name, (help_, add_arguments) in ARGUMENTS.items():
        add_arguments(sub.add_parser(name, help=help_))
    return p


def main(argv: list[str] | None = None) -> None:
    """Run one benchmark; print its measurements, one JSON line each."""
    args = vars(parser().parse_args(argv))
    name = args.pop("name")
    result = BENCHMARKS[name](**args)
    for line in ([result] if isinstance(result, dict) else result):  # a dict, or one per measurement
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    tune_malloc()  # before JAX starts its backend (see experiments/allocator.py)
    sys.exit(main())
