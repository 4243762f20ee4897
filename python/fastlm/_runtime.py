"""The native module's state: kernel ISA and threads, set from the environment at import.

FASTLM_ISA=scalar|avx2|avx512 forces a kernel variant (ValueError if this CPU or build lacks it);
FASTLM_NUM_THREADS=N sets the thread count (default: the physical cores this process may use).
"""
from __future__ import annotations

import os

from fastlm import _C


def get_isa() -> str:
    """The kernel ISA in use, e.g. ``'avx2'``."""
    return _C.get_isa()


def set_isa(name: str) -> None:
    """Use the kernels compiled for ``name`` (``'scalar'``, ``'avx2'``, ``'avx512'``).

    Raises ValueError when the name is unknown or this CPU cannot run it.

    >>> import fastlm
    >>> fastlm.set_isa("scalar"); fastlm.get_isa()
    'scalar'
    """
    if not isinstance(name, str):
        raise TypeError(f"ISA name must be a str, got {type(name).__name__}")
    _C.set_isa(name)


def get_num_threads() -> int:
    """Threads the kernels use, the calling thread included."""
    return _C.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (>= 1) from now on."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"threads must be an int, got {type(n).__name__}")
    _C.set_num_threads(n)


def _apply_environment() -> None:
    isa = os.environ.get("FASTLM_ISA")
    if isa:
        try:
            _C.set_isa(isa.strip().lower())
        except ValueError as e:
            raise ValueError(f"FASTLM_ISA={isa!r}: {e}") from None
    threads = os.environ.get("FASTLM_NUM_THREADS")
    if threads:
        if not threads.strip().isdigit() or int(threads) < 1:
            raise ValueError(f"FASTLM_NUM_THREADS must be a positive integer, got {threads!r}")


_apply_environment()
