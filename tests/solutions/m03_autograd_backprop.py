"""Reference solutions of 03-autograd-backprop/exercises.py, and the common mistakes their checks must reject.

`<name>` is the reference solution; `<name>__<what_went_wrong>` is a realistic wrong answer.
"""

import torch
import torch.nn.functional as F

# Exercise 1 ------------------------------------------------------------------------------------------------------


def autograd_gradient(f, x):
    leaf = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(leaf), leaf)
    return grad


def autograd_gradient__mutates_callers_tensor(f, x):
    x.requires_grad_(True)  # flips the caller's flag, and .grad piles up across calls
    f(x).backward()
    return x.grad.detach()


# Exercise 2 ------------------------------------------------------------------------------------------------------


def finite_difference_gradient(f, x, eps=1e-5):
    work = x.detach().clone()
    flat = work.view(-1)
    grad = torch.zeros_like(work)
    gflat = grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = f(work).item()
        flat[i] = old - eps
        down = f(work).item()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def finite_difference_gradient__old_value_not_restored(f, x, eps=1e-5):
    work = x.detach().clone()
    flat = work.view(-1)
    grad = torch.zeros_like(work)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = f(work).item()
        flat[i] = old - eps  # left at old - eps: every later difference is taken at a shifted point
        down = f(work).item()
        grad.view(-1)[i] = (up - down) / (2 * eps)
    return grad


def finite_difference_gradient__one_sided(f, x, eps=1e-5):
    work = x.detach().clone()
    flat = work.view(-1)
    grad = torch.zeros_like(work)
    base = f(work).item()
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        grad.view(-1)[i] = (f(work).item() - base) / eps  # O(eps) error: ~1e-4 here
        flat[i] = old
    return grad


def finite_difference_gradient__modifies_x_in_place(f, x, eps=1e-5):
    flat = x.view(-1)  # no clone: x is perturbed and left at old - eps + ... rounding
    grad = torch.zeros_like(x)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = f(x).item()
        flat[i] = old - eps
        down = f(x).item()
        grad.view(-1)[i] = (up - down) / (2 * eps)  # forgot to put the old value back
    return grad


def finite_difference_gradient__autograd(f, x, eps=1e-5):
    leaf = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(leaf), leaf)[0]  # what finite differences are meant to check, not compute


