"""A CPU stand-in for one CUDA device, to find device bugs in `--device cuda` code paths on a machine with no GPU.

Most lessons have a CUDA path that CI never runs. The bugs such paths hide are rarely numerical: a tensor made on the
CPU meeting one on the GPU, `.numpy()` on a GPU tensor, a CPU generator given to a GPU op, `torch.load` without
`map_location`. This module finds those on a CPU:
  - a tensor "on cuda:0" is a wrapper subclass (FakeCuda) holding a CPU tensor; C++ sees a CPU tensor, Python code
    sees `device == cuda:0` and `is_cuda`, as torch's own FakeTensor does;
  - a TorchDispatchMode runs every op on the CPU copies and applies CUDA's device rules: no op mixes cuda:0 with a
    CPU tensor that is not 0-dim (index ops and packed-sequence lengths excepted, as on CUDA), `.numpy()` is refused,
    and a TorchFunctionMode refuses a generator of the wrong device and emulates autocast("cuda") (C++ autocast never
    sees these tensors);
  - torch.cuda / torch.accelerator queries describe one H100-like device; torch.compile is a no-op (inductor would
    emit Triton for a GPU that is not there).
`install("mps")` plays an Apple-silicon Mac instead, the device `--device auto` picks there: tensors on mps:0, the
same placement rules, plus MPS's own: no float64 (made there or moved there: the TypeError MPS raises), `.cuda()`
fails, DataLoader workers start with spawn (macOS's default), torch.backends.mps / torch.mps say available.
It checks placement, not speed or numerics. Known limits (these fail here and not on a GPU): jit.trace, functorch
transforms (vmap/jvp) over the wrapper, torchvision tv_tensors, and Triton / CUDA extensions. Not emulated (a test
that reads them fails here): inference_mode runs as no_grad, so nothing is an inference tensor, and the caching
allocator's statistics read 0. An error raised inside an op carries a note naming the op and its inputs' shapes.

Use: tests/tools/fake_cuda_smoke.py runs every lesson and project with `--smoke --device cuda` under it;
tests/tools/fake_cuda_pytest.py runs the test suite with `--device cuda` under it (both take `--kind mps`).
This is a development tool, not part of the course: nothing a learner runs imports it.
"""

import contextlib
import functools
import platform
import threading
import time

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
aten = torch.ops.aten
STATE = threading.local()  # stack: (call has a FakeCuda argument, call asked for device="cpu"); force_cpu
MPS_FLOAT64 = ("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64. Please use "
               "float32 instead.")


def numpy_error() -> str:
    return (f"can't convert {CUDA} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory "
            "first.")


class FakeCuda(torch.Tensor):
    """A tensor Python code sees on cuda:0, backed by a CPU tensor (`elem`)."""

    @staticmethod
    def __new__(cls, elem):
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(), dtype=elem.dtype,
            device=CPU, requires_grad=elem.requires_grad, layout=elem.layout)
        r.elem = elem
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return DISPATCH.__torch_dispatch__(func, types, args, kwargs)

    @property
    def device(self):
        return CUDA

    @property
    def is_cuda(self):
        return CUDA.type == "cuda"

    @property
    def is_mps(self):
        return CUDA.type == "mps"

    @property
    def is_cpu(self):
        return False

    def get_device(self):
        return 0

    def __repr__(self, *, tensor_contents=None):
        return torch._tensor_str._tensor_str(self.elem, 0).join(["tensor(", f", device='{CUDA}')"])

    def __format__(self, spec):
        return self.elem.item().__format__(spec) if self.dim() == 0 else repr(self).__format__(spec)

    def tolist(self):
        return self.elem.tolist()

    def untyped_storage(self):
        return self.elem.untyped_storage()

    def data_ptr(self):
        return self.elem.data_ptr()

    def numpy(self, *args, **kwargs):
        raise TypeError(numpy_error())

    def __array__(self, *args, **kwargs):
        raise TypeError(numpy_error())

    def pin_memory(self, *args, **kwargs):
        raise RuntimeError(f"cannot pin '{CUDA.type}' tensors: only dense CPU tensors can be pinned")

    def is_pinned(self, *args, **kwargs):
        return False

    def __reduce_ex__(self, proto):  # torch.save writes a CPU tensor; torch.load's map_location is patched below
        return self.elem.detach().clone().__reduce_ex__(proto)

    def __deepcopy__(self, memo):
        out = FakeCuda(self.elem.detach().clone()).requires_grad_(self.requires_grad)
        if getattr(self, "_is_param", False):
            out = torch.nn.Parameter(out, requires_grad=self.requires_grad)
        memo[id(self)] = out
        return out

    def __tensor_flatten__(self):  # a traceable wrapper subclass: Module.to swaps parameters for it
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return FakeCuda(inner["elem"])


