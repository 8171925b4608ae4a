"""T5: parity with Hugging Face, cached decoding, the shared position bias, span-corruption training, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import assert_close
from tfcourse.models.t5 import T5Config, T5ForConditionalGeneration, T5Model, shift_right
from tfcourse.pretraining import span_corruption

transformers = pytest.importorskip("transformers")

FEED_FORWARDS = ["relu", "gated-gelu"]


def hf_config(**overrides):
    """The tiny configuration of the brief, in Hugging Face's terms (dropout off)."""
    sizes = dict(
        vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
        decoder_start_token_id=0,
    )  # fmt: skip
    return transformers.T5Config(**{**sizes, **overrides})


def hf_model(cls_name="T5ForConditionalGeneration", device="cpu", **overrides):
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(hf_config(**overrides)).to(device).eval()


def tiny_t5(device="cpu", **overrides) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config.tiny(**overrides)).to(device).eval()


def padded_sources(gen, lengths, vocab=100, device="cpu"):
    """Right-padded encoder inputs of different lengths, ids in [2, vocab) so that no real token is a pad."""
    width = max(lengths)
    ids = torch.randint(2, vocab, (len(lengths), width), generator=gen)
    valid = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)
    return ids.masked_fill(~valid, 0).to(device), valid.to(device)


def assert_close_where(actual, expected, valid):
    """Compare ``(B, T, D)`` states at the real positions ``valid`` ``(B, T)`` only."""
    assert_close(actual[valid], expected[valid])


# ---------------------------------------------------------------------------------------------------------
# Parity with Hugging Face transformers (random weights, float32)


@pytest.mark.parametrize(
    ("feed_forward", "d_kv"), [("relu", 8), ("gated-gelu", 8), ("relu", 16)], ids=["relu", "gated-gelu", "HDh!=D"]
)
def test_t5_model_matches_hugging_face(gen, device, feed_forward, d_kv):
    hf = hf_model("T5Model", device, feed_forward_proj=feed_forward, d_kv=d_kv)
    ours = T5Model.from_hf(hf).eval()
    src, valid = padded_sources(gen, [11, 7, 3], device=device)
    dec = torch.randint(0, 100, (3, 6), generator=gen).to(device)
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=valid.long(), decoder_input_ids=dec)
        got = ours(src, dec, valid)
    # Hugging Face lets padded queries attend (their rows are garbage either way); we mask them, so the
    # encoder output is compared where it means something. The decoder never reads padded positions.
    assert_close_where(got.encoder_hidden, expected.encoder_last_hidden_state, valid)
    assert_close(got.decoder_hidden, expected.last_hidden_state)


@pytest.mark.parametrize("feed_forward", FEED_FORWARDS)
def test_conditional_generation_logits_and_loss_match_hugging_face(gen, device, feed_forward):
    hf = hf_model(device=device, feed_forward_proj=feed_forward)
    ours = T5ForConditionalGeneration.from_hf(hf).eval()
    assert ours.lm_head.weight is ours.shared.weight and ours.config.scale_decoder_output
    src, valid = padded_sources(gen, [9, 4], device=device)
    labels = torch.randint(2, 100, (2, 7), generator=gen)
    labels[1, 5:] = -100  # ignored by the loss, and replaced by the pad id in the decoder input
    labels = labels.to(device)
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=valid.long(), labels=labels)
        logits = ours(src, shift_right(labels), valid)
        loss = ours.loss(src, labels, valid)
    assert_close(logits, expected.logits)
    assert_close(loss, expected.loss)


def test_untied_unscaled_head_matches_hugging_face(gen):
    # T5 v1.1 style: a separate output layer and no D^-0.5 on the decoder output.
    hf = hf_model(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    hf.lm_head.weight = nn.Parameter(torch.randn(100, 32, generator=gen) * 32**-0.5)
    ours = T5ForConditionalGeneration.from_hf(hf).eval()
    assert ours.lm_head.weight is not ours.shared.weight and not ours.config.scale_decoder_output
    src, valid = padded_sources(gen, [6, 8])
    labels = torch.randint(2, 100, (2, 5), generator=gen)
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=valid.long(), labels=labels)
        assert_close(ours(src, shift_right(labels), valid), expected.logits)
        assert_close(ours.loss(src, labels, valid), expected.loss)


# ---------------------------------------------------------------------------------------------------------
# Cached decoding


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("feed_forward", FEED_FORWARDS)
def test_cached_generation_equals_recomputation_and_hugging_face(gen, device, feed_forward, do_sample):
    hf = hf_model(device=device, feed_forward_proj=feed_forward)
    ours = T5ForConditionalGeneration.from_hf(hf).eval()
    src, valid = padded_sources(gen, [10, 6, 2], device=device)

    def run(use_cache):
        g = torch.Generator().manual_seed(0)  # the same draws with and without the cache
        return ours.generate(
            src, 12, input_valid=valid, use_cache=use_cache, stop_at_eos=False, return_logits=True,
            do_sample=do_sample, temperature=3.0, generator=g,
        )  # fmt: skip

    cached, full = run(use_cache=True), run(use_cache=False)
    torch.testing.assert_close(cached.logits, full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(cached.tokens, full.tokens) and cached.tokens.shape == (3, 13)
    assert (cached.tokens[:, 0] == 0).all()  # decoding starts from the pad id
    if do_sample:  # greedy repeats itself on random weights; sampled prefixes make the attention matter
        assert all(len(set(row)) > 5 for row in cached.tokens.tolist())
    # Hugging Face, without a cache, fed our generated prefix, gives the same logits at every step.
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=valid.long(), decoder_input_ids=cached.tokens[:, :-1]).logits
    torch.testing.assert_close(cached.logits, expected, atol=1e-5, rtol=1e-5)


