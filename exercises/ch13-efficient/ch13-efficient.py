# %% [markdown]
# # Exercise 13 · Efficient and very deep Transformers
#
# This notebook goes with chapter 13. FLASH's gated attention unit replaces the softmax by a squared ReLU, and
# DeepNet trains Post-LN stacks of hundreds of layers by up-weighting the residual. You will write
#
# 1. squared-ReLU attention, `relu²(q kᵀ · scale) / n · v`, with an optional causal mask;
# 2. DeepNet's constants α and β for encoder-only, decoder-only and encoder–decoder models;
# 3. the DeepNorm residual step `LN(α·x + f(x))`;
# 4. and compute α for a deep encoder.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answer. tfcourse's attention, FLASH and DeepNorm functions are switched off while your code is being
# checked.

# %% locked id=setup
import torch
import torch.nn.functional as F

from tfcourse import blocks as ref_blocks
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs, mistakes
from tfcourse.models import gau as ref_gau

# %% [markdown]
# ## 1. Squared-ReLU attention (3 points)
#
# The gated attention unit (Hua et al. 2022) has a single head and no softmax. With queries `q` `(..., T, S)`,
# keys `k` `(..., T, S)` and values `v` `(..., T, E)`, its attention matrix is
#
# $$A = \frac{1}{n}\,\mathrm{relu}\!\Big(\frac{q k^\top}{\sqrt S}\Big)^2, \qquad \text{output} = A\,v,$$
#
# where `n` is the number of keys `T` (the sequence length, also when the mask is causal). With `causal`,
# query `i` may only use keys `j <= i`: set the other weights to exactly 0 (no `-inf` is needed, there is no
# softmax). Return the output `(..., T, E)` in `v`'s dtype. Do not call tfcourse's attention functions or
# `F.scaled_dot_product_attention`.


# %% solution id=squared_relu_attention
def squared_relu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """relu²(q kᵀ / √S) / n · v, optionally causal: (..., T, S), (..., T, S), (..., T, E) -> (..., T, E)."""
    ### BEGIN SOLUTION
    n = k.shape[-2]
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (..., T, T)
    weights = F.relu(scores).square() / n  # (..., T, T)
    if causal:
        allowed = torch.ones(q.shape[-2], n, dtype=torch.bool, device=q.device).tril()  # (T, T), j <= i
        weights = weights.masked_fill(~allowed, 0.0)
    return weights @ v  # (..., T, E)
    ### END SOLUTION


# %% tests id=test_squared_relu_attention points=3
def _squared_relu(q, k, v, causal, **knobs):
    return ref_gau.squared_relu_attention(q, k, v, causal=causal, **knobs)


def _squared_relu_inputs(causal, dtype=torch.float32, batch=True):
    b, t, s, e = inputs.size(1, 3), inputs.size(2, 9), inputs.size(2, 16), inputs.size(1, 12)
    lead = (b,) if batch else ()
    return {
        "q": inputs.randn(*lead, t, s, dtype=dtype),
        "k": inputs.randn(*lead, t, s, dtype=dtype),
        "v": inputs.randn(*lead, t, e, dtype=dtype),
        "causal": causal,
    }


def _relu_not_squared(q, k, v, causal):
    # tfcourse's weights relu²(·) / n, back to relu(·) / n
    n = k.shape[-2]
    weights = _squared_relu(q, k, v, causal, return_weights=True)[1]  # (..., T, T) float32
    return ((weights * n).sqrt() / n @ v.float()).to(v.dtype)


def _per_row(q, k, v, causal):
    # each row divided by the number of keys its query may see instead of by n
    t = k.shape[-2]
    visible = torch.arange(1, t + 1)[:, None] if causal else torch.full((t, 1), t)  # (T, 1)
    return (_squared_relu(q, k, v, causal).float() * t / visible).to(v.dtype)


def _wrong_causal_mask(mask):
    return lambda q, k, v, c: _squared_relu(q, k, v, False, mask=mask(k.shape[-2])) if c else _squared_relu(q, k, v, c)


def _softmax_variant(q, k, v, causal):
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril() if causal else None
    return mistakes.attention(q, k, v, mask)


