"""MINE: mutual information from a trained statistics network and the Donsker-Varadhan bound.

The DV representation of the KL divergence gives, for any function ``T`` (the *statistics
network*, or critic), a lower bound on the mutual information of ``(X, Y)`` with joint ``P`` and
product of marginals ``Q = P_X P_Y``::

    I(X; Y) >= E_P[T] - log E_Q[exp T]        (nats)

with equality at ``T = log dP/dQ + const``. MINE (Belghazi et al., ICML 2018) maximises the
sample version of the bound over a neural network ``T``. Joint samples are paired
``(x_i, y_i)``; marginal samples ``(x_i, y_pi(i))`` shuffle only the ``Y`` half with a random
permutation ``pi``.

Building blocks shared with the ``drmime`` registration method (:mod:`mibench.methods.drmime`):
:class:`StatisticsNetwork`, :func:`dv_bound` (with :class:`MovingAverage` for MINE's bias
correction) and :func:`marginal_pairs`. The estimator function is :func:`mine`.

All randomness comes from a local :class:`torch.Generator` (network initialisation included),
never from the global RNG, so results are reproducible for a given seed (on CPU bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mibench.estimators.inputs import check_pair_shapes
from mibench.estimators.options import MINE_MIN_PIXELS as MIN_PIXELS


def make_generator(device: Any, seed: int) -> torch.Generator:
    """A :class:`torch.Generator` seeded with ``seed``, on ``device`` when torch supports it
    there (CPU, CUDA), else on the CPU. Random draws are made on ``generator.device`` and moved
    to the data's device afterwards."""
    device = torch.device(device)
    try:
        gen = torch.Generator(device=device)
    except RuntimeError:
        gen = torch.Generator()
    return gen.manual_seed(int(seed))


