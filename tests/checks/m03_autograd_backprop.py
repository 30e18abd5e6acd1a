"""Checks of 03-autograd-backprop/exercises.py, one check_<name>(fn) per exercise, in exercise order.

Each check builds its inputs, computes the expected answer independently (by hand, from calculus, or with other
torch ops), and raises AssertionError("expected ..., got ...").
"""

import torch
import torch.nn.functional as F
from check_utils import assert_close, describe


def _close(got, expected, tol, what, extra=""):
    assert_close(got, expected, what + extra, atol=tol)


def check_autograd_gradient(fn):
    x = torch.randn(5, dtype=torch.float64)
    original = x.clone()

    def f(t):
        return (torch.sin(t) * t**2).sum()

    expected = torch.cos(x) * x**2 + 2 * x * torch.sin(x)  # product rule, by hand
    got = fn(f, x)
    assert not x.requires_grad, "expected the caller's x to still have requires_grad=False, got True"
    assert x.grad is None, f"expected the caller's x.grad to stay None, got {describe(x.grad)}"
    assert torch.equal(x, original), "expected the caller's x to be unchanged, got modified values"
    _close(got, expected, 1e-10, "gradient of sum(sin(x) x^2)")
    assert not got.requires_grad, "expected a plain tensor (requires_grad=False), got one still attached to a graph"
    again = fn(f, x)
    _close(again, expected, 1e-10, "second call with the same x (gradients must not pile up)")


class _ExpCubeNoAutograd(torch.autograd.Function):
    """e^t t^3 whose backward is deliberately wrong (zero): only differences of f's values give its gradient.

    (setup_context and generate_vmap_rule let torch.vmap run it too: a vectorised solution is a correct one.)"""

    generate_vmap_rule = True

    @staticmethod
    def forward(t):
        return torch.exp(t) * t**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad * 0


def check_finite_difference_gradient(fn):
    x = torch.rand(3, 4, dtype=torch.float64) + 0.5  # (3, 4) in [0.5, 1.5)
    original = x.clone()
    weights = torch.arange(1, 13, dtype=torch.float64).view(3, 4)  # each element counts differently

    def f(t):
        assert t.shape == x.shape, (
            f"f was called with a tensor of shape {tuple(t.shape)}, not x's {tuple(x.shape)}: perturb a flat view of a "
            "clone, then pass the clone itself (shaped like x) to f")
        total = _ExpCubeNoAutograd.apply(t.sum() / 4)  # couples the elements: a shift left in one shows in the rest
        return (_ExpCubeNoAutograd.apply(t) * weights).sum() + total

    s = x.sum() / 4
    expected = weights * torch.exp(x) * (x**3 + 3 * x**2)  # d/dt e^t t^3, by the product rule
    expected = expected + torch.exp(s) * (s**3 + 3 * s**2) / 4  # and the coupling term, by the chain rule
    got = fn(f, x, 1e-5)
    assert torch.equal(x, original), "expected x to be unchanged after the call, got modified values"
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64, (
        f"expected a float64 tensor, got {getattr(got, 'dtype', type(got).__name__)}"
    )
    _close(got, expected, 1e-5, "central differences of sum(w * e^x x^3) + e^s s^3 (s = sum(x) / 4) with eps=1e-5 "
           "(accurate to ~1e-8; each element put back before the next; this f's autograd gradient is wrong on "
           "purpose: the exercise computes it from f's values alone)")


