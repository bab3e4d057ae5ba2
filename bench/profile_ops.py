#!/usr/bin/env python
"""Op-level time breakdown of a profiler trace (`*.xplane.pb`, or the lease's `profile.tgz`).

    python bench/profile_ops.py profile.tgz --steps 5 [--json out.json] [--top 25]

On a GPU trace, the device plane's "XLA Ops" line (one event per HLO op, fusions included) is
summed per op and per category (convolution, fusion, copy/transpose, reduction, custom call,
other), with the device's busy time per step against the wall time of the traced steps. On a
CPU trace (tests, or no GPU), the host threads' XLA op events are used instead.
"""

import argparse
import collections
import glob
import json
import os
import re
import sys
import tarfile
import tempfile

CATEGORIES = [  # (category, pattern on the op or its HLO category), first match wins
    ("convolution", re.compile(r"conv|cudnn", re.I)),
    ("matmul", re.compile(r"gemm|dot|matmul|cublas", re.I)),
    ("copy/transpose", re.compile(r"copy|transpose|bitcast|layout", re.I)),
    ("reduction", re.compile(r"reduce|reduction", re.I)),
    ("custom call", re.compile(r"custom", re.I)),
    ("fusion", re.compile(r"fusion|loop|input_", re.I)),
]
_NOT_OPS = re.compile(r"^(ThreadpoolListener|ThunkExecutor|\$|PjitFunction|Python|Parse|end: )")


def load_xspace(path):
    """The `XSpace` of a `.xplane.pb`, or of the first one inside a `.tgz` / folder."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    if path.endswith((".tgz", ".tar.gz")):
        tmp = tempfile.mkdtemp()
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        path = tmp
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "**", "*.xplane.pb"), recursive=True))
        if not found:
            raise ValueError(f"{path}: no *.xplane.pb inside")
        path = found[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    return space


def _stat(plane, event, name):
    for s in event.stats:
        if plane.stat_metadata[s.metadata_id].name == name:
            if s.HasField("str_value"):
                return s.str_value
            if s.HasField("ref_value"):
                return plane.stat_metadata[s.ref_value].name
    return None


def category(name, hlo_category=None):
    for label, pattern in CATEGORIES:
        if pattern.search(hlo_category or "") or pattern.search(name):
            return label
    return "other"


def op_events(space):
    """(device, [(op name, HLO category or None, duration in ns)], span in ns)."""
    gpus = [p for p in space.planes if p.name.startswith("/device:GPU")]
    events = []
    if gpus:
        plane = gpus[0]
        for line in plane.lines:
            if line.name == "XLA Ops":
                for e in line.events:
                    md = plane.event_metadata[e.metadata_id]
                    name = md.display_name or md.name
                    events.append((name, _stat(plane, e, "hlo_category"), e.duration_ps / 1e3))
        device = plane.name
    else:
        plane = next(p for p in space.planes if p.name == "/host:CPU")
        for line in plane.lines:
            if "XLA" not in line.name:
                continue
            for e in line.events:
                name = plane.event_metadata[e.metadata_id].name
                if not _NOT_OPS.match(name):
                    events.append((name, None, e.duration_ps / 1e3))
        device = plane.name
    starts = [line.timestamp_ns + e.offset_ps / 1e3 for line in plane.lines for e in line.events]
    ends = [line.timestamp_ns + (e.offset_ps + e.duration_ps) / 1e3 for line in plane.lines for e in line.events]
    span = (max(ends) - min(starts)) if starts else 0.0
    return device, events, span


def breakdown(space, steps=1, top=25):
    """Per-step milliseconds by category and by op (the `top` longest), as a dict."""
    device, events, span = op_events(space)
    by_op, by_cat, count = collections.Counter(), collections.Counter(), collections.Counter()
    for name, hlo_cat, ns in events:
        base = re.sub(r"[.:]\d+$", "", name.split(" = ")[0].lstrip("%"))
        by_op[base] += ns
        count[base] += 1
        by_cat[category(name, hlo_cat)] += ns
    busy = sum(by_cat.values())
    ms = lambda ns: round(ns / 1e6 / steps, 4)  # noqa: E731
    return {
        "device": device, "steps": steps, "events": len(events),
        "busy_ms_per_step": ms(busy), "span_ms_per_step": ms(span),
        "categories": {c: {"ms": ms(v), "share": round(v / busy, 4) if busy else 0.0}
                       for c, v in by_cat.most_common()},
        "ops": [{"op": o, "ms": ms(v), "calls_per_step": round(count[o] / steps, 2),
                 "share": round(v / busy, 4) if busy else 0.0} for o, v in by_op.most_common(top)],
    }


def render(result) -> str:
    lines = [f"{result['device']}: {result['busy_ms_per_step']} ms busy per step "
             f"(trace span {result['span_ms_per_step']} ms per step, {result['steps']} steps)", "",
             "| category | ms per step | share |", "|---|---|---|"]
    lines += [f"| {c} | {v['ms']:.3f} | {100 * v['share']:.1f} % |" for c, v in result["categories"].items()]
    lines += ["", "| op | ms per step | calls per step | share |", "|---|---|---|---|"]
    lines += [f"| `{o['op']}` | {o['ms']:.3f} | {o['calls_per_step']} | {100 * o['share']:.1f} % |"
              for o in result["ops"]]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace", help="*.xplane.pb, a folder holding one, or the lease's profile.tgz")
    p.add_argument("--steps", type=int, default=1, help="number of traced steps (per-step figures)")
    p.add_argument("--top", type=int, default=25, help="ops listed (default 25)")
    p.add_argument("--json", metavar="FILE", help="also write the breakdown as JSON")
    args = p.parse_args(argv)
    if not os.path.exists(args.trace):
        p.error(f"trace {args.trace}: not found")
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    try:
        result = breakdown(load_xspace(args.trace), args.steps, args.top)
    except (ValueError, OSError, tarfile.TarError, StopIteration) as e:
        p.error(f"trace {args.trace}: {e or 'no device or host plane'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