def finite_difference_gradient__evaluates_flat(f, x, eps=1e-5):
    flat = x.detach().clone().reshape(-1)
    grad = torch.zeros_like(flat)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = f(flat).item()  # f gets a (12,) tensor, not one shaped like x
        flat[i] = old - eps
        down = f(flat).item()
        flat[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad.view_as(x)


# Exercise 3 ------------------------------------------------------------------------------------------------------


def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad
                p.grad = None


def sgd_step__without_no_grad(params, lr):
    for p in params:
        if p.grad is not None:
            p -= lr * p.grad  # RuntimeError: a leaf Variable that requires grad is used in an in-place operation


def sgd_step__forgot_to_clear_grads(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad


def sgd_step__rebinds_instead_of_updating(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p = p - lr * p.grad  # a new tensor bound to a local name: the parameter never changes
    for p in params:
        p.grad = None


# Exercise 4 ------------------------------------------------------------------------------------------------------


def _fit_line(x, y, lr, steps, mode):
    w = torch.zeros((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=lr)
    for _ in range(steps):
        if mode == "right":
            opt.zero_grad()
        loss = ((w * x + b - y) ** 2).mean()
        loss.backward()
        if mode == "zero_between":
            opt.zero_grad()
        opt.step()
    return w.item(), b.item()


def fit_line(x, y, lr=0.1, steps=100):
    return _fit_line(x, y, lr, steps, "right")


def fit_line__returns_tensors(x, y, lr=0.1, steps=100):
    w, b = _fit_line(x, y, lr, steps, "right")
    return torch.tensor(w), torch.tensor(b)  # 0-d tensors, not the Python floats asked for


def fit_line__forgot_zero_grad(x, y, lr=0.1, steps=100):
    return _fit_line(x, y, lr, steps, "never")


def fit_line__zero_grad_between_backward_and_step(x, y, lr=0.1, steps=100):
    return _fit_line(x, y, lr, steps, "zero_between")


# Exercise 5 ------------------------------------------------------------------------------------------------------


def _accumulate(model, x, y, micro_batch_size, scaling, zero_first=True):
    if zero_first:
        model.zero_grad()
    pieces = list(zip(x.split(micro_batch_size), y.split(micro_batch_size), strict=True))
    for xm, ym in pieces:
        loss = F.mse_loss(model(xm), ym)
        if scaling == "share":
            loss = loss * (len(xm) / len(x))
        elif scaling == "steps":
            loss = loss / len(pieces)
        loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def accumulated_gradients(model, x, y, micro_batch_size):
    return _accumulate(model, x, y, micro_batch_size, "share")


def accumulated_gradients__no_loss_scaling(model, x, y, micro_batch_size):
    return _accumulate(model, x, y, micro_batch_size, "none")


def accumulated_gradients__divides_by_number_of_pieces(model, x, y, micro_batch_size):
    return _accumulate(model, x, y, micro_batch_size, "steps")  # right only when every piece has the same size


def accumulated_gradients__forgot_zero_grad_first(model, x, y, micro_batch_size):
    return _accumulate(model, x, y, micro_batch_size, "share", zero_first=False)


def accumulated_gradients__returns_grad_itself(model, x, y, micro_batch_size):
    _accumulate(model, x, y, micro_batch_size, "share")
    return [p.grad for p in model.parameters()]  # no clone: changes with the next backward


# Exercise 6 ------------------------------------------------------------------------------------------------------


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x)


class _SoftplusWrongSign(_Softplus):
    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return -grad_output * torch.sigmoid(x)


class _SoftplusNaiveForward(_Softplus):
    @staticmethod
    def forward(x):
        return torch.log(1 + torch.exp(x))  # overflows to inf at x = 100 in float32


class _SoftplusUpcast(_Softplus):
    @staticmethod
    def forward(x):
        return torch.log(1 + torch.exp(x.double())).to(x.dtype)  # float64 moves the overflow to x = 710, no further


class _SoftplusIgnoresGradOutput(_Softplus):
    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return torch.sigmoid(x)  # the chain rule needs grad_output * local derivative


def stable_softplus(x):
    return _Softplus.apply(x)


def stable_softplus__wrong_backward_sign(x):
    return _SoftplusWrongSign.apply(x)


def stable_softplus__naive_forward_overflows(x):
    return _SoftplusNaiveForward.apply(x)


def stable_softplus__ignores_grad_output(x):
    return _SoftplusIgnoresGradOutput.apply(x)


def stable_softplus__upcast_to_float64(x):
    return _SoftplusUpcast.apply(x)


# Exercise 7 ------------------------------------------------------------------------------------------------------


def jacobian(f, x):
    return torch.func.jacrev(f)(x)


def jacobian__gradient_of_sum(f, x):
    leaf = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(leaf).sum(), leaf)  # one vector-Jacobian product: the column sums of J
    return g


def jacobian__transposed(f, x):
    return torch.func.jacrev(f)(x).T  # (n, m): rows and columns swapped


# Exercise 8 ------------------------------------------------------------------------------------------------------


def per_sample_gradients(w, X, y):
    def loss(w, x, t):
        return (x @ w - t) ** 2

    return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(w, X, y)


def per_sample_gradients__batch_gradient_repeated(w, X, y):
    leaf = w.detach().clone().requires_grad_(True)
    ((X @ leaf - y) ** 2).sum().backward()  # the sum of the per-sample gradients, copied to every row
    return leaf.grad.expand(len(X), -1).clone()


def per_sample_gradients__mean_loss_inside_vmap(w, X, y):
    def loss(w, x, t):
        return ((X @ w - y) ** 2).mean() + 0 * (x @ w - t)  # closes over the whole batch instead of x, t

    return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(w, X, y)


# Exercise 9 ------------------------------------------------------------------------------------------------------


def bootstrapped_value_loss(w, states, next_states, rewards, gamma):
    target = (rewards + gamma * (next_states @ w)).detach()
    return ((states @ w - target) ** 2).mean()


def bootstrapped_value_loss__forgot_detach(w, states, next_states, rewards, gamma):
    target = rewards + gamma * (next_states @ w)  # gradients also flow into the target
    return ((states @ w - target) ** 2).mean()


def bootstrapped_value_loss__detached_the_loss(w, states, next_states, rewards, gamma):
    target = rewards + gamma * (next_states @ w)
    return ((states @ w - target) ** 2).mean().detach()  # nothing left to differentiate
