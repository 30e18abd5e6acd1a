"""Reference solutions of 01-pytorch-basics/exercises.py, and the common mistakes their checks must reject
(<name>__<what_went_wrong>)."""

import numpy as np
import torch
from torch import nn


def make_grid(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    return torch.arange(rows * cols, dtype=torch.float32, device=device).reshape(rows, cols)


def make_grid__int64_from_arange(rows, cols, device):
    return torch.arange(rows * cols, device=device).reshape(rows, cols)


def make_grid__ignores_device(rows, cols, device):
    return torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols)


def share_from_numpy(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr)


def share_from_numpy__torch_tensor_copies(arr):
    return torch.tensor(arr)


def independent_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def independent_numpy__shares_memory(t):
    return t.detach().cpu().numpy()


def independent_numpy__numpy_on_grad_tensor(t):
    return t.numpy().copy()


def independent_numpy__no_cpu(t):
    return t.detach().numpy().copy()  # right on a CPU tensor; a GPU tensor raises


def independent_numpy__via_list(t):
    return np.array(t.tolist())  # float64, not the tensor's float32


def numpy_to_model_input(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(arr).to(device=device, dtype=torch.float32)


def numpy_to_model_input__float64_left(arr, device):
    return torch.from_numpy(arr).to(device)


def move_batch(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def move_batch__to_result_not_stored(batch, device):
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            v.to(device)
    return batch


def choose_device(preferred: str = "auto") -> torch.device:
    if preferred == "auto":
        preferred = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(preferred)


def choose_device__ignores_preference(preferred="auto"):
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_device__returns_string(preferred="auto"):
    if preferred == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return preferred


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, x: torch.Tensor,
               y: torch.Tensor) -> float:
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_step__zero_grad_at_the_end(model, optimizer, loss_fn, x, y):
    loss = loss_fn(model(x), y)
    loss.backward()  # adds to whatever an earlier step left in .grad
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def train_step__loss_arguments_swapped(model, optimizer, loss_fn, x, y):
    optimizer.zero_grad()
    loss = loss_fn(y, model(x))  # MSELoss is symmetric; CrossEntropyLoss(target, logits) is not
    loss.backward()
    optimizer.step()
    return loss.item()


def train_step__forgot_zero_grad(model, optimizer, loss_fn, x, y):
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_step__returns_tensor(model, optimizer, loss_fn, x, y):
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)


def predict_proba__forgot_eval(model, x):
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)


def predict_proba__forgot_no_grad(model, x):
    model.eval()
    return torch.softmax(model(x), dim=1)


def predict_proba__detach_after(model, x):
    model.eval()
    return torch.softmax(model(x), dim=1).detach()  # the graph was recorded anyway


def count_nonfinite(t: torch.Tensor) -> int:
    return int((~torch.isfinite(t)).sum().item())


def count_nonfinite__isnan_only(t):
    return int(torch.isnan(t).sum().item())


def count_nonfinite__returns_tensor(t):
    return (~torch.isfinite(t)).sum()


def seeded_weights(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return nn.Linear(4, 3).weight.detach().clone()


def seeded_weights__seeds_numpy_only(seed):
    np.random.seed(seed)
    return nn.Linear(4, 3).weight.detach().clone()


def seeded_weights__fixed_seed(seed):
    torch.manual_seed(0)
    return nn.Linear(4, 3).weight.detach().clone()