def device_type(d) -> str | None:
    """'cuda', 'cpu', 'mps', 'meta', ... for a device argument (an int is a CUDA index); None for None."""
    return None if d is None else "cuda" if isinstance(d, int) else torch.device(d).type


def is_cuda_device(d) -> bool:
    """Whether d names the faked device (CUDA, or MPS under install("mps"))."""
    return device_type(d) == CUDA.type


def has_fake(obj) -> bool:
    return any(isinstance(t, FakeCuda) for t in tree_flatten(obj)[0])


def unwrap(t):
    return t.elem if isinstance(t, FakeCuda) else t


# Ops whose CUDA kernels accept CPU tensors beside CUDA ones: indices, copies between devices, packed-sequence
# lengths and batch sizes (which PyTorch keeps on the CPU).
MIXED_OK = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default,
            aten.copy_.default, aten._to_copy.default, aten.set_.source_Tensor, aten.lift_fresh.default,
            aten._local_scalar_dense.default, aten.detach.default, aten.alias.default,
            aten._pack_padded_sequence.default, aten._pad_packed_sequence.default, aten.lstm.data, aten.gru.data,
            aten.rnn_tanh.data, aten.rnn_relu.data}
KEEP_CPU_SECOND = {aten._pack_padded_sequence.default, aten._pad_packed_sequence.default}  # (data, lengths on CPU)


