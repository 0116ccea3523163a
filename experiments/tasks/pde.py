"""Operator learning on PDE data: learn the map from an input field to the solution field.

``OperatorTask`` is generic over the PDE: it takes a *field dataset* (``pde``), draws ``n_train`` /
``n_test`` pairs from it, normalises them, trains at one resolution and evaluates at several (the
zero-shot super-resolution of neural operators). A new PDE is a field dataset plus one YAML file in
``configs/data/`` naming it as ``pde``. A field dataset is any object of the protocol
``experiments.tasks.base.FieldDataset`` (``in_channels``, ``out_channels``, ``volatile_keys``,
``spatial_shape``, ``load``, ``subsample``); the task checks it when it is built.

``experiments.data.darcy.DarcyFlow`` is the first (the FNO paper's Darcy benchmark, section 5.2); also
``experiments.data.burgers.BurgersFlow`` and ``experiments.data.navier_stokes.NavierStokesFlow``.
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.errors import UserInputError
from experiments.metrics import Mean
from experiments.tasks.base import FieldDataset, Objective, Task, check_dataset
from operators.losses import relative_h1, relative_hs, relative_lp

NORMALIZERS = ("pointwise", "global", "none")
LOSSES = ("l2", "h1", "hs")


class GaussianNormalizer:
    """(x - mean) / (std + eps) with statistics over the training set.

    ``pointwise``: one mean/std per grid point and channel (the FNO scripts' ``UnitGaussianNormalizer``);
    ``global``: one mean/std per channel; ``none``: identity. Statistics are computed from the training
    fields sampled at the resolution they are applied to, so every resolution is normalised exactly.
    """

    def __init__(self, kind: str, eps: float = 1e-5):
        self.kind, self.eps = kind, eps

    def fit(self, fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """fields: (n, *spatial, c) -> float32 (mean, std) of shape (*spatial, c)."""
        shape = fields.shape[1:]
        if self.kind == "pointwise":
            mean, std = fields.mean(0), fields.std(0) + self.eps
        elif self.kind == "global":
            axes = tuple(range(fields.ndim - 1))
            mean = np.broadcast_to(fields.mean(axes), shape)
            std = np.broadcast_to(fields.std(axes) + self.eps, shape)
        else:
            mean, std = np.zeros(shape), np.ones(shape)
        return mean.astype(np.float32), std.astype(np.float32)


class OperatorTask(Task):
    """Learn ``pde``'s input -> output map; inputs and targets are ``(batch, *grid, channels)``.

    Args:
      pde: the field dataset (``FieldDataset``), e.g. ``DarcyFlow(resolution=127)``.
      n_train, n_test: pairs drawn from its train and test splits.
      n_val: pairs drawn from its validation split (0: none). With a validation split, the objective is
        ``rel_l2`` on it (split ``val_s<train_resolution>``), so that sweeps tune on validation data
        and the test splits stay untouched for reporting.
      train_resolution: the resolution trained at; evaluated first (the objective's split).
      test_resolutions: further resolutions evaluated (zero-shot), e.g. [127] for Darcy at K=127.
      normalizer: "pointwise", "global" or "none", for inputs and targets alike; the model predicts
        normalised targets, decoded before the loss (as the FNO scripts).
      loss: "l2" (relative L2, the FNO papers'), "h1" (relative H1, finite differences) or "hs" (relative
        Sobolev norm in Fourier space, MgNO's ``HsLoss``: ``operators.losses.relative_hs``; it adds the
        metric ``rel_hs``).
      hs_a, hs_truncation: the "hs" loss's weights a_1..a_s of |k|^2..|k|^(2s) and its wave-number
        truncation (None: none); the defaults (a = [1], 20) are those of MgNO's ``darcy.py``.

    Evaluation splits are ``val_s<train_resolution>`` (if ``n_val``) and ``test_s<resolution>``;
    metrics ``rel_l2`` and ``rel_h1`` per sample, averaged over the split; the objective is ``rel_l2``
    at the training resolution, on the validation split if there is one, else on the test split.
    """

    objective = Objective("rel_l2", mode="min")

    def __init__(self, pde: Any, n_train: int = 500, n_test: int = 100, train_resolution: int = 64,
                 test_resolutions: Sequence[int] = (), normalizer: str = "pointwise", loss: str = "l2",
                 n_val: int = 0, hs_a: Sequence[float] = (1.0,), hs_truncation: Optional[int] = 20):
        if normalizer not in NORMALIZERS:
            raise UserInputError(f"data.normalizer={normalizer!r} is unknown; choose one of {NORMALIZERS}")
        if loss not in LOSSES:
            raise UserInputError(f"data.loss={loss!r} is unknown; choose one of {LOSSES}")
        if loss == "hs" and (not hs_a or (hs_truncation is not None and hs_truncation < 1)):
            raise UserInputError(f"data.hs_a needs at least one weight and data.hs_truncation must be >= 1 or null "
                                 f"(got {list(hs_a)}, {hs_truncation})")
        if n_train < 1 or n_test < 1 or n_val < 0:
            raise UserInputError(f"data.n_train and data.n_test must be >= 1 and data.n_val >= 0 (got "
                                 f"{n_train}, {n_test}, {n_val})")
        check_dataset(pde, FieldDataset, "data.pde")
        self.pde, self.n_train, self.n_test, self.n_val = pde, n_train, n_test, n_val
        if n_val:
            self.objective = Objective("rel_l2", mode="min", split=f"val_s{train_resolution}")
        self.train_resolution = train_resolution
        self.volatile_keys = tuple(f"pde.{k}" for k in pde.volatile_keys)
        # Evaluate at the training resolution first, then every extra one, without repeats.
        resolutions = list(dict.fromkeys([train_resolution, *test_resolutions]))
        try:
            self.grids = {s: tuple(pde.spatial_shape(s)) for s in resolutions}
        except ValueError as err:
            raise UserInputError(f"{err}. Change data.train_resolution / data.test_resolutions, or the "
                                 f"data's grid (data.pde.resolution for generated data).") from None
        self.normalizer, self.loss_kind = GaussianNormalizer(normalizer), loss
        self.hs_a, self.hs_truncation = tuple(float(x) for x in hs_a), hs_truncation
        self._train: dict[str, np.ndarray] | None = None
        self._evals: dict[str, dict[str, np.ndarray]] = {}
        self._y_stats: dict[tuple, tuple[jax.Array, jax.Array]] = {}
        self._test_inputs: dict[str, np.ndarray] = {}

    # -- data -------------------------------------------------------------------------------------
    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        grid = self.grids[self.train_resolution]
        return {"x": jax.ShapeDtypeStruct((batch_size, *grid, self.pde.in_channels), jnp.float32),
                "y": jax.ShapeDtypeStruct((batch_size, *grid, self.pde.out_channels), jnp.float32)}

    def model_settings(self) -> dict[str, int]:
        return {"in_channels": self.pde.in_channels, "out_channels": self.pde.out_channels,
                "spatial_dims": len(self.grids[self.train_resolution])}

    def setup(self, progress: bool = True) -> None:
        x_train, y_train = self.pde.load("train", self.n_train, progress=progress)
        x_test, y_test = self.pde.load("test", self.n_test, progress=progress)
        splits = {"test": (x_test, y_test)}
        if self.n_val:
            splits["val"] = self.pde.load("val", self.n_val, progress=progress)
        for s, grid in self.grids.items():
            a_tr, u_tr = self.pde.subsample(x_train, s), self.pde.subsample(y_train, s)
            x_mean, x_std = self.normalizer.fit(a_tr)
            y_mean, y_std = self.normalizer.fit(u_tr)
            self._y_stats[grid] = (jnp.asarray(y_mean), jnp.asarray(y_std))
            for name, (x, y) in splits.items():
                if name == "val" and s != self.train_resolution:
                    continue
                a_te, u_te = self.pde.subsample(x, s), self.pde.subsample(y, s)
                self._test_inputs[f"{name}_s{s}"] = a_te
                self._evals[f"{name}_s{s}"] = {"x": ((a_te - x_mean) / x_std).astype(np.float32),
                                               "y": u_te.astype(np.float32)}
            if s == self.train_resolution:
                self._train = {"x": ((a_tr - x_mean) / x_std).astype(np.float32), "y": u_tr.astype(np.float32)}

    @property
    def train(self) -> dict[str, np.ndarray]:
        if self._train is None:
            raise RuntimeError("OperatorTask.setup() must run before the data is used")
        return self._train

    @property
    def evals(self) -> dict[str, dict[str, np.ndarray]]:
        return self._evals

    # -- loss and metrics (traced) ----------------------------------------------------------------
    def predict(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        """Decoded prediction (units of the target): model output * std + mean at the batch's grid."""
        mean, std = self._y_stats[tuple(batch["x"].shape[1:-1])]
        return model(batch["x"]) * std + mean

    def loss(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        pred = self.predict(model, batch)
        if self.loss_kind == "h1":
            return relative_h1(pred, batch["y"])
        if self.loss_kind == "hs":
            return relative_hs(pred, batch["y"], a=self.hs_a, truncation=self.hs_truncation)
        return relative_lp(pred, batch["y"])

    def metrics(self, model, batch: Mapping[str, jax.Array], split: str) -> dict[str, Mean]:
        pred = self.predict(model, batch)
        out = {"rel_l2": Mean(relative_lp(pred, batch["y"], reduction="none")),
               "rel_h1": Mean(relative_h1(pred, batch["y"], reduction="none"))}
        if self.loss_kind == "hs":
            out["rel_hs"] = Mean(relative_hs(pred, batch["y"], a=self.hs_a, truncation=self.hs_truncation,
                                             reduction="none"))
        return out

    # -- plots ------------------------------------------------------------------------------------
    def plot(self, model, split: str, out_dir: pathlib.Path) -> list[pathlib.Path]:
        """input / truth / prediction / |error| of the first test sample of ``split`` (1-D and 2-D grids)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data = self._evals[split]
        d = data["x"].ndim - 2
        if d not in (1, 2):
            return []
        batch = {"x": jnp.asarray(data["x"][:1]), "y": jnp.asarray(data["y"][:1])}
        pred = np.asarray(self.predict(model, batch))[0, ..., 0]
        truth = data["y"][0, ..., 0]
        panels = [("input", self._test_inputs[split][0, ..., 0]), ("truth", truth), ("prediction", pred),
                  ("|error|", np.abs(pred - truth))]
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
        for ax, (title, field) in zip(axes, panels):
            if d == 2:
                im = ax.imshow(field, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
                fig.colorbar(im, ax=ax, fraction=0.046)
            else:
                ax.plot(np.linspace(0, 1, field.shape[0]), field)
            ax.set_title(title)
        rel = np.linalg.norm(pred - truth) / np.linalg.norm(truth)
        fig.suptitle(f"{split}: test sample 0, relative L2 = {rel:.4f}")
        fig.tight_layout()
        path = out_dir / f"sample_{split}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return [path]
