"""The package imports, reports its build, and honours FASTLM_ISA / FASTLM_NUM_THREADS."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import fastlm
import pytest
from conftest import COMPILED_ISAS, SUPPORTED_ISAS
from fastlm import _C, cli


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("FASTLM_ISA", None)
    e.pop("FASTLM_NUM_THREADS", None)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_version():
    assert isinstance(fastlm.__version__, str) and fastlm.__version__.count(".") == 2


def test_info_reports_build_cpu_isa_threads(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("fastlm", "build:", "features:", "kernels:", "threads:", fastlm.get_isa()):
        assert word in out
    assert cli.main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["version"] == fastlm.__version__
    assert d["isa"] in d["cpu"]["supported_isas"]
    assert d["threads"] == fastlm.get_num_threads()
    assert "scalar" in d["build"]["isas"]


def test_console_script():
    exe = os.path.join(os.path.dirname(sys.executable), "fastlm")
    if not os.path.exists(exe):
        pytest.skip("the fastlm console script is not installed next to this interpreter")
    r = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "kernels:" in r.stdout


def test_default_isa_is_the_best_supported():
    assert _C.best_isa() == SUPPORTED_ISAS[-1]
    r = run_python("import fastlm; print(fastlm.get_isa())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == SUPPORTED_ISAS[-1]


@pytest.mark.parametrize("name", ["scalar", "avx2"])
def test_fastlm_isa_env_forces_a_variant(name):
    if name not in SUPPORTED_ISAS:
        pytest.skip(f"this CPU cannot run {name}")
    r = run_python("import fastlm; print(fastlm.get_isa())", FASTLM_ISA=name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name


def test_fastlm_isa_env_impossible_choice_raises():
    r = run_python("import fastlm.kernels", FASTLM_ISA="sse9")
    assert r.returncode != 0
    assert "FASTLM_ISA" in r.stderr and "sse9" in r.stderr
    unsupported = [i for i in COMPILED_ISAS if i not in SUPPORTED_ISAS]
    if unsupported:
        r = run_python("import fastlm", FASTLM_ISA=unsupported[0])
        assert r.returncode != 0
        assert "does not support" in r.stderr


def test_set_isa_rejects_bad_names():
    with pytest.raises(ValueError, match="unknown ISA"):
        fastlm.set_isa("neon9")
    with pytest.raises(TypeError):
        fastlm.set_isa(3)
    for name in COMPILED_ISAS:
        if name not in SUPPORTED_ISAS:
            with pytest.raises(ValueError, match="does not support"):
                fastlm.set_isa(name)
    assert fastlm.get_isa() in SUPPORTED_ISAS


def test_num_threads_env_and_setter():
    r = run_python("import fastlm; print(fastlm.get_num_threads())", FASTLM_NUM_THREADS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    r = run_python("import fastlm", FASTLM_NUM_THREADS="lots")
    assert r.returncode != 0 and "FASTLM_NUM_THREADS" in r.stderr
    r = run_python("import fastlm; print(fastlm.get_num_threads())")
    assert int(r.stdout.strip()) == _C.cpu_info()["physical_cores"]

    before = fastlm.get_num_threads()
    try:
        fastlm.set_num_threads(3)
        assert fastlm.get_num_threads() == 3
    finally:
        fastlm.set_num_threads(before)
    with pytest.raises(ValueError):
        fastlm.set_num_threads(0)
    with pytest.raises(TypeError):
        fastlm.set_num_threads(1.5)
