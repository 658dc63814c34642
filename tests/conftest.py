import ctypes
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# The suite compiles thousands of small JAX programs and runs each a few times, so compiling is most of its
# time, and no assertion depends on how the code generator optimised (the tolerances come from the dtype and the
# input). Measured on the second-order gradient check of the arborescence log-partition (15 programs, one core):
# about 16 s with XLA's defaults, 14 s at LLVM's optimisation level 0, 6.5 s with the loop fusions emitted by
# XLA's LLVM emitters instead of its MLIR fusion emitters, 5 s with each program's LLVM module compiled in one
# piece (XLA splits it for a thread pool that a one-core worker does not have); the whole suite, in two thirds of
# its time at level 0 alone. Programs that compute for seconds run slower at level 0 (backends.gradient(optimize)).
_xla_flags = [
    os.environ.get("XLA_FLAGS", ""),
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_parallel_codegen_split_count=1",
]
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per pytest-xdist worker (`make test` runs one worker per core): torch's and XLA's
    # thread pools would otherwise each take every core and the workers would fight over them.
    _xla_flags.append("--xla_cpu_multi_thread_eigen=false")
    # The same for the processes tests start (the docs build's notebook kernels, the scale-out and packaging
    # scripts): without this each took both cores again (the docs build ran twice as long).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
os.environ["XLA_FLAGS"] = " ".join(flag for flag in _xla_flags if flag)

import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test only (the other tests run in JAX's default float32)."""
    import jax

    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["pyro", "numpyro"])
def backend(request):
    """Each backend in turn (``tests/backends.py``), JAX with float64 enabled for the test, as torch has it."""
    from backends import BACKENDS

    chosen = BACKENDS[request.param]
    with chosen.precision("float64"):
        yield chosen


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache(tmp_path_factory):
    """A JAX compilation cache on disk for this run only: a program dropped with the caches of one test module
    (below) and compiled again by another is read back instead of recompiled. (Reading one back, XLA logs that
    the features "+prefer-no-gather/-scatter" are missing on the host: those are code-generation preferences,
    not instructions, and the cache never leaves the machine and run that wrote it.)"""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield


#: a worker that holds more than this after a test drops JAX's compiled programs before the next one
RESIDENT_LIMIT_BYTES = 2 * 1024**3


def _resident_bytes():
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        return 0


def _release_compiled_programs():
    """Drop JAX's compiled programs (each holds tens of megabytes; one module compiles hundreds of them) and
    hand freed heap memory back to the system (glibc keeps it otherwise, so a worker's resident memory only
    grows). A program needed again is read back from the run's compilation cache above."""
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc
            pass


@pytest.fixture(autouse=True, scope="module")
def _release_after_each_module():
    """A module's programs are rarely used by the next one."""
    yield
    _release_compiled_programs()


@pytest.fixture(autouse=True)
def _release_when_large():
    """Within a module, only when the worker has grown past :data:`RESIDENT_LIMIT_BYTES` (clearing after every
    test would recompile too often)."""
    yield
    if _resident_bytes() > RESIDENT_LIMIT_BYTES:
        _release_compiled_programs()


#: modules of end-to-end tests (the examples' smoke runs, the scale-out scripts, the wheel build, the docs site): 5 to
#: 40 seconds a test, each compiling programs no other module uses
LONG_MODULES = ("test_examples.py", "test_scale_out.py", "test_packaging.py", "test_docs.py")


def pytest_collection_modifyitems(items):
    """The long end-to-end modules first: pytest-xdist hands each worker a contiguous share of the list and lets
    an idle worker take tests from the end of another's, so long tests at the end would leave a core idle while
    the last one finishes. Whole modules move, so every module's tests stay together (sharing compiled
    programs)."""
    first = [item for item in items if item.path.name in LONG_MODULES]
    items[:] = first + [item for item in items if item.path.name not in LONG_MODULES]
