from __future__ import annotations

import fastlm
import numpy as np
import pytest
from fastlm import _C

COMPILED_ISAS = _C.build_info()["isas"]
SUPPORTED_ISAS = _C.cpu_info()["supported_isas"]


def isa_params():
    """Every compiled ISA; the ones this CPU cannot run are skipped, saying so."""
    out = []
    for name in COMPILED_ISAS:
        marks = [] if name in SUPPORTED_ISAS else [pytest.mark.skip(reason=f"this CPU cannot run {name}")]
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture(params=isa_params())
def isa(request):
    """Runs the test with the kernels of one ISA, then restores the default."""
    before = fastlm.get_isa()
    fastlm.set_isa(request.param)
    yield request.param
    fastlm.set_isa(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def assert_close(got, want, rtol, what=""):
    """max |got - want| <= rtol * max |want| (a relative tolerance on the scale of the result)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got - want).max()) / scale
    assert err <= rtol, f"{what}: max error {err:.3g} of max |ref| {scale:.3g} exceeds {rtol:g}"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """tiny(kind) -> the folder of a tiny random Hugging Face model (tests/tiny_models.py), built once."""
    from tiny_models import build

    made = {}

    def get(kind):
        if kind not in made:
            made[kind] = build(kind, tmp_path_factory.mktemp(kind))
        return made[kind]
    return get
