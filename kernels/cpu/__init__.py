"""The fused CPU layer ops (fused.cpp), built from source once and loaded on demand.

`make install` builds them (`python -m kernels.cpu`, well under a minute with g++ and ninja);
the first `load()` in a process builds them too if that was skipped. A machine where the
build fails (no compiler) keeps the eager PyTorch path: `load()` returns None and says why
once, and `SPECDEC_FUSED=0` turns the fused path off on purpose.

Flags: -O3 and, on x86 CPUs whose flags list AVX2 and FMA, -mavx2 -mfma (every machine kind
here has them). Nothing newer is targeted by the compiler; the one AVX512-VNNI function (the
Q8_0 LM-head dot products, `q8_linear`) is compiled for that ISA alone and chosen at run time
by `__builtin_cpu_supports`, which checks that the OS enabled the AVX512 state (XCR0), not
only the CPUID bit -- so a flag the VM lists but does not enable cannot crash the program.
"""
from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "_build"
NAME = "specdec_cpu_fused"
_module = None
_error: str | None = None


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cflags() -> list[str]:
    # -fopenmp: at::parallel_for is an inline `#pragma omp parallel`; the extension then links
    # libgomp.so.1, which resolves to the copy torch already loaded (one thread pool)
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= _cpu_flags():
        flags += ["-mavx2", "-mfma"]
    return flags


def load(verbose: bool = False):
    """The compiled module, or None (eager fallback) when disabled or it cannot be built."""
    global _module, _error
    if _module is not None or _error is not None:
        return _module
    if os.environ.get("SPECDEC_FUSED", "1") == "0":
        _error = "disabled by SPECDEC_FUSED=0"
        return None
    try:
        from torch.utils.cpp_extension import load as build
        BUILD_DIR.mkdir(exist_ok=True)
        _module = build(name=NAME, sources=[str(HERE / "fused.cpp")], extra_cflags=cflags(),
                        extra_ldflags=["-fopenmp"],
                        build_directory=str(BUILD_DIR), verbose=verbose)
    except Exception as e:  # no compiler / ninja: keep the eager path, say so once
        _error = f"{type(e).__name__}: {e}"
        warnings.warn(f"specdec: fused CPU ops unavailable, using the eager path ({_error[:300]})")
    return _module


def unavailable_reason() -> str | None:
    return _error
