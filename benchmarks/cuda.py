"""The CUDA kernels and the device decoder next to torch on the same GPU, in one run, interleaved
round by round; medians, and ratios fastlm / torch (above 1: fastlm is faster).

    python benchmarks/cuda.py [--rounds 5] [--model PATH.gguf] [--json out.json]
    python benchmarks/cuda.py --emulated     # the same calls, tiny sizes, under the host emulation
    compute-sanitizer --tool racecheck python benchmarks/cuda.py --check-only   # each kernel once, small

The rows are the bars of the CUDA issue:
- fp32 SGEMM 4096^3 against cuBLAS with TF32 off;
- bf16 tensor-core GEMM 4096^3 against cuBLAS (mma.sync and, on Hopper, wgmma rows);
- causal attention prefill (2048 tokens, 16 heads of 128) against torch SDPA's flash backend
  (blocks of 64 and of 128 queries);
- rms_norm (4096 x 4096) against torch;
- (no bar) one decode step's attention over 8192 cached keys, fp32, GQA, against torch SDPA, in
  GB/s of K and V read;
- int8 GEMM 4096^3 against torch._int_mm (mma.sync and wgmma rows);
- SmolLM2-135M greedy decode, fastlm device="cuda" against transformers on the same GPU (both
  fp32, then both bf16), with a row for fastlm's decode launched kernel by kernel (CUDA graphs
  off) beside it.
Kernel times are CUDA-event times of `--reps` calls after a warm-up; decode is wall clock per
generated token.

On a lent GPU machine (nothing can be fetched there), carry the default model's GGUF (94 MB, over
one call's 64 MiB: split it, carry a half per call while the machine is warm, and join them
there), build fastlm with `pip install --no-build-isolation .`, then pass --model. transformers
reads the GGUF through the `gguf` package where it is installed, else from a folder that
`fastlm.tools.convert` writes beside the GGUF (the same float32 weights).

--emulated checks the script's plumbing where no GPU is lent: fastlm's kernels run under the SIMT
emulation (fastlm._C.cuda_emulated) and torch on the CPU, at sizes that finish in seconds; its
"ratios" mean nothing, and the decode rows are left out (tests/test_cuda.py checks the emulated
decoder's tokens).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare_engines import FastLM  # noqa: E402


def event_timer(torch, reps: int):
    """Seconds per call of fn: CUDA events around `reps` calls."""
    def run(fn) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / reps
    return run


def wall_timer(reps: int):
    def run(fn) -> float:
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps
    return run


def wgmma_runs(be, xb, wb) -> bool:
    """Hopper's wgmma kernel is there (a build for sm_90a on an sm_90 GPU, or the emulation)."""
    try:
        be.gemm(xb[:8, :64].contiguous(), wb[:8, :64].contiguous(), kernel="wgmma")
        return True
    except ValueError as e:
        print(f"no wgmma row: {e}")
        return False