_squared_relu_mistakes = [
    Mistake(
        "softmax-instead-of-relu2",
        "you used a softmax; the GAU's weights are relu(scores)² / n, with no exponential and no normalisation "
        "over the keys",
        _softmax_variant,
    ),
    Mistake(
        "relu-not-squared",
        "your weights are relu(scores) / n; square the ReLU: relu(scores)² / n",
        _relu_not_squared,
    ),
    Mistake(
        "missing-1-over-n",
        "your weights are not divided by n, the number of keys T",
        lambda q, k, v, c: _squared_relu(q, k, v, c, normalizer=1.0),
    ),
    Mistake(
        "normalised-by-visible-keys",
        "you divided each row by the number of keys that query may see (i + 1); the GAU divides every row by "
        "the same n, the sequence length T, causal or not",
        _per_row,
    ),
    Mistake(
        "missing-scale",
        "your scores are not divided by √S (the width of q and k) before the ReLU",
        lambda q, k, v, c: _squared_relu(q, k, v, c, scale=1.0),
    ),
    Mistake(
        "causal-no-diagonal",
        "your causal mask excludes the diagonal: a query may use its own key (keep j <= i, tril with diagonal=0)",
        _wrong_causal_mask(mistakes.CAUSAL_NO_DIAGONAL),
    ),
    Mistake(
        "causal-one-ahead",
        "your causal mask lets each query see one key into the future (diagonal=1 instead of 0)",
        _wrong_causal_mask(mistakes.CAUSAL_ONE_AHEAD),
    ),
]
for _causal in (False, True):
    check_function(
        squared_relu_attention,
        _squared_relu,
        lambda c=_causal: _squared_relu_inputs(c),
        name=f"squared-ReLU attention output ({'causal' if _causal else 'non-causal'})",
        mistakes=_squared_relu_mistakes,
        forbidden=guard.EFFICIENT,
    )
### BEGIN HIDDEN TESTS
# hidden: float64 keeps its dtype (the reference's scores are float32, so the mistakes are computed here in
# float64, written out), no batch axis, a single token
_squared_relu_mistakes_float64 = [_squared_relu_mistakes[0]]  # the softmax one is computed in float64 already


def _relu2_variant(q, k, v, causal, *, power=2, scale=True, normalise=True, diagonal=0, per_row=False):
    t = k.shape[-2]
    scores = q.double() @ k.double().transpose(-2, -1) / (q.shape[-1] ** 0.5 if scale else 1.0)  # (..., T, T)
    weights = F.relu(scores) ** power
    allowed = torch.ones(q.shape[-2], t, dtype=torch.bool).tril(diagonal if causal else t)  # (T, T)
    weights = weights.masked_fill(~allowed, 0.0)
    if per_row:
        weights = weights / allowed.sum(-1, keepdim=True).clamp(min=1)  # divide by the keys each query sees
    elif normalise:
        weights = weights / t
    return (weights @ v.double()).to(v.dtype)


_squared_relu_mistakes_float64 += [
    Mistake(
        "relu-not-squared",
        "your weights are relu(scores) / n; square the ReLU: relu(scores)² / n",
        lambda q, k, v, c: _relu2_variant(q, k, v, c, power=1),
    ),
    Mistake(
        "missing-1-over-n",
        "your weights are not divided by n, the number of keys T",
        lambda q, k, v, c: _relu2_variant(q, k, v, c, normalise=False),
    ),
    Mistake(
        "normalised-by-visible-keys",
        "you divided each row by the number of keys that query may see (i + 1); the GAU divides every row by "
        "the same n, the sequence length T, causal or not",
        lambda q, k, v, c: _relu2_variant(q, k, v, c, per_row=True),
    ),
    Mistake(
        "missing-scale",
        "your scores are not divided by √S (the width of q and k) before the ReLU",
        lambda q, k, v, c: _relu2_variant(q, k, v, c, scale=False),
    ),
    Mistake(
        "causal-no-diagonal",
        "your causal mask excludes the diagonal: a query may use its own key (keep j <= i, tril with diagonal=0)",
        lambda q, k, v, c: _relu2_variant(q, k, v, c, diagonal=-1),
    ),
    Mistake(
        "causal-one-ahead",
        "your causal mask lets each query see one key into the future (diagonal=1 instead of 0)",
        lambda q, k, v, c: _relu2_variant(q, k, v, c, diagonal=1),
    ),
]
for _causal in (False, True):
    check_function(
        squared_relu_attention,
        _squared_relu,
        lambda c=_causal: _squared_relu_inputs(c, torch.float64, batch=False),
        name=f"squared-ReLU attention output ({'causal' if _causal else 'non-causal'}, float64)",
        mistakes=_squared_relu_mistakes_float64,
        forbidden=guard.EFFICIENT,
        atol=1e-5,
        rtol=1e-4,
    )
