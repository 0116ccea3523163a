"""``trainer.tensorboard=true``: the metrics log mirrored to TensorBoard event files (tensorboardX).

The event files are read back here with an independent reader of the TFRecord framing (length,
masked CRC, payload, masked CRC) and tensorboardX's own ``Event`` protobuf, so the test checks what a
TensorBoard process would see: every numeric value of every ``metrics.jsonl`` row at its step, and on
resume a purge marker at the first step redone.
"""
from __future__ import annotations

import pathlib
import struct

import flax.nnx as nnx
from tensorboardX.proto.event_pb2 import Event

from experiments.metrics import MetricsLog, read_metrics
from experiments.trainer import Trainer, TrainerConfig
from optim import adam

from toy_tasks import MLP, ToyRegressionTask


def read_events(directory: pathlib.Path) -> list[Event]:
    """Every event of every events file in ``directory``, in file order."""
    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            events.append(Event.FromString(data[i + 12:i + 12 + length]))
            i += 12 + length + 4
    return events


def scalars(events: list[Event]) -> dict[tuple[str, int], float]:
    return {(v.tag, e.step): v.simple_value for e in events if e.HasField("summary") for v in e.summary.value}


def test_rows_are_mirrored_with_split_prefixes_and_resume_purges(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", tensorboard=tmp_path / "tb")
    log.write({"step": 5, "loss": 0.5, "grad_norm": 2.0, "samples_per_s": 10})
    log.write({"step": 10, "split": "test_s64", "rel_l2": 0.25})
    log.close()
    assert scalars(read_events(tmp_path / "tb")) == {
        ("train/loss", 5): 0.5, ("train/grad_norm", 5): 2.0, ("train/samples_per_s", 5): 10.0,
        ("test_s64/rel_l2", 10): 0.25}
    log = MetricsLog(tmp_path / "metrics.jsonl", resume_step=5, tensorboard=tmp_path / "tb")
    log.close()
    starts = [e.step for e in read_events(tmp_path / "tb")
              if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [6]  # TensorBoard drops the events at steps >= 6 written before the resume


def test_a_training_run_writes_its_metrics_as_events(tmp_path):
    cfg = TrainerConfig(max_steps=4, batch_size=8, log_every=2, ckpt_every=4, devices=1, progress=False,
                        plots=False, tensorboard=True)
    Trainer(cfg, tmp_path, seed=0, identity={"model": "mlp"}).fit(
        MLP(rngs=nnx.Rngs(0)), lambda spe, total: adam(1e-2), ToyRegressionTask())
    events = scalars(read_events(tmp_path / "tensorboard"))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    expected = {(f"{r.get('split') or 'train'}/{k}", r["step"]): float(v) for r in rows
                for k, v in r.items() if k not in ("step", "split") and isinstance(v, (int, float))}
    assert {k for k in expected if k[0] == "train/loss"} == {("train/loss", 2), ("train/loss", 4)}
    assert events.keys() == expected.keys()
    assert all(abs(events[k] - expected[k]) <= 1e-6 * abs(expected[k]) for k in expected)