def kernel_cases(torch, be, dev: str, small: bool):
    """(name, work per call, fastlm call, torch call) for each kernel row; inputs shared."""
    F = torch.nn.functional
    n = 128 if small else 4096
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, n, device=dev, generator=g)
    w = torch.randn(n, n, device=dev, generator=g)
    y = torch.empty(n, n, device=dev)
    cases = [("sgemm fp32 (TF32 off)", 2 * n ** 3, lambda: be.matmul(x, w, out=y), lambda: torch.matmul(x, w.T, out=y))]
    xb, wb = x.bfloat16(), w.bfloat16()
    yb = torch.empty(n, n, device=dev, dtype=torch.bfloat16)
    has_wgmma = wgmma_runs(be, xb, wb)
    for kernel, label in (("mma", "mma.sync"), ("wgmma", "wgmma")):
        if kernel == "wgmma" and not has_wgmma:
            continue
        cases.append((f"gemm bf16 tensor cores ({label})", 2 * n ** 3,
                      lambda k=kernel: be.gemm(xb, wb, out_dtype="bfloat16", kernel=k, out=yb),
                      lambda: torch.matmul(xb, wb.T, out=yb)))
    T, H, D = (128, 2, 64) if small else (2048, 16, 128)
    q, k, v = (torch.randn(T, H, D, device=dev, generator=g).bfloat16() for _ in range(3))
    o = torch.empty_like(q)
    qt, kt, vt = (a.unsqueeze(0).transpose(1, 2) for a in (q, k, v))  # (1, H, T, D) views of the same memory

    def sdpa():
        if dev == "cuda":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
    for rows in (64, 128):  # queries per block: 16 a warp (Q in registers), 32 a warp (as FlashAttention-2)
        cases.append((f"attention prefill {T} causal (H={H}, D={D}, bf16, {rows} rows a block)",
                      2 * 2 * H * T * T * D // 2, lambda r=rows: be.flash_attention(q, k, v, True, block_rows=r, out=o),
                      sdpa))
    # one decode step's attention over a long fp32 cache (GQA): bound by reading K and V
    S, H, Hkv, D = (300, 4, 2, 64) if small else (8192, 32, 8, 128)
    qd = torch.randn(1, H, D, device=dev, generator=g)
    kd, vd = (torch.randn(S, Hkv, D, device=dev, generator=g) for _ in range(2))
    od = torch.empty_like(qd)
    qdt, kdt, vdt = qd.unsqueeze(0).transpose(1, 2), kd.unsqueeze(0).transpose(1, 2), vd.unsqueeze(0).transpose(1, 2)
    cases.append((f"decode attention fp32, 1 query over {S} keys (H={H}, Hkv={Hkv}, D={D})", 2 * S * Hkv * D * 4,
                  lambda: be.attention(qd, kd, vd, True, out=od),
                  lambda: F.scaled_dot_product_attention(qdt, kdt, vdt, enable_gqa=True)))
    rows = 256 if small else 4096
    xr, wr = torch.randn(rows, n, device=dev, generator=g), torch.randn(n, device=dev, generator=g)
    yr = torch.empty_like(xr)
    cases.append((f"rms_norm {rows}x{n} fp32", 2 * rows * n * 4, lambda: be.rms_norm(xr, wr, 1e-5, out=yr),
                  lambda: F.rms_norm(xr, (n,), wr, 1e-5)))
    xi = torch.randint(-128, 128, (n, n), device=dev, dtype=torch.int8, generator=g)
    wi = torch.randint(-128, 128, (n, n), device=dev, dtype=torch.int8, generator=g)
    wit = wi.T  # torch._int_mm takes B as (K, N); this view is W^T without a copy, as ours reads W
    yi = torch.empty(n, n, device=dev, dtype=torch.int32)
    int_mm = (lambda: torch._int_mm(xi, wit)) if dev == "cuda" else (lambda: xi.int() @ wit.int())
    for kernel, label in (("mma", "mma.sync"), ("wgmma", "wgmma")):
        if kernel == "wgmma" and not has_wgmma:
            continue
        cases.append((f"int8 gemm, int32 out ({label})", 2 * n ** 3,
                      lambda k=kernel: be.int8_matmul(xi, wi, kernel=k, out=yi), int_mm))
    return cases


def check(torch, be, dev):
    """The fastlm results agree with torch before anything is timed."""
    for name, _, ours, theirs in kernel_cases(torch, be, dev, small=True):
        a = ours()
        a = torch.from_dlpack(a) if not isinstance(a, torch.Tensor) else a
        b = theirs()
        if b.dim() == 4:  # SDPA's (1, H, T, D) -> (T, H, D)
            b = b[0].transpose(0, 1)
        tol = 2e-2 if "bf16" in name else 1e-3
        err = float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))
        assert err < tol, f"{name}: fastlm and torch differ by {err:.2e}"


