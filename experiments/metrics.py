"""Metrics: reducible means, the training-loss buffer, and the JSON-lines log of a run.

* ``Mean``: what ``Task.metrics`` returns for each metric: per-example sums and counts, so that a
  split's value is ``sum(total) / sum(count)`` over all its examples. A per-example relative error is
  ``Mean(err)`` (count 1 each); a token accuracy is ``Mean(correct.sum(-1), mask.sum(-1))``, which
  averages over real tokens, not over examples or batches, whatever the batch size or padding.
* ``LossBuffer``: the step's loss and gradient norm stay on the device, fetched once per log interval.
* ``MetricsLog``: one JSON object per line, ``{"step": ..., "loss": ..., "grad_norm": ...}`` or
  ``{"step": ..., "split": ..., <metric>: ...}``; optionally mirrored to TensorBoard event files
  (``trainer.tensorboard=true``: ``<run_dir>/tensorboard/``, written by tensorboardX's
  ``SummaryWriter``; view with ``tensorboard --logdir <run_dir>/tensorboard``).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.errors import NonFiniteLossError


class Mean(NamedTuple):
    """A metric whose value over a split is ``sum(total) / sum(count)``.

    ``total``: per-example sums, shape ``(batch,)``; ``count``: per-example weights, shape ``(batch,)``
    or a scalar (the same for every example; default 1). The runner masks padded examples out of
    both and adds them up over the split.
    """

    total: jax.Array
    count: jax.Array | float = 1.0


def masked_sums(metrics: Mapping[str, Mean | jax.Array], valid: jax.Array) -> dict[str, jax.Array]:
    """``{name: [sum(total * valid), sum(count * valid)]}`` of one batch (traced inside ``jit``).

    A plain array in ``metrics`` is read as ``Mean(array)``. ``valid``: ``(batch,)``, 0 for padding.
    """
    out = {}
    for name, m in metrics.items():
        m = m if isinstance(m, Mean) else Mean(m)
        total = jnp.asarray(m.total, jnp.float32)
        if total.shape != valid.shape:
            raise ValueError(f"Task.metrics must give per-example values of shape {valid.shape} (one per "
                             f"example of the batch); metric {name!r} has shape {total.shape}")
        count = jnp.broadcast_to(jnp.asarray(m.count, jnp.float32), total.shape)
        w = valid.astype(jnp.float32)
        out[name] = jnp.stack([jnp.sum(total * w), jnp.sum(count * w)])
    return out


def finish_means(sums: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``{name: total / count}`` from accumulated ``[total, count]`` pairs (NaN where count is 0)."""
    return {k: float(v[0] / v[1]) if v[1] else float("nan") for k, v in sums.items()}


class LossBuffer:
    """The training step's scalars (loss, gradient norm) since the last log, kept on the device;
    ``flush`` fetches them in one sync.

    ``flush`` raises ``NonFiniteLossError`` if any of them is NaN or infinite (the message ends with
    ``where_saved()``, which says what checkpoint is left), else returns the log row: the mean of each
    scalar and the training throughput since the previous flush.
    """

    def __init__(self, batch_size: int, steps_per_epoch: int, where_saved: Callable[[], str]):
        self.batch_size, self.steps_per_epoch, self.where_saved = batch_size, steps_per_epoch, where_saved
        self._pending: list[tuple[int, dict[str, jax.Array]]] = []
        self._since = time.perf_counter()

    def add(self, step: int, scalars: Mapping[str, jax.Array]) -> None:
        self._pending.append((step, dict(scalars)))

    def restart_clock(self) -> None:
        self._since = time.perf_counter()

    def flush(self, step: int) -> dict[str, float] | None:
        if not self._pending:
            return None
        fetched = jax.device_get([scalars for _, scalars in self._pending])
        values = {k: np.asarray([f[k] for f in fetched], np.float64) for k in fetched[0]}
        for name in sorted(values, key=lambda k: k != "loss"):  # the loss first: the message users expect
            v = values[name]
            bad = ~np.isfinite(v)
            if bad.any():
                first = self._pending[int(np.argmax(bad))][0]
                what = {"loss": "training loss", "grad_norm": "gradient norm"}.get(name, name)
                raise NonFiniteLossError(
                    f"the {what} became {v[bad][0]} at step {first}. Training stopped; {self.where_saved()} "
                    f"(nothing was saved after it went bad). Lower the learning rate (schedule.value) or "
                    f"check the data normalisation, and start a new run directory.")
        elapsed = max(time.perf_counter() - self._since, 1e-9)
        row = {"step": step, "epoch": step / self.steps_per_epoch,
               **{k: float(v.mean()) for k, v in values.items()},
               "samples_per_s": len(fetched) * self.batch_size / elapsed}
        self._pending.clear()
        self._since = time.perf_counter()
        return row


def _clean(value: Any) -> Any:
    """JSON-safe scalar: numpy/jax scalars to Python, non-finite floats to strings ("nan", "inf")."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Append-only JSONL file. On resume, rows past the restored step are dropped (they are redone).

    ``enabled=False`` (processes other than 0 of a multi-process run) writes nothing.
    ``tensorboard``: a directory for TensorBoard event files mirroring every numeric value of every
    row, tagged ``train/<key>`` for training rows and ``<split>/<key>`` for evaluations. On resume the
    events past the restored step are purged as the JSONL rows are (tensorboardX's ``purge_step``).
    """

    def __init__(self, path: str | pathlib.Path, resume_step: int | None = None, enabled: bool = True,
                 tensorboard: str | pathlib.Path | None = None):
        self.path = pathlib.Path(path)
        self._file = self._writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run in a directory without checkpoints starts a fresh log
        self._file = open(self.path, "a", buffering=1)
        if tensorboard is not None:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(str(tensorboard), purge_step=purge, flush_secs=30)

    def write(self, row: dict[str, Any]) -> None:
        if self._file is None:
            return
        row = {k: _clean(v) for k, v in row.items()}
        self._file.write(json.dumps(row) + "\n")
        if self._writer is not None:
            prefix = row.get("split") or "train"
            for key, value in row.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{prefix}/{key}", value, global_step=row["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl file (a torn last line from a killed run is skipped)."""
    rows = []
    for line in pathlib.Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def iter_series(rows: list[dict[str, Any]], key: str, split: str | None = None) -> Iterator[tuple[int, float]]:
    """(step, value) pairs of ``key`` from training rows (split None) or evaluation rows of ``split``."""
    for r in rows:
        if r.get("split") == split and isinstance(r.get(key), (int, float)):
            yield r["step"], r[key]