class FakeCudaDispatch(TorchDispatchMode):
    """Runs each op on the CPU copies; refuses what CUDA refuses; wraps results that CUDA would leave on cuda:0."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        fake = any(isinstance(t, FakeCuda) for t in tensors)
        if func is aten.is_pinned.default:
            return False
        if func is aten._pin_memory.default:
            return args[0]
        if fake and func not in MIXED_OK and any(
                not isinstance(t, FakeCuda) and t.dim() > 0 and t.device.type == "cpu" for t in tensors):
            raise RuntimeError(f"[fakecuda] {func.name()}: Expected all tensors to be on the same device, but found "
                               f"at least two devices, {CUDA} and cpu!")
        top = STATE.stack[-1] if getattr(STATE, "stack", None) else None
        inherit = fake or (top is not None and top[0])
        device = kwargs.get("device")
        if device_type(device) not in (None, "cpu", CUDA.type):
            on_cuda = False  # meta (shapes only) or another device: left as asked
        elif device is not None:
            kwargs["device"] = CPU
            # C++ composites make new tensors with their inputs' options, whose device C++ believes is the CPU:
            # device="cpu" counts only when Python code asked for it
            explicit_cpu = getattr(STATE, "force_cpu", False) or (top is not None and top[1])
            on_cuda = is_cuda_device(device) or (inherit and not explicit_cpu)
        else:
            on_cuda = inherit
        try:
            out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        except Exception as e:
            e.add_note(f"[fakecuda] in {func.name()}, shapes {[tuple(t.shape) for t in tensors]}")
            raise
        if isinstance(args[0] if args else None, FakeCuda) and out is args[0].elem:
            if torch.Tag.inplace_view in func.tags:  # transpose_ etc. changed elem's shape: the wrapper's must follow
                with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python)):
                    aten.as_strided_.default(args[0], out.shape, out.stride(), out.storage_offset())
            return args[0]  # an in-place op returns its (wrapped) self
        if not on_cuda:
            return out
        if CUDA.type == "mps" and any(isinstance(t, torch.Tensor) and t.dtype in (torch.float64, torch.complex128)
                                      for t in tree_flatten(out)[0]):
            raise TypeError(MPS_FLOAT64)  # MPS has no float64: making one there, or moving one there, fails
        if func in KEEP_CPU_SECOND:
            return (FakeCuda(out[0]),) + tuple(out[1:])
        return tree_map(lambda t: FakeCuda(t) if isinstance(t, torch.Tensor) and not isinstance(t, FakeCuda) else t,
                        out)


DISPATCH = FakeCudaDispatch()

# autocast("cuda") emulation, at the Python API level so that autograd records the casts, as real autocast does
LOWER_PRECISION = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                   F.conv_transpose3d, F.scaled_dot_product_attention, F.prelu, torch.matmul, torch.mm, torch.bmm,
                   torch.addmm, torch.baddbmm, torch.mv, torch.einsum, torch.conv1d, torch.conv2d, torch.convolution,
                   torch.Tensor.__matmul__, torch.Tensor.matmul, torch.Tensor.mm, torch.Tensor.bmm, torch.lstm,
                   torch.gru, torch.rnn_tanh, torch.rnn_relu, torch.lstm_cell, torch.gru_cell, torch.rnn_tanh_cell,
                   torch.rnn_relu_cell}
FLOAT32 = {F.softmax, F.log_softmax, F.cross_entropy, F.nll_loss, F.layer_norm, F.group_norm, F.mse_loss, F.l1_loss,
           F.smooth_l1_loss, F.huber_loss, F.binary_cross_entropy_with_logits, F.kl_div, F.softplus, F.normalize,
           F.cosine_similarity, F.interpolate, torch.exp, torch.log, torch.log1p, torch.expm1, torch.pow, torch.rsqrt,
           torch.reciprocal, torch.cumsum, torch.cumprod, torch.prod, torch.sum, torch.logsumexp, torch.softmax,
           torch.log_softmax, torch.norm, torch.cdist, torch.Tensor.softmax, torch.Tensor.log_softmax,
           torch.Tensor.exp, torch.Tensor.log, torch.Tensor.sum, torch.Tensor.pow, torch.Tensor.__pow__,
           torch.Tensor.norm}


def check_generator(generator, on_cuda: bool) -> None:
    want = CUDA.type if on_cuda else "cpu"
    if generator.device.type != want:
        raise RuntimeError(f"Expected a '{want}' device type for generator but found '{generator.device.type}'")


class FakeCudaFunctions(TorchFunctionMode):
    """Sees each torch API call from Python: records whether it involves cuda:0 or asks for the CPU (for the
    dispatch mode above), checks generators (dispatch sees a plain copy of them), and emulates autocast("cuda")."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        explicit_cpu = device_type(device) == "cpu"
        explicit_cpu = explicit_cpu or func is torch._C._VariableFunctions._pad_packed_sequence  # lengths: CPU
        if not hasattr(STATE, "stack"):
            STATE.stack = []
        STATE.stack.append((has_fake((args, kwargs)), explicit_cpu))
        try:
            if isinstance(kwargs.get("generator"), torch._C.Generator):
                check_generator(kwargs["generator"], is_cuda_device(device) if device is not None else has_fake(args))
            if torch.is_autocast_enabled(CUDA.type) and (func in LOWER_PRECISION or func in FLOAT32) and \
                    has_fake((args, kwargs)):
                dtype = torch.get_autocast_dtype(CUDA.type) if func in LOWER_PRECISION else torch.float32

                def cast(t):
                    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
                        return t.to(dtype)
                    return t
                with torch.autocast(CUDA.type, enabled=False):
                    return func(*tree_map(cast, args), **tree_map(cast, kwargs))
            return func(*args, **kwargs)
        finally:
            STATE.stack.pop()


def explicit_cpu_copy(t):
    STATE.force_cpu = True
    try:
        return torch.ops.aten._to_copy(t, device=CPU)
    finally:
        STATE.force_cpu = False


class DeviceProperties:
    name = "NVIDIA H100 80GB HBM3 (fakecuda)"
    major, minor = 9, 0
    total_memory = 80 * 2**30
    multi_processor_count = 132
    L2_cache_size = 50 * 2**20
    warp_size = 32
    max_threads_per_multi_processor = 2048
    regs_per_multiprocessor = 65536
    is_integrated = False
    is_multi_gpu_board = False
    uuid = "fakecuda"