def check_sgd_step(fn):
    w = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    unused = torch.randn(4, requires_grad=True)  # received no gradient: .grad is None
    x = torch.randn(5, 3)
    (torch.tanh(x @ w + b) ** 2).sum().backward()
    lr = 0.05
    expected_w = w.detach() - lr * w.grad
    expected_b = b.detach() - lr * b.grad
    expected_unused = unused.detach().clone()
    result = fn([w, b, unused], lr)
    assert result is None, f"expected sgd_step to update in place and return None, got {type(result).__name__}"
    _close(w, expected_w, 1e-6, "w after the step (p - lr * p.grad, in place on the same tensor)")
    _close(b, expected_b, 1e-6, "b after the step")
    _close(unused, expected_unused, 0.0, "a parameter whose .grad is None (it must not change)")
    for name, p in (("w", w), ("b", b)):
        assert p.is_leaf and p.requires_grad, f"expected {name} to stay a leaf that requires grad, got is_leaf=" \
            f"{p.is_leaf}, requires_grad={p.requires_grad} (was the update recorded by autograd?)"
        assert p.grad is None or not p.grad.any(), (
            f"expected {name}.grad to be cleared (None) after the step, got {describe(p.grad)}"
        )


def check_fit_line(fn):
    x = torch.linspace(-1, 1, 40)
    y = 2.5 * x - 0.7 + 0.1 * torch.sin(7 * x)
    lr, steps = 0.3, 15  # few steps, so any difference in the update rule shows in the result
    # Expected: the same gradient descent, in plain Python floats from the closed-form gradient.
    xs, ys = x.tolist(), y.tolist()
    n = len(xs)
    w = b = 0.0
    for _ in range(steps):
        residuals = [w * xi + b - yi for xi, yi in zip(xs, ys, strict=True)]
        gw = 2 / n * sum(r * xi for r, xi in zip(residuals, xs, strict=True))
        gb = 2 / n * sum(residuals)
        w, b = w - lr * gw, b - lr * gb
    got = fn(x, y, lr, steps)
    assert isinstance(got, tuple) and len(got) == 2, f"expected a tuple (w, b), got {describe(got)}"
    assert all(type(v) is float for v in got), (
        f"expected (w, b) as Python floats (w.item()), got {describe(got)}"
    )
    gw_, gb_ = (float(v) for v in got)
    assert abs(gw_ - w) < 1e-4 and abs(gb_ - b) < 1e-4, (
        f"expected (w, b) = ({w:.5f}, {b:.5f}) after {steps} steps of lr {lr}, got ({gw_:.5f}, {gb_:.5f})"
    )


