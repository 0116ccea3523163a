"""ListOps (Nangia & Bowman 2018) as generated for the Long Range Arena (Tay et al. 2021, ICLR).

A sample is a random expression tree over the operators MIN, MAX, MED (median) and SM (sum modulo
10) applied to 2..max_args arguments, each a digit 0..9 or a nested expression; the label is the
value of the expression, a digit (10 classes). The generator follows
``google-research/long-range-arena: lra_benchmarks/data/listops.py`` with its defaults:

* a node at depth < max_depth (10; the root has depth 1) is an operator with probability
  VALUE_P = 0.25, else a digit drawn uniformly from 0..9; at max_depth it is always a digit;
* an operator takes randint(2, max_args) arguments (both ends included; max_args = 10) and is drawn
  uniformly from the four operators;
* the length of a tree is its number of digits plus 2 per operator (the operator and its closing
  bracket), i.e. its number of tokens; a tree is kept only if min_length < length < max_length
  (500 < length < 2000), strictly;
* trees are deduplicated and the first n_train are the training split, the next n_val the
  validation split, the rest the test split (LRA: 96,000 / 2,000 / 2,000).

MED is ``int(numpy.median(args))``: the mean of the two middle values for an even count, rounded
down. SM is ``sum(args) % 10``. LRA writes a sample as ``( ( ( [MAX 2 ) 9 ) ] )``; the tokenizer of
the S4 / S5 loaders (``state-spaces/s4: src/dataloaders/lra.py``) drops the parentheses, maps ``]``
to ``X`` and splits on spaces, giving ``[MAX 2 9 X``, then appends ``<eos>``. The vocabulary has
their 18 entries, here in a fixed order: ``<pad>`` (0), ``<unk>`` (1), ``<eos>`` (2), the four
operators, ``X`` and the digits. Sequences are padded with ``<pad>`` to ``seq_len`` (default
max_length: every kept tree plus its ``<eos>`` fits), with a mask of the real tokens.

Differences from the LRA script, none of which changes the distribution of the data: the random
stream is NumPy's (seeded, so the data is reproducible; LRA's Python ``random`` was unseeded), an
operator is drawn before its arguments instead of after, a tree is abandoned as soon as it reaches
max_length tokens (it would be rejected anyway), and the kept trees are in generation order (LRA
iterates a Python ``set``, whose order changes from run to run).

Reading the LRA release instead (``path``): the folder ``lra_release/listops-1000/`` holds
``basic_train.tsv``, ``basic_val.tsv`` and ``basic_test.tsv``, written by ``write_to_file`` of
``lra_benchmarks/data/listops.py`` (``csv.writer`` with a tab delimiter, the header row
``Source<TAB>Target``, one expression per row in the bracketed text above and its value) and read by
``lra_benchmarks/listops/input_pipeline.py`` (columns selected by name from the header; "]" -> "X" and
the parentheses removed before a whitespace tokenizer) and by the S4 loader (``basic_{split}.tsv``).
A row becomes exactly the ids the generator gives the same expression (``listops_tokenize``,
``encode``, ``<eos>``, padding to ``seq_len``), so one model config serves both. Every row must fit:
neither LRA (``[:max_length]``, 2000) nor S4 (``l_max`` 2048) truncates a tree of the release, so a
row longer than ``seq_len - 1`` tokens is an error naming the file, the line and the fix.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from experiments.data import check_sizes, progress_bar, token_dtype
from experiments.data.store import DEFAULT_CACHE_DIR, cached_arrays
from experiments.errors import UserInputError

LISTOPS_GENERATOR_VERSION = 1

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "X"                          # the closing bracket "]" after the S4 tokenizer
DIGITS = tuple(str(d) for d in range(10))
SPECIALS = ("<pad>", "<unk>", "<eos>")
VOCAB = SPECIALS + OPERATORS + (END,) + DIGITS   # 18 tokens
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD, UNK, EOS = 0, 1, 2
VALUE_P = 0.25                     # probability that a node above max_depth is an operator
SOURCE_TOKEN_ID = {t: TOKEN_ID[t] for t in OPERATORS + (END,) + DIGITS}   # what a release row may hold
RELEASE_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}

__all__ = ["ListOps", "VOCAB", "decode", "encode", "listops_dataset", "listops_source", "listops_tokenize",
           "generate_tree_tokens", "evaluate_tokens", "pad_trees", "read_listops_release", "read_listops_tsv"]


# -- text formats --------------------------------------------------------------------------------

def listops_tokenize(source: str) -> list[str]:
    """The S4 / S5 loaders' tokenizer: drop "(" and ")", map "]" to "X", split on whitespace."""
    return source.translate({ord("]"): "X", ord("("): None, ord(")"): None}).split()


