"""Run directories made before a dataset class moved still resume and restore.

The fingerprints below were computed by the code before the datasets moved to ``experiments/data``
(commit 4867d3b, targets ``operators.pde.darcy.DarcyFlow``, ``operators.pde.burgers.BurgersFlow``,
``experiments.tasks.inverse.DigitImages``); a checkpoint written then carries them, so a rerun of the
same command must compute the same hashes or it refuses to resume ("data changed").
"""
from __future__ import annotations

import pytest

from experiments.build import build_task, run_fingerprint
from experiments.checkpoint import MOVED_TARGETS, renamed_targets
from experiments.config import compose, resolve_target

BEFORE_THE_MOVE = {
    (): {"model": "d8305057201aeae9", "data": "74a6a1454c4073c6"},
    ("data=lpn_digits", "model=lpn_conv"): {"model": "47872360d15d985b", "data": "20ab8f3a3445198e"},
    ("data=burgers",): {"model": "d8305057201aeae9", "data": "823c2c4b5e731262"},
}
SHARED = {"optim": "1298081080decc88", "schedule": "0ffa297d3e6e1679", "param_groups": "44136fa355b3678a",
          "seed": "5feceb66ffc86f38"}


@pytest.mark.parametrize("overrides", sorted(BEFORE_THE_MOVE))
def test_fingerprint_equals_the_one_computed_before_the_move(overrides):
    cfg = compose(list(overrides))
    assert run_fingerprint(cfg, build_task(cfg)) == {**BEFORE_THE_MOVE[overrides], **SHARED}


def test_an_old_saved_config_is_rebuilt_with_the_new_paths():
    old = {"data": {"_target_": "experiments.tasks.pde.OperatorTask",
                    "pde": {"_target_": "operators.pde.darcy.DarcyFlow", "resolution": 17}},
           "list": [{"_target_": "experiments.tasks.inverse.DigitImages"}]}
    new = renamed_targets(old)
    assert new["data"]["pde"]["_target_"] == "experiments.data.darcy.DarcyFlow"
    assert new["list"][0]["_target_"] == "experiments.data.images.DigitImages"
    assert old["data"]["pde"]["_target_"] == "operators.pde.darcy.DarcyFlow"  # a copy, not in place
    for target in MOVED_TARGETS.values():  # every new path exists
        resolve_target(target)
