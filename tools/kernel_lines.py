#!/usr/bin/env python3
"""Where a persistent kernel's warps spend their time, by line of its body.

Nsight Compute's source page gives, per SASS instruction, the warp-state
samples (with their stall reasons) and the instructions executed. In a
kernel that inlines everything (the decode layer kernel) the innermost source
line says little: the same poll loop serves five hand-offs. This script maps
each instruction to the outermost line of the kernel's body that it was
inlined into (nvdisasm -gi of the same cubin, built with -lineinfo) and sums
per body line.

On the GPU machine (the build configured with -DCMAKE_CUDA_FLAGS=-lineinfo):
  ncu --clock-control none --section SourceCounters --section WarpStateStats \\
      -k regex:decode_layer_kernel -s 2 -c 1 -f -o /tmp/i4 \\
      build/cuda/benchmarks/cuda_decode_layer_bench \\
      --benchmark_filter='pos:255/bits:4/launch:1' --benchmark_min_time=0.001s
  ncu -i /tmp/i4.ncu-rep --page source --csv --print-source sass > $OUT/i4_sass.csv
Here (same nvcc, same flags; the script checks the instructions agree):
  cuobjdump -xelf all build/cuda/src/cuda/CMakeFiles/el_cuda.dir/cuda_decode_layer.cu.o
  nvdisasm -gi -c cuda_decode_layer.sm_90a.cubin > all.sass
  tools/kernel_lines.py i4_sass.csv all.sass --file cuda_decode_layer.cu --lines 141-380
"""
import argparse
import collections
import csv
import re
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def read_profile(path):
    """The kernel's mangled-free name and its rows (dicts), from ncu's source CSV."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 3 or not rows[0] or rows[0][0] != "Kernel Name":
        sys.exit(f"{path}: expected ncu --page source --csv output (a 'Kernel Name' line first)")
    header = rows[1]
    for col in ("Address", "Source", SAMPLES, EXECUTED):
        if col not in header:
            sys.exit(f"{path}: no column {col!r} (profile with --section SourceCounters)")
    return rows[0][1], [dict(zip(header, r)) for r in rows[2:] if len(r) == len(header)]


def read_listing(path, kernel_re, body_file, lo, hi):
    """Offset -> (body line or None, innermost 'file:line', instruction) of the
    first function whose label matches kernel_re."""
    out, inside, where = {}, False, (None, "?")
    with open(path) as f:
        for line in f:
            label = re.match(r"^\.text\.(\S+):$", line.strip())
            if label:
                if inside:
                    break
                inside = re.search(kernel_re, label.group(1)) is not None
                continue
            if not inside:
                continue
            if "//## File" in line:
                locs = re.findall(r'"([^"]+)", line (\d+)', line)
                body = None
                for name, num in locs:  # innermost first: the last body line is the outermost
                    if name.endswith(body_file) and lo <= int(num) <= hi:
                        body = int(num)
                where = (body, f"{locs[0][0].rsplit('/', 1)[-1]}:{locs[0][1]}" if locs else "?")
                continue
            ins = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s*(.*?)\s*;", line)
            if ins:
                out[int(ins.group(1), 16)] = (where[0], where[1], ins.group(2))
    if not out:
        sys.exit(f"{path}: no function matching {kernel_re!r} (nvdisasm -gi -c of the cubin)")
    return out


def opcode(instruction):
    """The instruction's opcode, its predicate dropped."""
    words = [w for w in instruction.split() if not w.startswith("@")]
    return words[0] if words else ""


def number(row, col):
    try:
        return float(row.get(col) or 0)
    except ValueError:
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", help="ncu --page source --csv --print-source sass output")
    ap.add_argument("listing", help="nvdisasm -gi -c of the same cubin")
    ap.add_argument("--file", default="cuda_decode_layer.cu", help="the kernel body's source file")
    ap.add_argument("--lines", default="1-100000", help="the kernel body's line range, a-b")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.lines.split("-"))
    name, rows = read_profile(args.profile)
    # decode_layer_kernel<__nv_bfloat16, (int)2, (int)4, (int)6> -> the label's template arguments
    m = re.match(r".*?(\w+)<(.*)>\(", name)
    if not m:
        sys.exit(f"{args.profile}: cannot read the kernel's template arguments from {name!r}")
    parts = [p.strip() for p in m.group(2).split(",")]
    mangled = "".join(f"Li{re.sub(r'[^0-9]', '', p)}E" if p.startswith("(int)") else p for p in parts)
    kernel_re = re.escape(m.group(1)) + r"I\d*" + re.escape(mangled)
    listing = read_listing(args.listing, kernel_re, args.file, lo, hi)
    base = int(rows[0]["Address"], 16)
    stalls = [c for c in rows[0] if c.startswith("stall_") and "Not Issued" not in c]
    total = sum(number(r, SAMPLES) for r in rows) or 1.0
    per_line = collections.defaultdict(collections.Counter)
    mismatched = 0
    for r in rows:
        body, _, text = listing.get(int(r["Address"], 16) - base, (None, "?", "?"))
        if opcode(r["Source"]) != opcode(text):
            mismatched += 1
        c = per_line[body]
        c["samples"] += number(r, SAMPLES)
        c["executed"] += number(r, EXECUTED)
        for s in stalls:
            c[s] += number(r, s)
    if mismatched > len(rows) // 100:
        sys.exit(f"{mismatched} of {len(rows)} instructions differ between the profile and the "
                 "listing: build the listing from the same source, nvcc and flags")
    print(f"{name}\n{total:.0f} samples, {sum(number(r, EXECUTED) for r in rows) / 1e6:.1f} M warp "
          f"instructions; by line of {args.file} (None: outside lines {lo}-{hi})")
    for body, c in sorted(per_line.items(), key=lambda kv: -kv[1]["samples"])[: args.top]:
        top = sorted(((c[s], s) for s in stalls), reverse=True)[:3]
        why = "  ".join(f"{s[6:]} {100 * v / total:.1f}" for v, s in top)
        print(f"line {str(body):>5}  {100 * c['samples'] / total:5.1f}%  "
              f"{c['executed'] / 1e6:7.2f} M  {why}")


if __name__ == "__main__":
    main()