def listops_source(tokens: Sequence[str]) -> str:
    """The LRA TSV ``Source`` text of a token sequence (inverse of ``listops_tokenize``).

    LRA nests every operator application left-deep: ``[MAX 2 9 ]`` is the tuple
    ``(((OP, 2), 9), END)``, printed ``( ( ( [MAX 2 ) 9 ) ] )``.
    """
    out: list[str] = []

    def node(i: int) -> int:  # writes the subtree starting at tokens[i], returns the index after it
        tok = tokens[i]
        if tok in DIGITS:
            out.append(tok)
            return i + 1
        if tok not in OPERATORS:
            raise ValueError(f"unexpected token {tok!r} at position {i} of a ListOps expression")
        j = i + 1
        n_args = 0
        while tokens[j] != END:
            n_args += 1
            j = _skip(tokens, j)
        # n_args + 1 opening parentheses: one per (partial application, argument) pair and one for END
        out.extend(["("] * (n_args + 1) + [tok])
        j = i + 1
        for _ in range(n_args):
            j = node(j)
            out.append(")")
        out.extend(["]", ")"])
        return j + 1

    end = node(0)
    if end != len(tokens):
        raise ValueError(f"trailing tokens after a complete ListOps expression: {list(tokens[end:])}")
    return " ".join(out)


def _skip(tokens: Sequence[str], i: int) -> int:
    """Index just after the subtree starting at ``tokens[i]``."""
    depth = 0
    while True:
        tok = tokens[i]
        i += 1
        if tok in OPERATORS:
            depth += 1
        elif tok == END:
            depth -= 1
        if depth == 0:
            return i


def encode(tokens: Sequence[str]) -> list[int]:
    """Token strings -> ids (unknown strings -> ``<unk>``)."""
    return [TOKEN_ID.get(t, UNK) for t in tokens]


def decode(ids: Sequence[int]) -> list[str]:
    """Ids -> token strings (padding dropped)."""
    return [VOCAB[i] for i in ids if i != PAD]


# -- the generator -------------------------------------------------------------------------------

class _Uniforms:
    """Uniform [0, 1) draws from a NumPy Generator, fetched in blocks (scalar draws are slow)."""

    def __init__(self, rng: np.random.Generator, block: int = 1 << 16):
        self.rng, self.block = rng, block
        self.buf, self.i = rng.random(block).tolist(), 0

    def __call__(self) -> float:
        if self.i == len(self.buf):
            self.buf, self.i = self.rng.random(self.block).tolist(), 0
        u = self.buf[self.i]
        self.i += 1
        return u


class _TooLong(Exception):
    pass


def generate_tree_tokens(uniform, max_depth: int = 10, max_args: int = 10,
                         max_length: int | None = None) -> tuple[list[int], int] | None:
    """One random tree as (token ids, value), or None if it reached ``max_length`` tokens.

    ``uniform()`` returns U[0, 1) draws. Node rule as LRA's ``generate_tree`` (module docstring).
    """
    out: list[int] = []
    limit = max_length if max_length is not None else math.inf
    n_ops = len(OPERATORS)

    def grow(depth: int) -> int:
        if len(out) >= limit:
            raise _TooLong
        if depth < max_depth and uniform() <= VALUE_P:   # LRA: leaf iff random() > VALUE_P
            op = int(uniform() * n_ops)
            n_args = 2 + int(uniform() * (max_args - 1))  # randint(2, max_args)
            out.append(TOKEN_ID[OPERATORS[op]])
            args = [grow(depth + 1) for _ in range(n_args)]
            out.append(TOKEN_ID[END])
            return _apply(op, args)
        value = int(uniform() * 10)
        out.append(TOKEN_ID[DIGITS[value]])
        return value

    try:
        value = grow(1)
    except _TooLong:
        return None
    return out, value


def _apply(op: int, args: list[int]) -> int:
    if op == 0:
        return min(args)
    if op == 1:
        return max(args)
    if op == 2:
        s = sorted(args)
        k = len(s)
        return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) // 2
    return sum(args) % 10


def evaluate_tokens(ids: Sequence[int]) -> int:
    """Value of an encoded expression (``<eos>`` / padding ignored), by a stack machine."""
    stack: list[list] = []
    value = None
    for i in ids:
        tok = VOCAB[i]
        if tok in SPECIALS:
            continue
        if tok in OPERATORS:
            stack.append([OPERATORS.index(tok)])
            continue
        if tok == END:
            frame = stack.pop()
            value = _apply(frame[0], frame[1:])
        else:
            value = int(tok)
        if stack:
            stack[-1].append(value)
    if stack or value is None:
        raise ValueError("incomplete ListOps expression")
    return value