def _linear(in_features: int, out_features: int, generator: torch.Generator | None,
            device: Any) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default initialisation, drawn from ``generator`` if given.

    The default (``kaiming_uniform_(a=sqrt(5))`` for the weight) is ``U(-b, b)`` with
    ``b = 1/sqrt(fan_in)`` for both weight and bias; drawing it ourselves keeps the global RNG
    untouched.
    """
    if generator is None:
        return nn.Linear(in_features, out_features, device=device)
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features, device=generator.device)
    bound = 1.0 / math.sqrt(in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer.to(device)


class StatisticsNetwork(nn.Module):
    """The MINE critic of DRMIME: ``Linear(in -> hidden) - ReLU - Linear(hidden -> hidden) -
    ReLU - Linear(hidden -> 1)``, no normalisation, no dropout, PyTorch's default initialisation.

    Parameters
    ----------
    in_features : int
        Length of one sample: the fixed pixel's channel vector followed by the moving pixel's
        (``2 C`` for two ``C``-channel images).
    hidden : int
        Width of both hidden layers (100 in DRMIME).
    generator : torch.Generator, optional
        Draws the initial weights (default distribution) without touching the global RNG.
    device : optional
        Where the parameters live.

    ``forward`` maps ``(N, in_features)`` to ``(N,)``.
    """

    def __init__(self, in_features: int, hidden: int = 100, *,
                 generator: torch.Generator | None = None, device: Any = None):
        super().__init__()
        self.net = nn.Sequential(
            _linear(in_features, hidden, generator, device), nn.ReLU(),
            _linear(hidden, hidden, generator, device), nn.ReLU(),
            _linear(hidden, 1, generator, device),
        )

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return self.net(samples).squeeze(-1)


class MovingAverage:
    """State of MINE's bias correction: an exponential moving average of ``mean exp(T_marg)``.

    ``ma <- decay * ma + (1 - decay) * mean_exp`` at every :func:`dv_bound` call that receives
    this object (kept in the log domain, so it cannot overflow; the first call initialises
    ``ma = mean_exp``). ``decay = 0`` makes ``ma`` the current mean, i.e. no correction.
    """

    def __init__(self, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the moving-average decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.log_value: torch.Tensor | None = None

    def update(self, log_mean_exp: torch.Tensor) -> torch.Tensor:
        """Fold in the current ``log mean exp(T_marg)`` (no gradient); return ``log ma``."""
        current = log_mean_exp.detach()
        if self.log_value is None or self.decay == 0.0:
            self.log_value = current
        else:
            self.log_value = torch.logaddexp(math.log(self.decay) + self.log_value,
                                             math.log1p(-self.decay) + current)
        return self.log_value


def _masked_mean(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if t.numel() == 0:
        return t.sum()  # 0, still attached to the graph
    if mask is None:
        return t.mean()
    w = mask.to(t.dtype)
    return (t * w).sum() / w.sum().clamp_min(1.0)


def log_mean_exp(t: torch.Tensor, mask: torch.Tensor | None = None, *,
                 stable: bool = True) -> torch.Tensor:
    """``log(mean(exp(t)))`` over the entries where ``mask`` (bool, same shape) is True.

    ``stable=True`` subtracts the (detached) maximum first, i.e. ``logsumexp(t) - log n``: the
    same value and gradient, without overflow. ``stable=False`` is the literal formula, which
    gives ``inf`` once some ``t > ~88`` (float32). No entry, or no selected entry, gives 0 (and
    no NaN in the gradient).
    """
    t = t.reshape(-1)
    if t.numel() == 0:
        return t.sum()
    if mask is None:
        if stable:
            return torch.logsumexp(t, dim=0) - math.log(max(t.numel(), 1))
        return torch.log(torch.exp(t).mean())
    mask = mask.reshape(-1)
    n = mask.sum()
    if stable:
        top = torch.where(mask, t, torch.full_like(t, -math.inf)).max().detach()
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        terms = torch.exp(torch.where(mask, t - top, torch.full_like(t, -math.inf)))
        total = terms.sum() / n.clamp_min(1).to(t.dtype)
        value = top + torch.log(total.clamp_min(torch.finfo(t.dtype).tiny))
    else:
        total = (torch.exp(t) * mask.to(t.dtype)).sum() / n.clamp_min(1).to(t.dtype)
        value = torch.log(total)
    return torch.where(n > 0, value, torch.zeros_like(value))


def dv_bound(t_joint: torch.Tensor, t_marginal: torch.Tensor, *, stable: bool = True,
             ema: MovingAverage | None = None, joint_mask: torch.Tensor | None = None,
             marginal_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Donsker-Varadhan bound ``mean(T_joint) - log mean exp(T_marginal)`` (nats, a scalar).

    Parameters
    ----------
    t_joint, t_marginal : Tensor ``(N,)``, ``(M,)``
        Critic outputs on joint and on marginal (shuffled) samples.
    stable : bool
        Numerically stable log-mean-exp (see :func:`log_mean_exp`); same value and gradient.
    ema : MovingAverage, optional
        MINE's bias correction (Belghazi et al. 2018, section 3.2). The gradient of the second
        term, ``E[exp(T) grad T] / E[exp(T)]``, is biased when the denominator is a minibatch
        mean; with ``ema`` the denominator of the *gradient* becomes the moving average ``ma``
        (updated here, in place): the returned value is unchanged (the plain minibatch bound),
        its gradient is ``grad mean(T_joint) - grad mean(exp T_marg) / ma``. Implemented as
        ``lme + (lme - lme.detach()) * (exp(lme - log ma) - 1)`` with ``lme`` detached where
        noted, all in the log domain.
    joint_mask, marginal_mask : bool Tensor, optional
        Samples to use (True) in each term; a term with no sample counts as 0.

    Returns
    -------
    Tensor, a 0-d tensor with gradient.
    """
    first = _masked_mean(t_joint.reshape(-1), joint_mask)
    lme = log_mean_exp(t_marginal, marginal_mask, stable=stable)
    if ema is not None:
        log_ma = ema.update(lme)
        # Forward: lme. Backward: exp(lme - log ma) * grad lme = grad mean(exp T) / ma.
        lme = lme + (lme - lme.detach()) * (torch.exp(lme.detach() - log_ma) - 1.0)
    return first - lme


