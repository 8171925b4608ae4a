"""Submissions for the grading tests: solved, untouched, wrong in known ways, and hostile.

Each function takes the released and source notebooks and returns the notebook a student would submit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

EXERCISES = ["ch01-self-attention", "ch02-scaling", "ch03-multi-head", "ch04-masks"]


def grade_id(cell: NotebookNode) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def solved(release: NotebookNode, source: NotebookNode) -> NotebookNode:
    """The release with every solution cell answered as in the source (markers and all)."""
    answers = {grade_id(c): c.source for c in source.cells if c.metadata.get("nbgrader", {}).get("solution")}
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        if grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    return nb


def answer(nb: NotebookNode, cell_id: str, source: str) -> NotebookNode:
    """Replace the source of the cell with grade id ``cell_id``."""
    nb = copy.deepcopy(nb)
    cells = [c for c in nb.cells if grade_id(c) == cell_id]
    assert cells, f"no cell {cell_id}"
    cells[0].source = source
    return nb


def delete(nb: NotebookNode, cell_id: str) -> NotebookNode:
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if grade_id(c) != cell_id]
    return nb


def write(nb: NotebookNode | str, course: Path, student: str, assignment: str, notebook: str) -> None:
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{notebook}.ipynb"
    if isinstance(nb, str):
        path.write_text(nb)
    else:
        nbformat.write(nb, str(path))


# Wrong answers with a known, named mistake.
UNSCALED_WEIGHTS = """def attention_weights(q, k):
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1)
"""
SYMMETRIC_SELF_ATTENTION = """def self_attention(x, w_q, w_k, w_v):
    k = x @ w_k
    return attention_weights(k, k) @ (x @ w_v)
"""
FUSED_SELF_ATTENTION = """import torch.nn.functional as F


def self_attention(x, w_q, w_k, w_v):
    return F.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)
"""
STRICT_CAUSAL = """def causal_mask(t):
    return torch.ones(t, t, dtype=torch.bool).tril(-1)
"""
KEYS_ONLY_PADDING = """def padding_mask(valid):
    return valid[:, None, None, :]
"""
NAN_ATTENTION = """def masked_attention(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
"""
SPLIT_NO_TRANSPOSE = """def split_heads(x, num_heads):
    b, t, d = x.shape
    return x.reshape(b, num_heads, t, d // num_heads)
"""
ENTROPY_BITS = """def attention_entropy(p):
    return -torch.special.xlogy(p, p).sum(-1) / math.log(2)
"""

# Hostile code, each placed in self_attention (part 2 of exercise 1).
RAISES = """def self_attention(x, w_q, w_k, w_v):
    raise ValueError("I give up")
"""
LOOPS = """def self_attention(x, w_q, w_k, w_v):
    while True:
        pass
"""
EXITS = """import os


def self_attention(x, w_q, w_k, w_v):
    os._exit(1)
"""
SEGFAULT = """import ctypes


def self_attention(x, w_q, w_k, w_v):
    ctypes.string_at(0)
"""
HOGS_MEMORY = """def self_attention(x, w_q, w_k, w_v):
    hoard = torch.ones(6 * 2**30 // 4)  # 6 GiB, over the kernel's limit
    return hoard
"""
WARNS = """import sys
import warnings


def self_attention(x, w_q, w_k, w_v):
    warnings.warn("this is only a warning", UserWarning)
    print("Warning: printed to stderr by correct code", file=sys.stderr)
    return attention_weights(x @ w_q, x @ w_k) @ (x @ w_v)
"""
