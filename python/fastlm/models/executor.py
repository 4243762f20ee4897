"""The executor for a device: the CPU one (fastlm._C.Model), the CUDA decoder, or the CUDA
decoder's sources under the host SIMT emulation."""
from __future__ import annotations

from fastlm import _C
from fastlm.config import DEVICES


def executor_class(device: str):
    """The executor for a device: the CPU one, the CUDA decoder, or the CUDA decoder's sources run
    under the host SIMT emulation ("cuda-emulated": slow, for checking the device path without a
    GPU)."""
    if device == "cpu":
        return _C.Model
    if device in ("cuda", "cuda:0"):
        if not _C.cuda.built:
            raise ValueError("device='cuda': this fastlm was built without CUDA (no CUDA toolkit was found at install; "
                             "reinstall with nvcc on the PATH)")
        if not _C.cuda.available():
            raise ValueError(f"device='cuda': {_C.cuda.unavailable_reason()}")
        return _C.cuda.Model
    if device == "cuda-emulated":
        return _C.cuda_emulated.Model
    if device.startswith("cuda:"):
        raise ValueError(f"device {device!r}: fastlm runs on the first CUDA device only ('cuda' or 'cuda:0')")
    raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
