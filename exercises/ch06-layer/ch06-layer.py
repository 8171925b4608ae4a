# %% [markdown]
# # Exercise 6 · The Transformer layer
#
# This notebook goes with chapter 6. A Transformer layer wraps each sublayer (attention, feed-forward) in a
# residual connection and a LayerNorm, and trains with a learning-rate warm-up. You will write
#
# 1. LayerNorm over the last axis;
# 2. one residual sublayer step, Post-LN (the original) and Pre-LN;
# 3. the original warm-up + inverse-square-root learning-rate schedule;
# 4. DeepNorm's constants α and β;
# 5. and compute the schedule's peak learning rate.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answer. PyTorch's LayerNorm and tfcourse's layer, schedule and DeepNorm functions are switched off
# while your code is being checked.

# %% locked id=setup
import torch
import torch.nn.functional as F

from tfcourse import blocks as ref_blocks
from tfcourse import schedules as ref_schedules
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs

# %% [markdown]
# ## 1. LayerNorm (2 points)
#
# Normalise `x` `(..., D)` over its last axis, then scale and shift by `gamma` and `beta` `(D,)`:
#
# $$\mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}} + \beta$$
#
# with the mean `μ` and the **biased** variance `σ²` (divide by `D`, not `D - 1`) of each row, and `eps = 1e-5`.
# Do not call `F.layer_norm` or `nn.LayerNorm`.