class _RecordingMLP(torch.nn.Module):
    """A small MLP that records how many examples each forward saw."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.seen = []

    def forward(self, x):
        self.seen.append(len(x))
        return self.net(x)


def check_accumulated_gradients(fn):
    model = _RecordingMLP()
    x, y = torch.randn(10, 3), torch.randn(10, 1)
    params = list(model.parameters())
    expected = torch.autograd.grad(F.mse_loss(model.net(x), y), params)  # the whole batch at once
    last_only = torch.autograd.grad(F.mse_loss(model.net(x[8:]), y[8:]), params)  # zero_grad inside the loop
    for p in params:
        p.grad = torch.full_like(p, 5.0)  # stale gradients from an earlier step
    got = fn(model, x, y, 4)  # pieces 4, 4, 2
    assert model.seen and max(model.seen) <= 4, (
        f"expected every forward to see at most 4 examples (micro-batches), got forwards of {model.seen}"
    )
    assert isinstance(got, list) and len(got) == len(params), (
        f"expected a list of {len(params)} gradients, got {describe(got)}"
    )
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.add_(100.0)  # what the next backward does: the returned gradients must be copies (.clone())
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if isinstance(g, torch.Tensor) and params[i].grad is not None and g.data_ptr() == params[i].grad.data_ptr():
            raise AssertionError(f"gradient {i} is p.grad itself, not a copy: the next backward or zero_grad changes "
                                 "what you returned (return p.grad.clone())")
        ratio = (g.detach() * e).sum().item() / max((e * e).sum().item(), 1e-30)
        kept_last = any(torch.allclose(g.detach(), share * last_only[i], atol=1e-6) for share in (1.0, 0.2))
        why = (f" (the forwards saw {sum(model.seen)} of the 10 examples: the last, shorter piece counts too)"
               if sum(model.seen) != 10 else " (only the last piece's gradient is left: zero_grad() inside the loop?)"
               if kept_last else f" (yours is about {ratio:.2f}x the expected one)" if ratio > 0
               else " (stale gradients left in?)")
        _close(g, e, 1e-5, f"gradient of parameter {i} (full-batch mean loss, 10 examples in pieces 4, 4, 2)", why)


def check_stable_softplus(fn):
    x = torch.tensor([-1000.0, -100.0, -3.0, 0.0, 2.0, 100.0, 1000.0], requires_grad=True)  # float32, as in training
    out = fn(x)
    assert isinstance(out.grad_fn, torch.autograd.function.BackwardCFunction), (
        f"expected the output of a custom torch.autograd.Function (grad_fn ...BackwardCFunction), got "
        f"{type(out.grad_fn).__name__}"
    )
    expected = torch.logaddexp(x.detach(), torch.zeros(7))  # log(e^x + e^0), computed stably by torch
    _close(out, expected, 1e-5, "softplus values (finite even at x = 100 and 1000)")
    weights = torch.tensor([2.0, 1.0, -2.0, 0.5, 3.0, 1.0, -1.0])
    (out * weights).sum().backward()
    _close(x.grad, weights * torch.sigmoid(x.detach()), 1e-6, "gradient of sum(w * softplus(x)): w * sigmoid(x)")
    big = torch.tensor([-1000.0, 1000.0], dtype=torch.float64, requires_grad=True)  # e^1000 overflows float64 too
    out = fn(big)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(big.grad).all(), (
        f"float64 x = [-1000, 1000]: expected finite values and gradients, got {describe(out.detach())} and gradients "
        f"{describe(big.grad)} (e^1000 overflows float64 as well: no dtype is wide enough, rewrite the formula)"
    )
    x64 = torch.randn(6, dtype=torch.float64, requires_grad=True)
    ok = torch.autograd.gradcheck(fn, (x64,), raise_exception=False)
    assert ok, "expected the custom backward to pass torch.autograd.gradcheck in float64, got a mismatch"


def check_jacobian(fn):
    A = torch.randn(2, 3, dtype=torch.float64)
    x = torch.randn(3, dtype=torch.float64)

    def f(v):  # R^3 -> R^2
        return A @ torch.tanh(v)

    expected = A * (1 - torch.tanh(x) ** 2)  # (2, 3): J[i, j] = A[i, j] tanh'(x_j)
    _close(fn(f, x), expected, 1e-10, "Jacobian of A @ tanh(x), shape (m, n) = (2, 3)")


def check_per_sample_gradients(fn):
    X = torch.randn(6, 3)
    y = torch.randn(6)
    w = torch.randn(3)
    expected = 2 * (X @ w - y).unsqueeze(1) * X  # (6, 3): row i = 2 (x_i . w - y_i) x_i
    _close(fn(w, X, y), expected, 1e-5, "per-sample gradients of (x_i . w - y_i)^2, shape (N, D) = (6, 3)")


def check_bootstrapped_value_loss(fn):
    w = torch.randn(4, requires_grad=True)
    s, s_next = torch.randn(8, 4), torch.randn(8, 4)
    r = torch.randn(8)
    gamma = 0.9
    with torch.no_grad():
        target = r + gamma * (s_next @ w)  # (8,), a constant
        residual = s @ w - target
        expected_loss = (residual**2).mean()
        expected_grad = 2 / 8 * s.T @ residual  # through V(states) only
    loss = fn(w, s, s_next, r, gamma)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0, f"expected a scalar tensor, got {describe(loss)}"
    _close(loss, expected_loss, 1e-5, "loss value mean((V(s) - target)^2)")
    assert loss.requires_grad, "expected the loss to require grad (detach the target only, not the loss), got " \
        "requires_grad=False"
    (grad,) = torch.autograd.grad(loss, w)
    _close(grad, expected_grad, 1e-5, "d loss / d w with the target held constant")
