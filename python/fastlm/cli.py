"""The ``fastlm`` command line: generate, chat, serve, bench, quantize, perplexity, convert, info.

Parsing needs only the standard library and two small base modules, so ``fastlm --help`` and a bad
flag answer at once; each command imports the engine and tools it runs when it runs (the one
module besides ``fastlm/__init__.py`` allowed function-local project imports: tests/test_layers.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fastlm._version import __version__
from fastlm.config import DEVICES, DTYPES
from fastlm.hub import DEFAULT_MODEL

if TYPE_CHECKING:
    from fastlm.engine import Engine
    from fastlm.sampling import SamplingParams


PREFIX_MODES = ("exact", "all", "off")  # fastlm.slots.REUSE, spelled here: --help imports no numpy


def positive_int(text: str) -> int:
    """An argparse type: flags are checked before any model loads."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def info_dict() -> dict:
    from fastlm import _C, _runtime  # _runtime applies FASTLM_ISA / FASTLM_NUM_THREADS

    return {
        "version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "build": _C.build_info(),
        "cpu": _C.cpu_info(),
        "isa": _runtime.get_isa(),
        "threads": _runtime.get_num_threads(),
        "cuda_devices": [_C.cuda.device_name(i) for i in range(_C.cuda.device_count())],
    }


def model_tensors(model: str) -> dict:
    """A model file's tensors by type: {type: {"tensors": n, "bytes": b}}, and its architecture
    (GGUF: the file's ggml types; a folder: the safetensors dtypes)."""
    from fastlm import hub
    from fastlm.formats.gguf import GGUFFile

    path = hub.resolve(model)
    by_type: dict[str, dict] = {}
    if path.is_file():
        f = GGUFFile(path)
        arch = f.metadata.get("general.architecture")
        for name, t in f.tensors.items():
            e = by_type.setdefault(f.type_name(name), {"tensors": 0, "bytes": 0})
            e["tensors"] += 1
            e["bytes"] += t.nbytes
    else:
        from fastlm.formats import open_checkpoint, read_json

        arch = (read_json(path / "config.json").get("architectures") or [None])[0]
        store = open_checkpoint(path)
        for name in store.names():
            a = store.get(name)
            e = by_type.setdefault(str(a.dtype).upper(), {"tensors": 0, "bytes": 0})
            e["tensors"] += 1
            e["bytes"] += a.nbytes
    return {"path": str(path), "architecture": arch, "size": path.stat().st_size if path.is_file() else None,
            "types": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["bytes"]))}


def cmd_info(args: argparse.Namespace) -> int:
    if args.model:
        m = model_tensors(args.model)
        if args.json:
            print(json.dumps(m, indent=2))
            return 0
        total = sum(e["bytes"] for e in m["types"].values())
        print(f"{m['path']}: {m['architecture']}, {sum(e['tensors'] for e in m['types'].values())} tensors, "
              f"{total:,} bytes of tensor data" + (f" (file {m['size']:,} bytes)" if m["size"] else ""))
        print("| type | tensors | bytes | share |")
        print("|---|---:|---:|---:|")
        for t, e in m["types"].items():
            print(f"| {t} | {e['tensors']} | {e['bytes']:,} | {e['bytes'] / max(total, 1):.1%} |")
        return 0
    d = info_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    b, c = d["build"], d["cpu"]
    print(f"fastlm {d['version']} (Python {d['python']}, {d['platform']})")
    print(f"build:    {b['build_type']}, {b['compiler']}, native tuning {b['native']}, "
          f"ISA variants {', '.join(b['isas'])}")
    devices = ", ".join(d["cuda_devices"]) or "none visible"
    print(f"cuda:     {b['cuda']}; devices: {devices}; emulation: fastlm.kernels.cuda_emulated, "
          "device='cuda-emulated'")
    print(f"cpu:      {c['brand'] or c['vendor']}, {c['physical_cores']} physical cores")
    print(f"features: {' '.join(c['features']) or '(none of interest)'}")
    print(f"kernels:  {d['isa']} (supported here: {', '.join(c['supported_isas'])}; FASTLM_ISA overrides)")
    print(f"threads:  {d['threads']} (FASTLM_NUM_THREADS overrides)")
    return 0


def _load(args: argparse.Namespace, **kw) -> Engine:
    from fastlm.engine import Engine

    return Engine.from_pretrained(args.model, dtype=args.dtype, threads=args.threads,
                                  max_seq_len=getattr(args, "ctx", None), progress=sys.stderr.isatty(),
                                  device=args.device, prefix_cache=getattr(args, "prefix_cache", "exact"), **kw)


