"""Module 03 exercises: autograd and backpropagation.

Replace each `raise NotImplementedError(...)` with your solution, then check your work:

    .venv/bin/python 03-autograd-backprop/exercises.py    # done / failing / to do, and the next hint
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 03-ex      # the same checks, via pytest
    .venv/bin/python -m pytest tests/test_exercises.py::test_exercise -k 03-ex03    # exercise 3 only
(from the repository's root folder; with the venv activated, plain `python` works too). Unfinished exercises
are skipped with a hint; the first command exits non-zero while an exercise you attempted fails.

The lessons 01-06 of this module show everything you need; each docstring says which one.
"""

import torch
import torch.nn.functional as F  # noqa: F401  (handy for several exercises)


def autograd_gradient(f, x: torch.Tensor) -> torch.Tensor:
    """Exercise 1: the gradient of a scalar function with autograd, without touching the caller's tensor.

    `f` maps a tensor shaped like `x` to a scalar tensor. Return df/dx at `x`, a tensor shaped like `x` that does
    not require grad. The caller's `x` must come back exactly as it was: still `requires_grad=False`, `.grad`
    still None (a function that flips flags on its inputs surprises whoever calls it twice).

    Example:
        >>> autograd_gradient(lambda t: (t ** 2).sum(), torch.tensor([1.0, -3.0]))
        tensor([ 2., -6.])

    Hint: work on a copy, `x.detach().clone().requires_grad_(True)`, then `torch.autograd.grad(f(copy), copy)`
    (or backward and read `copy.grad`). Lesson 01.
    """
    raise NotImplementedError("Exercise 1: autograd_gradient")