check_function(
    squared_relu_attention,
    _squared_relu,
    lambda: {"q": inputs.randn(2, 1, 4), "k": inputs.randn(2, 1, 4), "v": inputs.randn(2, 1, 3), "causal": True},
    name="squared-ReLU attention output (one token)",
    mistakes=_squared_relu_mistakes,
    forbidden=guard.EFFICIENT,
    trials=2,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. DeepNet's constants (2 points)
#
# DeepNorm (Wang et al. 2022) computes each residual step as `LN(α·x + f(x))` with `α > 1`, and initialises
# the feed-forward, value and output projections with gain `β < 1`. For `N` encoder layers and `M` decoder
# layers, the paper's table 1 gives
#
# | architecture | encoder α | encoder β | decoder α | decoder β |
# | --- | --- | --- | --- | --- |
# | encoder-only (`M = 0`) | `(2N)^(1/4)` | `(8N)^(-1/4)` | – | – |
# | decoder-only (`N = 0`) | – | – | `(2M)^(1/4)` | `(8M)^(-1/4)` |
# | encoder–decoder | `0.81·(N⁴M)^(1/16)` | `0.87·(N⁴M)^(-1/16)` | `(3M)^(1/4)` | `(12M)^(-1/4)` |
#
# Return a pair `(encoder, decoder)` in which each is a tuple `(α, β)` of floats, or `None` for a stack the
# model does not have. At least one of `N`, `M` is positive.


# %% solution id=deepnet_constants
def deepnet_constants(num_encoder_layers: int, num_decoder_layers: int) -> tuple:
    """((alpha, beta) or None for the encoder, (alpha, beta) or None for the decoder)."""
    ### BEGIN SOLUTION
    n, m = num_encoder_layers, num_decoder_layers
    if m == 0:
        return ((2 * n) ** 0.25, (8 * n) ** -0.25), None
    if n == 0:
        return None, ((2 * m) ** 0.25, (8 * m) ** -0.25)
    return (0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)), ((3 * m) ** 0.25, (12 * m) ** -0.25)
    ### END SOLUTION


# %% tests id=test_deepnet_constants points=2
def _deepnet(num_encoder_layers, num_decoder_layers):
    constants = ref_blocks.deepnorm_constants(num_encoder_layers, num_decoder_layers)  # {stack: (α, β)}
    return tuple(tuple(constants[s]) if s in constants else None for s in ("encoder", "decoder"))


def _deepnet_inputs(which=None):
    which = inputs.size(0, 2) if which is None else which  # encoder-only, decoder-only, encoder–decoder
    n, m = inputs.size(1, 500), inputs.size(1, 500)
    return {"num_encoder_layers": n if which != 1 else 0, "num_decoder_layers": m if which != 0 else 0}


def _single_stack(n, m, *, alpha_factor=1.0, beta_factor=1.0):
    # tfcourse's constants with a single stack's α and β multiplied by the factors; encoder–decoder as given
    constants = _deepnet(n, m)
    if n and m:
        return constants
    return tuple(None if c is None else (c[0] * alpha_factor, c[1] * beta_factor) for c in constants)


