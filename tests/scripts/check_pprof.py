#!/usr/bin/env python3
"""Checks memtrace's pprof output against its JSON report, reading the profile with the
real schema: google/pprof's proto/profile.proto (vendored unmodified at
memtrace/proto/profile.proto), compiled here by protoc (grpc_tools).

usage: check_pprof.py PROFILE.pb.gz REPORT.json

Needs the Python packages protobuf and grpcio-tools (the venv that xtask makes, see
xtask/src/python.rs). Exits 0 and prints one summary line when the profile matches the
report; prints the first mismatch and exits 1 otherwise (2 for usage or setup errors).

What is checked:
- the profile is gzipped and parses; string_table[0] == ""; every id is non-zero and
  unique, every reference (location, function, mapping, string index) resolves;
- sample types are Go's heap layout alloc_objects/count, alloc_space/bytes,
  inuse_objects/count, inuse_space/bytes; default_sample_type is inuse_space; the period
  type is space/bytes;
- the samples are the report's stacks whose class counts in the totals (classes[] with
  in_total false are left out; a class missing from classes[] counts), one sample per
  stack IN THE REPORT'S ORDER (memtrace writes them so; that order is how samples and
  stacks are matched);
- each sample's values equal [allocated_count, allocated_bytes, allocations, bytes];
- its string labels kind, class, caller (and cache, when the stack has one) equal the
  stack's;
- its locations, leaf first, have the addresses of the stack's frames (innermost first)
  and resolve through line -> function -> string table to the frame's functions: the
  inlined ones innermost first (JSON `inlined` is outermost first), then the frame's symbol
  (its hex address when unresolved) as the LAST line; the mapping is [kernel.kallsyms] for
  the kernel image or [<module>] for a module's frame, none for an unresolved address, and
  every mapped address lies within its mapping's range;
- a stack with no stack id is one location named "[stack unavailable]", a stack with an
  id but no frames one named "[unknown]", both without address or mapping.
"""

import gzip
import json
import os
import subprocess
import sys
import tempfile

SAMPLE_TYPES = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
]
DEFAULT_SAMPLE_TYPE = "inuse_space"
PERIOD_TYPE = ("space", "bytes")
KERNEL_MAPPING = "[kernel.kallsyms]"
INT64_MAX = 2**63 - 1

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "memtrace", "proto", "profile.proto"))


class Mismatch(Exception):
    pass


def fail(msg):
    raise Mismatch(msg)


def load_profile_module(tmp):
    """Compiles the vendored profile.proto into `tmp` and imports the generated module."""
    if not os.path.isfile(PROTO):
        raise RuntimeError(f"{PROTO} not found")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{os.path.dirname(PROTO)}",
        f"--python_out={tmp}",
        os.path.basename(PROTO),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(
            f"protoc failed ({' '.join(cmd)}): {res.stderr.strip() or res.stdout.strip()}; "
            "is grpcio-tools installed in this Python?"
        )
    sys.path.insert(0, tmp)
    import profile_pb2  # noqa: E402 (generated just above)

    return profile_pb2


class View:
    """Id and string lookups over a parsed profile, checking references as it goes."""

    def __init__(self, p):
        self.p = p
        st = p.string_table
        if len(st) == 0 or st[0] != "":
            fail(f'string_table[0] is {st[0] if st else None!r}, must be ""')
        self.locations = self._index(p.location, "location")
        self.functions = self._index(p.function, "function")
        self.mappings = self._index(p.mapping, "mapping")
        for f in p.function:
            for i in (f.name, f.system_name, f.filename):
                self.s(i)
        for m in p.mapping:
            self.s(m.filename)
        for loc in p.location:
            if loc.mapping_id != 0 and loc.mapping_id not in self.mappings:
                fail(f"location {loc.id}: mapping {loc.mapping_id} does not exist")
            if loc.mapping_id != 0:
                m = self.mappings[loc.mapping_id]
                if not (m.memory_start <= loc.address < m.memory_limit):
                    fail(
                        f"location {loc.id}: address {loc.address:#x} outside its mapping "
                        f"[{m.memory_start:#x}, {m.memory_limit:#x})"
                    )
            if len(loc.line) == 0:
                fail(f"location {loc.id} has no line")
            for line in loc.line:
                if line.function_id not in self.functions:
                    fail(f"location {loc.id}: function {line.function_id} does not exist")
        for i in (p.default_sample_type, p.drop_frames, p.keep_frames, *p.comment):
            self.s(i)

    @staticmethod
    def _index(items, what):
        out = {}
        for it in items:
            if it.id == 0:
                fail(f"{what} with id 0")
            if it.id in out:
                fail(f"duplicate {what} id {it.id}")
            out[it.id] = it
        return out

    def s(self, i):
        if not 0 <= i < len(self.p.string_table):
            fail(f"string index {i} out of range ({len(self.p.string_table)} strings)")
        return self.p.string_table[i]

    def location(self, loc_id):
        if loc_id not in self.locations:
            fail(f"location {loc_id} does not exist")
        loc = self.locations[loc_id]
        names = [self.s(self.functions[line.function_id].name) for line in loc.line]
        mapping = self.s(self.mappings[loc.mapping_id].filename) if loc.mapping_id else None
        return loc.address, names, mapping


