"""The LRA release's ListOps TSV files and Pathfinder image folders, read as the task sees them.

Files are written here in the published layouts from our own generated data: ListOps as
``lra_benchmarks/data/listops.py`` ``write_to_file`` writes them (``csv.writer``, tab delimiter, the
header ``Source, Target``, rows of LRA's bracketed text and the value); Pathfinder as
``drewlinsley/pathfinder: snakes2.py`` saves its images (``PIL.Image.fromarray(...).save``) with the
release's text metadata rows (``imgs/<batch> sample_<i>.png <i> <label> <settings...>``, read by the
LRA TFDS builder and the S4 loader), plus one ``np.save``d metadata file as ``snakes.save_metadata``
writes it. Oracle: the generator's own arrays, which the reader must give back bit for bit.
"""
from __future__ import annotations

import pathlib
import shutil

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments.build import build_task
from experiments.config import compose
from experiments.data.listops import EOS, ListOps
from experiments.data.pathfinder import Pathfinder, pathfinder_folder_samples
from experiments.errors import UserInputError
from experiments.trainer import Trainer, TrainerConfig
from optim import adam

from published_layouts import write_listops_release

LISTOPS = dict(min_length=10, max_length=80, seed=2)
SPLIT_SIZES = {"train": 24, "val": 6, "test": 6}


@pytest.fixture(scope="module")
def listops(tmp_path_factory):
    """(generated splits, release folder written from them)."""
    root = tmp_path_factory.mktemp("listops")
    ds = ListOps(n_train=SPLIT_SIZES["train"], n_val=SPLIT_SIZES["val"], n_test=SPLIT_SIZES["test"], **LISTOPS,
                 cache_dir=str(root / "cache"))
    data = ds.load(progress=False)
    write_listops_release(root / "listops-1000", data)
    return data, root / "listops-1000"


def test_listops_release_reads_back_as_the_generated_arrays(listops):
    data, folder = listops
    assert (folder / "basic_train.tsv").read_bytes().startswith(b"Source\tTarget\r\n( ( (")
    read = ListOps(n_train=None, n_val=None, n_test=None, max_length=LISTOPS["max_length"], path=str(folder)).load()
    for split in ("train", "val", "test"):
        assert read[split]["inputs"].dtype == data[split]["inputs"].dtype
        assert np.array_equal(read[split]["inputs"], data[split]["inputs"]), split
        assert np.array_equal(read[split]["label"], data[split]["label"]), split
    first = ListOps(n_train=5, n_val=2, n_test=6, max_length=LISTOPS["max_length"], path=str(folder)).load()
    assert np.array_equal(first["train"]["inputs"], data["train"]["inputs"][:5])
    assert np.array_equal(first["val"]["label"], data["val"]["label"][:2])