def test_source_padding_is_invisible(gen):
    # T5 has no absolute positions, so a padded source decodes exactly like the unpadded one.
    model = tiny_t5()
    src, valid = padded_sources(gen, [8, 3])
    dec = torch.randint(0, 100, (2, 5), generator=gen)
    with torch.no_grad():
        batch, alone = model(src, dec, valid), model(src[1:, :3], dec[1:])
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=1e-5)
    greedy = model.generate(src, 8, input_valid=valid, return_logits=True)
    torch.testing.assert_close(greedy.logits[1:], model.generate(src[1:, :3], 8, return_logits=True).logits)


def test_teacher_forcing_equals_cached_step_by_step_decoding(gen, device, dtype):
    model = tiny_t5(device).to(dtype)
    src, valid = padded_sources(gen, [7, 4], device=device)
    labels = torch.randint(2, 100, (2, 6), generator=gen).to(device)
    dec = shift_right(labels)
    memory = model.encode(src, valid)
    with torch.no_grad():
        parallel = model.logits(model.decode(dec, memory, valid))  # (B, T, V), one pass
        caches, cross = model.new_caches(2, src.shape[1], dec.shape[1])
        serial = [
            model.logits(model.decode(dec[:, t : t + 1], memory, valid, caches=caches, cross_caches=cross))
            for t in range(dec.shape[1])
        ]
    assert parallel.dtype == dtype
    assert_close(torch.cat(serial, dim=1), parallel, dtype)


def test_sampling_is_reproducible_and_stops_at_eos(gen):
    src, valid = padded_sources(gen, [5, 3])

    def sample(model, seed, **kwargs):
        g = torch.Generator().manual_seed(seed)
        return model.generate(src, 15, input_valid=valid, do_sample=True, top_k=20, generator=g, **kwargs)

    model = tiny_t5()
    assert torch.equal(sample(model, 1).tokens, sample(model, 1, use_cache=False).tokens)
    assert not torch.equal(sample(model, 1).tokens, sample(model, 2).tokens)
    eos = int(sample(model, 1, stop_at_eos=False).tokens[0, 4])  # a token row 0 really produces
    stopped = sample(tiny_t5(eos_id=eos), 1)  # same weights, with that token as EOS
    row = stopped.tokens[0].tolist()
    end = row.index(eos, 1)
    assert end <= 4 and all(t == 0 for t in row[end + 1 :]) and not stopped.valid[0, end + 1 :].any()


# ---------------------------------------------------------------------------------------------------------
# The relative position bias: computed once per stack, shared by every layer


def test_position_bias_is_owned_by_the_first_layer_and_shared(gen):
    model = tiny_t5(num_encoder_layers=3, num_decoder_layers=3)
    for stack, bidirectional in ((model.encoder, True), (model.decoder, False)):
        owners = [layer.position_bias is not None for layer in stack.layers]
        assert owners == [True, False, False]
        assert stack.layers[0].position_bias.bidirectional is bidirectional
    assert not any("cross_attn" in name and "position" in name for name, _ in model.named_parameters())

    seen = {}

    def record(name):
        def hook(module, args, kwargs, output):
            seen[name] = (kwargs["bias"], output[1])  # the bias the layer received and the one it passed on

        return hook

    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            layer.register_forward_hook(record(f"{side}{i}"), with_kwargs=True)
    src, valid = padded_sources(gen, [6, 4])
    model(src, torch.zeros(2, 5, dtype=torch.long), valid)
    for side, length in (("encoder", 6), ("decoder", 5)):
        received, computed = seen[f"{side}0"]
        assert received is None and computed.shape == (1, 4, length, length)
        for i in (1, 2):  # later layers get exactly the first layer's tensor and pass it on unchanged
            assert seen[f"{side}{i}"][0] is computed and seen[f"{side}{i}"][1] is computed


def test_cached_position_bias_rows_use_the_query_offset():
    bias = tiny_t5().decoder.layers[0].position_bias
    full = bias(7)  # (1, H, 7, 7)
    torch.testing.assert_close(bias(1, 7), full[:, :, -1:])  # step 7 of a cached decode: the last row
    torch.testing.assert_close(bias(3, 7), full[:, :, -3:])


# ---------------------------------------------------------------------------------------------------------
# Training with span corruption


