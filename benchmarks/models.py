"""Forward time of tfcourse's models against their Hugging Face counterparts, same weights, same run.

Run ``python benchmarks/models.py``. It builds a randomly initialised Hugging Face model at a real size
(BERT-base, T5-small), loads it into tfcourse with ``from_hf``, checks that both give the same output,
and times one forward pass of each on a padded batch. ``ratio`` = ours / theirs (goal ≤ 1.0). Results go
to ``benchmarks/results/models-<device>.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, start, time_it

from tfcourse.models import BertModel, T5Model


def padded_batch(batch: int, length: int, vocab: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids and a 0/1 attention mask in which the second half of the batch is half padding."""
    ids = torch.randint(5, vocab, (batch, length), device=device)
    mask = torch.ones(batch, length, dtype=torch.long, device=device)
    mask[batch // 2 :, length // 2 :] = 0
    return ids.masked_fill(mask == 0, 0), mask


def bert_row(device: str, batch: int, length: int, quick: bool) -> dict:
    sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128) if quick else {}
    config = transformers.BertConfig(attn_implementation="sdpa", **sizes)  # BERT-base shape unless quick
    theirs = transformers.BertModel(config).to(device).eval()
    ours = BertModel.from_hf(theirs).eval()
    ids, mask = padded_batch(batch, length, config.vocab_size, device)
    with torch.no_grad():
        reference = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, attention_mask=mask).sequence_output, reference, atol=1e-4, rtol=1e-4)
        t_theirs = time_it(lambda: theirs(input_ids=ids, attention_mask=mask))
        t_ours = time_it(lambda: ours(ids, attention_mask=mask))
    return row("BERT" + (" (tiny)" if quick else "-base"), batch, length, t_ours, t_theirs)


def t5_row(device: str, batch: int, length: int, quick: bool) -> dict:
    sizes = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4) if quick else {}
    config = transformers.T5Config(attn_implementation="eager", **sizes)  # T5-small shape unless quick
    theirs = transformers.T5Model(config).to(device).eval()
    ours = T5Model.from_hf(theirs).eval()
    ids, mask = padded_batch(batch, length, config.vocab_size, device)
    decoder_ids = torch.randint(5, config.vocab_size, (batch, length // 4), device=device)
    with torch.no_grad():
        reference = theirs(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).last_hidden_state
        mine = ours(ids, decoder_ids, mask.bool()).decoder_hidden
        torch.testing.assert_close(mine, reference, atol=1e-4, rtol=1e-4)
        t_theirs = time_it(lambda: theirs(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids))
        t_ours = time_it(lambda: ours(ids, decoder_ids, mask.bool()))
    return row("T5" + (" (tiny)" if quick else "-small"), batch, length, t_ours, t_theirs)


def row(name: str, batch: int, length: int, ours: float, theirs: float) -> dict:
    return {
        "what": f"{name} forward vs Hugging Face",
        "shape": f"B={batch} T={length}",
        "dtype": "float32",
        "ours_ms": ours * 1e3,
        "hf_ms": theirs * 1e3,
        "ratio": ours / theirs,
        "goal": "<= 1.0",
    }


def main() -> None:
    args, env = start(__doc__)
    transformers.logging.set_verbosity_error()
    batch, length = (2, 32) if args.quick else (8, 128)
    rows = [bert_row(args.device, batch, length, args.quick), t5_row(args.device, batch, length, args.quick)]
    report("models", rows, env, args)


if __name__ == "__main__":
    main()
