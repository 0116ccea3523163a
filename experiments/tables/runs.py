"""Run directories as the tables read them: one ``Run`` per directory, a multirun as its jobs.

A *run directory* is a Hydra output directory written by ``python -m experiments.train``::

    <run>/.hydra/config.yaml      the composed config
    <run>/.hydra/overrides.yaml   the command-line overrides, a YAML list of "key=value" strings
    <run>/results.json            objective, metrics per split, n_params, step, epochs, cost
                                  (absent while a run is unfinished or after it failed)

A *multirun directory* holds ``multirun.yaml`` and one run directory per job: ``0/``, ``1/``, ...

Reading is tolerant: a missing optional key gives ``None`` (an empty cell), a metric stored as the
string ``"nan"`` or ``"inf"`` reads as that float. Bad user input (a directory that does not exist)
raises ``UserInputError``, which ``python -m experiments.table`` prints on one line (exit status 2).
The tables that need a trained model (the LPN tables) make their run through the runner
(``train_run``) and restore it (``load_trained``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import subprocess
import sys
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.errors import UserInputError
from experiments.load import load_run

ABSENT = object()  # the default of Run.config_value: the key is not in the config


def as_float(value: Any) -> float | None:
    """A metric value as a float: numbers as they are, strings such as ``"nan"``/``"inf"``/``"1e-3"``
    parsed; ``None`` for anything else (missing, a bool, a dict)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclasses.dataclass
class Run:
    """One run directory, read once. ``results`` is ``None`` when results.json is absent or unreadable
    (``status`` then says which); ``config`` is ``None`` when .hydra/config.yaml is (``config_error``)."""

    path: pathlib.Path
    label: str                        # the path as the user gave it (shown in tables)
    results: dict | None
    status: str                       # "ok", "no results.json" or "unreadable results.json (...)"
    config: DictConfig | None
    config_error: str | None
    overrides: list[str]

    # results.json -------------------------------------------------------------------------------

    def metric(self, split: str, name: str) -> float | None:
        """``metrics[split][name]`` as a float (``None`` if absent)."""
        split_metrics = ((self.results or {}).get("metrics") or {}).get(split)
        return as_float(split_metrics.get(name)) if isinstance(split_metrics, dict) else None

    def split_metrics(self, split: str) -> dict[str, float | None]:
        """All metrics of one split, in the order results.json lists them."""
        split_metrics = ((self.results or {}).get("metrics") or {}).get(split)
        if not isinstance(split_metrics, dict):
            return {}
        return {name: as_float(v) for name, v in split_metrics.items()}

    @property
    def splits(self) -> list[str]:
        metrics = (self.results or {}).get("metrics")
        return list(metrics) if isinstance(metrics, dict) else []

    @property
    def objective(self) -> dict | None:
        """``{"split", "metric", "mode", "value"}`` with ``value`` a float or ``None``; ``None`` when
        results.json has no usable objective. A missing value falls back to ``metrics[split][metric]``."""
        obj = (self.results or {}).get("objective")
        if not isinstance(obj, dict) or "split" not in obj or "metric" not in obj:
            return None
        value = as_float(obj.get("value"))
        if value is None:
            value = self.metric(obj["split"], obj["metric"])
        mode = obj.get("mode", "min")
        return {"split": str(obj["split"]), "metric": str(obj["metric"]),
                "mode": mode if mode in ("min", "max") else "min", "value": value}

    @property
    def n_params(self) -> int | None:
        n = (self.results or {}).get("n_params")
        return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None

    @property
    def epochs(self) -> float | None:
        return as_float((self.results or {}).get("epochs"))

    @property
    def step(self) -> int | None:
        s = as_float((self.results or {}).get("step"))
        return int(s) if is_finite(s) else None

    def cost(self, key: str) -> Any:
        """``cost[key]`` of results.json, or ``None``."""
        cost = (self.results or {}).get("cost")
        return cost.get(key) if isinstance(cost, dict) else None

    # .hydra/config.yaml -------------------------------------------------------------------------

    def config_value(self, key: str, default: Any = ABSENT) -> Any:
        """The config value at the dotted ``key`` (lists and dicts as plain Python containers), or
        ``default`` when the config, the key or its interpolation is missing."""
        if self.config is None:
            return default
        value = OmegaConf.select(self.config, key, default=ABSENT, throw_on_resolution_failure=False)
        if value is ABSENT:
            return default
        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=False)
        return value