# %% solution id=layer_norm
def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm of x (..., D) over the last axis, with weight gamma and bias beta (D,)."""
    ### BEGIN SOLUTION
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = x.var(dim=-1, unbiased=False, keepdim=True)  # (..., 1)
    return (x - mean) / torch.sqrt(var + eps) * gamma + beta
    ### END SOLUTION


# %% tests id=test_layer_norm points=2
def _layer_norm_reference(x, gamma, beta):
    return F.layer_norm(x, x.shape[-1:], gamma, beta, eps=1e-5)


def _layer_norm_inputs(dtype=torch.float32):
    b, t, d = inputs.size(1, 3), inputs.size(1, 5), inputs.size(2, 16)
    return {
        "x": 3 * inputs.randn(b, t, d, dtype=dtype) + 1,
        "gamma": 1 + 0.5 * inputs.randn(d, dtype=dtype),
        "beta": inputs.randn(d, dtype=dtype),
    }


def _unbiased_ln(x, gamma, beta):
    # the unbiased variance is D / (D - 1) times the biased one: rescale F.layer_norm's result and its eps
    d = x.shape[-1]
    shrink = ((d - 1) / d) ** 0.5
    return F.layer_norm(x, x.shape[-1:], eps=1e-5 * (d - 1) / d) * shrink * gamma + beta


def _ln_over_tokens(x, gamma, beta):
    return F.layer_norm(x.mT, x.shape[-2:-1], eps=1e-5).mT * gamma + beta  # statistics over dim=-2


_layer_norm_mistakes = [
    Mistake(
        "unbiased-variance",
        "you used the unbiased variance (divided by D - 1); LayerNorm divides by D (unbiased=False)",
        _unbiased_ln,
    ),
    Mistake(
        "normalised-over-tokens",
        "you normalised over the tokens (dim=-2); LayerNorm normalises each token's features (dim=-1)",
        _ln_over_tokens,
    ),
    Mistake(
        "no-affine",
        "you left out the learned scale and shift: multiply by gamma and add beta",
        lambda x, gamma, beta: F.layer_norm(x, x.shape[-1:], eps=1e-5),
    ),
]
check_function(
    layer_norm,
    _layer_norm_reference,
    _layer_norm_inputs,
    name="LayerNorm output",
    mistakes=_layer_norm_mistakes,
    forbidden=guard.LAYER_NORM,
)
### BEGIN HIDDEN TESTS
# hidden: float64 keeps its dtype
check_function(
    layer_norm,
    _layer_norm_reference,
    lambda: _layer_norm_inputs(torch.float64),
    name="LayerNorm output (float64)",
    mistakes=_layer_norm_mistakes,
    forbidden=guard.LAYER_NORM,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. A residual sublayer step, Post-LN and Pre-LN (3 points)
#
# Here the sublayer `f` is a linear map, `f(h) = h @ w` with `w` `(D, D)`, standing in for attention or the
# feed-forward network. With LayerNorm parameters `gamma`, `beta`, return
#
# - **Post-LN** (`pre_ln=False`, the original Transformer): `LN(x + f(x))`;
# - **Pre-LN** (`pre_ln=True`, GPT-2 and most models since): `x + f(LN(x))`, the residual stream itself is never
#   normalised.
#
# Use your `layer_norm` from part 1 (with `eps = 1e-5`).


# %% solution id=residual_step
def residual_step(
    x: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, pre_ln: bool
) -> torch.Tensor:
    """One residual sublayer step around f(h) = h @ w, Pre-LN or Post-LN: (B, T, D) -> (B, T, D)."""
    ### BEGIN SOLUTION
    if pre_ln:
        return x + layer_norm(x, gamma, beta) @ w
    return layer_norm(x + x @ w, gamma, beta)
    ### END SOLUTION


# %% tests id=test_residual_step points=3
def _residual_reference(x, w, gamma, beta, pre_ln):
    # tfcourse's TransformerLayer: its residual step around the sublayer f(h) = h @ w
    layer = ref_blocks.TransformerLayer(x.shape[-1], 1, 1, norm="pre" if pre_ln else "post").to(x.dtype).eval()
    with torch.no_grad():
        layer.ff_norm.weight.copy_(gamma)
        layer.ff_norm.bias.copy_(beta)
        return layer._residual(x, layer._sublayer_input(x, layer.ff_norm) @ w, layer.ff_norm)


def _normalised(x, gamma, beta):
    zero = torch.zeros(x.shape[-1], x.shape[-1], dtype=x.dtype)
    return _residual_reference(x, zero, gamma, beta, False)  # Post-LN with f = 0: LN(x)


def _residual_inputs(pre_ln, dtype=torch.float32):
    b, t, d = inputs.size(1, 3), inputs.size(1, 5), inputs.size(2, 12)
    return {
        "x": 2 * inputs.randn(b, t, d, dtype=dtype),
        "w": inputs.randn(d, d, dtype=dtype) / d**0.5,
        "gamma": 1 + 0.5 * inputs.randn(d, dtype=dtype),
        "beta": inputs.randn(d, dtype=dtype),
        "pre_ln": pre_ln,
    }


_residual_mistakes = [
    Mistake(
        "pre-post-swapped",
        "you swapped the two arrangements: Post-LN normalises after the residual sum, LN(x + f(x)); Pre-LN "
        "normalises the sublayer's input, x + f(LN(x))",
        lambda x, w, gamma, beta, pre_ln: _residual_reference(x, w, gamma, beta, not pre_ln),
    ),
    Mistake(
        "pre-ln-normalised-residual",
        "in Pre-LN you added f to the normalised input, LN(x) + f(LN(x)); the residual must carry x itself",
        lambda x, w, gamma, beta, pre_ln: (
            _normalised(x, gamma, beta) @ (torch.eye(w.shape[0], dtype=w.dtype) + w)
            if pre_ln
            else _residual_reference(x, w, gamma, beta, pre_ln)
        ),
    ),
    Mistake(
        "no-residual",
        "the residual connection is missing: add the sublayer's input x back",
        lambda x, w, gamma, beta, pre_ln: (
            _normalised(x, gamma, beta) @ w if pre_ln else _normalised(x @ w, gamma, beta)
        ),
    ),
]
for _pre_ln in (False, True):
    check_function(
        residual_step,
        _residual_reference,
        lambda p=_pre_ln: _residual_inputs(p),
        name=f"{'Pre' if _pre_ln else 'Post'}-LN output",
        mistakes=_residual_mistakes,
        forbidden=guard.LAYER,
        trials=2,
    )
### BEGIN HIDDEN TESTS
# hidden: float64 keeps its dtype
for _pre_ln in (False, True):
    check_function(
        residual_step,
        _residual_reference,
        lambda p=_pre_ln: _residual_inputs(p, torch.float64),
        name=f"{'Pre' if _pre_ln else 'Post'}-LN output (float64)",
        mistakes=_residual_mistakes,
        forbidden=guard.LAYER,
        trials=2,
    )
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Warm-up, then inverse-square-root decay (2 points)
#
# The original Transformer's learning rate at step `s` (counted from 1) is
#
# $$\mathrm{lr}(s) = D^{-1/2} \cdot \min\!\big(s^{-1/2},\; s \cdot w^{-3/2}\big)$$
#
# for model width `D` and `w` warm-up steps: linear growth until step `w`, then decay like `1/√s`. `steps` is a
# float64 tensor of step numbers (all ≥ 1); return the float64 tensor of learning rates, without a Python loop.


# %% solution id=transformer_lr
def transformer_lr(steps: torch.Tensor, d_model: int, warmup_steps: int) -> torch.Tensor:
    """Learning rates (float64, like steps) of the original schedule at steps >= 1."""
    ### BEGIN SOLUTION
    return d_model**-0.5 * torch.minimum(steps**-0.5, steps * warmup_steps**-1.5)
    ### END SOLUTION


# %% tests id=test_transformer_lr points=2
def _lr_reference(steps, d_model, warmup_steps):
    rates = [ref_schedules.transformer_lr(int(s), d_model, warmup_steps) for s in steps]
    return torch.tensor(rates, dtype=torch.float64)


def _lr_inputs():
    warmup = inputs.size(10, 5000)
    steps = torch.cat([inputs.randint(1, 3 * warmup, (inputs.size(5, 20),)), torch.tensor([1, warmup, warmup + 1])])
    return {"steps": steps.double(), "d_model": 64 * inputs.size(1, 16), "warmup_steps": warmup}


def _lr_branches(steps, d_model, warmup_steps):
    """(decay branch, warm-up branch) at every step, read off tfcourse's schedule."""
    decay = _lr_reference(steps, d_model, 1)  # with a warm-up of one step, every step s >= 1 decays
    peak = ref_schedules.transformer_lr(warmup_steps, d_model, warmup_steps)
    return decay, peak * steps / warmup_steps  # the warm-up branch grows linearly up to the peak at s = w


