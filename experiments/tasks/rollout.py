"""Operator learning on time series of fields: autoregressive rollout (FNO-2D) and space-time (FNO-3D).

Both tasks follow the FNO paper's Navier-Stokes experiments (Li et al., ICLR 2021, Section 5.3,
``fourier_2d_time.py`` and ``fourier_3d.py``): the input is the first ``t_in`` recorded snapshots of a
trajectory, the target the next ``t_out``.

* ``RolloutTask``: a 2-D model maps the last ``t_in`` snapshots (as channels) to the next one; it is
  applied ``t_out`` times, each prediction appended to the window and the oldest snapshot dropped.
  The training loss is the sum over the rolled-out steps of the per-step relative L2 error, averaged
  over the batch (gradients flow through the whole rollout, as the reference code).
* ``SpaceTimeTask``: a 3-D model on (x, y, t) predicts all ``t_out`` steps at once; its input is the
  ``t_in`` snapshots repeated along a new time axis of length ``t_out`` (``fourier_3d.py``), built
  inside the traced loss so that the repeated array never sits in host memory. Inputs and targets are
  normalised pointwise (``UnitGaussianNormalizer``), the loss is the relative L2 of the decoded
  prediction over the whole space-time block.

The data is a *trajectory dataset*, the protocol ``experiments.tasks.base.TrajectoryDataset``
(``load``, ``spatial_shape``, ``subsample``, ``volatile_keys``, ``n_snapshots``): its ``load`` returns
``(initial field, snapshots)`` with the snapshots ``(n, *grid, T)`` as channels, ``n_snapshots`` = T
(e.g. ``experiments.data.navier_stokes.NavierStokesFlow``). The tasks check it when they are built.
A dataset of several fields per snapshot (velocity components, reacting species) says so with an
optional ``n_fields`` = C (absent: 1) and lays its snapshots out time-major, ``(n, *grid, T * C)`` with
channel ``t * C + c`` = field c at time t (``experiments.data.pdebench``, ``experiments.data.the_well``);
the rollout model then maps ``t_in * C`` channels to the ``C`` of the next step, and every per-step
error is taken over all C fields of the step. The space-time task takes one field only.

Metrics of both, per example then averaged over the split: ``rel_l2``, the relative L2 error of the
whole predicted trajectory (the paper's reported number, its ``test_l2_full``); ``rel_l2_step``, the
mean over the predicted steps of the per-step relative L2 (the reference's ``test_l2_step`` divided by
the number of steps); and ``rel_l2_t<k>`` for every predicted time index k (1-based, as the snapshots'
times), plotted against time in ``plots/error_vs_time_<split>.png``.
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.errors import UserInputError
from experiments.metrics import Mean
from experiments.tasks.base import Objective, Task, TrajectoryDataset, check_dataset, eval_shape_or_error
from experiments.tasks.pde import GaussianNormalizer
from operators.losses import relative_lp

__all__ = ["RolloutTask", "SpaceTimeTask"]


def _per_step_relative_l2(pred: jax.Array, target: jax.Array, n_fields: int = 1) -> jax.Array:
    """(batch, *grid, t * n_fields) pairs (time-major channels) -> (batch, t): the relative L2 error of
    every time step over all its fields."""
    pred = pred.reshape(*pred.shape[:-1], -1, n_fields)  # (batch, *grid, t, n_fields)
    target = target.reshape(pred.shape)
    axes = (*range(1, pred.ndim - 2), pred.ndim - 1)
    num = jnp.sqrt(jnp.sum((pred - target) ** 2, axis=axes))
    den = jnp.sqrt(jnp.sum(target ** 2, axis=axes))
    return num / den


class _TrajectoryTask(Task):
    """Shared data handling: windows ``x`` (first t_in snapshots) and ``y`` (next t_out) per resolution."""

    objective = Objective("rel_l2", mode="min")

    def __init__(self, pde: Any, n_train: int, n_test: int, t_in: int, t_out: int | None,
                 train_resolution: int, test_resolutions: Sequence[int], n_val: int):
        if n_train < 1 or n_test < 1 or n_val < 0:
            raise UserInputError(f"data.n_train and data.n_test must be >= 1 and data.n_val >= 0 (got "
                                 f"{n_train}, {n_test}, {n_val})")
        check_dataset(pde, TrajectoryDataset, "data.pde")
        total = int(pde.n_snapshots)
        t_out = total - t_in if t_out is None else int(t_out)
        if t_in < 1 or t_out < 1 or t_in + t_out > total:
            raise UserInputError(
                f"data.t_in={t_in} and data.t_out={t_out} need 1 <= t_in, 1 <= t_out and t_in + t_out <= "
                f"{total}, the snapshots the data records (data.pde.t_final); lower them or record more")
        self.pde, self.n_train, self.n_test, self.n_val = pde, n_train, n_test, n_val
        self.t_in, self.t_out = int(t_in), t_out
        self.n_fields = int(getattr(pde, "n_fields", 1))  # C fields per snapshot, channels time-major
        self.train_resolution = train_resolution
        self.volatile_keys = tuple(f"pde.{k}" for k in pde.volatile_keys)
        if n_val:
            self.objective = Objective("rel_l2", mode="min", split=f"val_s{train_resolution}")
        resolutions = list(dict.fromkeys([train_resolution, *test_resolutions]))
        try:
            self.grids = {s: tuple(pde.spatial_shape(s)) for s in resolutions}
        except ValueError as err:
            raise UserInputError(f"{err}. Change data.train_resolution / data.test_resolutions.") from None
        self._train: dict[str, np.ndarray] | None = None
        self._evals: dict[str, dict[str, np.ndarray]] = {}

    def setup(self, progress: bool = True) -> None:
        splits = {"train": self.n_train, "test": self.n_test}
        if self.n_val:
            splits["val"] = self.n_val
        c = self.n_fields
        window = slice(0, self.t_in * c), slice(self.t_in * c, (self.t_in + self.t_out) * c)
        loaded = {name: self.pde.load(name, n, progress=progress)[1] for name, n in splits.items()}
        self._train_windows = {}  # the training windows at every evaluated grid (normalisers' statistics)
        for s in self.grids:
            for name, series in loaded.items():
                if name == "val" and s != self.train_resolution:
                    continue
                series_s = self.pde.subsample(series, s)  # (n, *grid, T * C)
                arrays = {"x": np.ascontiguousarray(series_s[..., window[0]], dtype=np.float32),
                          "y": np.ascontiguousarray(series_s[..., window[1]], dtype=np.float32)}
                if name == "train":
                    self._train_windows[s] = arrays
                else:
                    self._evals[f"{name}_s{s}"] = arrays
        self._train = self._train_windows[self.train_resolution]
        self._fit_normalizers()

    def _fit_normalizers(self) -> None:
        """Hook: statistics from the training windows (the space-time task normalises)."""

    @property
    def train(self) -> dict[str, np.ndarray]:
        if self._train is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before the data is used")
        return self._train

    @property
    def evals(self) -> dict[str, dict[str, np.ndarray]]:
        return self._evals

    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        grid = self.grids[self.train_resolution]
        return {"x": jax.ShapeDtypeStruct((batch_size, *grid, self.t_in * self.n_fields), jnp.float32),
                "y": jax.ShapeDtypeStruct((batch_size, *grid, self.t_out * self.n_fields), jnp.float32)}

    def predict(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        """The predicted snapshots, ``(batch, *grid, t_out * n_fields)`` in the targets' units."""
        raise NotImplementedError

    def metrics(self, model, batch: Mapping[str, jax.Array], split: str) -> dict[str, Mean]:
        pred = self.predict(model, batch)
        steps = _per_step_relative_l2(pred, batch["y"], self.n_fields)  # (batch, t_out)
        out = {"rel_l2": Mean(relative_lp(pred, batch["y"], reduction="none")),
               "rel_l2_step": Mean(jnp.mean(steps, axis=1))}
        for k in range(self.t_out):
            out[f"rel_l2_t{self.t_in + k + 1}"] = Mean(steps[:, k])
        return out

    def plot(self, model, split: str, out_dir: pathlib.Path) -> list[pathlib.Path]:
        """Relative L2 error against time on ``split`` (all its examples), and one sample's last step."""
        import flax.nnx as nnx
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data = self._evals[split]
        graphdef, state = nnx.split(model)

        @jax.jit
        def errors(state, x, y):
            m = nnx.merge(graphdef, state, copy=True)
            pred = self.predict(m, {"x": x, "y": y})
            return _per_step_relative_l2(pred, y, self.n_fields), pred[0]

        chunk, per_step, first = 8, [], None
        for lo in range(0, data["x"].shape[0], chunk):
            e, p = errors(state, jnp.asarray(data["x"][lo:lo + chunk]), jnp.asarray(data["y"][lo:lo + chunk]))
            per_step.append(np.asarray(e))
            first = np.asarray(p) if first is None else first
        err = np.concatenate(per_step).mean(0)  # (t_out,)
        times = np.arange(self.t_in + 1, self.t_in + self.t_out + 1)
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        axes[0].plot(times, err, "o-", ms=3)
        axes[0].set_xlabel("time index (snapshot)")
        axes[0].set_ylabel("relative L2 error")
        axes[0].set_title(f"{split}: error against time ({data['x'].shape[0]} samples)")
        axes[0].grid(True, alpha=0.3)
        truth = data["y"][0, ..., -1]
        for ax, (title, field) in zip(axes[1:], [("truth", truth), ("prediction", first[..., -1])]):
            if field.ndim == 2:
                im = ax.imshow(field, origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r")
                fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"sample 0, t = {times[-1]}: {title}")
        fig.tight_layout()
        path = out_dir / f"error_vs_time_{split}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return [path]