def finite_difference_gradient(f, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Exercise 2: a numerical gradient by central finite differences, to check autograd against.

    `f` maps a float64 tensor shaped like `x` to a scalar tensor. For each element i return
    (f(x + eps e_i) - f(x - eps e_i)) / (2 eps), where e_i is 1 at position i and 0 elsewhere. The result has the
    shape and dtype of `x`; `x` itself must be unchanged afterwards. (One-sided differences, (f(x + eps) - f(x)) /
    eps, are only accurate to O(eps): not good enough to check a gradient.)

    Example:
        >>> finite_difference_gradient(lambda t: (t ** 3).sum(), torch.tensor([2.0], dtype=torch.float64))
        tensor([12.0000], dtype=torch.float64)   # 3 * 2^2, up to ~1e-10

    Hint: work on a clone, `work = x.detach().clone()`, through its flat view `flat = work.view(-1)` (a view: writing
    flat[i] changes work); for each i set flat[i] to old + eps and evaluate f(work), which is shaped like x, then
    old - eps, evaluate, put the old value back. Use f's values only, not autograd. Lesson 03.
    """
    raise NotImplementedError("Exercise 2: finite_difference_gradient")


def sgd_step(params: list[torch.Tensor], lr: float) -> None:
    """Exercise 3: one plain SGD step by hand, in place.

    `params` are leaf tensors with `requires_grad=True` whose `.grad` was filled by a backward (a parameter whose
    .grad is None received no gradient: leave it alone). Update each one in place, p <- p - lr * p.grad, so the
    same tensor objects hold the new values and stay leaves that require grad; then clear the gradients
    (set p.grad to None) so the next backward starts from zero. Return nothing.

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True); (w ** 2).sum().backward()
        >>> sgd_step([w], lr=0.1); w, w.grad
        (tensor([0.8000, 1.6000], requires_grad=True), None)

    Hint: autograd refuses an in-place change to a leaf that requires grad while it is recording: do the update
    inside `with torch.no_grad():`. And `p = p - lr * p.grad` only rebinds a local name. Lesson 05.
    """
    raise NotImplementedError("Exercise 3: sgd_step")


def fit_line(x: torch.Tensor, y: torch.Tensor, lr: float = 0.1, steps: int = 100) -> tuple[float, float]:
    """Exercise 4: fit y = w x + b by full-batch gradient descent with torch.optim.SGD, zeroing grads correctly.

    `x`, `y` are (N,) float tensors. Start from w = 0 and b = 0 (scalar tensors that require grad), use
    `torch.optim.SGD([w, b], lr=lr)` and the mean squared error mean((w x + b - y)^2), and take exactly `steps`
    optimizer steps, each on the gradient of the current parameters only. Return (w, b) as Python floats.

    Example:
        >>> x = torch.linspace(-1, 1, 50); fit_line(x, 3 * x + 1, lr=0.5, steps=200)
        (3.0, 1.0)   # approximately

    Hint: the order inside the loop is zero_grad(), loss, backward(), step(). Forgetting zero_grad() adds every
    old gradient to the new one; calling it between backward() and step() throws the gradient away. Lesson 05.
    """
    raise NotImplementedError("Exercise 4: fit_line")


def accumulated_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                          micro_batch_size: int) -> list[torch.Tensor]:
    """Exercise 5: the full-batch gradient from micro-batches (gradient accumulation with the right scaling).

    Split `x` (B, D) and `y` (B, 1) into consecutive micro-batches of `micro_batch_size` examples (the last one may
    be smaller) and never run the model on more than `micro_batch_size` examples at once. Accumulate in the
    parameters' `.grad` the gradient of F.mse_loss(model(x), y), the mean over the WHOLE batch. The parameters may
    hold stale gradients when you are called. Return [p.grad.clone() for p in model.parameters()].

    Example:
        >>> model = torch.nn.Linear(3, 1); x, y = torch.randn(10, 3), torch.randn(10, 1)
        >>> accumulated_gradients(model, x, y, 4)   # pieces of 4, 4 and 2 examples
        [tensor([[...]]), tensor([...])]            # equal to the gradient of F.mse_loss(model(x), y)

    Hint: zero the gradients once, before the loop. Each micro-batch's mean loss must be multiplied by
    len(piece) / len(x): not by nothing (the gradient would be pieces times too big) and not by 1 / number of
    pieces (wrong when the last piece is smaller). Lesson 06.
    """
    raise NotImplementedError("Exercise 5: accumulated_gradients")


def stable_softplus(x: torch.Tensor) -> torch.Tensor:
    """Exercise 6: softplus as a custom torch.autograd.Function with its own forward and backward.

    Define a `torch.autograd.Function` subclass (at module level or inside this function) whose forward computes
    softplus(x) = log(1 + e^x) without overflow, and whose backward returns grad_output * sigmoid(x). Return
    `YourFunction.apply(x)`. It must give finite values and gradients for every x (e.g. x = 100 in float32) and
    pass torch.autograd.gradcheck in float64.

    Example:
        >>> stable_softplus(torch.tensor([0.0, 100.0]))
        tensor([  0.6931, 100.0000], grad_fn=<...BackwardCFunction...>)  (when x requires grad)

    Hint: log(1 + e^x) = max(x, 0) + log1p(e^(-|x|)). Save x with ctx.save_for_backward(x) in forward (or in
    setup_context), read it back from ctx.saved_tensors in backward. d softplus/dx = sigmoid(x): mind the sign.
    Lesson 04.
    """
    raise NotImplementedError("Exercise 6: stable_softplus")


def jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """Exercise 7: the full Jacobian of a vector function with torch.func.

    `f` maps an (n,) tensor to an (m,) tensor. Return the (m, n) Jacobian J[i, j] = d f_i / d x_j at `x`.

    Example:
        >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
        >>> jacobian(lambda v: A @ v, torch.zeros(2))
        tensor([[1., 2.], [3., 4.], [5., 6.]])   # shape (3, 2)

    Hint: `torch.func.jacrev(f)(x)`. Note that backward() or autograd.grad on `f(x).sum()` gives only the column
    sums of J (one vector-Jacobian product), not J. Lesson 03.
    """
    raise NotImplementedError("Exercise 7: jacobian")


def per_sample_gradients(w: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exercise 8: one gradient per example with torch.func.vmap and torch.func.grad.

    A linear model predicts X @ w, with X (N, D), w (D,), y (N,). The loss of example i is (X[i] @ w - y[i])^2.
    Return an (N, D) tensor whose row i is the gradient of example i's loss with respect to w.

    Example:
        >>> per_sample_gradients(torch.zeros(2), torch.eye(2), torch.tensor([1.0, 2.0]))
        tensor([[-2., -0.], [-0., -4.]])

    Hint: write the loss of ONE example, `def loss(w, x, t): return (x @ w - t) ** 2`, then
    `torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(w, X, y)`. The gradient of the batch's summed
    loss is the sum of these rows, not each of them. Lesson 03.
    """
    raise NotImplementedError("Exercise 8: per_sample_gradients")


def bootstrapped_value_loss(w: torch.Tensor, states: torch.Tensor, next_states: torch.Tensor,
                            rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Exercise 9: a loss whose target must not receive gradients (detach as a stop-gradient).

    A linear value function V(s) = s @ w, with w (D,) requiring grad, states and next_states (N, D), rewards (N,).
    The target is rewards + gamma * V(next_states), and it must be a CONSTANT for the gradient: only V(states) is
    being fitted (this is how TD learning and target networks work). Return the scalar mean((V(states) - target)^2)
    so that loss.backward() gives d loss / d w through V(states) only.

    Example:
        >>> w = torch.ones(2, requires_grad=True); s = torch.eye(2); r = torch.zeros(2)
        >>> bootstrapped_value_loss(w, s, s, r, 0.5)
        tensor(0.2500, grad_fn=<MeanBackward0>)      # V = [1, 1], target = [0.5, 0.5]

    Hint: compute the target, then `.detach()` it (or build it under torch.no_grad()). Detach only the target:
    a detached loss has no gradient at all. Lesson 01.
    """
    raise NotImplementedError("Exercise 9: bootstrapped_value_loss")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from exercise_harness import report

    sys.exit(report(__file__))
