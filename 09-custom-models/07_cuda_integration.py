"""A custom operator in C++ and CUDA, registered with PyTorch: fused bias + GELU, forward and backward.

`gelu(x + bias)` in eager PyTorch is two kernels, each reading and writing the whole tensor; its backward is two more
(GELU's derivative, then a sum over rows for the bias). Memory traffic, not arithmetic, sets their speed, so one
kernel that reads x once and writes y once is faster. This lesson writes that kernel twice, in C++ for the CPU and in
CUDA for NVIDIA GPUs, compiles both at run time with torch.utils.cpp_extension.load_inline, and registers them as a
real operator, torch.ops.course.bias_gelu:
  - TORCH_LIBRARY defines the schema, TORCH_LIBRARY_IMPL(course, CPU / CUDA) registers a kernel per device;
  - torch.library.register_autograd gives it a backward (itself a registered C++/CUDA op), register_fake tells
    torch.compile the output's shape without running it, so torch.compile(fullgraph=True) captures it whole;
  - torch.library.opcheck, torch.autograd.gradcheck (float64), and equality with the eager chain prove it right.
The older way, `load_inline(functions=[...])` with pybind11 bindings, gives a Python function the dispatcher never
sees: no autograd, no torch.compile (a graph break), no fake tensors. TORCH_LIBRARY is the way now.
The same kernel is written a third way, in Triton (Python compiled to GPU code): on a GPU it is checked against eager
and timed beside the CUDA op and torch.compile; with no GPU, Triton's interpreter (TRITON_INTERPRET=1) runs it on CPU
tensors.

Most of the trouble with custom ops is finding the toolchain, so the lesson finds it and prints what it found: the
C++ compiler and the ninja torch will call, the real CUDA toolkit behind an nvcc wrapper script (torch guesses
CUDA_HOME from nvcc's folder and gets a wrapper wrong), headers of pip-installed CUDA libraries, TORCH_CUDA_ARCH_LIST,
MAX_JOBS and the build cache. No compiler, no nvcc or no GPU: one line says what runs instead, never a traceback.

Run it:
    python 09-custom-models/07_cuda_integration.py                       # CPU op; CUDA op too when a GPU is there
    python 09-custom-models/07_cuda_integration.py --verbose-build       # see the compiler commands torch runs
    python 09-custom-models/07_cuda_integration.py --cuda-build always   # compile the .cu even with no GPU
    python 09-custom-models/07_cuda_integration.py --device cuda         # benchmark at 2^26 elements on a GPU
    TRITON_INTERPRET=1 python 09-custom-models/07_cuda_integration.py    # run the Triton kernels on the CPU

Time: the first run compiles the C++ source (5-25 s on a 2-core CPU, the more the busier it is; the CUDA source with
nvcc, 15-80 s more, measured the same way); later runs load the cached build in a fraction of a second, and the rest
takes about 20 seconds on a busy 2-core CPU (--smoke: about 4.5 s once built, on one idle core).
What to look for: where the toolkit really is and what torch would have guessed; "4/4 tests pass" from opcheck,
"gradcheck ...: True"; each bad input answered by one clear sentence; the Triton kernels' differences from eager (on
a GPU, or on a CPU under TRITON_INTERPRET=1); the speed table (on a GPU: the kernel's bandwidth against torch's own
elementwise kernel, and fused forward+backward against the eager chain, torch.compile and Triton).
"""

import argparse
import functools
import glob
import json
import logging
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

NAMESPACE = "course"  # torch.ops.course.bias_gelu
CPU_EXTENSION = "course_bias_gelu_cpu"    # g++: the schema and the CPU kernels
CUDA_EXTENSION = "course_bias_gelu_cuda"  # nvcc: the CUDA kernels, registered into the same operators
NO_GPU_ARCH_LIST = "8.0+PTX"  # what to compile for when no GPU is visible: Ampere code, plus PTX newer GPUs can JIT
GELU_K = 0.7978845608028654   # sqrt(2 / pi)
# -fno-math-errno: exp need not set errno, which lets g++ inline a faster exp (about 2x on the CPU loop).
CPU_FLAGS = ["-O3", "-fno-math-errno"]
SMALL_ELEMENTS = 2**18  # below this (1 MiB of float32) a timing measures per-call overhead more than memory traffic

COMMON_SOURCE = r"""
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>
#include <cmath>

// One definition of the math, compiled by g++ for the CPU kernel and by nvcc for the GPU kernel
// (__host__ __device__ under nvcc), so both devices compute the same formula.
#ifdef __CUDACC__
#define HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE inline
#endif

namespace bias_gelu_lesson {

// GELU, tanh approximation (what F.gelu(u, approximate="tanh") computes):
//   gelu(u) = 0.5 u (1 + tanh(k (u + 0.044715 u^3))),  k = sqrt(2 / pi)
// tanh(z) = 1 - 2 / (1 + e^(2z)): glibc's exp is several times faster than its tanh, and a GPU's exp is a couple
// of instructions. At the extremes e^(2z) is 0 or inf and this gives -1 or 1 exactly.
template <typename T>
HOST_DEVICE T tanh_exp(T z) {
  return T(1) - T(2) / (T(1) + std::exp(T(2) * z));
}

template <typename T>
HOST_DEVICE T gelu(T u) {
  const T k = T(0.7978845608028654);
  return T(0.5) * u * (T(1) + tanh_exp(k * (u + T(0.044715) * u * u * u)));
}

// d gelu / du = 0.5 (1 + t) + 0.5 u (1 - t^2) k (1 + 3 * 0.044715 u^2),  t = tanh(k (u + 0.044715 u^3))
template <typename T>
HOST_DEVICE T gelu_grad(T u) {
  const T k = T(0.7978845608028654);
  const T t = tanh_exp(k * (u + T(0.044715) * u * u * u));
  return T(0.5) * (T(1) + t) + T(0.5) * u * (T(1) - t * t) * k * (T(1) + T(3 * 0.044715) * u * u);
}

// Every check a learner's mistake can trip, with a message that says what to do.
inline void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& bias) {
  TORCH_CHECK(x.device() == bias.device(), op, ": x is on ", x.device(), " but bias is on ", bias.device(),
              "; move both to the same device");
  TORCH_CHECK(x.scalar_type() == bias.scalar_type(), op, ": x is ", x.scalar_type(), " but bias is ",
              bias.scalar_type(), "; give both the same dtype (e.g. bias.to(x.dtype))");
  // The dtypes the kernels are compiled for (AT_DISPATCH_FLOATING_TYPES_AND2 below), named one by one:
  // at::isFloatingType would also let float8 through, to fail later inside the dispatch macro.
  const at::ScalarType t = x.scalar_type();
  TORCH_CHECK(t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16, op,
              ": expected float64, float32, float16 or bfloat16 tensors, got ", t);
  TORCH_CHECK(x.dim() >= 1 && bias.dim() == 1, op, ": bias must be 1-D and x at least 1-D; got x of shape ",
              x.sizes(), " and bias of shape ", bias.sizes());
  TORCH_CHECK(x.size(-1) == bias.size(0), op, ": bias has ", bias.size(0), " entries but x's last dimension is ",
              x.size(-1), " (x has shape ", x.sizes(), ")");
  TORCH_CHECK(x.is_contiguous() && bias.is_contiguous(), op,
              ": x and bias must be contiguous (the kernel walks memory in order); call .contiguous() first");
}

inline void check_grad(const at::Tensor& grad, const at::Tensor& x) {
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type() && grad.device() == x.device(),
              "bias_gelu_backward: grad must match x in shape, dtype and device; got grad ", grad.sizes(), " ",
              grad.scalar_type(), " on ", grad.device(), ", x ", x.sizes(), " ", x.scalar_type(), " on ", x.device());
  TORCH_CHECK(grad.is_contiguous(), "bias_gelu_backward: grad must be contiguous; call .contiguous() first");
}

}  // namespace bias_gelu_lesson
"""

