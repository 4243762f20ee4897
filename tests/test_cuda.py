"""The CUDA kernels (fastlm.kernels.cuda) against the CPU kernels, on device arrays. Without a
CUDA device every kernel test skips; the build and import checks run everywhere."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from fastlm import _C, cli
from fastlm import kernels as K

cuda = K.cuda
needs_gpu = pytest.mark.skipif(not cuda.available(), reason="no CUDA device visible")


def test_build_reports_cuda(capsys):
    status = _C.build_info()["cuda"]
    assert status.startswith("built for sm_80 sm_90") if cuda.built else "not built" in status or status == "off"
    assert isinstance(cuda.available(), bool) and cuda.device_count() >= 0
    assert cli.main(["info"]) == 0
    assert "cuda:" in capsys.readouterr().out


@pytest.mark.skipif(not cuda.built or cuda.available(), reason="checks the no-device path")
def test_no_device_raises_clearly():
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        cuda.DeviceArray.from_numpy(np.ones((2, 2), np.float32))


def up(a):
    return cuda.DeviceArray.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


@needs_gpu
@pytest.mark.parametrize("M,N,Kd", [(1, 1, 1), (7, 65, 129), (64, 64, 64), (130, 257, 1000), (512, 1536, 576)])
def test_matmul(rng, M, N, Kd):
    x, w, b = rng.standard_normal((M, Kd)), rng.standard_normal((N, Kd)), rng.standard_normal(N)
    got = cuda.matmul(up(x), up(w), up(b)).to_numpy()
    assert_close(got, x @ w.T + b, 1e-5, "cuda sgemm")


@needs_gpu
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (64, 576), (5, 4097)])
def test_norms_softmax_elementwise(rng, rows, cols):
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    u = rng.standard_normal((rows, cols)).astype(np.float32)
    w = rng.standard_normal(cols).astype(np.float32)
    b = rng.standard_normal(cols).astype(np.float32)
    assert_close(cuda.rms_norm(up(x), up(w), 1e-5).to_numpy(), K.rms_norm(x, w, 1e-5), 1e-5, "rms_norm")
    assert_close(cuda.layer_norm(up(x), up(w), up(b), 1e-5).to_numpy(), K.layer_norm(x, w, b, 1e-5), 1e-5, "layer_norm")
    assert_close(cuda.softmax(up(x)).to_numpy(), K.softmax(x), 1e-5, "softmax")
    assert_close(cuda.add(up(x), up(u)).to_numpy(), x + u, 1e-6, "add")
    assert_close(cuda.silu_mul(up(x), up(u)).to_numpy(), K.silu_mul(x, u), 1e-5, "silu_mul")
    assert_close(cuda.gelu_tanh(up(x)).to_numpy(), K.gelu_tanh(x), 1e-5, "gelu_tanh")


@needs_gpu
def test_torch_interop(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    x = torch.randn(33, 70, device="cuda")
    w = torch.randn(40, 70, device="cuda")
    y = torch.as_tensor(cuda.matmul(x, w), device="cuda")  # zero-copy through __cuda_array_interface__
    torch.testing.assert_close(y, x @ w.T, rtol=1e-4, atol=1e-4)
    out = torch.empty(33, 70, device="cuda")
    cuda.rms_norm(x, torch.ones(70, device="cuda"), 1e-6, out=out)
    torch.testing.assert_close(out, torch.nn.functional.rms_norm(x, (70,), eps=1e-6), rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="float32"):
        cuda.add(x.half(), x.half())
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        cuda.add(np.ones(3, np.float32), np.ones(3, np.float32))