def listops_dataset(n: int, seed: int = 0, min_length: int = 500, max_length: int = 2000, max_depth: int = 10,
                    max_args: int = 10, progress: bool = True) -> tuple[list[list[int]], np.ndarray]:
    """``n`` distinct trees with min_length < tokens < max_length, in generation order, and their values."""
    uniform = _Uniforms(np.random.default_rng([int(seed), 0x115705]))
    seen: set[bytes] = set()
    trees, labels = [], []
    bar = progress_bar(range(n), n, f"ListOps {min_length}<L<{max_length}", progress, unit="tree")
    while len(trees) < n:
        tree = generate_tree_tokens(uniform, max_depth, max_args, max_length)
        if tree is None or not min_length < len(tree[0]) < max_length:
            continue
        key = bytes(tree[0])
        if key in seen:
            continue
        seen.add(key)
        trees.append(tree[0])
        labels.append(tree[1])
        next(bar, None)
    for _ in bar:  # close the bar
        pass
    return trees, np.asarray(labels, np.int32)


def pad_trees(trees: Sequence[Sequence[int]], seq_len: int) -> np.ndarray:
    """Encoded trees -> (n, seq_len) ids: each tree, then ``<eos>``, then ``<pad>``."""
    inputs = np.zeros((len(trees), seq_len), token_dtype(len(VOCAB)))
    for i, tree in enumerate(trees):
        inputs[i, :len(tree)] = tree
        inputs[i, len(tree)] = EOS
    return inputs


# -- the LRA release's files ---------------------------------------------------------------------

