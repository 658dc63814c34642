"""Data-dependent, non-differentiable computations (solvers, samplers, checks) as one opaque op.

``torch.jit.trace`` freezes Python branches taken on tensor values (an early stop, a fallback,
an error check) at the values seen while tracing. Inside a custom autograd Function the trace
records a single call instead, and the Python code runs afresh on every call. Pyro's
``JitTrace_ELBO`` and ``torch.compile`` (which runs such a Function's body eagerly where it
cannot capture it) then give the same results as eager mode.
"""

import contextlib
import warnings

import torch

__all__ = []

#: the modules whose trace-time TracerWarnings :func:`quiet_trace_time_checks` silences
_LIBRARY_MODULES = r"(pyro_sst|sst_common)(\.|$)"


def quiet_trace_time_checks():
    """While ``torch.jit.trace`` records, keep this library's own code from raising ``TracerWarning``s.

    Its argument checks and shape arithmetic run once, at trace time, by design: they read only
    shapes and the values being traced, and every data-dependent step runs inside a custom
    autograd Function that the trace re-runs. torch silences its own library code the same way
    (``TracerWarning.ignore_lib_warnings``); warnings from the user's code are untouched. Called at
    every entry point (argument checks come first), so the filter is in place whenever a trace is
    recorded, also where an earlier ``warnings.catch_warnings`` block has dropped it.
    """
    if torch._C._get_tracing_state() is not None:
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=_LIBRARY_MODULES)


@contextlib.contextmanager
def untraced():
    """Suspend ``torch.jit.trace`` recording for autograd work inside a custom Function's body.

    The trace records the Function as one call (and re-runs its Python body), but it also
    records the body into a subgraph, where leaf copies that require grad and inner
    ``autograd.grad`` calls are rejected. Tensors leaving this block must not require grad.
    """
    state = torch._C._get_tracing_state()
    if state is None:
        yield
        return
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


class _Opaque(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, *tensors):
        out = fn(*tensors)
        ctx.mark_non_differentiable(*(out if isinstance(out, tuple) else (out,)))
        return out

    @staticmethod
    def backward(ctx, *grads):
        return (None,) * len(ctx.needs_input_grad)


def opaque_call(fn, *tensors):
    """``fn(*tensors)`` without gradient, traced as one call.

    ``fn`` must receive every tensor it reads as an argument: a tensor captured in a
    closure would be frozen into a trace as a constant.
    """
    return _Opaque.apply(fn, *tensors)
