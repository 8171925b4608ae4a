"""training/bert_pretrain.py: a few steps of MLM + NSP pre-training and both fine-tuning runs, into a tmp dir."""

from __future__ import annotations

import importlib.util

import torch

from tests.conftest import ROOT
from tfcourse.checkpoints import load_checkpoint
from tfcourse.models.bert import BertConfig, BertForPreTraining


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretraining_lowers_the_heldout_mlm_loss_and_the_checkpoint_loads(tmp_path):
    script = load_script("bert_pretrain")
    argv = ["--tiny", "--steps", "30", "--finetune-steps", "5", "--eval-every", "15", "--eval-pairs", "128",
            "--labelled", "40", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    meta = script.main(argv)
    evals = meta["pretrain"]["eval"]
    assert [e["step"] for e in evals] == [0, 15, 30]
    assert evals[-1]["mlm_loss"] < evals[0]["mlm_loss"] - 0.3
    assert len(meta["pretrain"]["train_mlm"]) == len(meta["pretrain"]["train_nsp"]) == 30
    for run in ("pretrained", "scratch"):
        accuracy = meta["finetune"]["runs"][run]["accuracy"]
        assert accuracy[0][0] == 0 and accuracy[-1][0] == 5 and all(0 <= a <= 1 for _, a in accuracy)
    assert meta["finetune"]["eval_speeches"] > 100 and meta["finetune"]["eval_plays"] == ["hamlet", "twelfth-night"]

    model, loaded = load_checkpoint("ch08-bert", BertForPreTraining, BertConfig, directory=tmp_path)
    assert loaded["results"] == meta["results"] and model.config.d_model == 32
    # The tied MLM decoder still is the token embedding after loading.
    assert model.mlm_head.decoder.weight is model.bert.embeddings.tokens.weight
    ids = torch.tensor([[2, 100, 4, 101, 3, 102, 3]])
    out = model(ids, token_type_ids=torch.tensor([[0, 0, 0, 0, 0, 1, 1]]))
    assert out.mlm_logits.shape == (1, 7, 2048) and torch.isfinite(out.mlm_logits).all()
