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
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from experiments.data import check_sizes, progress_bar, token_dtype
from experiments.data.store import DEFAULT_CACHE_DIR, cached_arrays

LISTOPS_GENERATOR_VERSION = 1

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "X"                          # the closing bracket "]" after the S4 tokenizer
DIGITS = tuple(str(d) for d in range(10))
SPECIALS = ("<pad>", "<unk>", "<eos>")
VOCAB = SPECIALS + OPERATORS + (END,) + DIGITS   # 18 tokens
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD, UNK, EOS = 0, 1, 2
VALUE_P = 0.25                     # probability that a node above max_depth is an operator

__all__ = ["ListOps", "VOCAB", "decode", "encode", "listops_dataset", "listops_source", "listops_tokenize",
           "generate_tree_tokens", "evaluate_tokens"]


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


class ListOps:
    """The LRA ListOps classification data (10 classes), generated and cached.

    Args:
      n_train, n_val, n_test: split sizes (LRA: 96,000 / 2,000 / 2,000).
      min_length, max_length: keep trees with min_length < tokens < max_length (LRA: 500, 2000).
      max_depth, max_args: tree depth (root = 1) and most arguments per operator (LRA: 10, 10).
      seq_len: padded length (tokens + ``<eos>``); None: max_length, which fits every tree. S4 uses 2048.
      seed: the random stream.
      cache_dir: where the generated data is cached (does not change the data).
    """

    kind = "classification"
    splits = ("train", "val", "test")
    vocab_size = len(VOCAB)
    d_input = 1
    n_classes = 10
    pad_id = PAD                   # the mask of a batch is inputs != pad_id
    volatile_keys = ("cache_dir",)

    def __init__(self, n_train: int = 96_000, n_val: int = 2_000, n_test: int = 2_000, min_length: int = 500,
                 max_length: int = 2000, max_depth: int = 10, max_args: int = 10, seq_len: int | None = None,
                 seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR):
        check_sizes("ListOps", n_train=n_train, n_val=n_val, n_test=n_test)
        if not 0 <= min_length < max_length - 1:
            raise ValueError(f"ListOps: need 0 <= min_length < max_length - 1, got {min_length}, {max_length}")
        if max_depth < 2 or max_args < 2:
            raise ValueError(f"ListOps: max_depth and max_args must be >= 2, got {max_depth}, {max_args}")
        self.seq_len = max_length if seq_len is None else int(seq_len)
        if self.seq_len < max_length:
            raise ValueError(f"ListOps: seq_len={seq_len} cannot hold trees of up to {max_length - 1} tokens plus "
                             f"<eos>; use seq_len >= max_length={max_length} (or null)")
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.min_length, self.max_length, self.max_depth, self.max_args = min_length, max_length, max_depth, max_args
        self.seed, self.cache_dir = seed, cache_dir

    def config(self) -> dict:
        """Everything that determines the data (the cache key)."""
        return {"n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test, "min_length": self.min_length,
                "max_length": self.max_length, "max_depth": self.max_depth, "max_args": self.max_args,
                "seq_len": self.seq_len, "seed": self.seed}

    def generate(self, progress: bool = True) -> dict[str, np.ndarray]:
        n = self.n_train + self.n_val + self.n_test
        trees, labels = listops_dataset(n, self.seed, self.min_length, self.max_length, self.max_depth,
                                        self.max_args, progress)
        inputs = np.zeros((n, self.seq_len), token_dtype(self.vocab_size))
        for i, tree in enumerate(trees):
            inputs[i, :len(tree)] = tree
            inputs[i, len(tree)] = EOS
        return {"inputs": inputs, "label": labels}

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        data = cached_arrays("listops", self.config(), lambda: self.generate(progress), self.cache_dir,
                             version=LISTOPS_GENERATOR_VERSION)
        bounds = np.cumsum([0, self.n_train, self.n_val, self.n_test])
        out = {}
        for split, lo, hi in zip(self.splits, bounds[:-1], bounds[1:]):
            out[split] = {"inputs": data["inputs"][lo:hi], "label": data["label"][lo:hi]}
        return out
