"""Degenerate inputs shared by the estimator tests: constant images, empty and one-pixel masks."""

import torch


def degenerate_tensors():
    """``const``, ``rand`` (leaf tensors ``(2, 1, 10, 10)`` that require grad), and the bool masks
    ``empty`` and ``one_pixel``."""
    g = torch.Generator().manual_seed(0)
    const = torch.full((2, 1, 10, 10), 0.3, requires_grad=True)
    rand = torch.rand(2, 1, 10, 10, generator=g, requires_grad=True)
    empty = torch.zeros(2, 1, 10, 10, dtype=torch.bool)
    one_pixel = empty.clone()
    one_pixel[:, :, 3, 4] = True
    return const, rand, empty, one_pixel


def assert_finite_with_gradients(fn, cases, **opts):
    """For each ``(a, b, mask)``: ``fn(a, b, mask, **opts)`` and its gradients are finite."""
    for a, b, mask in cases:
        out = fn(a, b, mask, **opts)
        assert torch.isfinite(out).all()
        out.sum().backward()
        for t in (a, b):
            if t.grad is not None:
                assert torch.isfinite(t.grad).all()
                t.grad = None