_deepnet_mistakes = [
    Mistake(
        "alpha-beta-swapped",
        "α and β are swapped: α > 1 up-weights the residual x, β < 1 shrinks the initial weights",
        lambda n, m: tuple(None if c is None else (c[1], c[0]) for c in _deepnet(n, m)),
    ),
    Mistake(
        "n-instead-of-2n",
        "for a single stack α = (2N)^(1/4): you used N instead of 2N",
        lambda n, m: _single_stack(n, m, alpha_factor=2**-0.25),  # N^(1/4) = (2N)^(1/4) / 2^(1/4)
    ),
    Mistake(
        "n-instead-of-2n-both",
        "for a single stack α = (2N)^(1/4) and β = (8N)^(-1/4) = (4·2N)^(-1/4): you used N instead of 2N",
        lambda n, m: _single_stack(n, m, alpha_factor=2**-0.25, beta_factor=2**0.25),
    ),
    Mistake(
        "single-stack-formula-for-encoder-decoder",
        "for an encoder–decoder model the constants are not those of a single stack: use the table's last row",
        lambda n, m: (_deepnet(n, 0)[0] if n else None, _deepnet(0, m)[1] if m else None),
    ),
]
check_function(
    deepnet_constants,
    _deepnet,
    _deepnet_inputs,
    name="DeepNet constants (encoder, decoder)",
    mistakes=_deepnet_mistakes,
    forbidden=guard.EFFICIENT,
    trials=6,
)
### BEGIN HIDDEN TESTS
# hidden: each architecture, including one-layer stacks
for _which in (0, 1, 2):
    check_function(
        deepnet_constants,
        _deepnet,
        lambda w=_which: _deepnet_inputs(w),
        name="DeepNet constants (encoder, decoder)",
        mistakes=_deepnet_mistakes,
        forbidden=guard.EFFICIENT,
        trials=2,
    )
for _n, _m in ((1, 0), (0, 1), (1, 1), (inputs.size(100, 1000), inputs.size(100, 1000))):
    check_function(
        deepnet_constants,
        _deepnet,
        lambda n=_n, m=_m: {"num_encoder_layers": n, "num_decoder_layers": m},
        name="DeepNet constants (encoder, decoder)",
        mistakes=_deepnet_mistakes,
        forbidden=guard.EFFICIENT,
        trials=1,
    )
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The DeepNorm residual step (3 points)
#
# Here the sublayer `f` is a linear map, `f(h) = h @ w` with `w` `(D, D)`, standing in for attention or the
# feed-forward network. DeepNorm keeps the Post-LN arrangement (normalise *after* the residual sum) but
# up-weights the residual:
#
# $$x_{\text{next}} = \mathrm{LN}(\alpha \cdot x + f(x))$$
#
# with the LayerNorm's weight `ln_weight` and bias `ln_bias` `(D,)` and `eps = 1e-5`. You may use
# `F.layer_norm` here. Return `(..., T, D)` in `x`'s dtype.


# %% solution id=deepnorm_step
def deepnorm_step(
    x: torch.Tensor, w: torch.Tensor, alpha: float, ln_weight: torch.Tensor, ln_bias: torch.Tensor
) -> torch.Tensor:
    """LN(alpha·x + x @ w): (..., T, D) -> (..., T, D)."""
    ### BEGIN SOLUTION
    return F.layer_norm(alpha * x + x @ w, x.shape[-1:], ln_weight, ln_bias, eps=1e-5)
    ### END SOLUTION


# %% tests id=test_deepnorm_step points=3
def _layer_step(x, w, ln_weight, ln_bias, norm, alpha=1.0):
    # tfcourse's TransformerLayer(norm=...): its residual step around the sublayer f(h) = h @ w
    layer = ref_blocks.TransformerLayer(x.shape[-1], 1, 1, norm=norm, deepnorm_alpha=alpha)
    layer = layer.to(x.dtype).eval()
    with torch.no_grad():
        layer.ff_norm.weight.copy_(ln_weight)
        layer.ff_norm.bias.copy_(ln_bias)
        return layer._residual(x, layer._sublayer_input(x, layer.ff_norm) @ w, layer.ff_norm)


def _deepnorm_step(x, w, alpha, ln_weight, ln_bias):
    return _layer_step(x, w, ln_weight, ln_bias, "deepnorm", alpha)