def _params(args: argparse.Namespace) -> SamplingParams:
    from fastlm.sampling import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed, stop=tuple(args.stop or ()), n=getattr(args, "n", 1),
                          ignore_eos=args.ignore_eos, structured=_structured(args))


def _text_or_file(value: str) -> str:
    """A flag's value as given, or the contents of the file it names."""
    try:
        named = Path(value).is_file()
    except OSError:  # too long to be a path name: the value is the text itself
        named = False
    return Path(value).read_text(encoding="utf-8") if named else value


def _structured(args: argparse.Namespace):
    """--json-schema / --json / --regex / --grammar / --choice as a StructuredOutput (or None)."""
    from fastlm.structured import StructuredOutput

    if getattr(args, "json_schema", None) is not None:
        return StructuredOutput(json=_text_or_file(args.json_schema))
    if getattr(args, "json", False):
        return StructuredOutput(json_object=True)
    if getattr(args, "regex", None) is not None:
        return StructuredOutput(regex=args.regex)
    if getattr(args, "grammar", None) is not None:
        return StructuredOutput(grammar=_text_or_file(args.grammar))
    if getattr(args, "choice", None):
        return StructuredOutput(choice=args.choice)
    return None


def _print_stream(stream) -> None:
    for chunk in stream:
        if chunk.text:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()


def _report(c) -> None:
    t, u = c.timings, c.usage
    print(f"[{u.prompt_tokens} prompt tokens ({u.cached_tokens} cached), {u.completion_tokens} generated "
          f"({', '.join(ch.finish_reason for ch in c.choices)}); first token after {t.time_to_first_token_s:.3f} s; "
          f"prefill {t.prefill_tokens_per_s:.1f} tok/s; decode {t.decode_tokens_per_s:.1f} tok/s]", file=sys.stderr)


def cmd_generate(args: argparse.Namespace) -> int:
    if not args.prompt:  # one rule in both modes, before loading: an empty prompt is refused
        raise ValueError("the prompt is empty")
    if args.n > 1 and args.temperature == 0:  # before loading: greedy samples are all the same text
        raise ValueError(f"-n {args.n} needs --temperature above 0: greedy decoding (the default) would print "
                         f"{args.n} identical samples")
    engine = _load(args)
    params = _params(args)
    chat = args.chat and engine.tokenizer is not None and bool(engine.tokenizer.config.get("chat_template"))
    messages = [{"role": "user", "content": args.prompt}]
    if params.n == 1:
        stream = engine.chat_stream(messages, params) if chat else engine.stream(args.prompt, params)
        _print_stream(stream)
        c = stream.completion
    else:
        c = engine.chat(messages, params) if chat else engine.generate(args.prompt, params)
        for ch in c.choices:
            print(f"--- sample {ch.index} ({ch.finish_reason}) ---\n{ch.text}")
    if args.verbose and c is not None:
        _report(c)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    engine = _load(args)
    if engine.tokenizer is None or not engine.tokenizer.config.get("chat_template"):
        raise ValueError(f"{engine.source} has no chat template")
    params = _params(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    tty = sys.stdin.isatty()
    if tty:
        print("fastlm chat: /reset starts over, /exit (or Ctrl-D) leaves", file=sys.stderr)
    while True:
        try:
            line = input("> " if tty else "")
        except EOFError:
            break
        cmd = line.strip()
        if not cmd:
            continue
        if cmd in ("/exit", "/quit"):
            break
        if cmd == "/reset":
            messages = list(system)
            print("[conversation reset]", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": line})
        stream = engine.chat_stream(messages, params)
        try:
            _print_stream(stream)
        except KeyboardInterrupt:  # stop this reply, keep the conversation
            stream.close()
            print("\n[interrupted]", file=sys.stderr)
        reply = stream.completion.text if stream.completion is not None else ""
        messages.append({"role": "assistant", "content": reply})
        if args.verbose and stream.completion is not None:
            _report(stream.completion)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from fastlm.server import create_app, is_loopback
    except ImportError as e:
        raise RuntimeError(str(e) if "server extra" in str(e) else
                           f'fastlm serve needs the server extra: pip install "fastlm[server]" ({e})') from None

    api_key = args.api_key or os.environ.get("FASTLM_API_KEY") or None
    if not is_loopback(args.host) and api_key is None:
        print(f"fastlm serve: warning: listening on {args.host} with no --api-key: anyone who can reach this "
              "port can use the model", file=sys.stderr)
    if args.replicas:
        return _serve_on_ray(args, api_key)
    name = args.served_model_name or (args.model if args.model == DEFAULT_MODEL else Path(args.model).name)
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def load() -> Engine:
        print(f"fastlm serve: loading {args.model} ...", file=sys.stderr, flush=True)
        engine = _load(args, max_slots=args.slots, max_queue=args.max_queue)
        print(f"fastlm serve: {name} ready ({engine.info.get('dtype')}, context {engine.context_length}, "
              f"{args.slots} slots) at http://{args.host}:{args.port}/v1 (chat page: /)", file=sys.stderr, flush=True)
        return engine

    def load_failed(e: BaseException) -> None:
        failed.append(e)
        server.should_exit = True

    app = create_app(load, model_name=name, api_key=api_key, on_load_error=load_failed)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           timeout_graceful_shutdown=5))
    server.run()
    if failed:
        raise failed[0]
    return 0


