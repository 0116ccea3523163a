"""Convergent graph solvers against a stacked GNN (Park, Choo, Park, ICLR 2022, Sec. 6.1-6.2): pore-network
Stokes flow and graph value iteration, both generated here (``experiments/data/graphs.py``).

The paper's numbers (arXiv 2106.01680, Tables 1-2: porous-network MSE by size, GVI MAPE and policy
accuracy) could not be retrieved (neither a readable copy of the paper nor Junyoungpark/CGS, whose
README and history hold no results, carries them), so every row is *measured*: one per run
directory given (a Hydra multirun directory stands for all its jobs), read from ``results.json``
and ``.hydra/config.yaml``:

* pore networks: the per-graph MSE of p / p_max on the test split (50-200 pores, as training) and on
  ``test_large`` (200-500 pores) when the run has it;
* graph value iteration: the MAPE of the values (%) and the policy accuracy (%) on the test split;
* parameters, training time and seconds per step (the run's own ``cost``).

Unless ``--no-timing``, each run's model is restored from its last checkpoint and timed on one batch of
its test split (the run's batch size; after compilation, best of ``--repeats``, synchronised with
``block_until_ready``): the forward pass, and the forward + backward pass of the training loss. For
CGS the table also gives the number of fixed-point iterations the trained model takes on that batch
(forward, from ``CGS.solve``; the backward solves its adjoint system with the same iteration), beside
the GNN's depth: CGS's depth is chosen by the contraction (<= log(tol/||b||)/log(gamma) + 1), the
GNN's is fixed.

    python -m experiments.train experiment=cgs_porenet    # and gnn_porenet, cgs_gvi, gnn_gvi
    python -m experiments.table cgs RUN_DIR [RUN_DIR ...]
"""
from __future__ import annotations

import argparse
import functools
import pathlib
import time
from typing import Any

from experiments.errors import UserInputError
from experiments.load import load_run
from experiments.tables.figures import bar_chart
from experiments.tables.formatting import format_count, format_metric, format_seconds
from experiments.tables.output import Table, markdown_table
from experiments.tables.runs import Run, read_runs

TASKS = {"GraphValueIteration": "gvi", "PoreNetwork": "porenet"}
MODELS = {"CGS": "CGS", "GNN": "GNN"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="runs of experiment=cgs_gvi / gnn_gvi / cgs_porenet / gnn_porenet (or data=gvi / "
                             "data=porenet with model=cgs / gnn)")
    parser.add_argument("--no-timing", action="store_true",
                        help="do not restore the models to count iterations and time them")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (the best is kept)")


def task_of(run: Run) -> str:
    target = str(run.config_value("data.dataset._target_", "")).rsplit(".", 1)[-1]
    if target not in TASKS:
        raise UserInputError(f"{run.label}: not a graph run (data.dataset._target_ is "
                             f"{run.config_value('data.dataset._target_', None)!r}); give runs of "
                             f"experiment=cgs_gvi, gnn_gvi, cgs_porenet or gnn_porenet")
    return TASKS[target]


def model_of(run: Run) -> str:
    target = str(run.config_value("model._target_", "")).rsplit(".", 1)[-1]
    return MODELS.get(target, target or "?")


def restore(run: Run):
    """``(model, task, batch_size)`` of a finished run: the model in its last checkpoint's state, the task
    set up (its data comes from the cache, or is generated again)."""
    cfg = run.config
    if cfg is None:
        raise UserInputError(f"{run.label}: no readable .hydra/config.yaml ({run.config_error})")
    trained = load_run(run.path, missing="train it first, or pass --no-timing")
    return trained.model, trained.task, int(cfg.trainer.batch_size)