def _deepnorm_inputs(dtype=torch.float32):
    b, t, d = inputs.size(1, 3), inputs.size(1, 6), inputs.size(2, 12)
    return {
        "x": 2 * inputs.randn(b, t, d, dtype=dtype),
        "w": inputs.randn(d, d, dtype=dtype) / d**0.5,
        "alpha": ref_blocks.deepnorm_constants(inputs.size(6, 1000))["encoder"].alpha,  # 2 … 6.7
        "ln_weight": 1 + 0.5 * inputs.randn(d, dtype=dtype),
        "ln_bias": inputs.randn(d, dtype=dtype),
    }


_deepnorm_mistakes = [
    Mistake(
        "pre-ln-form",
        "you wrote the Pre-LN step x + f(LN(x)); DeepNorm keeps Post-LN's order and normalises after the "
        "residual sum: LN(α·x + f(x))",
        lambda x, w, a, g, b: _layer_step(x, w, g, b, "pre"),
    ),
    Mistake(
        "pre-ln-form-with-alpha",
        "you wrote a Pre-LN step α·x + f(LN(x)); DeepNorm keeps Post-LN's order and normalises after the "
        "residual sum: LN(α·x + f(x))",
        lambda x, w, a, g, b: _layer_step(x, w, g, b, "pre") + (a - 1) * x,
    ),
    Mistake(
        "alpha-on-sublayer",
        "you multiplied the sublayer's output f(x) by α; α up-weights the residual x: LN(α·x + f(x))",
        lambda x, w, a, g, b: _deepnorm_step(x, a * w, 1.0, g, b),
    ),
    Mistake(
        "no-alpha",
        "that is the plain Post-LN step LN(x + f(x)); DeepNorm multiplies the residual x by α first",
        lambda x, w, a, g, b: _deepnorm_step(x, w, 1.0, g, b),
    ),
    Mistake(
        "alpha-after-norm",
        "you multiplied by α after the LayerNorm; α scales the residual x inside it: LN(α·x + f(x))",
        lambda x, w, a, g, b: a * _deepnorm_step(x, w, 1.0, g, b),
    ),
]
check_function(
    deepnorm_step,
    _deepnorm_step,
    _deepnorm_inputs,
    name="DeepNorm step output",
    mistakes=_deepnorm_mistakes,
    forbidden=guard.EFFICIENT,
)
### BEGIN HIDDEN TESTS
# hidden: float64 keeps its dtype; α = 1 is plain Post-LN
check_function(
    deepnorm_step,
    _deepnorm_step,
    lambda: _deepnorm_inputs(torch.float64),
    name="DeepNorm step output (float64)",
    mistakes=_deepnorm_mistakes,
    forbidden=guard.EFFICIENT,
)
check_function(
    deepnorm_step,
    _deepnorm_step,
    lambda: {**_deepnorm_inputs(), "alpha": 1.0},
    name="DeepNorm step output (α = 1)",
    forbidden=guard.EFFICIENT,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. α for a deep encoder (1 point)
#
# What is DeepNorm's α for an encoder-only model of `N = 200` layers? Set `answer_alpha` to a number
# (work it out from the table, then check it with your function).

# %% solution id=alpha
answer_alpha = None  # replace None with your answer
### BEGIN SOLUTION
answer_alpha = 400**0.25
### END SOLUTION

# %% tests id=test_alpha points=1
check_answered(answer_alpha, "answer_alpha")
### BEGIN HIDDEN TESTS
check_value(
    answer_alpha,
    400**0.25,
    "answer_alpha",
    mistakes={
        200**0.25: "that is N^(1/4); an encoder-only model uses (2N)^(1/4)",
        1600**-0.25: "that is β = (8N)^(-1/4), the initialisation gain; α = (2N)^(1/4)",
        400**0.5: "that is the square root of 2N; α is its fourth root",
        600**0.25: "that is the decoder's α of an encoder–decoder model, (3M)^(1/4); an encoder-only model uses "
        "(2N)^(1/4)",
        0.81 * 200 ** (5 / 16): "that is the encoder's α of an encoder–decoder model; an encoder-only model uses "
        "(2N)^(1/4)",
    },
)
### END HIDDEN TESTS