def _serve_on_ray(args: argparse.Namespace, api_key: str | None) -> int:
    """fastlm serve --replicas N: the app on Ray Serve, N replicas behind the prefix-hash router."""
    try:
        import ray
        from ray import serve

        from fastlm.server.ray_serve import application
    except ImportError as e:
        raise RuntimeError(f'fastlm serve --replicas runs on Ray Serve: pip install "ray[serve]" ({e})') from None
    cores = args.cores_per_replica or args.threads
    ray.init(address=args.ray_address, **({} if args.ray_address else {"include_dashboard": False}))
    serve.start(http_options={"host": args.host, "port": args.port})
    app = application(args.model, replicas=args.replicas, cores_per_replica=cores, model_name=args.served_model_name,
                      api_key=api_key, dtype=args.dtype, max_slots=args.slots, max_queue=args.max_queue,
                      max_seq_len=args.ctx, prefix_cache=args.prefix_cache)
    print(f"fastlm serve: {args.replicas} replicas on Ray Serve at http://{args.host}:{args.port}/v1", file=sys.stderr,
          flush=True)
    serve.run(app, route_prefix="/", blocking=True)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fastlm.tools.bench import bench

    engine = _load(args)
    rows = bench(engine, args.n_prompt, args.n_gen, args.repetitions, args.profile, progress=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| model | dtype | isa | threads | test | t/s | weights GB/s |")
    print("|---|---|---|---:|---|---:|---:|")
    for r in rows:
        gbs = f"{r['GB_per_s']:.1f}" if "GB_per_s" in r else ""
        print(f"| {r['model']} | {r['dtype']} | {r['isa']} | {r['threads']} | {r['test']} | "
              f"{r['tokens_per_s']:.1f} ± {r['std']:.1f} | {gbs} |")
    if args.profile:
        for r in rows:
            total = sum(r["profile_s"].values()) or 1.0
            parts = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in sorted(r["profile_s"].items(), key=lambda kv: -kv[1]) if v)
            print(f"{r['test']} time by op: {parts}")
    return 0


def _progress(what: str, unit: str = "layer"):
    from fastlm.progress import reporter

    return reporter(what, unit)