class PooledEmbedding(nnx.Module):
    """Tokens -> masked mean of their embeddings -> logits. A stand-in model with NumPy-drawn weights (no
    initialiser to compile), so that one training step costs little more than its own compilation."""

    def __init__(self, vocab: int, classes: int, width: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.table = nnx.Param(jnp.asarray(rng.normal(size=(vocab, width)).astype(np.float32)))
        self.head = nnx.Param(jnp.asarray(rng.normal(size=(width, classes)).astype(np.float32)))

    def __call__(self, x, mask):
        w = mask[..., None].astype(jnp.float32)                                  # (B, L, 1)
        pooled = (self.table[...][x] * w).sum(1) / w.sum(1)                      # (B, width)
        return pooled @ self.head[...]                                           # (B, classes)


def test_listops_path_through_the_config_and_one_training_step(listops, tmp_path):
    data, folder = listops
    overrides = ["data=listops", f"data.dataset.path={folder}", "data.dataset.n_train=null", "data.dataset.n_val=null",
                 "data.dataset.n_test=null", "data.dataset.max_length=80", "data.dataset.seq_len=96"]
    task = build_task(compose(overrides))
    task.setup(progress=False)
    assert task.dataset.seq_len == 96
    padded = np.zeros((SPLIT_SIZES["test"], 96), np.uint8)
    padded[:, :80] = data["test"]["inputs"]
    assert np.array_equal(task.evals["test"]["inputs"], padded)
    batch, valid = next(task.eval_batches("test", 8))
    assert valid.sum() == SPLIT_SIZES["test"] and batch["inputs"].dtype == np.int32
    assert np.array_equal(batch["mask"][valid], padded != 0)
    assert (batch["inputs"][valid][batch["mask"][valid]] != 0).all()
    assert (padded == EOS).sum() == SPLIT_SIZES["test"]
    cfg = TrainerConfig(max_steps=1, batch_size=8, devices=1, progress=False, plots=False)
    results = Trainer(cfg, tmp_path).fit(PooledEmbedding(18, 10), lambda spe, total: adam(1e-2), task)
    assert results["objective"]["split"] == "val" and 0 <= results["objective"]["value"] <= 1


def test_listops_release_errors_name_the_file_and_line(listops, tmp_path):
    _, folder = listops
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)

    def read(**kw):
        return ListOps(n_train=None, n_val=None, n_test=None, max_length=80, path=str(bad), **kw).load()

    (bad / "basic_val.tsv").unlink()
    with pytest.raises(UserInputError, match=r"lacks basic_val.tsv .*holds \['basic_test.tsv', 'basic_train.tsv'\]"):
        read()
    shutil.copy(folder / "basic_val.tsv", bad / "basic_val.tsv")
    lines = (folder / "basic_test.tsv").read_text().splitlines()
    for row, message in [("( ( [MAX 2 ) ] )\t12", "line 3: Target must be a digit"),
                         ("( ( [MAX 2 ) ] )", "line 3: expected 2 tab-separated fields"),
                         ("( ( [MAX 2 ) ] ) ( [FIRST 3 ) ] )\t2", "line 3: '\\[FIRST' is not a ListOps token")]:
        (bad / "basic_test.tsv").write_text("\n".join([*lines[:2], row, *lines[3:]]) + "\n")
        with pytest.raises(UserInputError, match=f"basic_test.tsv, {message}"):
            read()
    (bad / "basic_test.tsv").write_text("\n".join(["Input\tLabel", *lines[1:]]) + "\n")
    with pytest.raises(UserInputError, match="basic_test.tsv, line 1: expected the header"):
        read()
    shutil.copy(folder / "basic_test.tsv", bad / "basic_test.tsv")
    with pytest.raises(UserInputError, match=r"seq_len=12 holds at most 11 plus <eos>; set data.dataset.seq_len="):
        read(seq_len=12)
    with pytest.raises(UserInputError, match="basic_val.tsv has 6 rows, fewer than n_val=7"):
        ListOps(n_train=None, n_val=7, n_test=None, max_length=80, path=str(bad)).load()
    with pytest.raises(UserInputError, match="applies only with data.dataset.path"):
        ListOps(n_train=None)
    with pytest.raises(UserInputError, match="is not a folder"):
        ListOps(path=str(tmp_path / "nowhere")).load()


# -- Pathfinder ------------------------------------------------------------------------------------------

METADATA_FILES = ("0", "2", "10")          # S4 reads them in numeric order: 0, 2, 10 (not 0, 10, 2)


def write_pathfinder_release(root: pathlib.Path, images: np.ndarray, labels: np.ndarray) -> pathlib.Path:
    """Images and labels as the release's pathfinder32/curv_contour_length_14 folder, two per metadata
    file in METADATA_FILES order; an empty image file is listed after the others (S4's blacklisted one);
    the metadata of batch 2 is an ``np.save``d array (snakes.save_metadata), the others text."""
    subset = root / "pathfinder32" / "curv_contour_length_14"
    (subset / "metadata").mkdir(parents=True)
    for b, batch in enumerate(METADATA_FILES):
        (subset / "imgs" / batch).mkdir(parents=True)
        rows = []
        for i in range(2):
            k = 2 * b + i
            Image.fromarray(images[k]).save(subset / "imgs" / batch / f"sample_{i}.png")
            rows.append([f"imgs/{batch}", f"sample_{i}.png", str(i), str(labels[k]), "1.0", "14", "4", "2", "0.5",
                         "1", "1"])
        if batch == "10":
            (subset / "imgs" / batch / "sample_2.png").write_bytes(b"")
            rows.append([f"imgs/{batch}", "sample_2.png", "2", "0", "1.0", "14", "4", "2", "0.5", "1", "1"])
        if batch == "2":
            np.save(subset / "metadata" / f"{batch}.npy", np.array(rows))
        else:
            (subset / "metadata" / f"{batch}.npy").write_text("".join(" ".join(r) + "\n" for r in rows))
    return subset