class DecodeTransformers:
    def __init__(self, torch, path: Path, dtype: str, device: str):
        import transformers

        self.torch = torch
        self.name = f"transformers {device} {dtype}"
        td = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        try:
            import gguf  # noqa: F401  (transformers reads GGUF through it)

            model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=td)
        except ImportError:  # no gguf package (the GPU machines have none): the same weights as a HF folder
            from fastlm.tools.convert import convert_gguf

            folder = path.with_suffix(".hf")
            if not (folder / "config.json").exists():
                convert_gguf(path, folder, "float32")
            model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=td)
        self.model = model.to(device).eval()
        self.device = device

    def decode(self, n):
        torch = self.torch
        with torch.no_grad():
            out = self.model(torch.tensor([[1]], device=self.device), use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            if self.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(n):
                out = self.model(tok, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            int(tok)  # waits for the GPU
            return n / (time.perf_counter() - t)


class FastLMEager(FastLM):
    """The device decoder with its decode steps launched kernel by kernel (no CUDA graphs)."""

    def __init__(self, path, dtype, device):
        super().__init__(path, dtype, device)
        self.m.graphs = False
        self.name += " launch by launch"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=20, help="calls per kernel timing")
    p.add_argument("--decode", type=int, default=128, help="tokens per decode timing")
    p.add_argument("--model", default=None, help="SmolLM2 GGUF (default: the default model, fetched once)")
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--emulated", action="store_true", help="tiny sizes under the host SIMT emulation (plumbing only)")
    p.add_argument("--check-only", action="store_true",
                   help="run every kernel once at small sizes against torch and stop (for compute-sanitizer)")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import torch
    from fastlm import _C

    if args.emulated:
        be, dev, timer = _C.cuda_emulated, "cpu", wall_timer(1)
        args.rounds, args.skip_decode = 1, True  # the emulated decoder is checked in tests/test_cuda.py
    else:
        be = _C.cuda
        if not (be.built and be.available() and torch.cuda.is_available()):
            raise SystemExit("no CUDA device visible (fastlm.kernels.cuda.available() and torch.cuda.is_available() "
                             "must both hold); --emulated checks the script without one")
        dev, timer = "cuda", event_timer(torch, args.reps)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print(f"device: {be.device_name()}, CUDA {be.runtime_version()}, torch {torch.__version__}")
    check(torch, be, dev)
    if args.check_only:
        print("every kernel agrees with torch at small sizes")
        return
    cases = kernel_cases(torch, be, dev, small=args.emulated)
    for _, _, ours, theirs in cases:  # warm-up
        ours(), theirs()
    times = {name: {"fastlm": [], "torch": []} for name, *_ in cases}
    for _ in range(args.rounds):
        for name, _, ours, theirs in cases:
            times[name]["fastlm"].append(timer(ours))
            times[name]["torch"].append(timer(theirs))
    print(f"\n{args.rounds} interleaved rounds, medians")
    print("| kernel | fastlm | torch | fastlm / torch speed |")
    print("|---|---:|---:|---:|")
    results = {}
    for name, work, *_ in cases:
        a, b = statistics.median(times[name]["fastlm"]), statistics.median(times[name]["torch"])
        unit = "GB/s" if "norm" in name or "decode attention" in name else "TFLOP/s"
        scale = 1e9 if unit == "GB/s" else 1e12
        print(f"| {name} | {work / a / scale:.1f} {unit} | {work / b / scale:.1f} {unit} | {b / a:.2f}x |")
        results[name] = {"fastlm_s": times[name]["fastlm"], "torch_s": times[name]["torch"], "ratio": b / a}

    if not args.skip_decode:
        from fastlm.hub import DEFAULT_MODEL, resolve

        path = Path(args.model) if args.model else resolve(DEFAULT_MODEL)
        device = "cuda-emulated" if args.emulated else "cuda"
        engines = []
        for dtype in ("float32", "bfloat16"):
            engines += [FastLM(path, dtype, device), FastLMEager(path, dtype, device),
                        DecodeTransformers(torch, path, dtype, dev)]
        for e in engines:
            e.decode(2)
        tps = {e.name: [] for e in engines}
        for _ in range(args.rounds):
            for e in engines:
                tps[e.name].append(e.decode(args.decode))
        print(f"\nSmolLM2-135M greedy decode, {args.decode} tokens, {args.rounds} interleaved rounds, medians")
        print("| engine | tokens/s |")
        print("|---|---:|")
        for name, v in tps.items():
            print(f"| {name} | {statistics.median(v):.1f} |")
        for dtype in ("float32", "bfloat16"):
            ours = statistics.median(tps[f"fastlm {device} {dtype}"])
            theirs = statistics.median(tps[f"transformers {dev} {dtype}"])
            eager = statistics.median(tps[f"fastlm {device} {dtype} launch by launch"])
            print(f"decode {dtype}: fastlm / transformers = {ours / theirs:.2f}x "
                  f"(graphs / launch by launch = {ours / eager:.2f}x)")
            results[f"decode {dtype}"] = {"fastlm_tps": tps[f"fastlm {device} {dtype}"],
                                          "fastlm_eager_tps": tps[f"fastlm {device} {dtype} launch by launch"],
                                          "transformers_tps": tps[f"transformers {dev} {dtype}"],
                                          "ratio": ours / theirs}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