CPP_SOURCE = r"""
#include <ATen/Parallel.h>

namespace bias_gelu_lesson {

at::Tensor bias_gelu_cpu(const at::Tensor& x, const at::Tensor& bias) {
  check_inputs("bias_gelu", x, bias);
  at::Tensor y = at::empty_like(x);
  const int64_t d = bias.numel(), rows = d == 0 ? 0 : x.numel() / d;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_gelu_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;  // float for half/bfloat16, else the type itself
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    // Rows are split across torch's intra-op threads; each thread reads x and writes y once.
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < d; ++c)
          yp[r * d + c] = static_cast<scalar_t>(gelu<opmath_t>(opmath_t(xp[r * d + c]) + opmath_t(bp[c])));
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_gelu_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& bias) {
  check_inputs("bias_gelu_backward", x, bias);
  check_grad(grad, x);
  at::Tensor grad_x = at::empty_like(x);
  const int64_t d = bias.numel(), rows = d == 0 ? 0 : x.numel() / d;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_gelu_backward_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < d; ++c) {
          const int64_t i = r * d + c;
          gxp[i] = static_cast<scalar_t>(opmath_t(gp[i]) * gelu_grad<opmath_t>(opmath_t(xp[i]) + opmath_t(bp[c])));
        }
    });
  });
  // d(loss)/d(bias) sums d(loss)/d(x + bias) over every row: bias was broadcast to each row.
  at::Tensor grad_bias = at::sum(grad_x.reshape({rows, d}), {0}, false, at::toOpMathType(x.scalar_type()));
  return {grad_x, grad_bias.to(bias.scalar_type())};
}

}  // namespace bias_gelu_lesson

// The operator's schema: what torch.ops.course.bias_gelu accepts and returns, for every device.
TORCH_LIBRARY(course, m) {
  m.def("bias_gelu(Tensor x, Tensor bias) -> Tensor");
  m.def("bias_gelu_backward(Tensor grad, Tensor x, Tensor bias) -> (Tensor, Tensor)");
}

// Its CPU kernels. The CUDA kernels register under the same names from the .cu file.
TORCH_LIBRARY_IMPL(course, CPU, m) {
  m.impl("bias_gelu", &bias_gelu_lesson::bias_gelu_cpu);
  m.impl("bias_gelu_backward", &bias_gelu_lesson::bias_gelu_backward_cpu);
}
"""

CUDA_SOURCE = r"""
#include <ATen/cuda/CUDAContext.h>   // at::cuda::getCurrentCUDAStream; pulls in cuBLAS/cuSPARSE headers
#include <c10/cuda/CUDAGuard.h>       // OptionalCUDAGuard: launch on the tensors' GPU
#include <c10/cuda/CUDAException.h>   // C10_CUDA_KERNEL_LAUNCH_CHECK
#include <algorithm>
#include <cstdint>

namespace bias_gelu_lesson {

// VEC elements moved as one 16-byte load/store (float4-style): 4 floats, 8 halfs, 2 doubles.
template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Pack {
  scalar_t v[VEC];
};

template <typename scalar_t, int VEC>
__global__ void bias_gelu_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias,
                                         scalar_t* __restrict__ y, int64_t n_packs, int64_t packs_per_row) {
  using opmath_t = at::opmath_type<scalar_t>;   // compute in float even for half/bfloat16
  using P = Pack<scalar_t, VEC>;
  const P* xp = reinterpret_cast<const P*>(x);
  const P* bp = reinterpret_cast<const P*>(bias);
  P* yp = reinterpret_cast<P*>(y);
  // Global index of this thread: which block, times threads per block, plus the thread's place in its block.
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  // Grid-stride loop: the grid is sized to fill the GPU once, and each thread then steps by the total thread
  // count, so any n works with one launch and every step of a warp touches consecutive 16-byte packs (coalesced).
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  // Column of pack i. A division per element would cost more than its memory traffic, so divide once and
  // advance the column by stride % packs_per_row on each step.
  int64_t col = i % packs_per_row;
  const int64_t col_step = stride % packs_per_row;
  for (; i < n_packs; i += stride) {
    const P xv = xp[i];    // one 16-byte load of x
    const P bv = bp[col];  // bias is tiny and stays in cache
    P out;
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      out.v[k] = static_cast<scalar_t>(gelu<opmath_t>(opmath_t(xv.v[k]) + opmath_t(bv.v[k])));
    yp[i] = out;           // one 16-byte store of y
    col += col_step;
    if (col >= packs_per_row) col -= packs_per_row;
  }
}

// Backward: grad_x = grad * gelu'(x + bias), and grad_bias = grad_x summed over rows, fused: each thread owns
// one pack of columns and walks down a tile of rows, so it can add up its columns' bias gradient in registers.
// Each row tile writes one row of partial sums; a tiny sum over tiles finishes grad_bias (no atomics, so the
// result is the same on every run).
template <typename scalar_t, int VEC>
__global__ void bias_gelu_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                                          const scalar_t* __restrict__ bias, scalar_t* __restrict__ grad_x,
                                          at::opmath_type<scalar_t>* __restrict__ partial, int64_t rows,
                                          int64_t packs_per_row, int64_t rows_per_tile) {
  using opmath_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VEC>;
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // x-dimension of the grid: columns
  if (col >= packs_per_row) return;
  const int64_t row_begin = int64_t(blockIdx.y) * rows_per_tile;       // y-dimension: tiles of rows
  const int64_t row_end = std::min(rows, row_begin + rows_per_tile);
  const P bv = reinterpret_cast<const P*>(bias)[col];
  opmath_t acc[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) acc[k] = opmath_t(0);
#pragma unroll 4
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t i = r * packs_per_row + col;  // neighbouring threads read neighbouring packs: coalesced
    const P gv = reinterpret_cast<const P*>(grad)[i];
    const P xv = reinterpret_cast<const P*>(x)[i];
    P out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const opmath_t g = opmath_t(gv.v[k]) * gelu_grad<opmath_t>(opmath_t(xv.v[k]) + opmath_t(bv.v[k]));
      out.v[k] = static_cast<scalar_t>(g);
      acc[k] += g;
    }
    reinterpret_cast<P*>(grad_x)[i] = out;
  }
  const int64_t d = packs_per_row * VEC;
#pragma unroll
  for (int k = 0; k < VEC; ++k) partial[int64_t(blockIdx.y) * d + col * VEC + k] = acc[k];
}

// 16-byte packs are only legal when every pointer is 16-byte aligned and no pack straddles two rows.
template <typename scalar_t>
bool can_vectorize(std::initializer_list<const at::Tensor*> tensors, int64_t d) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  for (const at::Tensor* t : tensors)
    if (reinterpret_cast<std::uintptr_t>(t->const_data_ptr()) % 16 != 0) return false;
  return d % VEC == 0;
}

template <typename scalar_t, int VEC>
void launch_forward(const at::Tensor& x, const at::Tensor& bias, at::Tensor& y) {
  const int64_t n_packs = x.numel() / VEC, packs_per_row = bias.numel() / VEC;
  constexpr int threads = 256;  // threads per block: a multiple of the 32-thread warp
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  // Enough blocks to fill every streaming multiprocessor once; the grid-stride loop covers the rest.
  const int64_t fill = int64_t(props->multiProcessorCount) * (props->maxThreadsPerMultiProcessor / threads);
  const int64_t blocks = std::max<int64_t>(1, std::min((n_packs + threads - 1) / threads, fill));
  // Launch on PyTorch's current stream (not the default stream), so the kernel is ordered with the ops
  // around it and works under torch.cuda.stream(...) and CUDA graphs.
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  bias_gelu_forward_kernel<scalar_t, VEC><<<blocks, threads, 0, stream>>>(
      x.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), n_packs,
      packs_per_row);
  // A bad launch (too many threads, no kernel image for this GPU) fails silently unless asked: ask now.
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int VEC>
at::Tensor launch_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bias, at::Tensor& grad_x) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t d = bias.numel(), rows = x.numel() / d, packs_per_row = d / VEC;
  constexpr int threads = 128;
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  const int64_t col_blocks = (packs_per_row + threads - 1) / threads;
  // As many row tiles as it takes to fill the GPU with threads (gridDim.y is at most 65535).
  const int64_t want = int64_t(props->multiProcessorCount) * props->maxThreadsPerMultiProcessor;
  int64_t tiles = std::min<int64_t>({rows, std::max<int64_t>(1, want / (col_blocks * threads)), 65535});
  const int64_t rows_per_tile = (rows + tiles - 1) / tiles;
  tiles = (rows + rows_per_tile - 1) / rows_per_tile;
  at::Tensor partial = at::empty({tiles, d}, x.options().dtype(at::toOpMathType(x.scalar_type())));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  bias_gelu_backward_kernel<scalar_t, VEC><<<dim3(col_blocks, tiles), threads, 0, stream>>>(
      grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(),
      grad_x.mutable_data_ptr<scalar_t>(), partial.mutable_data_ptr<opmath_t>(), rows, packs_per_row, rows_per_tile);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return partial.sum(0).to(bias.scalar_type());
}

at::Tensor bias_gelu_cuda(const at::Tensor& x, const at::Tensor& bias) {
  check_inputs("bias_gelu", x, bias);
  const c10::cuda::OptionalCUDAGuard guard(x.device());  // current device = x's GPU while we launch
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_gelu_cuda", [&] {
    if (can_vectorize<scalar_t>({&x, &bias, &y}, bias.numel()))
      launch_forward<scalar_t, 16 / sizeof(scalar_t)>(x, bias, y);
    else
      launch_forward<scalar_t, 1>(x, bias, y);  // same kernel, one element per step
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_gelu_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                           const at::Tensor& bias) {
  check_inputs("bias_gelu_backward", x, bias);
  check_grad(grad, x);
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  at::Tensor grad_x = at::empty_like(x);
  if (x.numel() == 0) return {grad_x, at::zeros_like(bias)};
  at::Tensor grad_bias;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_gelu_backward_cuda", [&] {
    if (can_vectorize<scalar_t>({&grad, &x, &bias, &grad_x}, bias.numel()))
      grad_bias = launch_backward<scalar_t, 16 / sizeof(scalar_t)>(grad, x, bias, grad_x);
    else
      grad_bias = launch_backward<scalar_t, 1>(grad, x, bias, grad_x);
  });
  return {grad_x, grad_bias};
}

}  // namespace bias_gelu_lesson

// The CUDA kernels of the operators TORCH_LIBRARY(course, ...) defined in the C++ source.
TORCH_LIBRARY_IMPL(course, CUDA, m) {
  m.impl("bias_gelu", &bias_gelu_lesson::bias_gelu_cuda);
  m.impl("bias_gelu_backward", &bias_gelu_lesson::bias_gelu_backward_cuda);
}
"""