class RolloutTask(_TrajectoryTask):
    """Autoregressive rollout: ``model`` maps ``(batch, *grid, t_in * C)`` to the next snapshot ``(batch, *grid, C)``.

    C = ``pde.n_fields`` (1 unless the dataset says otherwise; see the module docstring).

    Args:
      pde: the trajectory dataset (``TrajectoryDataset``, see the module docstring).
      n_train, n_test, n_val: trajectories of its train / test / validation splits (n_val 0: none; with a
        validation split the objective is ``rel_l2`` on it).
      t_in: snapshots given as input (the paper: 10).
      t_out: steps rolled out and scored (None: every remaining snapshot; the paper: T - 10).
      train_resolution, test_resolutions: grids trained at and evaluated at (zero-shot at the others).
    """

    def __init__(self, pde: Any, n_train: int = 1000, n_test: int = 200, t_in: int = 10,
                 t_out: int | None = None, train_resolution: int = 64, test_resolutions: Sequence[int] = (),
                 n_val: int = 0):
        super().__init__(pde, n_train, n_test, t_in, t_out, train_resolution, test_resolutions, n_val)

    def model_settings(self) -> dict[str, int]:
        return {"in_channels": self.t_in * self.n_fields, "out_channels": self.n_fields,
                "spatial_dims": len(self.grids[self.train_resolution])}

    def check_model(self, model, batch_size: int) -> None:
        example = self.example_batch(batch_size)
        out = eval_shape_or_error(model, example["x"])
        want = (*example["x"].shape[:-1], self.n_fields)
        if out.shape != want:
            raise UserInputError(f"the rollout model must map the last t_in={self.t_in} snapshots "
                                 f"{example['x'].shape} to the next one {want}; it gives {out.shape}. Set "
                                 f"model.in_channels={self.t_in * self.n_fields} and "
                                 f"model.out_channels={self.n_fields}")

    def predict(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        c = self.n_fields

        def step(window, _):
            nxt = model(window)  # (batch, *grid, C)
            return jnp.concatenate([window[..., c:], nxt], axis=-1), nxt

        _, preds = jax.lax.scan(step, batch["x"], None, length=self.t_out)  # (t_out, batch, *grid, C)
        preds = jnp.moveaxis(preds, 0, -2)  # (batch, *grid, t_out, C)
        return preds.reshape(*preds.shape[:-2], self.t_out * c)  # (batch, *grid, t_out * C), time-major

    def loss(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        """Sum over the rolled-out steps of the per-step relative L2, averaged over the batch."""
        steps = _per_step_relative_l2(self.predict(model, batch), batch["y"], self.n_fields)
        return jnp.mean(jnp.sum(steps, axis=1))


class SpaceTimeTask(_TrajectoryTask):
    """All future steps at once: ``model`` maps ``(batch, *grid, t_out, t_in)`` to ``(batch, *grid, t_out, 1)``.

    Arguments as ``RolloutTask``; ``normalizer`` ("pointwise", "global", "none") normalises the input
    window and the targets with training-set statistics (the reference: pointwise), the model predicts
    normalised targets, decoded before the loss.
    """

    def __init__(self, pde: Any, n_train: int = 1000, n_test: int = 200, t_in: int = 10,
                 t_out: int | None = None, train_resolution: int = 64, test_resolutions: Sequence[int] = (),
                 normalizer: str = "pointwise", n_val: int = 0):
        if normalizer not in ("pointwise", "global", "none"):
            raise UserInputError(f"data.normalizer={normalizer!r} is unknown; choose pointwise, global or none")
        super().__init__(pde, n_train, n_test, t_in, t_out, train_resolution, test_resolutions, n_val)
        if self.n_fields != 1:
            raise UserInputError(f"the space-time task takes one field per snapshot; data.pde has "
                                 f"{self.n_fields} (n_fields). Use the rollout task, or select one field")
        self.normalizer = GaussianNormalizer(normalizer)
        self._stats: dict[tuple, tuple[jax.Array, ...]] = {}

    def _fit_normalizers(self) -> None:
        # Statistics at every evaluated grid, from the training windows sampled at that grid.
        for s, windows in self._train_windows.items():
            stats = (*self.normalizer.fit(windows["x"]), *self.normalizer.fit(windows["y"]))
            self._stats[self.grids[s]] = tuple(jnp.asarray(a) for a in stats)

    def model_input(self, x: jax.Array) -> jax.Array:
        """(batch, *grid, t_in) raw window -> (batch, *grid, t_out, t_in) normalised and repeated in time."""
        x_mean, x_std = self._stats[tuple(x.shape[1:-1])][:2]
        x = (x - x_mean) / x_std
        return jnp.broadcast_to(x[..., None, :], (*x.shape[:-1], self.t_out, self.t_in))

    def model_settings(self) -> dict[str, int]:
        return {"in_channels": self.t_in, "out_channels": 1,
                "spatial_dims": len(self.grids[self.train_resolution]) + 1}

    def check_model(self, model, batch_size: int) -> None:
        example = self.example_batch(batch_size)
        grid = example["x"].shape[1:-1]
        x = jax.ShapeDtypeStruct((batch_size, *grid, self.t_out, self.t_in), jnp.float32)
        out = eval_shape_or_error(model, x)
        want = (batch_size, *grid, self.t_out, 1)
        if out.shape != want:
            raise UserInputError(f"the space-time model must map {x.shape} (t_in={self.t_in} snapshots "
                                 f"repeated over t_out={self.t_out} times) to {want}; it gives {out.shape}. "
                                 f"Use a 3-D model (e.g. model.modes=[8,8,8]) with model.in_channels="
                                 f"{self.t_in} and model.out_channels=1")

    def predict(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        y_mean, y_std = self._stats[tuple(batch["x"].shape[1:-1])][2:]
        return model(self.model_input(batch["x"]))[..., 0] * y_std + y_mean  # (batch, *grid, t_out)

    def loss(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        return relative_lp(self.predict(model, batch), batch["y"])