def read_run(path: str | pathlib.Path, label: str | None = None) -> Run:
    """Read one run directory (which must exist) without failing on missing or broken files."""
    path = pathlib.Path(path)
    results, status = None, "no results.json"
    results_path = path / "results.json"
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text())
            if not isinstance(results, dict):
                raise ValueError("not a JSON object")
            status = "ok"
        except (ValueError, OSError) as e:
            results, status = None, f"unreadable results.json ({type(e).__name__})"
    config, config_error = None, "config not found"
    config_path = path / ".hydra" / "config.yaml"
    if config_path.is_file():
        try:
            loaded = OmegaConf.load(config_path)
            if isinstance(loaded, DictConfig):
                config, config_error = loaded, None
            else:
                config_error = "config is not a mapping"
        except Exception as e:  # noqa: BLE001 -- any YAML/OmegaConf error means "unreadable"
            config_error = f"unreadable config ({type(e).__name__})"
    overrides: list[str] = []
    overrides_path = path / ".hydra" / "overrides.yaml"
    if overrides_path.is_file():
        try:
            loaded = OmegaConf.to_container(OmegaConf.load(overrides_path))
            overrides = [str(o) for o in loaded] if isinstance(loaded, list) else []
        except Exception:  # noqa: BLE001 -- an unreadable overrides file reads as no overrides
            overrides = []
    return Run(path=path, label=label if label is not None else str(path), results=results,
               status=status, config=config, config_error=config_error, overrides=overrides)


def job_dirs(multirun: pathlib.Path) -> list[pathlib.Path]:
    """The numbered job subdirectories ``0/, 1/, ...`` of a Hydra multirun directory, in job order."""
    if not multirun.is_dir():
        return []
    jobs = [p for p in multirun.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def is_run_dir(path: pathlib.Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "results.json").is_file()


def existing_dir(path: str | pathlib.Path, what: str) -> pathlib.Path:
    """``path`` as a Path, or a UserInputError naming it when it is not a directory."""
    p = pathlib.Path(path)
    if not p.exists():
        raise UserInputError(f"{what} {str(path)!r} does not exist")
    if not p.is_dir():
        raise UserInputError(f"{what} {str(path)!r} is not a directory")
    return p


def read_runs(paths: Iterable[str]) -> list[Run]:
    """Run directories given on the command line; a multirun directory stands for all its jobs."""
    runs = []
    for given in paths:
        p = existing_dir(given, "run directory")
        if is_run_dir(p):
            runs.append(read_run(p, label=given))
        elif jobs := job_dirs(p):
            runs.extend(read_run(j, label=str(pathlib.Path(given) / j.name)) for j in jobs)
        else:
            raise UserInputError(f"{given!r} is not a run directory (no .hydra/ or results.json) nor a "
                                 f"Hydra multirun directory (no job subdirectories 0/, 1/, ...)")
    return runs


# --------------------------------------------------------------------------------------------------
# Trained runs


def train_run(experiment: str, overrides: list[str], run_dir: pathlib.Path) -> pathlib.Path:
    """``python -m experiments.train experiment=<experiment> <overrides>`` into ``run_dir`` (a subprocess)."""
    cmd = [sys.executable, "-m", "experiments.train", f"experiment={experiment}", *overrides,
           f"hydra.run.dir={run_dir}", "trainer.progress=false"]
    print("running:", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise UserInputError(f"training failed (exit {done.returncode}): {' '.join(cmd[1:])}\n"
                             f"{done.stdout[-3000:]}")
    return run_dir


def load_trained(run_dir: str | pathlib.Path) -> tuple[Any, Any, Any]:
    """``(config, model, task)`` of a run directory: the model in its latest checkpoint's state; the task
    is not set up (no data generated). See ``experiments.load.load_run``."""
    run = load_run(run_dir, missing="train it first (or rerun its command to finish it)")
    return run.cfg, run.model, run.bare_task