def marginal_pairs(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of the product of marginals: ``cat(x_i, y_pi(i))`` for a fresh random ``pi``.

    Only the moving half ``y`` ``(N, Cy)`` is shuffled; ``x`` ``(N, Cx)`` keeps its order.
    Returns the ``(N, Cx + Cy)`` samples and the permutation ``pi`` (on ``y``'s device), so
    that per-sample weights can follow it.
    """
    perm = torch.randperm(y.shape[0], generator=generator, device=generator.device)
    perm = perm.to(y.device)
    return torch.cat([x, y[perm]], dim=1), perm


def dv_bounds(net: nn.Module, sets: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
              generator: torch.Generator, *, stable: bool = True,
              emas: Sequence[MovingAverage] | None = None) -> torch.Tensor:
    """The DV bound (:func:`dv_bound`) of each sample set, all under one critic pass.

    Parameters
    ----------
    net : Module
        The critic.
    sets : sequence of ``(x, y, valid)``
        Joint samples ``x`` ``(N, Cx)`` and ``y`` ``(N, Cy)`` and the ones to count, ``valid``
        ``(N,)`` bool; each set's marginal samples are a fresh shuffle (:func:`marginal_pairs`,
        drawn set by set in order), a marginal pair counting when both its samples do.
    generator : torch.Generator
    stable, emas
        As :func:`dv_bound`, ``emas`` one per set.

    Returns
    -------
    Tensor ``(len(sets),)``
    """
    inputs, perms = [], []
    for x, y, _ in sets:
        marginal, perm = marginal_pairs(x, y, generator)
        inputs += [torch.cat([x, y], dim=1), marginal]
        perms.append(perm)
    outputs = net(torch.cat(inputs)).split([t.shape[0] for t in inputs])
    return torch.stack([
        dv_bound(outputs[2 * i], outputs[2 * i + 1], stable=stable,
                 ema=None if emas is None else emas[i], joint_mask=valid,
                 marginal_mask=valid & valid[perm])
        for i, ((_, _, valid), perm) in enumerate(zip(sets, perms, strict=True))])


def _standardise(v: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit variance per column (MI is invariant to it; the critic trains
    better). A constant column becomes 0."""
    v = v - v.mean(dim=0, keepdim=True)
    std = v.std(dim=0, keepdim=True)
    # Rounding leaves a constant column with a tiny spread: treat it as exactly constant.
    return torch.where(std > 1e-6, v / std.clamp_min(1e-6), torch.zeros_like(v))


def _pixel_vectors(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None,
                   b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel vectors ``(N, Cf)``, ``(N, Cm)`` of batch item ``b``'s masked pixels."""
    x = fixed[b].flatten(1).T
    y = moving[b].flatten(1).T
    if mask is not None:
        keep = mask[b].reshape(-1).to(x.device).bool()
        x, y = x[keep], y[keep]
    return x, y


def _estimate_one(x: torch.Tensor, y: torch.Tensor, *, iterations: int, lr: float,
                  hidden: int, batch: int, sample: int, ema: float, seed: int,
                  evaluations: int) -> float:
    """Train a fresh critic on half of the pixel pairs and evaluate the DV bound on the other
    half (see :func:`mine`)."""
    device = x.device
    gen = make_generator(device, seed)
    n = x.shape[0]
    if n < MIN_PIXELS:
        return 0.0
    order = torch.randperm(n, generator=gen, device=gen.device).to(device)[: min(n, sample)]
    x, y = _standardise(x[order]), _standardise(y[order])
    half = x.shape[0] // 2
    x_train, y_train, x_eval, y_eval = x[:half], y[:half], x[half:], y[half:]

    net = StatisticsNetwork(x.shape[1] + y.shape[1], hidden, generator=gen, device=device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    average = MovingAverage(ema) if ema > 0 else None
    size = min(batch, half)
    with torch.enable_grad():
        for _ in range(iterations):
            pick = torch.randint(half, (size,), generator=gen, device=gen.device).to(device)
            xb, yb = x_train[pick], y_train[pick]
            marginal, _ = marginal_pairs(xb, yb, gen)
            loss = -dv_bound(net(torch.cat([xb, yb], dim=1)), net(marginal), ema=average)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    with torch.no_grad():
        t_joint = net(torch.cat([x_eval, y_eval], dim=1))
        # A large marginal sample: several independent shuffles of the held-out pixels.
        t_marg = torch.cat([net(marginal_pairs(x_eval, y_eval, gen)[0])
                            for _ in range(evaluations)])
        value = float(dv_bound(t_joint, t_marg))
    return value if math.isfinite(value) else 0.0


def mine(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, *,
         iterations: int = 300, lr: float = 1e-3, hidden: int = 100, batch: int = 2048,
         sample: int = 65536, ema: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Mutual information (nats) of corresponding pixels by MINE, one value per batch item.

    For each batch item a fresh :class:`StatisticsNetwork` is trained on the pairs
    ``(fixed pixel's channel vector, moving pixel's channel vector)`` of the masked pixels, and
    the Donsker-Varadhan bound is returned, evaluated on *held-out* pixels.

    Procedure (per batch item): draw at most ``sample`` masked pixels at random; standardise
    each channel (MI is invariant to it); split them in halves. Train on the first half:
    ``iterations`` Adam steps (``lr``), each on ``batch`` joint pairs drawn with replacement and
    as many marginal pairs (the same pixels with the moving half shuffled by a fresh
    permutation), maximising :func:`dv_bound` (with MINE's moving-average correction if
    ``ema > 0``). Evaluate on the second half: ``mean T(joint)`` over all its pairs minus the
    log-mean-exp over 4 independent shuffles of it. The held-out evaluation keeps the
    over-fitting of the critic out of the estimate: independent images give ~0 (possibly
    slightly negative) rather than a positive bias.

    Parameters
    ----------
    fixed, moving : Tensor ``(B, C, H, W)`` or ``(B, C, D, H, W)``
        Images or volumes (both the same), same spatial size; channel counts may differ (the
        critic sees ``Cf + Cm`` inputs). A voxel is a sample like a pixel: the critic sees
        intensities only, never positions.
    mask : bool Tensor ``(B, 1, H, W)`` (volumes ``(B, 1, D, H, W)``), optional
        Pixels to use.
    iterations, lr, hidden, batch : int, float, int, int
        Training steps, Adam learning rate, critic width, minibatch size.
    sample : int
        Largest number of pixels used (half for training, half for evaluation).
    ema : float
        Decay of MINE's moving average of ``mean exp(T_marg)`` in the gradient (e.g. 0.99);
        0 disables the correction (plain DV gradient).
    seed : int
        Seeds a local generator (pixel draw, initialisation, minibatches, permutations); the
        same seed is used for every batch item, so an item's value does not depend on the
        others.

    Returns
    -------
    Tensor ``(B,)``, float32, on ``fixed``'s device, never NaN/inf: a lower bound on the MI in
    expectation (up to the small upward bias of the log of a sample mean). Fewer than
    :data:`MIN_PIXELS` usable pixels (e.g. an empty mask) give 0; a constant image gives ~0.
    Not differentiable with respect to the images (the values are detached).
    """
    check_pair_shapes(fixed, moving, same_batch=True)
    if iterations < 0 or batch < 1 or sample < 2 * MIN_PIXELS or hidden < 1 or lr <= 0:
        raise ValueError("mine: need iterations >= 0, batch >= 1, hidden >= 1, lr > 0 and "
                         f"sample >= {2 * MIN_PIXELS}")
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"mine: ema must be in [0, 1), got {ema!r}")
    f = fixed.detach().float()
    m = moving.detach().to(f.device).float()
    values = []
    for b in range(f.shape[0]):
        x, y = _pixel_vectors(f, m, mask, b)
        values.append(_estimate_one(x, y, iterations=iterations, lr=lr, hidden=hidden,
                                    batch=batch, sample=sample, ema=ema, seed=seed,
                                    evaluations=4))
    return torch.tensor(values, dtype=torch.float32, device=fixed.device)