def section(title: str) -> None:
    print(f"\n== {title} ==")


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. The one place a lesson decides where tensors live."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where to run and time the op; auto picks cuda, then mps, then cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    parser.add_argument("--smoke", action="store_true", help="tiny tensors and short timings (the build is the same)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/09-custom-models/07_cuda_integration"),
                        help="where metrics.json is written")
    parser.add_argument("--cuda-build", default="auto", choices=["auto", "always", "never"],
                        help="auto: compile the CUDA kernels when a GPU is used; always: also with no GPU (proves "
                             "the .cu compiles); never: the C++ CPU op only")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="where the extensions are built and cached (default: torch's cache, "
                             "$TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions)")
    parser.add_argument("--verbose-build", action="store_true", help="print the compiler commands torch runs")
    parser.add_argument("--rows", type=int, default=None,
                        help="rows of x (default: 16384 on a GPU, 2048 on a CPU, 64 with --smoke)")
    parser.add_argument("--cols", type=int, default=None,
                        help="columns of x = length of bias (default: 4096 on a GPU, 1024 on a CPU, 256 with --smoke)")
    parser.add_argument("--compile-backend", default="auto", choices=["auto", "inductor", "aot_eager"],
                        help="torch.compile backend for the fullgraph check; auto: inductor on a GPU, aot_eager on a "
                             "CPU (the same capture, fake tensors and AOT autograd, without inductor's C++ build)")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**32:  # NumPy's seed range (torch takes any 64-bit integer)
        parser.error(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    for flag in ("--out-dir", "--data-dir"):  # a file where a folder must be (or be made): one line, no traceback
        path = getattr(args, flag[2:].replace("-", "_"), None)
        existing = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None) if path else None
        if existing is not None and not existing.is_dir():
            parser.error(f"{flag} {path}: {existing} is a file, not a folder")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here (see the CUDA section of the README)")
    if args.device == "mps" and not torch.backends.mps.is_available():
        parser.error("--device mps: torch.backends.mps.is_available() is False here")
    if (args.rows is not None and args.rows < 1) or (args.cols is not None and args.cols < 1):
        parser.error("--rows and --cols must be at least 1")
    if args.build_dir is not None:
        existing = next(p for p in (args.build_dir, *args.build_dir.resolve().parents) if p.exists())
        if not existing.is_dir():
            parser.error(f"--build-dir {args.build_dir}: {existing} is a file, not a folder")
    return args