_lr_mistakes = [
    Mistake(
        "lr-no-model-scale",
        "the factor D^(-1/2) is missing: the whole schedule is scaled by d_model ** -0.5",
        lambda s, d, w: _lr_reference(s, d, w) * d**0.5,
    ),
    Mistake(
        "lr-max",
        "you took the maximum of the two branches; the schedule is their minimum (the smaller one is active)",
        lambda s, d, w: torch.maximum(*_lr_branches(s, d, w)),
    ),
]
check_function(
    transformer_lr, _lr_reference, _lr_inputs, name="learning rates", mistakes=_lr_mistakes, forbidden=guard.LAYER
)
### BEGIN HIDDEN TESTS
# hidden: the wrong warm-up slope (written out, so it is named only here); the first step only, and a warm-up
# of one step
_lr_mistakes_hidden = [
    *_lr_mistakes,
    Mistake(
        "lr-warmup-power",
        "your warm-up slope is wrong: during warm-up the rate is s · w^(-3/2), so that both branches meet at s = w",
        lambda s, d, w: d**-0.5 * torch.minimum(s**-0.5, s * float(w) ** -1.0),
    ),
]
check_function(
    transformer_lr,
    _lr_reference,
    _lr_inputs,
    name="learning rates",
    mistakes=_lr_mistakes_hidden,
    forbidden=guard.LAYER,
)
check_function(
    transformer_lr,
    _lr_reference,
    lambda: {"steps": torch.tensor([1.0], dtype=torch.float64), "d_model": 512, "warmup_steps": inputs.size(1, 4000)},
    name="learning rates",
    forbidden=guard.LAYER,
    trials=2,
)
check_function(
    transformer_lr,
    _lr_reference,
    lambda: {"steps": torch.arange(1.0, 10.0, dtype=torch.float64), "d_model": 256, "warmup_steps": 1},
    name="learning rates",
    forbidden=guard.LAYER,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. DeepNorm's constants (2 points)
#
# DeepNorm (Wang et al. 2022) computes each residual step as `LN(α·x + f(x))`, with `α > 1` up-weighting the
# residual, and initialises the feed-forward, value and output projections with gain `β < 1`. For `N`
# encoder layers and `M` decoder layers, the paper's table 1 gives
#
# | architecture | encoder α | encoder β | decoder α | decoder β |
# | --- | --- | --- | --- | --- |
# | encoder-only (`M = 0`) | `(2N)^(1/4)` | `(8N)^(-1/4)` | – | – |
# | decoder-only (`N = 0`) | – | – | `(2M)^(1/4)` | `(8M)^(-1/4)` |
# | encoder–decoder | `0.81·(N⁴M)^(1/16)` | `0.87·(N⁴M)^(-1/16)` | `(3M)^(1/4)` | `(12M)^(-1/4)` |
#
# Return a pair `(encoder, decoder)` in which each is a tuple `(α, β)` of floats, or `None` for a stack the
# model does not have. At least one of `N`, `M` is positive.


# %% solution id=deepnorm
def deepnorm_constants(num_encoder_layers: int, num_decoder_layers: int) -> tuple:
    """((alpha, beta) or None for the encoder, (alpha, beta) or None for the decoder)."""
    ### BEGIN SOLUTION
    n, m = num_encoder_layers, num_decoder_layers
    if m == 0:
        return ((2 * n) ** 0.25, (8 * n) ** -0.25), None
    if n == 0:
        return None, ((2 * m) ** 0.25, (8 * m) ** -0.25)
    encoder = (0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16))
    return encoder, ((3 * m) ** 0.25, (12 * m) ** -0.25)
    ### END SOLUTION


