"""Timing helpers shared by the benchmark modules: warm-up, then the median of repeats, in one process."""

import statistics
import time

import torch


def median_time(fn, repeats, warmup=1):
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def try_time(fn, repeats, warmup=1):
    """``(seconds, None)`` or ``(None, error message)`` when ``fn`` raises (a crash is a result, not an abort)."""
    try:
        return median_time(fn, repeats, warmup), None
    except Exception as e:  # noqa: BLE001 - the baseline's crash is reported, whatever it is
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"


def saved_tensor_bytes(fn):
    """Bytes of the tensors autograd saves while ``fn()`` builds its graph (the memory a backward keeps alive)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total, out


def row(case, ours, baseline, **extra):
    """One result row: ours and baseline seconds and their ratio, plus extra columns."""
    ratio = None if ours is None or baseline is None else ours / baseline
    return {"case": case, "ours_s": ours, "baseline_s": baseline, "ratio": ratio, **extra}
