"""The ``fastlm`` command line."""
from __future__ import annotations

import argparse
import json
import platform
import sys


def info_dict() -> dict:
    import fastlm
    from fastlm import _C

    build = _C.build_info()
    cpu = _C.cpu_info()
    return {
        "version": fastlm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "build": build,
        "cpu": cpu,
        "isa": _C.get_isa(),
        "threads": _C.get_num_threads(),
    }


def cmd_info(args: argparse.Namespace) -> int:
    d = info_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    b, c = d["build"], d["cpu"]
    print(f"fastlm {d['version']} (Python {d['python']}, {d['platform']})")
    print(f"build:    {b['build_type']}, {b['compiler']}, native tuning {b['native']}, "
          f"ISA variants {', '.join(b['isas'])}")
    print(f"cuda:     {b['cuda']}")
    print(f"cpu:      {c['brand'] or c['vendor']}, {c['physical_cores']} physical cores")
    print(f"features: {' '.join(c['features']) or '(none of interest)'}")
    print(f"kernels:  {d['isa']} (supported here: {', '.join(c['supported_isas'])}; FASTLM_ISA overrides)")
    print(f"threads:  {d['threads']} (FASTLM_NUM_THREADS overrides)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastlm", description="Fast LLM inference on CPUs.")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="version, build, CPU features, kernel ISA and threads")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"fastlm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