@pytest.fixture(scope="module")
def pathfinder(tmp_path_factory):
    """(images (6, 32, 32) uint8, labels (6,), release folder pathfinder32/ written from them)."""
    root = tmp_path_factory.mktemp("pathfinder")
    data = Pathfinder(n_train=6, n_val=0, n_test=0, seed=1, cache_dir=str(root / "cache")).load(progress=False)
    images = data["train"]["inputs"].reshape(-1, 32, 32)
    labels = data["train"]["label"]
    write_pathfinder_release(root, images, labels)
    return images, labels, root / "pathfinder32"


def test_pathfinder_listing_follows_the_metadata_in_numeric_order(pathfinder):
    images, labels, folder = pathfinder
    samples, empty = pathfinder_folder_samples(folder, "curv_contour_length_14")
    assert empty == 1
    assert [(p.parent.name, p.name) for p, _ in samples] == [(b, f"sample_{i}.png") for b in METADATA_FILES
                                                            for i in range(2)]
    assert [label for _, label in samples] == labels.tolist()
    same, _ = pathfinder_folder_samples(folder / "curv_contour_length_14", "curv_baseline")  # the folder itself
    assert same == samples


def test_pathfinder_release_reads_back_as_the_generated_images(pathfinder):
    images, labels, folder = pathfinder
    task = build_task(compose(["data=pathfinder32", f"data.dataset.path={folder}", "data.dataset.n_train=null",
                               "data.dataset.n_val=1", "data.dataset.n_test=2", "data.dataset.features=tokens"]))
    task.setup(progress=False)
    data = {"train": task.train, **task.evals}
    assert {s: len(v["label"]) for s, v in data.items()} == {"train": 3, "val": 1, "test": 2}
    generated = {(images[k].tobytes(), int(labels[k])) for k in range(6)}
    seen = [(x.reshape(32, 32).tobytes(), int(y)) for v in data.values() for x, y in zip(v["inputs"], v["label"])]
    assert len(seen) == 6 and set(seen) == generated          # the splits partition the listed images
    batch, valid = next(task.eval_batches("test", 2))
    assert valid.all() and batch["inputs"].dtype == np.int32 and batch["inputs"].shape == (2, 1024)
    assert any(np.array_equal(batch["inputs"][0].reshape(32, 32), im) for im in images)
    fewer = Pathfinder(n_train=1, n_val=1, n_test=2, seed=0, path=str(folder)).load(progress=False)
    assert np.array_equal(fewer["test"]["inputs"], data["test"]["inputs"])    # eval images fixed by seed alone


def test_pathfinder_release_errors_name_the_file_and_line(pathfinder, tmp_path):
    _, _, folder = pathfinder
    bad = tmp_path / "pathfinder32"
    shutil.copytree(folder, bad)
    subset = bad / "curv_contour_length_14"

    def read(**kw):
        return Pathfinder(**{"n_train": None, "n_val": None, "n_test": None, "path": str(bad), **kw}).load(False)

    with pytest.raises(UserInputError, match=r"subset='curv_baseline'.*holds \['curv_contour_length_14'\]"):
        read(subset="curv_baseline")
    text = (subset / "metadata" / "0.npy").read_text().splitlines()
    for line, message in [("imgs/0 sample_0.png 0", "line 2: expected at least 4 fields"),
                          ("imgs/0 sample_0.png 0 yes 1.0", "line 2: the label .* must be 0 or 1, found 'yes'"),
                          ("imgs/0 sample_9.png 0 1 1.0", r"line 2 names .*sample_9.png, which does not exist; "
                                                          r".*holds \['sample_0.png', 'sample_1.png'\]")]:
        (subset / "metadata" / "0.npy").write_text("\n".join([text[0], line]) + "\n")
        with pytest.raises(UserInputError, match=f"metadata/0.npy, {message}"):
            read()
    (subset / "metadata" / "0.npy").write_text("\n".join(text) + "\n")
    with pytest.raises(UserInputError, match="lists 6 non-empty images, too few for n_train=5"):
        read(n_train=5, n_val=1, n_test=1)
    with pytest.raises(UserInputError, match="sample_0.png is 32 x 32 pixels, not window_size=64"):
        read(window_size=64, seed_distance=7)
    (subset / "imgs" / "0" / "sample_1.png").write_bytes(b"not a png")
    with pytest.raises(UserInputError, match="sample_1.png: not a readable image"):
        read()
    shutil.rmtree(subset / "metadata")
    with pytest.raises(UserInputError, match=r"neither metadata/ nor .*holds \['imgs'\]"):
        read(path=str(subset))
    with pytest.raises(UserInputError, match="applies only with data.dataset.path"):
        Pathfinder(n_test=None)