def cmd_quantize(args: argparse.Namespace) -> int:
    from fastlm.tools.quantize import write_quantized

    method = args.method or ("gptq" if args.dtype == "int4" else "rtn")
    keep = args.keep_8bit if args.keep_8bit is not None else ("down,v,o" if args.dtype == "int4" else "")
    out = write_quantized(args.src, args.out, dtype=args.dtype, group_size=args.group_size, method=method,
                          keep_8bit=keep, progress=_progress("quantizing", "tensor"),
                          calib_progress=_progress("calibrating (GPTQ)"))
    size = (out / "model.safetensors").stat().st_size
    kept = f", {keep} kept at int8" if keep and args.dtype == "int4" else ""
    ran = json.loads((out / "config.json").read_text())["quantization_config"]["method"]  # what ran
    note = f" (asked for {method}: no tensor was quantized from float weights)" if ran != method else ""
    print(f"wrote {out} ({args.dtype}, groups of {args.group_size}, {ran}{note}{kept}; {size / 1e6:.1f} MB)")
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    from fastlm.engine import Engine
    from fastlm.tools.perplexity import evaluate

    text = Path(args.file).read_text(encoding="utf-8")
    kw = dict(threads=args.threads, group_size=args.group_size, quant_method=args.method, keep_8bit=args.keep_8bit,
              device=args.device)
    engine = Engine.from_pretrained(args.model, dtype=args.dtype, max_seq_len=args.ctx, **kw)
    ids = engine.tokenize(text)
    if args.max_tokens:
        ids = ids[:args.max_tokens]
    ref = None
    if args.reference_dtype:
        ref = Engine.from_pretrained(args.reference_model or args.model, dtype=args.reference_dtype,
                                     max_seq_len=args.ctx, threads=args.threads)
    ctx = min(args.ctx or engine.context_length, engine.context_length)
    score = evaluate(engine, ids, ctx, reference=ref, path=args.path, progress=_progress("perplexity", "window"))
    d = {"model": engine.source, "dtype": engine.info["dtype"], "path": args.path, "ctx": ctx, **score.as_dict()}
    if ref is not None:
        d["reference_dtype"] = ref.info["dtype"]
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{d['model']} ({d['dtype']}, {args.path}): perplexity {score.perplexity:.4f} over {score.tokens} tokens "
          f"(windows of {ctx})")
    if ref is not None:
        print(f"reference ({d['reference_dtype']}): perplexity {score.ref_perplexity:.4f}; "
              f"ratio {d['perplexity_ratio']:.4f}; mean KL {score.kl:.5f}; top-1 agreement {100 * score.top1:.2f}%")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from fastlm.tools.convert import convert_gguf

    out = convert_gguf(args.src, args.out, dtype=args.dtype)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastlm", description="Fast LLM inference on CPUs.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(s):
        s.add_argument("-m", "--model", default=DEFAULT_MODEL,
                       help=f"a Hugging Face folder, a .gguf file or an alias (default: {DEFAULT_MODEL})")
        s.add_argument("--dtype", default="auto", choices=list(DTYPES), help="weight precision (default: auto)")
        s.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: physical cores)")
        s.add_argument("--device", default="cpu", choices=list(DEVICES),
                       help="cpu (default), cuda (the decoder on the GPU, float weights), or cuda-emulated (the CUDA "
                            "decoder under the host emulation: slow, for checking)")

    def sampling_args(s):
        s.add_argument("--max-tokens", type=positive_int, default=None, help="default: until EOS or the context")
        s.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
        s.add_argument("--top-p", type=float, default=1.0)
        s.add_argument("--top-k", type=int, default=0, help="0 is off")
        s.add_argument("--min-p", type=float, default=0.0)
        s.add_argument("--repetition-penalty", type=float, default=1.0)
        s.add_argument("--seed", type=int, default=None)
        s.add_argument("--stop", action="append", metavar="STRING", help="stop before this text (repeatable)")
        s.add_argument("--ignore-eos", action="store_true")
        s.add_argument("--ctx", type=positive_int, default=None, help="context length (default: the model's)")
        s.add_argument("-v", "--verbose", action="store_true", help="print token counts and timings to stderr")
        c = s.add_mutually_exclusive_group()  # structured output (needs fastlm[structured])
        c.add_argument("--json-schema", metavar="SCHEMA", help="output JSON valid under this schema (JSON text or a file)")
        c.add_argument("--json", action="store_true", help="output any JSON object")
        c.add_argument("--regex", metavar="RE", help="output text matching this regular expression")
        c.add_argument("--grammar", metavar="GRAMMAR", help="output text of this Lark or GBNF grammar (text or a file)")
        c.add_argument("--choice", action="append", metavar="TEXT", help="output one of these texts (repeatable)")

    g = sub.add_parser("generate", help="generate text from a prompt, streamed")
    model_args(g)
    g.add_argument("prompt")
    sampling_args(g)
    g.add_argument("-n", type=positive_int, default=1, help="samples to generate (decoded as one batch)")
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                   help="wrap the prompt in the model's chat template when it has one (default: on)")
    g.set_defaults(func=cmd_generate)

    ch = sub.add_parser("chat", help="a multi-turn chat in the terminal (/reset, /exit)")
    model_args(ch)
    ch.add_argument("-s", "--system", default=None, help="a system prompt")
    ch.add_argument("--prefix-cache", default="all", choices=PREFIX_MODES,
                    help="what a turn reuses of the cached conversation: every token (all, the default: a turn "
                         "computes only the new message), whole 256-token chunks (exact: the same bits as a "
                         "cold run), nothing (off)")
    sampling_args(ch)
    ch.set_defaults(func=cmd_chat)

    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (needs the server extra)")
    model_args(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' on /v1 routes (default: $FASTLM_API_KEY, else none)")
    sv.add_argument("--slots", type=positive_int, default=16, help="sequences decoded at once (default: 16)")
    sv.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond the slots; more get 429")
    sv.add_argument("--ctx", type=positive_int, default=None, help="context length (default: the model's)")
    sv.add_argument("--prefix-cache", default="exact", choices=PREFIX_MODES,
                    help="what a request reuses of cached prompts: whole 256-token chunks (exact, the default: "
                         "results never depend on what ran before), every cached token (all: faster chat "
                         "turns, last bits may differ), nothing (off)")
    sv.add_argument("--served-model-name", default=None, help="the id clients name in 'model' (default: the "
                    "alias, or the model file's or folder's name)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.add_argument("--replicas", type=positive_int, default=None,
                    help="run on Ray Serve: this many copies of the server, requests routed by a hash of the "
                         "prompt prefix (needs ray[serve])")
    sv.add_argument("--cores-per-replica", type=positive_int, default=None,
                    help="with --replicas: CPUs each replica reserves and its threads (default: --threads, else 1)")
    sv.add_argument("--ray-address", default=None, help="with --replicas: a running Ray cluster (default: start one)")
    sv.set_defaults(func=cmd_serve)

    b = sub.add_parser("bench", help="prefill (pp) and decode (tg) tokens/s, like llama-bench")
    model_args(b)
    b.add_argument("-p", "--n-prompt", type=int, default=512)
    b.add_argument("-n", "--n-gen", type=int, default=128, help="decode tokens (0: none)")
    b.add_argument("-r", "--repetitions", type=positive_int, default=5)
    b.add_argument("--ctx", type=positive_int, default=2048, help="KV cache capacity for the run")
    b.add_argument("--json", action="store_true")
    b.add_argument("--profile", action="store_true", help="time each kind of op (adds a little overhead)")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("convert", help="a GGUF file into a Hugging Face folder")
    c.add_argument("src")
    c.add_argument("out")
    c.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    c.set_defaults(func=cmd_convert)

    q = sub.add_parser("quantize", help="write an int8 / int4 checkpoint that loads directly (memory-mapped)")
    q.add_argument("src", help="a Hugging Face folder, a .gguf file or an alias")
    q.add_argument("out")
    q.add_argument("--dtype", default="int8", choices=["int8", "int4"])
    q.add_argument("--group-size", type=int, default=32, choices=[32, 64, 128])
    q.add_argument("--method", default=None, choices=["rtn", "search", "gptq"],
                   help="4-bit: round to nearest over each group's range, a per-group scale search, or GPTQ "
                        "calibrated on the standard library's docstrings (default for int4: gptq)")
    q.add_argument("--keep-8bit", default=None, metavar="PROJ,...",
                   help="projections kept at int8 in an int4 model (default for int4: down,v,o; '' for none)")
    q.set_defaults(func=cmd_quantize)

    pp = sub.add_parser("perplexity", help="perplexity over a text; KL and top-1 against a reference dtype")
    model_args(pp)
    pp.add_argument("file", help="a UTF-8 text file")
    pp.add_argument("--ctx", type=positive_int, default=None, help="window length (default: the model's context)")
    pp.add_argument("--reference-dtype", default=None, choices=list(DTYPES), help="e.g. float32: adds KL and top-1")
    pp.add_argument("--reference-model", default=None, help="default: the same model")
    pp.add_argument("--group-size", type=int, default=32, choices=[32, 64, 128])
    pp.add_argument("--method", default="rtn", choices=["rtn", "search", "gptq"])
    pp.add_argument("--keep-8bit", default="", metavar="PROJ,...", help="projections kept at int8 in an int4 model")
    pp.add_argument("--path", default="prefill", choices=["prefill", "decode"],
                    help="score windows in one forward pass, or token by token through decode")
    pp.add_argument("--max-tokens", type=positive_int, default=None, help="use only the text's first N tokens")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_perplexity)

    i = sub.add_parser("info", help="version, build, CPU features, kernel ISA and threads; or a model's tensor types")
    i.add_argument("model", nargs="?", default=None, help="a .gguf file, model folder or alias: its tensor types and bytes")
    i.add_argument("--json", action="store_true", help="print as JSON")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, ImportError) as e:  # (an extra not installed)
        print(f"fastlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fastlm info --json | head`: the reader left; no traceback at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
