"""TransformerLayer.from_torch converts every activation PyTorch's layers accept exactly, or refuses it by name.

Before, anything that was not exact GELU silently became ReLU (F.silu, and the tanh GELU became exact GELU).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tfcourse.blocks import Decoder, Encoder, TransformerLayer, activation_name
from tfcourse.masks import lengths_to_mask

CONVERTIBLE = [
    ("relu", "relu"),
    ("gelu", "gelu"),
    (F.relu, "relu"),
    (torch.relu, "relu"),
    (nn.ReLU(), "relu"),
    (nn.ReLU(inplace=True), "relu"),
    (F.gelu, "gelu"),
    (nn.GELU(), "gelu"),
    (nn.GELU(approximate="tanh"), "gelu_tanh"),
    (partial(F.gelu, approximate="tanh"), "gelu_tanh"),
    (partial(F.gelu, approximate="none"), "gelu"),
    (partial(F.gelu), "gelu"),
    (F.silu, "silu"),
    (nn.SiLU(), "silu"),
]
IDS = [
    "str-relu", "str-gelu", "F.relu", "torch.relu", "ReLU", "ReLU-inplace", "F.gelu", "GELU", "GELU-tanh",
    "partial-gelu-tanh", "partial-gelu-none", "partial-gelu", "F.silu", "SiLU",
]  # fmt: skip


@pytest.mark.parametrize(("activation", "name"), CONVERTIBLE, ids=IDS)
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_with_each_activation_matches_torch(gen, activation, name, norm_first):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(
        16, 2, 32, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    ours = TransformerLayer.from_torch(theirs).eval()
    assert ours.ff.activation == name
    x = torch.randn(2, 5, 16, generator=gen) * 3  # wide inputs: exact and tanh GELU differ visibly
    valid = lengths_to_mask([5, 3])
    # With gradients on, PyTorch takes its layer's Python path: its fused inference path treats every
    # nn.GELU as exact GELU, whatever its `approximate` says.
    ref = theirs(x.requires_grad_(), src_key_padding_mask=~valid)
    out = ours(x, mask=valid[:, None, None, :])
    torch.testing.assert_close(out[valid], ref[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # PyTorch's own note about its fast path
@pytest.mark.parametrize(("activation", "name"), CONVERTIBLE[::3], ids=IDS[::3])
def test_decoder_layer_and_stacks_keep_the_activation(gen, activation, name):
    torch.manual_seed(0)
    model = nn.Transformer(16, 2, 1, 2, 32, dropout=0.0, activation=activation, batch_first=True).eval()
    encoder, decoder = Encoder.from_torch(model.encoder).eval(), Decoder.from_torch(model.decoder).eval()
    assert {layer.ff.activation for layer in [*encoder.layers, *decoder.layers]} == {name}
    src, tgt = torch.randn(2, 6, 16, generator=gen), torch.randn(2, 4, 16, generator=gen)
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    ref = model(src.requires_grad_(), tgt, tgt_mask=causal, tgt_is_causal=True)  # PyTorch's Python path
    out = decoder(tgt, encoder(src))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_the_converted_function_really_differs_between_variants(gen):
    """The parity above would be vacuous if the variants computed the same thing on these inputs."""
    x = torch.randn(100, generator=gen) * 3
    outputs = [F.relu(x), F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x)]
    for i in range(len(outputs)):
        for j in range(i):
            assert (outputs[i] - outputs[j]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "activation",
    [nn.LeakyReLU(), F.leaky_relu, torch.tanh, nn.Tanh(), F.elu, lambda x: x, partial(F.gelu, approximate="erf")],
    ids=["LeakyReLU", "leaky_relu", "tanh", "Tanh", "elu", "lambda", "gelu-erf"],
)
def test_unsupported_activation_is_refused_by_name(activation):
    if isinstance(activation, partial):  # PyTorch would fail only when the layer runs; we refuse at once
        with pytest.raises(ValueError, match="has no tfcourse equivalent"):
            activation_name(activation)
        return
    theirs = nn.TransformerEncoderLayer(8, 2, 16, activation=activation, batch_first=True)
    with pytest.raises(ValueError, match=r"activation .* has no tfcourse equivalent"):
        TransformerLayer.from_torch(theirs)
    with pytest.raises(ValueError, match="has no tfcourse equivalent"):
        activation_name("silu")  # not a string PyTorch's layers accept