# ---- 1. Finding the toolchain (pure Python: nothing here imports torch.utils.cpp_extension) ----------------------
def run_quiet(command: list[str]) -> str:
    """stdout + stderr of a short command, '' when it cannot run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout + done.stderr


def real_nvcc(nvcc: str) -> Path:
    """The nvcc binary behind `nvcc`, which may be a wrapper script or a symlink. nvcc's own dry run names the
    folder it runs from (`#$ _HERE_=/usr/local/cuda-13.0/bin`): that is the toolkit, whatever wrapped it."""
    out = run_quiet([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull])
    here = re.search(r"^#\$ _HERE_=(.+)$", out, re.M)
    return Path(here.group(1).strip()) / "nvcc" if here else Path(os.path.realpath(nvcc))


def nvcc_release(nvcc: Path) -> str:
    """The line of `nvcc --version` that carries the version: 'Cuda compilation tools, release 13.0, V13.0.88'."""
    lines = [line.strip() for line in run_quiet([str(nvcc), "--version"]).splitlines() if "release" in line]
    return lines[-1] if lines else "(nvcc did not report a version)"


def torch_cuda_home_guess() -> str | None:
    """CUDA_HOME as torch.utils.cpp_extension resolves it when imported: $CUDA_HOME, else $CUDA_PATH, else the
    folder above the first nvcc on PATH, else /usr/local/cuda if it exists."""
    guess = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if guess is None and (nvcc := shutil.which("nvcc")):
        guess = os.path.dirname(os.path.dirname(nvcc))
    if guess is None and os.path.exists("/usr/local/cuda"):
        guess = "/usr/local/cuda"
    return guess


def pip_cuda_dirs(kind: str) -> list[Path]:
    """Folders of pip-installed CUDA wheels next to torch: site-packages/nvidia/cu13/<kind> (CUDA 13 wheels) or
    site-packages/nvidia/<library>/<kind> (CUDA 12 wheels)."""
    site = Path(torch.__file__).resolve().parents[1] / "nvidia"
    return sorted(Path(p) for p in glob.glob(str(site / "*" / kind)))


def cuda_folder_version(folder: str) -> tuple[int, ...]:
    """(12, 10) for .../cuda-12.10: compared as numbers, so 12.10 is newer than 12.4 (as strings it sorts first)."""
    found = re.search(r"cuda-(\d+(?:\.\d+)*)$", folder.rstrip("/"))
    return tuple(int(v) for v in found.group(1).split(".")) if found else ()


def default_cuda_folders(root: str = "/usr/local", torch_cuda: str | None = None) -> list[str]:
    """<root>/cuda* in the order to try: the toolkit matching the CUDA torch was built with (cuda-13.0 for a cu130
    torch: its headers and runtime agree with torch's), then the <root>/cuda link the installer points at the
    default, then the others, newest version first."""
    torch_cuda = torch_cuda or torch.version.cuda
    match = os.path.join(root, f"cuda-{torch_cuda}") if torch_cuda else None
    link = os.path.join(root, "cuda")
    folders = [p for p in glob.glob(os.path.join(root, "cuda*")) if os.path.isdir(p)]
    return sorted(folders, key=lambda p: (p != match, p != link, [-v for v in cuda_folder_version(p)], p))


def nvcc_wheel_advice() -> str:
    """The pip command for an nvcc of the CUDA version torch was built with (a newer nvcc than torch's CUDA builds
    code torch's runtime may refuse): nvidia-cuda-nvcc for CUDA 13, nvidia-cuda-nvcc-cu12 for CUDA 12."""
    if not torch.version.cuda:
        return "a CUDA build of torch, then the CUDA toolkit"
    major = torch.version.cuda.split(".")[0]
    name = "nvidia-cuda-nvcc" if int(major) >= 13 else f"nvidia-cuda-nvcc-cu{major}"
    return f'`pip install "{name}=={torch.version.cuda}.*"`'


def find_cuda_toolkit() -> dict:
    """The CUDA toolkit to build with, and how it was found, in the order a person would look."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append((f"${var}", Path(os.environ[var]) / "bin" / "nvcc"))
    if on_path := shutil.which("nvcc"):
        real = real_nvcc(on_path)
        how = "nvcc on PATH" if real == Path(on_path) else f"nvcc on PATH ({on_path}, a wrapper for {real})"
        candidates.append((how, real))
    for folder in default_cuda_folders():
        candidates.append(("the default folder", Path(folder) / "bin" / "nvcc"))
    for folder in pip_cuda_dirs("bin"):  # the nvidia-cuda-nvcc wheel (its libcudart is linked by cudart_ldflags)
        candidates.append(("the nvidia-cuda-nvcc wheel", folder / "nvcc"))
    for how, nvcc in candidates:
        if nvcc.is_file() and os.access(nvcc, os.X_OK):
            home = nvcc.parent.parent
            return {"home": str(home), "how": how, "nvcc": str(nvcc), "release": nvcc_release(nvcc)}
    return {"home": None, "how": None, "nvcc": None, "release": None}


def tool_line(command: str) -> tuple[str | None, str]:
    """(path, first line of `command --version`) of a command on PATH, (None, '') when absent."""
    path = shutil.which(command)
    if path is None:
        return None, ""
    out = run_quiet([path, "--version"]).strip().splitlines()
    return path, out[0] if out else "?"


def report_toolchain(device: torch.device, cuda_build: str) -> dict:
    """Print what torch.utils.cpp_extension will use, fix what the lesson can fix (for this process only), and
    decide what can be built. Returns the plan."""
    compiler = os.environ.get("CXX", "c++")
    cxx_path, cxx_version = tool_line(compiler)
    print(f"C++ compiler torch calls ($CXX or c++): {cxx_path or 'not found'}  {cxx_version}")

    # torch runs `ninja` from PATH. Without the venv activated that can be the system's older ninja.
    venv_ninja = Path(sys.executable).parent / "ninja"
    ninja_path, ninja_version = tool_line("ninja")
    print(f"ninja torch calls (from PATH): {ninja_path or 'not found'}  {ninja_version}")
    if venv_ninja.is_file() and (ninja_path is None or Path(ninja_path).resolve() != venv_ninja.resolve()):
        venv_version = run_quiet([str(venv_ninja), "--version"]).strip()
        os.environ["PATH"] = f"{venv_ninja.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        print(f"  this interpreter's environment has {venv_ninja} {venv_version}: put first on PATH for this run "
              f"(activate the venv, or export PATH={venv_ninja.parent}:$PATH, to do the same)")
        ninja_path = str(venv_ninja)

    toolkit = find_cuda_toolkit()
    guess = torch_cuda_home_guess()
    if toolkit["home"]:
        guess_ok = guess is not None and Path(guess).resolve() == Path(toolkit["home"]).resolve()
        print(f"CUDA toolkit: {toolkit['home']} (found through {toolkit['how']})")
        print(f"  nvcc: {toolkit['nvcc']}: {toolkit['release']}; torch itself was built with CUDA "
              f"{torch.version.cuda or '- (a CPU-only torch)'}")
        verdict = "right" if guess_ok else "WRONG: it would look for headers in " + f"{guess}/include"
        print(f"  CUDA_HOME as torch would resolve it: {guess} ({verdict})")
        if not guess_ok:
            print(f"  so the lesson sets CUDA_HOME={toolkit['home']} before importing torch.utils.cpp_extension "
                  "(it reads CUDA_HOME once, at import)")
        os.environ["CUDA_HOME"] = toolkit["home"]
    else:
        print("CUDA toolkit: not found ($CUDA_HOME, nvcc on PATH, /usr/local/cuda*, the nvidia-cuda-nvcc wheel)")

    # ATen/cuda/CUDAContext.h includes cusparse.h and cublas_v2.h. A toolkit installed without those libraries
    # lacks them; the pip wheels torch depends on ship them. Added after the toolkit's own include folder, so the
    # toolkit's headers win and only the missing ones come from the wheels.
    extra_includes = []
    if toolkit["home"] and not (Path(toolkit["home"]) / "include" / "cusparse.h").is_file():
        needed = ("cusparse.h", "cublas_v2.h", "cusolverDn.h")
        extra_includes = [d for d in pip_cuda_dirs("include") if any((d / h).is_file() for h in needed)]
        shown = ", ".join(str(d) for d in extra_includes) or "none found"
        print(f"  {toolkit['home']}/include has no cusparse.h (needed by ATen/cuda/CUDAContext.h): "
              f"using the pip wheels' headers: {shown}")

    gpu = device.type == "cuda"
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not arch and toolkit["home"]:
        if gpu:  # compile for this GPU only: a single architecture compiles several times faster than torch's list
            major, minor = torch.cuda.get_device_capability(device)
            arch = f"{major}.{minor}"
        else:  # with no GPU visible torch cannot ask one, and fails (IndexError) unless told
            arch = NO_GPU_ARCH_LIST
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch
        print(f"  TORCH_CUDA_ARCH_LIST unset: set to {arch} "
              f"({'this GPU' + chr(39) + 's compute capability' if gpu else 'no GPU visible, so an explicit list'})")
    elif arch:
        print(f"  TORCH_CUDA_ARCH_LIST={arch} (from the environment)")
    jobs = os.environ.get("MAX_JOBS")
    print(f"MAX_JOBS: {jobs or 'unset'} (parallel compile jobs; {'set' if jobs else 'ninja runs as many as CPUs + 2'}; "
          "lower it when a big build runs out of memory)")

    cpp_ok = cxx_path is not None and ninja_path is not None
    want_cuda = cuda_build == "always" or (cuda_build == "auto" and gpu)
    cuda_ok = cpp_ok and want_cuda and toolkit["home"] is not None and torch.version.cuda is not None
    if not cpp_ok:
        missing = " and ".join(n for n, p in ((compiler, cxx_path), ("ninja", ninja_path)) if p is None)
        print(f"No {missing}: running the pure-PyTorch reference only (install g++ or clang++ and `pip install "
              f"ninja`, then rerun to build the C++ op{' and the CUDA kernels' if want_cuda else ''}).")
    elif want_cuda and not cuda_ok:
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "no nvcc found"
        instead = "the C++ op on CPU tensors; on the GPU, the eager chain, torch.compile and Triton" if gpu else \
            "the C++ CPU op"
        print(f"{why}: running {instead} (install the CUDA toolkit {torch.version.cuda or ''}, or "
              f"{nvcc_wheel_advice()}, and rerun for the CUDA kernels).")
    elif not want_cuda and cuda_build == "auto":
        print(f"No GPU in use: building the C++ CPU op only "
              f"({'--cuda-build always compiles the .cu source anyway' if toolkit['home'] else 'no nvcc either'}).")
    return {"cpp": cpp_ok, "cuda": cuda_ok, "toolkit": toolkit, "extra_includes": [str(d) for d in extra_includes],
            "cuda_home_guess_ok": int(toolkit["home"] is not None and guess is not None
                                      and Path(guess).resolve() == Path(toolkit["home"]).resolve())}


# ---- 2. Building and registering --------------------------------------------------------------------------------
def cpp_extension():
    """torch.utils.cpp_extension, imported only after CUDA_HOME is settled. If something imported it earlier (a
    notebook, a test run), its CUDA_HOME is stale: correct the module's copy."""
    # Its import-time warning "No CUDA runtime is found, using CUDA_HOME=..." only means no GPU is visible,
    # which section 2 already said.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch.utils.cpp_extension as cpp_ext

    if os.environ.get("CUDA_HOME") and cpp_ext.CUDA_HOME != os.environ["CUDA_HOME"]:
        print(f"  (torch.utils.cpp_extension was imported earlier with CUDA_HOME={cpp_ext.CUDA_HOME}; corrected)")
        cpp_ext.CUDA_HOME = os.environ["CUDA_HOME"]
    return cpp_ext


def build_dir(root: Path | None, name: str) -> Path:
    """<root>/<name>, or torch's own cache: $TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions, then py311_cu130."""
    if root is None:
        cpp_ext = cpp_extension()
        cuda = f"_cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "_cpu"
        root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_ext.get_default_build_root())
        root = root / f"py{sys.version_info.major}{sys.version_info.minor}{cuda}"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cudart_ldflags(home: str, folder: Path) -> list[str]:
    """Linker flags that let `-lcudart` resolve. torch links CUDA extensions with -L<CUDA_HOME>/lib64 (or lib)
    -lcudart, which needs the unversioned libcudart.so of a full toolkit. The pip wheels (nvcc from
    nvidia-cuda-nvcc, the runtime torch depends on) ship only libcudart.so.13 (.12 for CUDA 12): then the lesson
    links a libcudart.so -> libcudart.so.13 in the build folder and adds that folder with -L. The extension still
    records the soname libcudart.so.13, the library torch has already loaded."""
    libs = [Path(home) / "lib64", Path(home) / "lib"]
    if any((d / "libcudart.so").exists() for d in libs):
        return []
    versioned = [p for d in libs + pip_cuda_dirs("lib") for p in sorted(d.glob("libcudart.so.[0-9]*"))]
    if not versioned:
        return []  # the link will fail with "cannot find -lcudart", reported as a build failure
    link_dir = folder / "cudart_link"
    link_dir.mkdir(exist_ok=True)
    link = link_dir / "libcudart.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(versioned[0])
    return [f"-L{link_dir}"]


def build_one(name: str, folder: Path, cuda: bool, plan: dict, verbose: bool) -> tuple[float | None, str]:
    """Compile (or load from the cache) one extension with load_inline; is_python_module=False loads the .so with
    torch.ops.load_library, which runs its TORCH_LIBRARY registrations. Returns (seconds or None, message)."""
    cpp_ext = cpp_extension()
    library = folder / f"{name}.so"
    before = library.stat().st_mtime if library.exists() else None
    start = time.perf_counter()
    try:
        cpp_ext.load_inline(
            name=name,
            cpp_sources=[COMMON_SOURCE, CPP_SOURCE] if not cuda else [""],
            cuda_sources=[COMMON_SOURCE, CUDA_SOURCE] if cuda else None,
            with_cuda=cuda,
            is_python_module=False,   # no pybind module: the .so only registers operators
            no_implicit_headers=True,  # include what the sources need, not all of torch/extension.h (faster)
            extra_cflags=CPU_FLAGS,
            extra_cuda_cflags=["-O3"] + [f"-isystem {shlex.quote(d)}" for d in plan["extra_includes"]],
            extra_ldflags=cudart_ldflags(plan["toolkit"]["home"], folder) if cuda else None,
            build_directory=str(folder),
            verbose=verbose,
        )
    except Exception as error:  # a compiler error: show its first lines, not a Python traceback
        lines = [line.strip() for line in str(error).splitlines() if "error" in line.lower()]
        return None, "; ".join(lines[:3]) or str(error).splitlines()[0]
    seconds = time.perf_counter() - start
    compiled = before is None or library.stat().st_mtime != before
    record = folder / "lesson_build_time.json"
    if compiled:  # remember the cold build time, so a cached run can show both
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cold_build_s": round(seconds, 1)}))
        os.replace(tmp, record)
        return seconds, f"compiled in {seconds:.1f} s (cold: ninja built it now) into {folder}"
    cold = json.loads(record.read_text())["cold_build_s"] if record.is_file() else None
    cold_text = f"; the cold build recorded there took {cold} s" if cold else ""
    return seconds, (f"loaded in {seconds:.2f} s from the cache {folder} (sources unchanged, so ninja had "
                     f"nothing to do){cold_text}")


def op_registered(name: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{name}", key)


def register_python_side() -> None:
    """The parts of the operator written in Python, registered once per process: its fake (meta) kernels, which
    give torch.compile output shapes without running anything, and its autograd formula."""
    if op_registered("bias_gelu", "Autograd"):
        return  # already registered in this process (a second run in a notebook or a test session)

    def fake_bias_gelu(x, bias):
        return torch.empty_like(x)  # same shape, dtype, device and strides as x; no data is touched

    def fake_bias_gelu_backward(grad, x, bias):
        return torch.empty_like(x), torch.empty_like(bias)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)  # x and bias: GELU's derivative needs u = x + bias, not the output

    def backward(ctx, grad):
        x, bias = ctx.saved_tensors
        grad_x, grad_bias = torch.ops.course.bias_gelu_backward(grad.contiguous(), x, bias)
        return grad_x, grad_bias

    torch.library.register_fake(f"{NAMESPACE}::bias_gelu", fake_bias_gelu, allow_override=True)
    torch.library.register_fake(f"{NAMESPACE}::bias_gelu_backward", fake_bias_gelu_backward, allow_override=True)
    torch.library.register_autograd(f"{NAMESPACE}::bias_gelu", backward, setup_context=setup_context)


def build_ops(plan: dict, root: Path | None, verbose: bool) -> dict:
    """Build the CPU extension (schema + CPU kernels), then the CUDA one if planned. Two .so files: the CPU one
    is the same with or without a GPU, so its cache is shared, and a CUDA build failing leaves the CPU op working."""
    built = {"cpu": False, "cuda": False, "build_s": 0.0, "cuda_build_s": 0.0}
    if not plan["cpp"]:
        return built
    seconds, message = build_one(CPU_EXTENSION, build_dir(root, CPU_EXTENSION), False, plan, verbose)
    if seconds is None:
        print(f"The C++ build failed ({message}): running the pure-PyTorch reference only "
              "(--verbose-build shows the compiler's full output).")
        return built
    print(f"C++ extension {CPU_EXTENSION}: {message}")
    built.update(cpu=True, build_s=seconds)
    if plan["cuda"]:
        print(f"Compiling the CUDA source with {plan['toolkit']['nvcc']} for TORCH_CUDA_ARCH_LIST="
              f"{os.environ.get('TORCH_CUDA_ARCH_LIST')} (one to two minutes the first time)...")
        seconds, message = build_one(CUDA_EXTENSION, build_dir(root, CUDA_EXTENSION), True, plan, verbose)
        if seconds is None:
            print(f"The CUDA build failed ({message}): the C++ op runs on CPU tensors only "
                  "(--verbose-build shows nvcc's full output).")
        else:
            print(f"CUDA extension {CUDA_EXTENSION}: {message}")
            built.update(cuda=True, cuda_build_s=seconds)
    register_python_side()
    return built


# ---- 3. The pure-PyTorch reference -------------------------------------------------------------------------------
def eager_chain(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """What the op replaces: two kernels forward (add, gelu), two backward (gelu's derivative, a sum for bias)."""
    return F.gelu(x + bias, approximate="tanh")


def random_inputs(rows: int, cols: int, device, dtype=torch.float32, grad: bool = False):
    x = torch.randn(rows, cols, device=device, dtype=dtype, requires_grad=grad)
    bias = torch.randn(cols, device=device, dtype=dtype, requires_grad=grad)
    return x, bias


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# ---- 4. Correctness ---------------------------------------------------------------------------------------------
def cuda_launch_plan(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> dict:
    """How launch_forward and launch_backward in CUDA_SOURCE split x (rows x cols) on this GPU: the same formulas,
    in Python, so the lesson can choose a shape that runs every branch of the kernels (change one, change both)."""
    props = torch.cuda.get_device_properties(device)
    sms, per_sm = props.multi_processor_count, props.max_threads_per_multi_processor
    vec = 16 // dtype.itemsize if cols % (16 // dtype.itemsize) == 0 else 1  # fresh tensors are 16-byte aligned
    n_packs, packs_per_row = rows * cols // vec, cols // vec
    blocks = max(1, min(-(-n_packs // 256), sms * (per_sm // 256)))        # 256 threads per block
    stride = blocks * 256
    col_blocks = -(-packs_per_row // 128)                                     # 128 threads per block
    tiles = min(rows, max(1, sms * per_sm // (col_blocks * 128)), 65535)
    rows_per_tile = -(-rows // tiles)
    return {"vec": vec, "n_packs": n_packs, "packs_per_row": packs_per_row, "stride": stride,
            "grid_steps": -(-n_packs // stride), "col_step": stride % packs_per_row,
            "rows_per_tile": rows_per_tile, "tiles": -(-rows // rows_per_tile)}


def large_shape(device: torch.device) -> tuple[int, int]:
    """A shape that takes the kernels' every path, which the small shapes above do not. On a GPU: at least two
    grid-stride steps for 8-element (16-byte half) packs, a row width in packs that does not divide the grid's
    stride (so the forward's column wraps mid-row), and so many rows that each backward tile walks several. On a
    CPU: rows enough for at::parallel_for to split them into several chunks (its grain is 16384 / cols rows)."""
    cols = 1000  # 250 float32 packs, 125 half packs per row: not a divisor of any grid stride (a multiple of 256)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        threads = props.multi_processor_count * props.max_threads_per_multi_processor  # the grid-stride, at most
        return max(4099, 2 * 8 * threads // cols + 1) | 1, cols
    return 4 * (16384 // cols) + 37, cols


def check_large_shapes(device: torch.device) -> dict:
    """Forward and backward against eager at large_shape(device), in float32 and (on a GPU) float16 and bfloat16,
    plus float32 with an odd width (the one-element path). Errors are measured against float64 math on the same
    inputs; the bias gradient, a sum over thousands of rows, relative to its largest entry."""
    rows, cols = large_shape(device)
    results = {"large_rows": rows, "large_cols": cols}
    cases = [(torch.float32, cols)]
    if device.type == "cuda":
        cases += [(torch.float16, cols), (torch.bfloat16, cols), (torch.float32, cols + 1)]
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(2, threads))  # parallel_for splits the rows only with more than one thread
    try:
        for dtype, width in cases:
            short = str(dtype).replace("torch.", "") + ("_odd_width" if width != cols else "")
            if device.type == "cuda":
                plan = cuda_launch_plan(rows, width, dtype, device)
                # The paths the small shapes never take: a second grid-stride step, the column wrap inside it, a
                # backward tile of several rows (the last one partial when rows_per_tile does not divide rows)
                assert plan["grid_steps"] >= 2 and plan["n_packs"] >= plan["stride"] + plan["packs_per_row"], plan
                assert plan["col_step"] != 0 and plan["rows_per_tile"] >= 2, plan
                results[f"large_{short}_grid_steps"] = plan["grid_steps"]
                results[f"large_{short}_rows_per_tile"] = plan["rows_per_tile"]
                how = (f"{plan['vec']}-element packs, {plan['grid_steps']} grid-stride steps, column step "
                       f"{plan['col_step']} of {plan['packs_per_row']}, {plan['rows_per_tile']} rows per backward tile")
            else:
                grain = max(1, 16384 // width)
                chunks = min(torch.get_num_threads(), -(-rows // grain))
                results["large_cpu_chunks"] = chunks
                how = f"{chunks} parallel_for chunks of at least {grain} rows"
            x, bias = random_inputs(rows, width, device, dtype, grad=True)
            g = torch.randn(rows, width, device=device, dtype=dtype)
            y = torch.ops.course.bias_gelu(x, bias)
            gx, gb = torch.autograd.grad(y, (x, bias), g)
            x64, b64 = x.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
            y64 = eager_chain(x64, b64)
            gx64, gb64 = torch.autograd.grad(y64, (x64, b64), g.double())
            fwd, gxd = max_diff(y, y64), max_diff(gx, gx64)
            gbr = max_diff(gb, gb64) / gb64.abs().max().item()
            results.update({f"large_{short}_fwd_max_abs_diff": fwd, f"large_{short}_grad_x_max_abs_diff": gxd,
                            f"large_{short}_grad_bias_max_rel_diff": gbr})
            print(f"{rows} x {width} {short} ({how}): output {fwd:.1e}, grad x {gxd:.1e}, grad bias {gbr:.1e} "
                  "relative, against float64 math")
    finally:
        torch.set_num_threads(threads)
    return results


def check_correctness(device: torch.device, smoke: bool) -> dict:
    op = torch.ops.course.bias_gelu
    results = {}
    for name, op_overload, args in (
        ("bias_gelu", op.default, random_inputs(8, 32, device, grad=True)),
        ("bias_gelu_backward", torch.ops.course.bias_gelu_backward.default,
         (torch.randn(8, 32, device=device), *random_inputs(8, 32, device))),
    ):
        report = torch.library.opcheck(op_overload, args, raise_exception=False)
        passed = sum(v == "SUCCESS" for v in report.values())
        failed = {k: v for k, v in report.items() if v != "SUCCESS"}
        print(f"opcheck {name}: {passed}/{len(report)} tests pass ({', '.join(report)})"
              + (f"; failed: {failed}" if failed else ""))
        results[f"opcheck_{name}_passed"] = passed
    results["opcheck_tests"] = len(report)

    x64, b64 = random_inputs(6, 12, device, torch.float64, grad=True)
    ok = torch.autograd.gradcheck(op, (x64, b64), raise_exception=False)
    print(f"gradcheck (float64, our backward against finite differences): {ok}")
    results["gradcheck_ok"] = int(ok)

    # float32 against the eager chain, forward and backward, with a shape whose rows are not a multiple of anything
    x, bias = random_inputs(37, 64, device, grad=True)
    g = torch.randn(37, 64, device=device)
    y_ref = eager_chain(x, bias)
    gx_ref, gb_ref = torch.autograd.grad(y_ref, (x, bias), g)
    y = op(x, bias)
    gx, gb = torch.autograd.grad(y, (x, bias), g)
    results.update(fwd_max_abs_diff=max_diff(y, y_ref), grad_x_max_abs_diff=max_diff(gx, gx_ref),
                   grad_bias_max_abs_diff=max_diff(gb, gb_ref))
    print(f"float32 against F.gelu(x + bias, approximate='tanh'): output {results['fwd_max_abs_diff']:.1e}, "
          f"grad x {results['grad_x_max_abs_diff']:.1e}, grad bias {results['grad_bias_max_abs_diff']:.1e} "
          "(max abs differences)")
    # A width not divisible by 4 and an offset pointer take the kernel's scalar path instead of 16-byte packs
    xs, bs = random_inputs(33, 37, device)
    results["scalar_path_max_abs_diff"] = max_diff(op(xs, bs), eager_chain(xs, bs))
    base = torch.randn(33 * 64 + 1, device=device)
    xo = base[1:].view(33, 64)  # contiguous, but starts 4 bytes past a 16-byte boundary
    bo = torch.randn(64, device=device)
    results["scalar_path_max_abs_diff"] = max(results["scalar_path_max_abs_diff"], max_diff(op(xo, bo),
                                                                                            eager_chain(xo, bo)))
    print(f"scalar path (width 37; a misaligned view): max abs difference {results['scalar_path_max_abs_diff']:.1e}")

    # Low precision on the GPU: the op computes in float and rounds once; the eager chain rounds x + bias too
    if device.type == "cuda":
        for dtype in (torch.float16, torch.bfloat16):
            xl, bl = random_inputs(64, 256, device, dtype)
            exact = eager_chain(xl.float(), bl.float())
            ours, eager = max_diff(op(xl, bl), exact), max_diff(eager_chain(xl, bl), exact)
            short = str(dtype).replace("torch.", "")
            print(f"{short}: op vs float32 math {ours:.1e}, eager {short} chain vs float32 math {eager:.1e}")
            results[f"{short}_max_abs_diff"] = ours
            results[f"{short}_eager_max_abs_diff"] = eager
    results.update(check_large_shapes(device))
    return results


def check_bad_inputs(device: torch.device) -> dict:
    """Mistakes a caller makes, each answered by the op's TORCH_CHECK with a sentence, not a crash."""
    op = torch.ops.course.bias_gelu
    x, bias = random_inputs(4, 8, device)
    cases = [
        ("bias of the wrong length", lambda: op(x, bias[:7])),
        ("a transposed (non-contiguous) x", lambda: op(torch.randn(8, 4, device=device).t(), bias)),
        ("integer tensors", lambda: op(x.long(), bias.long())),
        ("float32 x with float64 bias", lambda: op(x, bias.double())),
        ("a 2-D bias", lambda: op(x, bias.view(2, 4))),
    ]
    if device.type == "cuda":
        cases.append(("x on the GPU, bias on the CPU", lambda: op(x, bias.cpu())))
    clear = 0
    for what, call in cases:
        try:
            call()
            print(f"  {what}: accepted (it should not be)")
        except RuntimeError as error:
            message = str(error).splitlines()[0]
            clear += message.startswith("bias_gelu")
            print(f"  {what}: {message}")
    return {"bad_inputs_tried": len(cases), "bad_inputs_rejected_clearly": clear}


def check_compiled(device: torch.device, backend: str) -> dict:
    """torch.compile(fullgraph=True): the whole function must be one graph, op included (fullgraph turns a graph
    break into an error). The fake kernel supplies shapes while tracing; AOT autograd traces the backward op too."""

    def block(x, bias):
        return torch.ops.course.bias_gelu(x * 0.5, bias).square().mean()

    x, bias = random_inputs(16, 64, device, grad=True)
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    start = time.perf_counter()
    loss_c = compiled(x, bias)
    grads_c = torch.autograd.grad(loss_c, (x, bias))
    compile_s = time.perf_counter() - start
    loss_e = block(x, bias)
    grads_e = torch.autograd.grad(loss_e, (x, bias))
    diff = max(max_diff(loss_c, loss_e), *(max_diff(a, b) for a, b in zip(grads_c, grads_e)))
    print(f"torch.compile(fullgraph=True, backend={backend!r}): one graph, compiled in {compile_s:.1f} s; "
          f"loss and gradients differ from eager by at most {diff:.1e}")
    return {"compiled_max_abs_diff": diff, "compile_s": compile_s}


# ---- 5. Triton: the same fused kernel in Python ------------------------------------------------------------------
@functools.cache  # one definition per process: the kernels section 5 checks are the ones section 6 times
def make_triton_bias_gelu():
    """bias_gelu written in Triton, forward and fused backward, as an autograd.Function (call .apply(x, bias)); its
    kernels are the class's forward_kernel and backward_kernel. Triton is optional: it ships with torch's CUDA wheels
    on Linux. Returns None when it cannot be imported.

    Triton compiles these kernels for a GPU. Started with TRITON_INTERPRET=1 in the environment, Triton instead runs
    every kernel in its interpreter: each program in NumPy, on CPU tensors, slowly. That is how to test and debug a
    Triton kernel with no GPU. Triton reads the variable when it is first imported, so it must be set before the
    Python process starts; the class's `interpreted` says which kind these kernels are."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def forward_kernel(x_ptr, b_ptr, y_ptr, n, d, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        u = tl.load(x_ptr + offs, mask=mask).to(tl.float32) + tl.load(b_ptr + offs % d, mask=mask).to(tl.float32)
        t = 2.0 * tl.sigmoid(2.0 * 0.7978845608028654 * (u + 0.044715 * u * u * u)) - 1.0  # tanh
        tl.store(y_ptr + offs, (0.5 * u * (1.0 + t)).to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def backward_kernel(g_ptr, x_ptr, b_ptr, gx_ptr, part_ptr, rows, d, ROWS: tl.constexpr, COLS: tl.constexpr):
        r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        c = tl.program_id(1) * COLS + tl.arange(0, COLS)
        mask = (r[:, None] < rows) & (c[None, :] < d)
        offs = r[:, None] * d + c[None, :]
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + \
            tl.load(b_ptr + c, mask=c < d, other=0.0).to(tl.float32)[None, :]
        t = 2.0 * tl.sigmoid(2.0 * 0.7978845608028654 * (u + 0.044715 * u * u * u)) - 1.0
        dgelu = 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * u * u)
        gx = g * dgelu
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        tl.store(part_ptr + tl.program_id(0) * d + c, tl.sum(gx, axis=0), mask=c < d)  # this tile's bias grad

    class TritonBiasGelu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, bias):
            x = x.contiguous()  # the kernels index x as one flat row-major array
            y = torch.empty_like(x)
            forward_kernel[(triton.cdiv(x.numel(), 1024),)](x, bias, y, x.numel(), bias.numel(), BLOCK=1024)
            ctx.save_for_backward(x, bias)
            return y

        @staticmethod
        def backward(ctx, grad):
            x, bias = ctx.saved_tensors
            grad, d = grad.contiguous(), bias.numel()
            rows = x.numel() // d
            grad_x = torch.empty_like(x)
            partial = torch.empty(triton.cdiv(rows, 64), d, device=x.device, dtype=torch.float32)
            grid = (triton.cdiv(rows, 64), triton.cdiv(d, 128))
            backward_kernel[grid](grad, x, bias, grad_x, partial, rows, d, ROWS=64, COLS=128, num_warps=8)
            return grad_x, partial.sum(0).to(bias.dtype)

    TritonBiasGelu.forward_kernel, TritonBiasGelu.backward_kernel = forward_kernel, backward_kernel
    TritonBiasGelu.interpreted = type(forward_kernel).__name__ == "InterpretedFunction"  # not a JITFunction
    return TritonBiasGelu


def check_triton(device: torch.device) -> dict:
    """The Triton kernels against the eager chain: compiled for the GPU when there is one, or run by Triton's
    interpreter on CPU tensors under TRITON_INTERPRET=1. The shape is no multiple of any block size, so every mask
    matters."""
    triton_fn = make_triton_bias_gelu()
    if triton_fn is None:
        print("Triton is not installed here (it comes with torch's CUDA wheels on Linux): its column is skipped")
        return {"triton_checked": 0}
    if device.type != "cuda" and not triton_fn.interpreted:
        print("Triton compiles its kernels for a GPU, and there is none here. To run them on the CPU in Triton's "
              "interpreter (slow, for testing) and check them against eager:\n"
              "    TRITON_INTERPRET=1 python 09-custom-models/07_cuda_integration.py")
        return {"triton_checked": 0}
    where = torch.device("cpu") if triton_fn.interpreted else device
    x, bias = random_inputs(130, 300, where, grad=True)  # 3 ragged row tiles of 64 and 3 column tiles of 128
    g = torch.randn(130, 300, device=where)
    y, y_ref = triton_fn.apply(x, bias), eager_chain(x, bias)
    (gx, gb), (gx_ref, gb_ref) = torch.autograd.grad(y, (x, bias), g), torch.autograd.grad(y_ref, (x, bias), g)
    out = {"triton_checked": 1, "triton_interpreted": int(triton_fn.interpreted),
           "triton_fwd_max_abs_diff": max_diff(y, y_ref), "triton_grad_x_max_abs_diff": max_diff(gx, gx_ref),
           "triton_grad_bias_max_abs_diff": max_diff(gb, gb_ref)}
    how = "run by Triton's interpreter on CPU tensors (TRITON_INTERPRET=1)" if triton_fn.interpreted else \
        "compiled by Triton for this GPU"
    print(f"Triton kernels, {how}, against the eager chain at 130 x 300: output "
          f"{out['triton_fwd_max_abs_diff']:.1e}, grad x {out['triton_grad_x_max_abs_diff']:.1e}, grad bias "
          f"{out['triton_grad_bias_max_abs_diff']:.1e} (max abs differences)")
    return out


# ---- 6. Speed -----------------------------------------------------------------------------------------------------
def median_seconds(fn, smoke: bool) -> float:
    """Median time of fn() with torch.utils.benchmark (it synchronises CUDA around each block), after warm-up."""
    import torch.utils.benchmark as benchmark

    for _ in range(3):
        fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=0.05 if smoke else 0.5).median


def benchmark_ops(device: torch.device, rows: int, cols: int, built: dict, smoke: bool) -> dict:
    n = rows * cols
    x, bias = random_inputs(rows, cols, device, grad=True)
    g = torch.randn(rows, cols, device=device)
    ours = device.type == "cpu" and built["cpu"] or device.type == "cuda" and built["cuda"]

    def fwd_bwd(fn):
        return lambda: torch.autograd.grad(fn(x, bias), (x, bias), g)  # no .grad accumulation in the timing

    columns = {"eager chain": eager_chain}
    if ours:
        columns["our op"] = torch.ops.course.bias_gelu
    if device.type == "cuda":
        columns["torch.compile chain"] = torch.compile(eager_chain)
        if (triton_fn := make_triton_bias_gelu()) is not None and not triton_fn.interpreted:
            columns["Triton"] = triton_fn.apply  # (interpreted kernels run on the CPU: nothing to time)
    print(f"x: {rows} x {cols} float32 ({n * 4 / 2**20:.0f} MiB) on {device}; median times")
    times = {}
    out = {}
    if ours:  # the benchmark's own size, forward and backward, against the eager chain
        y_ref, y = eager_chain(x, bias), torch.ops.course.bias_gelu(x, bias)
        gx_ref, gx = torch.autograd.grad(y_ref, x, g)[0], torch.autograd.grad(y, x, g)[0]
        out.update(bench_fwd_max_abs_diff=max_diff(y, y_ref), bench_grad_x_max_abs_diff=max_diff(gx, gx_ref))
        del y, y_ref, gx, gx_ref  # 4 tensors of x's size: free them before the timings
    for name, fn in columns.items():
        with torch.no_grad():
            fwd = median_seconds(lambda fn=fn: fn(x, bias), smoke)
        both = median_seconds(fwd_bwd(fn), smoke)
        times[name] = (fwd, both)
    eager_fwd, eager_both = times["eager chain"]
    print(f"  {'':<20} {'forward':>10} {'fwd+bwd':>10} {'fwd+bwd vs eager':>17}")
    for name, (fwd, both) in times.items():
        print(f"  {name:<20} {fwd * 1e3:>8.3f}ms {both * 1e3:>8.3f}ms {eager_both / both:>16.2f}x")
    out.update(eager_fwd_ms=eager_fwd * 1e3, eager_fwd_bwd_ms=eager_both * 1e3)
    keys = {"our op": "op", "torch.compile chain": "compiled", "Triton": "triton"}
    for name, key in keys.items():
        if name in times:
            out[f"{key}_fwd_ms"] = times[name][0] * 1e3
            out[f"{key}_fwd_bwd_ms"] = times[name][1] * 1e3
            out[f"{key}_fwd_bwd_vs_eager_speedup"] = eager_both / times[name][1]
    if ours:
        out["op_fwd_vs_eager_speedup"] = eager_fwd / times["our op"][0]
    if device.type == "cuda" and ours:
        # Achieved bandwidth: the forward reads x and writes y (bias is 1/rows of that). The reference is torch's
        # own elementwise kernel moving the same bytes (x * 1.0: read x, write a new tensor), timed in this run.
        with torch.no_grad():
            ref = median_seconds(lambda: x * 1.0, smoke)
        op_gbps, ref_gbps = 2 * n * 4 / times["our op"][0] / 1e9, 2 * n * 4 / ref / 1e9
        out.update(op_fwd_gbps=op_gbps, torch_elementwise_gbps=ref_gbps, op_vs_elementwise_speedup=op_gbps / ref_gbps)
        print(f"  forward bandwidth: our kernel {op_gbps:.0f} GB/s, torch's x * 1.0 {ref_gbps:.0f} GB/s: "
              f"{op_gbps / ref_gbps:.2f} of torch's elementwise bandwidth (goal >= 0.95 at 2^26 elements)")
    if ours:
        print(f"  (at this size our op's output differs from the eager chain's by {out['bench_fwd_max_abs_diff']:.1e}, "
              f"its grad x by {out['bench_grad_x_max_abs_diff']:.1e})")
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seed_everything(args.seed)
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    rows = args.rows or (64 if args.smoke else 16384 if gpu else 2048)
    cols = args.cols or (256 if args.smoke else 4096 if gpu else 1024)

    section("1. Why fuse: bytes moved per element (float32)")
    # Eager: forward add (read x, write u) + gelu (read u, write y); backward gelu' (read grad, u; write grad_u)
    # + the bias sum (read grad_u). Fused: forward (read x, write y); backward (read grad, x; write grad_x, with
    # the bias sum done on the way).
    eager_passes, fused_passes = 4 + 4, 2 + 3
    print(f"eager chain: {eager_passes} full-tensor reads/writes forward+backward; fused op: {fused_passes}. "
          f"Memory-bound, so the ideal speedup is {eager_passes / fused_passes:.2f}x.")

    section("2. Finding the toolchain")
    plan = report_toolchain(device, args.cuda_build)

    section("3. Building: load_inline, TORCH_LIBRARY, TORCH_LIBRARY_IMPL")
    built = build_ops(plan, args.build_dir, args.verbose_build)
    # Where the op runs: this device if its kernel was built, else the CPU if the C++ op was, else nowhere
    op_device = device if (gpu and built["cuda"]) or (device.type == "cpu" and built["cpu"]) else \
        torch.device("cpu") if built["cpu"] else None
    if built["cpu"]:
        op = torch.ops.course.bias_gelu
        print(f"torch.ops.course.bias_gelu: schema {op.default._schema}")
        keys = [k for k in ("CPU", "CUDA", "Meta", "Autograd") if op_registered("bias_gelu", k)]
        print(f"  kernels registered for: {', '.join(keys)} (Meta from register_fake, Autograd from register_autograd)")
    metrics = {"cpp_op_built": int(built["cpu"]), "cuda_op_built": int(built["cuda"]),
               "cuda_home_guess_ok": plan["cuda_home_guess_ok"], "build_s": built["build_s"],
               "cuda_build_s": built["cuda_build_s"]}

    section(f"4. Correctness on {op_device or 'the reference only'}")
    if op_device is not None:
        metrics.update(check_correctness(op_device, args.smoke))
        print("Bad inputs:")
        metrics.update(check_bad_inputs(op_device))
        backend = args.compile_backend if args.compile_backend != "auto" else "inductor" if gpu else "aot_eager"
        metrics.update(check_compiled(op_device, backend))
    else:
        x, bias = random_inputs(37, 64, "cpu")
        u = x + bias  # the reference written out: what the kernels compute, in PyTorch ops
        by_hand = 0.5 * u * (1 + torch.tanh(GELU_K * (u + 0.044715 * u**3)))
        metrics["reference_max_abs_diff"] = max_diff(by_hand, eager_chain(x, bias))
        print(f"the GELU formula the kernels implement, in PyTorch ops, against F.gelu: "
              f"{metrics['reference_max_abs_diff']:.1e} max abs difference")

    section("5. Triton: the same fused kernel, written in Python")
    metrics.update(check_triton(device))

    section(f"6. Speed on {device}")
    if device.type == "mps":
        print("no custom kernel for MPS here (an Objective-C++/Metal kernel would register under the MPS key); "
              "timing the eager chain only")
    metrics.update(benchmark_ops(device, rows, cols, built, args.smoke))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    record = {"metrics": metrics, "torch_version": torch.__version__, "device": str(device), "seed": args.seed,
              "smoke": args.smoke, "wall_time_s": round(time.perf_counter() - start, 3)}
    tmp = args.out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, args.out_dir / "metrics.json")
    print(f"\nmetrics written to {args.out_dir / 'metrics.json'}")

    section("What to notice")
    print("- One TORCH_LIBRARY schema, one kernel per device key: torch.ops.course.bias_gelu picks CPU or CUDA from "
          "its inputs, like any aten op; autograd and torch.compile come from two Python registrations.")
    print("- The build is cached by a hash of the sources and flags: change a line of C++ and the next run "
          "recompiles; change nothing and it loads in well under a second.")
    print("- CUDA_HOME decides which headers and nvcc torch uses, and torch guesses it from PATH once, at import: "
          "set it (and TORCH_CUDA_ARCH_LIST) before torch.utils.cpp_extension is imported.")
    if "op_fwd_bwd_vs_eager_speedup" in metrics:
        ratio = f"- Fused forward+backward ran {metrics['op_fwd_bwd_vs_eager_speedup']:.2f}x the eager chain's speed"
        if rows * cols < SMALL_ELEMENTS:
            print(f"{ratio} here, but at {rows * cols} elements ({rows * cols * 4} bytes) each call is mostly the "
                  "fixed cost of dispatching ops, not bytes moved: time at least 2^18 elements to see what fusion "
                  "saves.")
        else:
            print(f"{ratio} here (the ideal from bytes moved: {eager_passes / fused_passes:.2f}x)"
                  + ("; a scalar C++ loop competes with ATen's SIMD kernels on a CPU, so fusion alone may not win."
                     if device.type == "cpu" else "."))
    return metrics


if __name__ == "__main__":
    main()
