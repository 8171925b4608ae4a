"""Attention-sparsity measures (keys_for_mass, top_k_mass) and the digits data the pixel model trains on."""

from __future__ import annotations

import gzip
import hashlib

import pytest
import torch

from tfcourse import digits
from tfcourse.analysis import keys_for_mass, record_attention, top_k_mass
from tfcourse.models.gpt import GPT, GPTConfig


def _keys_for_mass_loop(row: list[float], mass: float) -> int:
    """Independent reference: add keys from the largest down until the target is reached."""
    total = sum(row)
    if total == 0:
        return 0
    held, count = 0.0, 0
    for w in sorted(row, reverse=True):
        if held >= mass * total * (1 - 1e-6):
            break
        held += w
        count += 1
    return count


def test_keys_for_mass_matches_a_loop(gen):
    logits = 3 * torch.randn(2, 3, 5, 9, generator=gen, dtype=torch.float64)
    weights = logits.softmax(-1)
    weights[0, 0, 0, 4:] = 0  # a partly masked row
    for mass in (0.5, 0.9, 0.99, 1.0):
        ours = keys_for_mass(weights, mass)
        assert ours.shape == (2, 3, 5) and ours.dtype == torch.int64
        expected = [_keys_for_mass_loop(row, mass) for row in weights.reshape(-1, 9).tolist()]
        assert ours.flatten().tolist() == expected


def test_keys_for_mass_limits():
    n = 20
    uniform = torch.full((n,), 1 / n)
    assert keys_for_mass(uniform, 0.9).item() == 18  # ⌈0.9 n⌉, despite rounding in the cumulative sum
    assert keys_for_mass(uniform, 1.0).item() == n
    one_hot = torch.zeros(n).index_fill(0, torch.tensor([7]), 1.0)
    assert keys_for_mass(one_hot, 0.9).item() == 1
    assert keys_for_mass(torch.zeros(3, n), 0.9).tolist() == [0, 0, 0]  # fully masked queries
    causal = torch.ones(6, 6).tril()
    causal = causal / causal.sum(-1, keepdim=True)  # query i spreads over its i + 1 keys
    assert keys_for_mass(causal, 0.5).tolist() == [1, 1, 2, 2, 3, 3]


def test_top_k_mass(gen):
    weights = torch.rand(4, 7, generator=gen)
    weights[1] = 0
    got = top_k_mass(weights, 3)
    expected = weights.topk(3, dim=-1).values.sum(-1) / weights.sum(-1)
    torch.testing.assert_close(got[[0, 2, 3]], expected[[0, 2, 3]])
    assert got[1] == 0
    assert torch.all(top_k_mass(weights[[0, 2, 3]], 7) == 1)
    # The two measures agree: k = keys_for_mass keys hold at least the mass, one fewer holds less.
    probs = (4 * torch.randn(50, 30, generator=gen)).softmax(-1)
    counts = keys_for_mass(probs, 0.9)
    for row, k in zip(probs, counts.tolist(), strict=True):
        assert top_k_mass(row, k) >= 0.9 - 1e-5
        if k > 1:
            assert top_k_mass(row, k - 1) < 0.9


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_keys_for_mass_rejects_bad_mass(bad):
    with pytest.raises(ValueError, match="mass"):
        keys_for_mass(torch.ones(3) / 3, bad)


def test_sparsity_measures_reject_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        keys_for_mass(torch.tensor([0.5, -0.1, 0.6]))
    with pytest.raises(TypeError):
        top_k_mass(torch.tensor([1, 2, 3]), 1)  # integer weights
    with pytest.raises(ValueError, match="k must"):
        top_k_mass(torch.ones(3), 0)


def test_causal_gpt_weights_measure_within_the_past():
    """On a GPT's recorded causal weights no query ever needs more keys than it may see."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny()).eval()
    ids = torch.randint(0, 64, (2, 12))
    modules = {f"layer {i}": layer.self_attn for i, layer in enumerate(model.decoder.layers)}
    with record_attention(modules) as recorded:
        model(ids)
    weights = recorded["layer 0"][0]  # (B, H, T, T)
    counts = keys_for_mass(weights, 1.0)  # (B, H, T)
    available = torch.arange(1, 13)
    assert torch.all(counts <= available) and torch.all(counts >= 1)
    assert torch.all(keys_for_mass(weights, 0.9) <= counts)


# ---------------------------------------------------------------------------------------------------- digits


def test_digits_splits_and_values():
    images, labels = digits.load_digits("all")
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == digits.LEVELS - 1
    train, heldout = digits.load_digits("train"), digits.load_digits("heldout")
    assert train[0].shape[0] + heldout[0].shape[0] == 1797
    # Every digit is held out in the same proportion (a fifth of its images).
    for digit in range(10):
        n_all = int((labels == digit).sum())
        assert int((heldout[1] == digit).sum()) == n_all // 5
    # No held-out image is a training image (compare the images themselves, as rows of 64 cells).
    train_rows = {tuple(r) for r in train[0].reshape(-1, 64).tolist()}
    overlap = sum(tuple(r) in train_rows for r in heldout[0].reshape(-1, 64).tolist())
    assert overlap <= 2  # the data set holds a few exact duplicates; a split by position cannot exclude them
    with pytest.raises(ValueError, match="split"):
        digits.load_digits("test")


def test_digit_sequences_round_trip():
    images, labels = digits.load_digits("heldout")
    seqs = digits.to_sequences(images, labels)
    assert seqs.shape == (images.shape[0], 65)
    assert torch.equal(seqs[:, 0] - digits.CLASS_OFFSET, labels)
    assert torch.equal(seqs[:, 1:9], images[:, 0])  # the first row of cells comes first (raster order)
    assert int(seqs.max()) < digits.VOCAB_SIZE
    assert torch.equal(digits.from_sequences(seqs), images)
    assert torch.equal(digits.from_sequences(digits.to_sequences(images)), images)
    with pytest.raises(ValueError, match="labels"):
        digits.to_sequences(images, labels[:-1])
    with pytest.raises(ValueError, match="images"):
        digits.to_sequences(images.reshape(-1, 4, 16))


def test_digits_file_records_its_origin():
    info = digits.provenance()
    assert "UCI" in info["source"] and "CC BY 4.0" in info["source"]
    assert len(info["file_sha256"]) == 64
    raw = (digits.resources.files("tfcourse") / "data" / "digits.json.gz").read_bytes()
    assert gzip.decompress(raw)  # a plain gzip file
    assert hashlib.sha256(raw).hexdigest() != info["file_sha256"]  # the hash names the source file, not ours


def test_tile_places_every_image_in_its_cell():
    images = torch.arange(2 * 3 * 8 * 8).view(2, 3, 8, 8)
    picture = digits.tile(images, gap=1)
    assert picture.shape == (2 * 9 - 1, 3 * 9 - 1) and picture.dtype == torch.float32
    for r in range(2):
        for c in range(3):
            assert torch.equal(picture[9 * r : 9 * r + 8, 9 * c : 9 * c + 8], images[r, c].float())
    assert torch.isnan(picture[8]).all() and torch.isnan(picture[:, 17]).all()  # the gaps
    assert torch.equal(digits.tile(images, gap=0)[:8, 8:16], images[0, 1].float())
    with pytest.raises(ValueError, match="images"):
        digits.tile(images[0])
