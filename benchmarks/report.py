"""Renders a pytest-benchmark JSON as a Markdown table (fastlm vs torch per group, as ratios of
medians timed interleaved in the same run) and a PNG plot of the ratios.

    python benchmarks/report.py bench.json [--png benchmarks/kernels.png]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict


def load(path: str) -> dict[str, dict[str, dict]]:
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        groups[b["group"]][b["extra_info"]["impl"]] = b
    return groups


def rate(b: dict, seconds: float) -> str:
    work, unit = b["extra_info"].get("work"), b["extra_info"].get("unit")
    if not work:
        return ""
    return f"{work / seconds / 1e9:.1f} {unit}"


def table(groups: dict[str, dict[str, dict]]) -> tuple[str, list[tuple[str, float]]]:
    """The best fastlm and best torch implementation of each group, timed interleaved (the
    `interleaved_s` medians one test of the group records), else pytest-benchmark's medians."""
    lines = ["| kernel | fastlm | median | rate | torch | median | rate | torch / fastlm |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    ratios = []
    for name, impls in groups.items():
        inter = next((b["extra_info"]["interleaved_s"] for b in impls.values() if "interleaved_s" in b["extra_info"]),
                     None)
        med = {k: (inter[k] if inter and k in inter else b["stats"]["median"]) for k, b in impls.items()}
        ours = [k for k in impls if k.startswith("fastlm")]
        theirs = [k for k in impls if k.startswith("torch")]
        if not ours or not theirs:
            continue
        a, b = min(ours, key=med.get), min(theirs, key=med.get)
        ratio = med[b] / med[a]
        ratios.append((name, ratio))
        lines.append(f"| {name} | {a} | {med[a] * 1e6:.1f} us | {rate(impls[a], med[a])} | {b} | "
                     f"{med[b] * 1e6:.1f} us | {rate(impls[b], med[b])} | **{ratio:.2f}x** |")
    return "\n".join(lines), ratios


def plot(ratios: list[tuple[str, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.32 * len(ratios) + 1.2))
    names = [n for n, _ in ratios][::-1]
    vals = [r for _, r in ratios][::-1]
    ax.barh(names, vals, color=["tab:green" if v >= 1 else "tab:red" for v in vals])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over torch (median time ratio, log scale)")
    ax.set_title("fastlm kernels vs torch, same machine, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("json")
    p.add_argument("--png", default=None)
    args = p.parse_args()
    text, ratios = table(load(args.json))
    print(text)
    if args.png:
        plot(ratios, args.png)


if __name__ == "__main__":
    main()
