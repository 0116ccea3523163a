"""Paper-table reproductions and run summaries: ``python -m experiments.table NAME [args]``.

Each table is a module ``experiments.tables.<NAME>`` with

* a docstring (the paper, the table, the protocol, which numbers are published and which measured),
* ``add_arguments(parser)``: its command-line arguments,
* ``collect(...) -> records``: run directories (or results it computed) as plain records, no text;
* ``render(records) -> Table``: the Markdown and the CSV rows (``output.Table``);
* ``plot(records, out_dir)``: its PNG figures, returning the files written;
* ``build(args) -> Table``: the thin command-line function, composing the three (and any
  computation the table runs itself: solvers, inverse problems, timings) into the table with its
  figures.

``TABLES`` below is the registry: a table module is loaded by name only once it is listed there.
The shared helpers are modules by concept: ``runs`` (reading run directories, training one),
``formatting`` (numbers as cells), ``output`` (Markdown, CSV, ``Table``), ``figures`` (the charts
and the one way a figure is finished); ``halpern_comparison`` is what the two VR-Halpern tables share.
"""
from __future__ import annotations

import importlib
import types

from experiments.errors import UserInputError

TABLES: dict[str, str] = {
    "fno_darcy": "FNO paper, Darcy flow (Li et al., ICLR 2021, Table 4) beside runs of "
                 "experiment=fno_darcy",
    "sweep": "a Hydra multirun directory as one table: overrides against objective and cost",
    "darcy_models": "FNO, TFNO, MgNO, LSM, U-Net on Darcy flow: cost, errors (L2, H1, by frequency band, "
                    "at other resolutions) beside the published numbers (reads runs of model=...)",
    "halpern_matrix_game": "VR-Halpern paper (Cai et al., ICLR 2024, Fig. 1a): policeman-and-burglar "
                           "game, residual against epochs for Alg. 1/2, EG, EAG, VR-EG (runs them)",
    "halpern_qp": "VR-Halpern paper (Cai et al., ICLR 2024, Fig. 1b): \"hard\" QP, residual against "
                  "epochs for Alg. 1/2, EG, EAG, VR-EG (runs them, reduced budget)",
    "optimizers_darcy": "Lion, AdamW, AdamP, SGDP, Adam on the default FNO/Darcy job, each tuned on its own "
                        "grid (reads the sweeps of experiment=optimizers_darcy)",
    "lra": "Long Range Arena ListOps and Pathfinder-32 (S4, S4D, S5, PTD, long conv papers) beside runs "
           "of data=listops / data=pathfinder32",
    "cgs": "CGS paper (Park et al., ICLR 2022, Sec. 6.1-6.2): CGS vs a stacked GNN on pore-network Stokes flow "
           "and graph value iteration (runs of experiment=cgs_* / gnn_*), with iterations and timings",
    "lpn_laplacian": "LPN paper (Fang et al., ICLR 2024, Fig. 1): 1-D Laplacian toy, learned prox and R against "
                     "soft thresholding and |x|, l2 / l1 contrast (trains its runs or reads them)",
    "lpn_inverse": "LPN paper (Fang et al., ICLR 2024, Sec. 5) on 16x16 digits: PnP-PGD / PnP-ADMM deblurring and "
                   "sparse-view CT against TV, Wiener, FBP (PSNR/SSIM, convergence), and the prior study of R",
}


def available() -> str:
    """The registered tables, one ``name: description`` per line."""
    width = max(map(len, TABLES))
    return "\n".join(f"  {name:<{width}}  {desc}" for name, desc in TABLES.items())


def load(name: str) -> types.ModuleType:
    """The module of table ``name``; a UserInputError listing the tables if there is none."""
    if name not in TABLES:
        raise UserInputError(f"unknown table {name!r}; available tables:\n{available()}")
    return importlib.import_module(f"{__name__}.{name}")
