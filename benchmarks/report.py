"""Renders a pytest-benchmark JSON as a Markdown table (fastlm vs torch per group, as ratios) and a
PNG plot of the ratios.

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


def rate(b: dict) -> str:
    work, unit = b["extra_info"].get("work"), b["extra_info"].get("unit")
    if not work:
        return ""
    return f"{work / b['stats']['median'] / 1e9:.1f} {unit}"


def table(groups: dict[str, dict[str, dict]]) -> tuple[str, list[tuple[str, float]]]:
    lines = ["| kernel | fastlm | median | rate | torch | median | rate | torch / fastlm |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    ratios = []
    for name, impls in groups.items():
        ours = [k for k in impls if k.startswith("fastlm")]
        theirs = [k for k in impls if k.startswith("torch")]
        if not ours or not theirs:
            continue
        best_ours = min(ours, key=lambda k: impls[k]["stats"]["median"])
        best_theirs = min(theirs, key=lambda k: impls[k]["stats"]["median"])
        a, b = impls[best_ours], impls[best_theirs]
        ratio = b["stats"]["median"] / a["stats"]["median"]
        ratios.append((name, ratio))
        lines.append(f"| {name} | {best_ours} | {a['stats']['median'] * 1e6:.1f} us | {rate(a)} | {best_theirs} | "
                     f"{b['stats']['median'] * 1e6:.1f} us | {rate(b)} | **{ratio:.2f}x** |")
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