def in_total_classes(report):
    return {c["class"]: bool(c["in_total"]) for c in report.get("classes", [])}


def expected_locations(stack):
    """[(address, [function names innermost first], mapping)] for a stack."""
    if stack.get("stack_id") is None:
        return [(0, ["[stack unavailable]"], None)]
    frames = stack.get("frames") or []
    if not frames:
        return [(0, ["[unknown]"], None)]
    out = []
    for f in frames:
        address = int(f["address"], 16)
        symbol = f.get("symbol") or f"{address:#x}"
        names = list(reversed(f.get("inlined") or [])) + [symbol]
        module = f.get("module")
        if module:
            mapping = f"[{module}]"
        elif f.get("symbol"):
            mapping = KERNEL_MAPPING
        else:
            mapping = None  # nothing explains the address: no mapping
        out.append((address, names, mapping))
    return out


def check(p, report):
    v = View(p)
    types = [(v.s(t.type), v.s(t.unit)) for t in p.sample_type]
    if types != SAMPLE_TYPES:
        fail(f"sample types {types}, expected {SAMPLE_TYPES}")
    if v.s(p.default_sample_type) != DEFAULT_SAMPLE_TYPE:
        fail(f"default_sample_type {v.s(p.default_sample_type)!r}, expected {DEFAULT_SAMPLE_TYPE!r}")
    period_type = (v.s(p.period_type.type), v.s(p.period_type.unit))
    if period_type != PERIOD_TYPE:
        fail(f"period type {period_type}, expected {PERIOD_TYPE}")

    in_total = in_total_classes(report)
    stacks = [s for s in report["stacks"] if in_total.get(s["class"], True)]
    skipped = len(report["stacks"]) - len(stacks)
    if len(p.sample) != len(stacks):
        fail(
            f"{len(p.sample)} samples for {len(stacks)} stacks whose class is in the totals "
            f"({skipped} left out)"
        )
    for i, (sample, stack) in enumerate(zip(p.sample, stacks)):
        what = f"sample {i} (stack {i} drawn: id {stack.get('stack_id')}, caller {stack['caller']!r})"
        want = [
            min(stack[k], INT64_MAX)
            for k in ("allocated_count", "allocated_bytes", "allocations", "bytes")
        ]
        if list(sample.value) != want:
            fail(
                f"{what}: values {list(sample.value)}, expected {want} "
                "[allocated_count, allocated_bytes, allocations, bytes]"
            )
        labels = {}
        for lab in sample.label:
            key = v.s(lab.key)
            if key in labels:
                fail(f"{what}: label {key!r} twice")
            labels[key] = v.s(lab.str)
        want_labels = {"kind": stack["kind"], "class": stack["class"], "caller": stack["caller"]}
        if stack.get("cache") is not None:
            want_labels["cache"] = stack["cache"]
        if labels != want_labels:
            fail(f"{what}: labels {labels}, expected {want_labels}")
        got = [v.location(loc_id) for loc_id in sample.location_id]
        exp = expected_locations(stack)
        if len(got) != len(exp):
            fail(f"{what}: {len(got)} locations, expected {len(exp)} frames")
        for depth, (g, e) in enumerate(zip(got, exp)):
            if g != e:
                fail(
                    f"{what}, frame {depth} (0 = leaf): got address {g[0]:#x}, functions {g[1]}, "
                    f"mapping {g[2]}; expected address {e[0]:#x}, functions {e[1]}, mapping {e[2]}"
                )
    return len(stacks), skipped, v


def main(argv):
    if len(argv) != 3:
        print(f"usage: {argv[0]} PROFILE.pb.gz REPORT.json", file=sys.stderr)
        return 2
    profile_path, report_path = argv[1], argv[2]
    try:
        with tempfile.TemporaryDirectory(prefix="check_pprof-") as tmp:
            profile_pb2 = load_profile_module(tmp)
            with open(report_path, encoding="utf-8") as f:
                report = json.load(f)
            with open(profile_path, "rb") as f:
                data = f.read()
    except (OSError, RuntimeError, ValueError, ImportError) as e:
        print(f"check_pprof: cannot set up: {e}", file=sys.stderr)
        return 2
    try:
        try:
            raw = gzip.decompress(data)
        except OSError as e:
            fail(f"{profile_path} is not gzip: {e}")
        p = profile_pb2.Profile()
        try:
            p.ParseFromString(raw)
        except Exception as e:  # google.protobuf.message.DecodeError and friends
            fail(f"{profile_path} does not parse as perftools.profiles.Profile: {e}")
        drawn, skipped, v = check(p, report)
    except Mismatch as e:
        print(f"check_pprof: MISMATCH: {profile_path} vs {report_path}: {e}")
        return 1
    print(
        f"check_pprof: OK: {drawn} samples match the {drawn} stacks of {report_path} in the "
        f"totals ({skipped} left out), {len(p.location)} locations, {len(p.function)} "
        f"functions, {len(p.mapping)} mappings"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
