"""Speed and memory of streaming UIPE over a sharded checkpoint, against a plain-copy baseline.

Setup: two synthetic bf16 checkpoints (θ_ini and θ_un) with Llama-7B-like tensor shapes
(vocab 32000, hidden 4096, MLP 11008; embeddings, lm_head and 5 decoder layers: ≈2.55 GB each, in
shards of ≤ 600 MB, with `model.safetensors.index.json`), written to a temp dir that is removed
at the end.

Baseline (the IO the job cannot avoid, with no arithmetic): for every shard, read θ_ini's shard in
16 MB blocks and discard it, `shutil.copyfile` θ_un's shard to the output, fsync the output, i.e.
read two checkpoints and write one, durably. Streaming UIPE (`extrapolate_stream`, α = 0.5) does the
same IO plus the fp32 arithmetic, and also fsyncs every shard. Both run from a warm page cache
(the inputs were just written; `os.sync()` before each measurement so that neither pays for
another's writeback), each in its own subprocess so that its VmHWM is that measurement's
peak RSS (which includes ≈ the Python + torch import footprint, reported separately).

Reported: throughput ratio = baseline time / streaming time (target ≥ 0.5) and the streaming peak
RSS against 2 × largest tensor + 300 MB (target: under). A few output tensors are checked against
the in-memory formula afterwards (outside the timing).

    python benchmarks/uipe_stream.py [--layers 5] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB, HIDDEN, INTER = 32000, 4096, 11008
SHARD_BYTES = 600 * 10**6
BLOCK = 16 * 2**20  # bytes per read in the baseline


def tensor_shapes(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (HIDDEN,))]
        shapes += [(p + f"self_attn.{m}_proj.weight", (HIDDEN, HIDDEN)) for m in "qkvo"]
        shapes += [(p + "post_attention_layernorm.weight", (HIDDEN,)),
                   (p + "mlp.gate_proj.weight", (INTER, HIDDEN)), (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
                   (p + "mlp.down_proj.weight", (HIDDEN, INTER))]
    shapes += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    return shapes


def make_checkpoint(path: Path, shapes, noise: float, seed: int) -> int:
    """Write a sharded bf16 checkpoint with our incremental writer; values: a tiled random block (+ noise)."""
    import math
    import zlib

    import torch

    from unlearnkit.uipe import SafetensorsWriter

    path.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    block = torch.randn(8 * 2**20, generator=g) * 0.02  # 8M values, shared by θ_ini and θ_un
    if noise:
        block += torch.randn(block.shape, generator=torch.Generator().manual_seed(seed)) * noise
    block = block.bfloat16()
    shards, cur, size = [], [], 0
    for name, shape in shapes:
        nbytes = math.prod(shape) * 2
        if cur and size + nbytes > SHARD_BYTES:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += nbytes
    shards.append(cur)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        with SafetensorsWriter(path / fname, [(n, "BF16", s) for n, s in shard], {"format": "pt"}, fsync=False) as w:
            for n, s in shard:
                left, off = math.prod(s), (zlib.crc32(n.encode()) % 1000) * 997
                while left:
                    take = min(left, block.numel() - off)
                    w.write(n, block[off:off + take])
                    left -= take
                    off = 0
                weight_map[n] = fname
                total += math.prod(s) * 2
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": HIDDEN}))
    return total


def measure_copy(base: Path, un: Path, out: Path) -> None:
    out.mkdir()
    index = json.loads((un / "model.safetensors.index.json").read_text())
    for fname in sorted(set(index["weight_map"].values())):
        with open(base / fname, "rb", buffering=0) as fh:
            buf = bytearray(BLOCK)
            while fh.readinto(buf):
                pass
        shutil.copyfile(un / fname, out / fname)
        with open(out / fname, "rb") as fh:
            os.fsync(fh.fileno())
    for side in ("model.safetensors.index.json", "config.json"):
        shutil.copyfile(un / side, out / side)


def measure_stream(base: Path, un: Path, out: Path) -> None:
    from unlearnkit.uipe import AlphaPlan, extrapolate_stream

    extrapolate_stream(base, un, out, AlphaPlan.build(0.5))


def peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM). Not `ru_maxrss`: Linux carries that across exec, so a
    child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(kind: str, base: str, un: str, out: str) -> None:
    if kind == "stream":
        import torch  # noqa: F401  (import footprint measured separately from the work)
        import unlearnkit.uipe  # noqa: F401
    rss0 = peak_rss()
    t = time.perf_counter()
    (measure_stream if kind == "stream" else measure_copy)(Path(base), Path(un), Path(out))
    dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "peak_rss": peak_rss(),
                      "import_rss": rss0}))


def run_child(kind: str, base: Path, un: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", kind, str(base), str(un), str(out)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def verify(base: Path, un: Path, out: Path, alpha: float = 0.5) -> None:
    import torch
    from safetensors import safe_open

    from unlearnkit.uipe import extrapolate_tensor

    index = json.loads((un / "model.safetensors.index.json").read_text())["weight_map"]
    for name in ("model.embed_tokens.weight", "model.layers.2.mlp.down_proj.weight", "model.norm.weight"):
        f = index[name]
        with safe_open(base / f, "pt") as fb, safe_open(un / f, "pt") as fu, safe_open(out / f, "pt") as fo:
            rows = slice(0, 64)
            want = extrapolate_tensor(fb.get_slice(name)[rows], fu.get_slice(name)[rows], alpha)
            got = fo.get_slice(name)[rows]
            if not torch.equal(got, want) or got.dtype != torch.bfloat16:
                raise AssertionError(f"{name}: streamed output differs from the in-memory formula")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=5, help="decoder layers (5 → ≈2.55 GB per checkpoint)")
    ap.add_argument("--dir", default=None, help="where to put the temp dir (default: system temp)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, to check the script itself")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "BASE", "UN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    import math

    if args.smoke:
        global VOCAB, HIDDEN, INTER, SHARD_BYTES
        VOCAB, HIDDEN, INTER, SHARD_BYTES = 1000, 256, 688, 2 * 10**6
    shapes = tensor_shapes(args.layers)
    largest = max(math.prod(s) for _, s in shapes) * 2
    root = Path(tempfile.mkdtemp(prefix="uipe-bench-", dir=args.dir))
    try:
        t = time.perf_counter()
        total = make_checkpoint(root / "base", shapes, 0.0, 1)
        make_checkpoint(root / "un", shapes, 0.002, 2)
        n_shards = len(list((root / "un").glob("*.safetensors")))
        print(f"checkpoints: 2 x {total / 1e9:.2f} GB bf16, {len(shapes)} tensors in {n_shards} shards, "
              f"largest tensor {largest / 1e6:.0f} MB (made in {time.perf_counter() - t:.0f} s)")
        print(f"cpus: {os.cpu_count()}, streaming with 1 torch thread (extrapolate_stream default), load average: {os.getloadavg()[0]:.1f}")
        os.sync()  # flush the freshly written inputs first, so their writeback does not slow the baseline
        copy = run_child("copy", root / "base", root / "un", root / "out-copy")
        shutil.rmtree(root / "out-copy")
        os.sync()
        stream = run_child("stream", root / "base", root / "un", root / "out-uipe")
        verify(root / "base", root / "un", root / "out-uipe")
        gb = total / 1e9
        ratio = copy["seconds"] / stream["seconds"]
        limit = 2 * largest + 300 * 10**6
        print(f"baseline (read 2 + copy 1 + fsync): {copy['seconds']:.2f} s, {gb / copy['seconds']:.2f} GB/s of output, "
              f"peak RSS {copy['peak_rss'] / 1e6:.0f} MB")
        print(f"streaming UIPE (alpha=0.5):        {stream['seconds']:.2f} s, {gb / stream['seconds']:.2f} GB/s of output, "
              f"peak RSS {stream['peak_rss'] / 1e6:.0f} MB (of which python+torch import {stream['import_rss'] / 1e6:.0f} MB)")
        print(f"throughput ratio stream/baseline: {ratio:.2f} (target >= 0.5: {'PASS' if ratio >= 0.5 else 'FAIL'})")
        print(f"peak RSS {stream['peak_rss'] / 1e6:.0f} MB vs 2 x largest tensor + 300 MB = {limit / 1e6:.0f} MB "
              f"({'PASS' if stream['peak_rss'] < limit else 'FAIL'})")
        print("output verified against the in-memory formula on sampled tensors: OK")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