def test_span_corruption_training_step_gives_finite_gradients_for_every_parameter(gen):
    torch.manual_seed(0)
    config = T5Config.tiny(feed_forward="gated-gelu", dropout=0.1)
    model = T5ForConditionalGeneration(config).train()
    pairs = [
        span_corruption(tokens, sentinel_start_id=99, num_sentinels=10, eos_id=1, generator=gen)
        for tokens in (torch.randint(2, 90, (n,), generator=gen) for n in (20, 14, 9))
    ]  # ten sentinels count down from vocab_size - 1 = 99; ordinary tokens lie below 90
    src = nn.utils.rnn.pad_sequence([p.inputs for p in pairs], batch_first=True, padding_value=0)
    labels = nn.utils.rnn.pad_sequence([p.targets for p in pairs], batch_first=True, padding_value=-100)
    assert (src[0] == 99).any() and labels[0, 0] == 99  # inputs and targets carry <extra_id_0>
    loss = model.loss(src, labels)
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()  # no dropout noise, so the loss must fall
    before = model.loss(src, labels).item()
    for _ in range(5):
        optimizer.zero_grad()
        model.loss(src, labels).backward()
        optimizer.step()
    assert model.loss(src, labels).item() < before


# ---------------------------------------------------------------------------------------------------------
# Small pieces


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_rms_norm_literal_and_float32_accumulation(half):
    norm = tiny_t5().encoder.final_norm
    x = torch.tensor([[3.0, 4.0] * 16])  # mean square 12.5
    torch.testing.assert_close(norm(x), x / (12.5 + 1e-6) ** 0.5)
    big = torch.full((1, 32), 300.0, dtype=half)  # 300² = 90000 overflows float16 (max 65504), not float32
    out = norm.to(half)(big)
    assert out.dtype == half
    assert_close(out, torch.ones(1, 32), half)


def test_shift_right_literal():
    labels = torch.tensor([[5, 6, 1, -100], [7, 1, -100, -100]])
    assert shift_right(labels).tolist() == [[0, 5, 6, 1], [0, 7, 1, 0]]
    assert shift_right(labels, decoder_start_id=3, pad_id=2).tolist() == [[3, 5, 6, 1], [3, 7, 1, 2]]


def test_config_from_hf_reads_the_shapes():
    config = T5Config.from_hf(hf_config(feed_forward_proj="gated-gelu", d_kv=16, num_decoder_layers=3))
    assert (config.d_kv, config.num_heads, config.num_decoder_layers, config.feed_forward) == (16, 4, 3, "gated-gelu")
    assert (config.pad_id, config.eos_id, config.decoder_start_id) == (0, 1, 0)


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_errors_are_named(gen):
    model = tiny_t5()
    src, valid = padded_sources(gen, [4, 2])
    with pytest.raises(ValueError, match=r"input_ids holds ids 0\.\.100 outside the vocabulary \[0, 100\)"):
        model.encode(src.masked_fill(src == src.max(), 100))
    with pytest.raises(ValueError, match=r"labels holds ids .* outside the vocabulary \[0, 100\)"):
        model.loss(src, torch.tensor([[5, 100], [5, 6]]))
    with pytest.raises(ValueError, match=r"decoder_input_ids holds ids -1\.\.-1"):
        model(src, torch.full((2, 3), -1))
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        model.generate(src.float(), 3)
    with pytest.raises(ValueError, match="input_valid must be a bool tensor"):
        model.generate(src, 3, input_valid=valid.long())
    with pytest.raises(ValueError, match="feed_forward must be one of"):
        T5Config.tiny(feed_forward="swiglu")
    with pytest.raises(ValueError, match="relative_attention_max_distance > num_buckets // 2"):
        T5Config.tiny(relative_attention_max_distance=4)
    with pytest.raises(ValueError, match=r"eos_id=100 is outside the vocabulary \[0, 100\)"):
        T5Config.tiny(eos_id=100)


def test_from_hf_rejects_unsupported_models():
    with pytest.raises(ValueError, match="feed_forward_proj='gated-silu' is not supported"):
        T5ForConditionalGeneration.from_hf(hf_model(feed_forward_proj="gated-silu"))
    with pytest.raises(ValueError, match="feed_forward_proj='gelu' is not supported"):
        T5Model.from_hf(hf_model("T5Model", feed_forward_proj="gelu"))
    with pytest.raises(TypeError, match="hf_model must be a Hugging Face T5 encoder-decoder; .* has no decoder"):
        T5Model.from_hf(hf_model("T5EncoderModel"))
    broken = hf_model()
    broken.encoder.block[1].layer[0].SelfAttention.q = nn.Linear(32, 16, bias=False)
    with pytest.raises(ValueError, match=r"encoder\.layers\.1\.self_attn\.q_proj\.weight: .* shape \(16, 32\)"):
        T5ForConditionalGeneration.from_hf(broken)
    biased = hf_model()
    biased.decoder.block[0].layer[2].DenseReluDense.wo = nn.Linear(64, 32, bias=True)
    with pytest.raises(ValueError, match="unexpected parameter 'decoder.block.0.layer.2.DenseReluDense.wo.bias'"):
        T5ForConditionalGeneration.from_hf(biased)