def read_listops_tsv(file: str | Path, seq_len: int, limit: int | None = None,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One TSV file of the LRA release -> (inputs (n, seq_len) ids as ``ListOps`` gives them, labels (n,) int32).

    Reads the first ``limit`` rows (None: all; about 0.25 ms of CPU per row of ~1,000 tokens). A bad header
    or row is a ``UserInputError`` naming the file and the line.
    """
    trees: list[np.ndarray] = []
    labels: list[int] = []
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        try:
            header = next(reader, [])
            if "Source" not in header or "Target" not in header:
                raise UserInputError(f"{file}, line 1: expected the header 'Source<TAB>Target' of the LRA "
                                     f"release (lra_benchmarks/data/listops.py), found {header!r}")
            src, tgt = header.index("Source"), header.index("Target")
            for row in progress_bar(reader, limit, f"ListOps {Path(file).name}", progress, unit="row"):
                if limit is not None and len(labels) >= limit:
                    break
                if not row:
                    continue
                tree, label = _release_row(row, src, tgt, len(header), seq_len, f"{file}, line {reader.line_num}")
                trees.append(tree)
                labels.append(label)
        except csv.Error as err:
            raise UserInputError(f"{file}, line {reader.line_num}: not a tab-separated row ({err})") from None
    return pad_trees(trees, seq_len), np.asarray(labels, np.int32)


def _release_row(row: list[str], src: int, tgt: int, n_fields: int, seq_len: int,
                 where: str) -> tuple[np.ndarray, int]:
    """One ``Source``, ``Target`` row -> (token ids without ``<eos>``, label); ``where`` names file and line."""
    if len(row) != n_fields:
        raise UserInputError(f"{where}: expected {n_fields} tab-separated fields as the header, found {len(row)}")
    target = row[tgt].strip()
    if not (target.isdigit() and int(target) < 10):
        raise UserInputError(f"{where}: Target must be a digit 0..9 (the value of the expression), found {target!r}")
    tokens = listops_tokenize(row[src])
    try:
        ids = [SOURCE_TOKEN_ID[t] for t in tokens]
    except KeyError as err:
        raise UserInputError(f"{where}: {err.args[0]!r} is not a ListOps token (operators {', '.join(OPERATORS)}, "
                             f"']', digits, parentheses)") from None
    if not ids:
        raise UserInputError(f"{where}: empty Source expression")
    if len(ids) >= seq_len:
        raise UserInputError(f"{where}: the expression has {len(ids)} tokens, but seq_len={seq_len} holds at most "
                             f"{seq_len - 1} plus <eos>; set data.dataset.seq_len={max(2048, len(ids) + 1)} "
                             f"(S4's l_max is 2048)")
    return np.asarray(ids, np.uint8), int(target)


def read_listops_release(path: str | Path, seq_len: int, limits: dict[str, int | None],
                         progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"inputs", "label"}}`` from ``basic_{train,val,test}.tsv`` in the folder ``path``."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserInputError(f"data.dataset.path={str(path)!r} is not a folder; point it at the LRA release's "
                             f"lra_release/listops-1000/ (it holds {', '.join(RELEASE_FILES.values())})")
    missing = [name for name in RELEASE_FILES.values() if not (folder / name).is_file()]
    if missing:
        present = sorted(p.name for p in folder.iterdir())
        raise UserInputError(f"{folder} lacks {', '.join(missing)} (the LRA release's ListOps files); it holds "
                             f"{present if present else 'nothing'}")
    out = {}
    for split, name in RELEASE_FILES.items():
        inputs, labels = read_listops_tsv(folder / name, seq_len, limits[split], progress)
        if limits[split] is not None and len(labels) < limits[split]:
            raise UserInputError(f"{folder / name} has {len(labels)} rows, fewer than n_{split}={limits[split]}; "
                                 f"lower it, or set it to null to read the whole file")
        out[split] = {"inputs": inputs, "label": labels}
    return out


class ListOps:
    """The LRA ListOps classification data (10 classes), generated and cached, or read from the LRA release.

    Args:
      n_train, n_val, n_test: split sizes (LRA: 96,000 / 2,000 / 2,000). With ``path``: the first rows
        taken from each file (the release's rows are in no particular order); None: the whole file.
      min_length, max_length: keep trees with min_length < tokens < max_length (LRA: 500, 2000).
      max_depth, max_args: tree depth (root = 1) and most arguments per operator (LRA: 10, 10).
      seq_len: padded length (tokens + ``<eos>``); None: max_length, which fits every tree. S4 uses 2048.
      seed: the random stream.
      cache_dir: where the generated data is cached (does not change the data).
      path: None generates; else the folder of the release's ``basic_{train,val,test}.tsv``
        (``lra_release/listops-1000/``), read instead: min_length, max_depth, max_args and seed then do not
        apply (max_length still gives seq_len when that is None), and nothing is cached.
    """

    kind = "classification"
    splits = ("train", "val", "test")
    vocab_size = len(VOCAB)
    d_input = 1
    n_classes = 10
    pad_id = PAD                   # the mask of a batch is inputs != pad_id
    volatile_keys = ("cache_dir",)

    def __init__(self, n_train: int | None = 96_000, n_val: int | None = 2_000, n_test: int | None = 2_000,
                 min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10,
                 seq_len: int | None = None, seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR,
                 path: str | None = None):
        sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
        if path is None and None in sizes.values():
            raise UserInputError(f"ListOps: {sizes} has a null split size, which means 'the whole file' and "
                                 f"applies only with data.dataset.path; give every size to generate")
        check_sizes("ListOps", **{k: v for k, v in sizes.items() if v is not None})
        if path is None and not 0 <= min_length < max_length - 1:
            raise ValueError(f"ListOps: need 0 <= min_length < max_length - 1, got {min_length}, {max_length}")
        if path is None and (max_depth < 2 or max_args < 2):
            raise ValueError(f"ListOps: max_depth and max_args must be >= 2, got {max_depth}, {max_args}")
        self.seq_len = max_length if seq_len is None else int(seq_len)
        if self.seq_len < 2:
            raise ValueError(f"ListOps: seq_len={self.seq_len} must be >= 2 (a digit and <eos>)")
        if path is None and self.seq_len < max_length:
            raise ValueError(f"ListOps: seq_len={seq_len} cannot hold trees of up to {max_length - 1} tokens plus "
                             f"<eos>; use seq_len >= max_length={max_length} (or null)")
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.min_length, self.max_length, self.max_depth, self.max_args = min_length, max_length, max_depth, max_args
        self.seed, self.cache_dir, self.path = seed, cache_dir, path

    def config(self) -> dict:
        """Everything that determines the data (the cache key)."""
        return {"n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test, "min_length": self.min_length,
                "max_length": self.max_length, "max_depth": self.max_depth, "max_args": self.max_args,
                "seq_len": self.seq_len, "seed": self.seed}

    def generate(self, progress: bool = True) -> dict[str, np.ndarray]:
        n = self.n_train + self.n_val + self.n_test
        trees, labels = listops_dataset(n, self.seed, self.min_length, self.max_length, self.max_depth,
                                        self.max_args, progress)
        return {"inputs": pad_trees(trees, self.seq_len), "label": labels}

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        if self.path is not None:
            limits = {"train": self.n_train, "val": self.n_val, "test": self.n_test}
            return read_listops_release(self.path, self.seq_len, limits, progress)
        data = cached_arrays("listops", self.config(), lambda: self.generate(progress), self.cache_dir,
                             version=LISTOPS_GENERATOR_VERSION)
        bounds = np.cumsum([0, self.n_train, self.n_val, self.n_test])
        out = {}
        for split, lo, hi in zip(self.splits, bounds[:-1], bounds[1:]):
            out[split] = {"inputs": data["inputs"][lo:hi], "label": data["label"][lo:hi]}
        return out
