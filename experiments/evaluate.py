"""``python -m experiments.evaluate RUN_DIR [data=... data.key=value ...] [--name NAME]``.

A trained run evaluated again, possibly on another dataset or at other resolutions (zero-shot), e.g.::

    python -m experiments.evaluate outputs/run data.test_resolutions=[127,255]
    python -m experiments.evaluate outputs/run data=darcy_rough

The overrides are composed onto the run's own: its command-line overrides (``.hydra/overrides.yaml``)
followed by these, through Hydra's compose as ``experiments.config.compose`` does (so a misspelt key
or a wrong type is an error), and the run's config takes the composed ``data`` node; the model, its
checkpoint and everything else stay the run's. Only ``data`` may change (a different model could not
load the checkpoint). The metrics (``experiments.load.Run.evaluate``) are written to
``RUN_DIR/eval_<NAME>.json`` and the sample plots of every split to ``RUN_DIR/plots/eval_<NAME>/``
(``--no-plots``: none); the checkpoints are only read. Bad input is reported on one line
(exit status 2).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserInputError

OVERRIDES_FILE = pathlib.Path(".hydra") / "overrides.yaml"


def check_overrides(overrides: list[str]) -> None:
    """``UserInputError`` for an override that does not parse or that changes anything but ``data``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        raise UserInputError(f"cannot parse the overrides {overrides}: {str(err).splitlines()[0]}") from None
    others = [o.input_line for o in parsed if o.key_or_group != "data" and not o.key_or_group.startswith("data.")]
    if others:
        raise UserInputError(f"experiments.evaluate changes only the data (data=... or data.<key>=...), not "
                             f"{others}; the model and its checkpoint stay the run's")


def data_config(run_dir: pathlib.Path, overrides: list[str]) -> DictConfig:
    """The ``data`` node of the run's command-line overrides followed by ``overrides``, composed."""
    from hydra.errors import HydraException

    from experiments.config import compose

    check_overrides(overrides)
    from experiments.load import EXPORT_OVERRIDES

    saved = next((p for p in (run_dir / OVERRIDES_FILE, run_dir / EXPORT_OVERRIDES) if p.is_file()), None)
    if saved is None:
        raise UserInputError(f"{run_dir} has no {OVERRIDES_FILE} (the overrides it was trained with), so the new "
                             f"ones cannot be composed onto them; evaluate it without overrides")
    try:
        return compose([*OmegaConf.to_container(OmegaConf.load(saved)), *overrides]).data
    except HydraException as err:
        raise UserInputError(f"the overrides {overrides} on top of the run's: {str(err).splitlines()[0]}") from None


def eval_name(overrides: list[str]) -> str:
    """A file-name-safe name of the overrides: ``data.test_resolutions=[9,33]`` -> ``data.test_resolutions-9-33``."""
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", "_".join(overrides)).strip("-")
    return name or "default"


def evaluate(run_dir: pathlib.Path, overrides: list[str], name: str | None = None, plots: bool = True) -> pathlib.Path:
    """Evaluate the run on the composed data and write ``run_dir/eval_<name>.json`` and (``plots``) the
    task's sample plots of every split in ``run_dir/plots/eval_<name>/``; returns the JSON's path."""
    from experiments.load import load_run

    run = load_run(run_dir)
    data = data_config(run_dir, overrides) if overrides else None
    name = name or eval_name(overrides)
    metrics = run.evaluate(data, plots=run_dir / "plots" / f"eval_{name}" if plots else None)
    out = run_dir / f"eval_{name}.json"
    record = {"overrides": overrides, "metrics": metrics,
              "data": OmegaConf.to_container(data if data is not None else run.cfg.data, resolve=True)}
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.split("\n\n")[1])
    p.add_argument("run_dir", type=pathlib.Path, metavar="RUN_DIR")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the data: data=NAME, data.key=value")
    p.add_argument("--name", help="names the output eval_<NAME>.json (default: from the overrides)")
    p.add_argument("--no-plots", action="store_true", help="skip the sample plots (plots/eval_<NAME>/)")
    args = p.parse_args(argv)
    try:
        out = evaluate(args.run_dir, list(args.overrides), args.name, plots=not args.no_plots)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, values in json.loads(out.read_text())["metrics"].items():
        print(f"{split}: " + ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