# %% tests id=test_deepnorm points=2
def _deepnorm_reference(num_encoder_layers, num_decoder_layers):
    constants = ref_blocks.deepnorm_constants(num_encoder_layers, num_decoder_layers)  # {stack: (α, β)}
    return tuple(None if s not in constants else tuple(constants[s]) for s in ("encoder", "decoder"))


def _deepnorm_inputs():
    n, m = inputs.size(1, 200), inputs.size(1, 200)
    which = inputs.size(0, 2)  # encoder-only, decoder-only, or both
    return {"num_encoder_layers": n if which != 1 else 0, "num_decoder_layers": m if which != 0 else 0}


_deepnorm_mistakes = [
    Mistake(
        "deepnorm-alpha-beta-swapped",
        "α and β are swapped: α > 1 up-weights the residual, β < 1 shrinks the initial weights",
        lambda n, m: tuple(None if c is None else (c[1], c[0]) for c in _deepnorm_reference(n, m)),
    ),
    Mistake(
        "deepnorm-decoder-only-formula",
        "for an encoder–decoder model the constants are not those of a single stack: use the table's last row",
        lambda n, m: (_deepnorm_reference(n, 0)[0] if n else None, _deepnorm_reference(0, m)[1] if m else None),
    ),
]
check_function(
    deepnorm_constants,
    _deepnorm_reference,
    _deepnorm_inputs,
    name="DeepNorm constants (encoder, decoder)",
    mistakes=_deepnorm_mistakes,
    forbidden=guard.LAYER,
    trials=6,
)
### BEGIN HIDDEN TESTS
# hidden: each architecture once, with a one-layer stack
for _n, _m in ((1, 0), (0, 1), (1, 1), (inputs.size(2, 1000), inputs.size(2, 1000))):
    check_function(
        deepnorm_constants,
        _deepnorm_reference,
        lambda n=_n, m=_m: {"num_encoder_layers": n, "num_decoder_layers": m},
        name="DeepNorm constants (encoder, decoder)",
        mistakes=_deepnorm_mistakes,
        forbidden=guard.LAYER,
        trials=1,
    )
### END HIDDEN TESTS

# %% [markdown]
# ## 5. The peak learning rate (1 point)
#
# With `d_model = 512` and `warmup_steps = 4000` (the paper's base model), what is the largest learning rate
# the schedule of part 3 ever reaches? Set `answer_peak_lr` to a number (e.g. `1.23e-3`).

# %% solution id=peak_lr
answer_peak_lr = None  # replace None with your answer
### BEGIN SOLUTION
answer_peak_lr = 512**-0.5 * 4000**-0.5
### END SOLUTION

# %% tests id=test_peak_lr points=1
check_answered(answer_peak_lr, "answer_peak_lr")
### BEGIN HIDDEN TESTS
check_value(
    answer_peak_lr,
    512**-0.5 * 4000**-0.5,
    "answer_peak_lr",
    mistakes={
        4000**-0.5: "the factor d_model^(-1/2) is missing",
        512**-0.5 * 4000**-1.5: "that is the warm-up slope w^(-3/2) times D^(-1/2); the peak is at step s = w",
        512
        ** -0.5: "that would be the rate at step 1 after decay; the schedule peaks at s = w, where s^(-1/2) = w^(-1/2)",
    },
)
### END HIDDEN TESTS