class Event:
    def __init__(self, enable_timing=False, **kwargs):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def query(self):
        return True

    def wait(self, stream=None):
        pass

    def elapsed_time(self, other):
        return (other.t - self.t) * 1e3


class Stream:
    cuda_stream = 0

    @property
    def device(self):
        return CUDA

    def __init__(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def wait_stream(self, other):
        pass

    def wait_event(self, event):
        pass

    def record_event(self, event=None):
        event = event or Event()
        event.record()
        return event

    def query(self):
        return True


class CudaGenerator(torch._C.Generator):
    """A CPU generator that says it is a CUDA one; ops run on the CPU copies and use it as it is."""

    @property
    def device(self):
        return CUDA

    def manual_seed(self, seed):
        torch._C.Generator.manual_seed(self, seed)
        return self


def to_device(d):
    """'cuda' and torch.device('cuda') without an index would make C++ ask the driver for the current device."""
    if isinstance(d, (str, torch.device)) and not isinstance(d, torch.dtype) and torch.device(d).type == CUDA.type:
        return CUDA
    return d


def patch_tensor_methods():
    real_to, real_cpu = torch.Tensor.to, torch.Tensor.cpu

    @functools.wraps(real_to)
    def to(self, *args, **kwargs):
        args = tuple(to_device(a) for a in args)
        if "device" in kwargs:
            kwargs["device"] = to_device(kwargs["device"])
        if isinstance(self, FakeCuda):  # C++ believes self is on the CPU already and would return it unchanged
            device = kwargs.get("device")
            dtype = kwargs.get("dtype")
            for a in args:
                if isinstance(a, torch.dtype):
                    dtype = dtype or a
                elif isinstance(a, torch.Tensor):
                    device, dtype = a.device, dtype or a.dtype
                elif isinstance(a, (str, torch.device)):
                    device = a
            if device is not None and torch.device(device).type == "cpu":
                out = explicit_cpu_copy(self)
                if dtype is not None:
                    out = out.to(dtype)
                if kwargs.get("memory_format") is not None:
                    out = out.contiguous(memory_format=kwargs["memory_format"])
                return out
        return real_to(self, *args, **kwargs)

    def cpu(self, *args, **kwargs):
        return explicit_cpu_copy(self) if isinstance(self, FakeCuda) else real_cpu(self, *args, **kwargs)

    def cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        return to(self, CUDA, non_blocking=non_blocking, memory_format=memory_format)

    def pin_memory(self, *args, **kwargs):
        return FakeCuda.pin_memory(self) if isinstance(self, FakeCuda) else self

    torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.pin_memory = to, cpu, pin_memory
    if CUDA.type == "cuda":  # on a Mac, .cuda() fails as it does there
        torch.Tensor.cuda = cuda

    def made_on_cpu_then_moved(real):
        @functools.wraps(real)
        def make(data, *args, **kwargs):
            if is_cuda_device(kwargs.get("device")):
                kwargs["device"] = CPU
                requires_grad = kwargs.pop("requires_grad", False)
                return to(real(unwrap(data), *args, **kwargs), CUDA).requires_grad_(requires_grad)
            return real(data, *args, **kwargs)
        return make

    torch.tensor = made_on_cpu_then_moved(torch.tensor)
    torch.as_tensor = made_on_cpu_then_moved(torch.as_tensor)


def patch_cuda_queries():
    c = torch.cuda
    answers = {
        "is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
        "is_initialized": lambda: True, "init": lambda: None, "_lazy_init": lambda: None,
        "get_device_name": lambda d=None: DeviceProperties.name, "get_device_capability": lambda d=None: (9, 0),
        "get_device_properties": lambda d=None: DeviceProperties(), "synchronize": lambda d=None: None,
        "empty_cache": lambda: None, "memory_allocated": lambda d=None: 0, "max_memory_allocated": lambda d=None: 0,
        "memory_reserved": lambda d=None: 0, "max_memory_reserved": lambda d=None: 0,
        "reset_peak_memory_stats": lambda d=None: None, "reset_max_memory_allocated": lambda d=None: None,
        "memory_stats": lambda d=None: {}, "mem_get_info": lambda d=None: (70 * 2**30, 80 * 2**30),
        "is_bf16_supported": lambda including_emulation=True: True, "manual_seed": lambda s: None,
        "manual_seed_all": lambda s: None, "set_device": lambda d: None, "get_arch_list": lambda: ["sm_90"],
        "get_rng_state": lambda d="cuda": torch.zeros(16, dtype=torch.uint8), "set_rng_state": lambda s, d=0: None,
        "get_rng_state_all": lambda: [torch.zeros(16, dtype=torch.uint8)], "set_rng_state_all": lambda s: None,
        "is_current_stream_capturing": lambda: False, "current_stream": lambda d=None: Stream(),
        "default_stream": lambda d=None: Stream(), "stream": lambda s=None: contextlib.nullcontext(),
        "Event": Event, "Stream": Stream,
    }
    if CUDA.type == "cuda":
        for name, value in answers.items():
            setattr(c, name, value)
        torch.cuda.graphs.is_current_stream_capturing = answers["is_current_stream_capturing"]
        torch.backends.cudnn.is_available = lambda: True
        torch.backends.cudnn.is_acceptable = lambda t: False  # no cuDNN weight flattening for CPU-backed tensors
    else:  # one Apple GPU: torch.cuda stays as it is (not available)
        torch.backends.mps.is_available = torch.backends.mps.is_built = torch.mps.is_available = lambda: True
        platform.processor = lambda: "arm"  # Lightning's MPSAccelerator also asks for Apple silicon
        for name, value in {"synchronize": lambda: None, "empty_cache": lambda: None, "device_count": lambda: 1,
                            "manual_seed": lambda s: None, "seed": lambda: None,
                            "current_allocated_memory": lambda: 0, "driver_allocated_memory": lambda: 0,
                            "recommended_max_memory": lambda: 16 * 2**30,
                            "get_rng_state": lambda device="mps": torch.zeros(16, dtype=torch.uint8),
                            "set_rng_state": lambda new_state, device="mps": None}.items():
            setattr(torch.mps, name, value)
    a = torch.accelerator
    for name, value in {"synchronize": lambda device=None: None, "current_device_index": lambda: 0,
                        "device_count": lambda: 1, "is_available": lambda: True,
                        "current_accelerator": lambda check_available=False: torch.device(CUDA.type),
                        "set_device_index": lambda d: None, "current_stream": lambda device=None: Stream()}.items():
        setattr(a, name, value)

    real_generator = torch.Generator

    class Generator(real_generator):
        def __new__(cls, device="cpu"):
            return CudaGenerator("cpu") if is_cuda_device(device) else real_generator(device)
    torch.Generator = Generator


def patch_the_rest():
    real_load = torch.load

    @functools.wraps(real_load)
    def load(f, map_location=None, *args, **kwargs):
        moved = isinstance(map_location, (str, torch.device)) and torch.device(map_location).type == CUDA.type
        obj = real_load(f, "cpu" if moved else map_location, *args, **kwargs)
        return tree_map(lambda t: t.to(CUDA) if isinstance(t, torch.Tensor) else t, obj) if moved else obj
    torch.load = load

    real_compatible = torch._has_compatible_shallow_copy_type

    def compatible(input, from_):  # FakeCuda <-> plain: Module._apply swaps the parameter instead of setting .data
        return isinstance(input, FakeCuda) == isinstance(from_, FakeCuda) and real_compatible(input, from_)
    torch._has_compatible_shallow_copy_type = compatible

    def no_compile(model=None, **kwargs):
        return (lambda m: m) if model is None else model
    torch.compile = no_compile
    torch.inference_mode = lambda mode=True: torch.no_grad() if mode else torch.enable_grad()  # wrapper limits


def install(kind: str = "cuda") -> None:
    """Make this process believe it has one CUDA device (or, with kind="mps", one Apple GPU). Irreversible: call
    once, first thing."""
    global CUDA
    if kind not in ("cuda", "mps"):
        raise ValueError(f"fakecuda fakes 'cuda' or 'mps', not {kind!r}")
    CUDA = torch.device(kind, 0)
    if kind == "mps":  # macOS starts DataLoader workers with spawn, not fork: what they get must pickle
        import multiprocessing

        multiprocessing.set_start_method("spawn", force=True)
    patch_tensor_methods()
    patch_cuda_queries()
    patch_the_rest()
    DISPATCH.__enter__()
    FakeCudaFunctions().__enter__()