def _best_time(fn, args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))                     # compile and warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def measure(run: Run, repeats: int) -> dict:
    """Forward / forward+backward seconds on one test batch, CGS's iteration count, the GNN's depth."""
    import flax.nnx as nnx
    import jax

    from experiments.tasks.graph import MODEL_INPUTS

    model, task, batch_size = restore(run)
    batch, _ = next(task.eval_batches("test", batch_size))
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda st, b: nnx.merge(graphdef, st)(*(b[k] for k in MODEL_INPUTS)))
    grad = jax.jit(jax.grad(lambda st, b: task.loss(nnx.merge(graphdef, st), b)))
    out = {"forward_s": _best_time(forward, (state, batch), repeats),
           "backward_s": _best_time(grad, (state, batch), repeats)}
    if hasattr(model, "solve") and getattr(model, "solver", None) == "iterative":
        solve = jax.jit(lambda st, b: nnx.merge(graphdef, st).solve(*(b[k] for k in MODEL_INPUTS))[1])
        out["iterations"] = int(solve(state, batch))
        out["depth"] = f"{out['iterations']} iterations (max {model.max_iter}, tol {model.tol:g})"
    elif hasattr(model, "n_layers"):
        out["depth"] = f"{model.n_layers} layers"
    return out


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def collect(runs: list[Run], timings: list[dict] | None = None) -> list[dict[str, Any]]:
    """One record per run (its task, model, test metrics and cost), with its ``measure`` in ``timings``
    (per run, ``{}`` for none; ``None``: not timed)."""
    records = []
    for run, timing in zip(runs, timings if timings is not None else [{}] * len(runs)):
        task = task_of(run)
        record = {"task": task, "model": model_of(run), "run": run.label, "params": run.n_params,
                  "steps": run.step, "train_s": run.cost("train_seconds"), "s_per_step": run.cost("seconds_per_step"),
                  "status": run.status}
        if task == "gvi":
            record["mape"] = run.metric("test", "mape")
            record["policy_accuracy"] = _pct(run.metric("test", "policy_accuracy"))
        else:
            record["mse"] = run.metric("test", "mse")
            record["mse_large"] = run.metric("test_large", "mse")
        record.update(timing)
        records.append(record)
    return records


COST_HEADER = ["params", "iterations / depth", "forward ms", "fwd+bwd ms", "steps", "train time", "s / step"]


def _cost_cells(r: dict[str, Any]) -> list[str]:
    def ms(s):
        return "" if s is None else f"{1e3 * s:.1f}"

    return [format_count(r["params"]), r.get("depth", ""), ms(r.get("forward_s")), ms(r.get("backward_s")),
            str(r["steps"] or ""), format_seconds(r["train_s"]),
            "" if r["s_per_step"] is None else f"{r['s_per_step']:.3f}"]


def render(records: list[dict[str, Any]]) -> Table:
    """One Markdown table per task (pore networks, graph value iteration), all records in the CSV."""
    lines = []
    pn = [r for r in records if r["task"] == "porenet"]
    if pn:
        lines += ["### Pore-network Stokes flow: MSE of p / p_max per graph (test: 50-200 pores, large: 200-500)", "",
                  markdown_table(["model", "test MSE", "large MSE", *COST_HEADER, "run"],
                                 [[r["model"], format_metric(r["mse"]), format_metric(r["mse_large"]), *_cost_cells(r),
                                   r["run"]] for r in pn]), ""]
    gvi = [r for r in records if r["task"] == "gvi"]
    if gvi:
        lines += ["### Graph value iteration: MAPE of the values and policy accuracy (test)", "",
                  markdown_table(["model", "MAPE %", "policy acc. %", *COST_HEADER, "run"],
                                 [[r["model"], format_metric(r["mape"]),
                                   "" if r["policy_accuracy"] is None else f"{r['policy_accuracy']:.2f}",
                                   *_cost_cells(r), r["run"]] for r in gvi]), ""]
    lines.append("All rows measured here (the paper's tables were not retrievable). Timings: one test batch of the "
                 "run's batch size on this machine, after compilation, best of repeats; \"fwd+bwd\" is the "
                 "gradient of the training loss. CGS's iteration count is the forward fixed-point iteration "
                 "on that batch; the GNN's depth is its number of message-passing layers.")
    columns = ["task", "model", "run", "mse", "mse_large", "mape", "policy_accuracy", "params", "depth",
               "iterations", "forward_s", "backward_s", "steps", "train_s", "s_per_step", "status"]
    return Table(name="cgs", markdown="\n".join(lines), csv_columns=columns, csv_rows=records)


def plot(records: list[dict[str, Any]], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``cgs.png``: each run's test objective (porenet: MSE; gvi: MAPE %)."""
    names = [f"{r['model']} {r['task']}" for r in records]
    objective = [r.get("mse") if r["task"] == "porenet" else r.get("mape") for r in records]
    return [bar_chart(out_dir / "cgs.png", names, [("objective (porenet: test MSE; gvi: MAPE %)", objective, True)],
                      ylabel="test objective (lower is better)", title="CGS vs stacked GNN",
                      note="porenet: MSE of p / p_max; gvi: MAPE %", missing="–")]


def build(args: argparse.Namespace) -> Table:
    runs = read_runs(args.runs)
    for run in runs:
        task_of(run)                      # a run of another task is refused before any model is restored
    timings = None if args.no_timing else [measure(r, args.repeats) if r.status == "ok" else {} for r in runs]
    records = collect(runs, timings)
    return render(records).with_plot(functools.partial(plot, records))
