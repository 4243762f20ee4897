"""The AVX-512 kernels on a CPU without AVX-512: tests/native/check_kernels.cpp is compiled with
SIMDe (a portable implementation of the intrinsics) standing in for the hardware and run against
the scalar references. It checks the AVX-512 code paths (widths, masks, shuffles, the pair order
of bf16 panels), not AVX-512 speed; where the CPU has AVX-512 the ordinary tests run them natively."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SUPPORTED_ISAS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["csrc/kernels/matmul.cpp", "csrc/kernels/attention.cpp", "csrc/kernels/norm.cpp",
           "csrc/kernels/qmatmul.cpp", "csrc/kernels/qmatmul_ggml.cpp", "csrc/kernels/elementwise.cpp", "csrc/kernels/table.cpp",
           "csrc/kernels/ref.cpp", "csrc/base/threadpool.cpp", "tests/native/check_kernels.cpp"]


@pytest.mark.slow
def test_avx512_kernels_under_emulation(tmp_path):
    if "avx512" in SUPPORTED_ISAS:
        pytest.skip("this CPU runs the AVX-512 kernels natively (see the other tests)")
    simde_py = pytest.importorskip("simde_py", reason="simde-py (in the test extra) provides the SIMDe headers")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    if not (ROOT / "csrc").is_dir():
        pytest.skip("the C++ sources are not next to the tests")
    exe = tmp_path / "check_avx512"
    cmd = [cxx, "-std=c++17", "-O1", "-ffp-contract=off", "-mavx2", "-mfma", "-mf16c", "-DFASTLM_ISA_AVX512=1",
           "-DFASTLM_ISA_NS=avx512", "-DFASTLM_EMULATE_ISA=1", f"-I{ROOT / 'csrc'}",
           f"-I{simde_py.get_include()}", *[str(ROOT / s) for s in SOURCES], "-lpthread", "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " 0 failed" in run.stdout
