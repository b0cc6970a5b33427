"""What the model-family fixture scripts share.

tools/make_{mamba,rwkv,pythia,moe}_fixtures.py each build tiny random
transformers models and write them, with transformers' outputs, under
tests/fixtures/<family>/. They differ in the models and the references; the
command line around them and the listing of what was written are the same,
and live here:

  fixture_dir(family)        tests/fixtures/<family> in this source tree
  print_written(d)           "wrote <path> (<n> bytes)" for each file of d
  run_fixtures(doc, default_out, fixtures, make)
                             the scripts' main(): --out DIR, deterministic
                             torch, the library versions, then
                             make(name, spec, out) for each fixture in order

The scripts import this module by name: run them as `python tools/<script>`
(the script's directory is then on sys.path).
"""

import argparse
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixture_dir(family=""):
    """tests/fixtures/<family> of this source tree (a script's default --out);
    tests/fixtures itself for an empty family."""
    root = os.path.join(ROOT, "tests", "fixtures")
    return os.path.join(root, family) if family else root


def print_written(d):
    """Lists the files of directory d, in name order, with their sizes."""
    for fn in sorted(os.listdir(d)):
        p = os.path.join(d, fn)
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")


def run_fixtures(doc, default_out, fixtures, make):
    """A fixture script's main(): parses --out (default default_out; the
    description is doc's first line), makes torch deterministic, prints the
    transformers and torch versions, then calls make(name, spec, out_dir) for
    each (name, spec) of the dict fixtures, in order."""
    import torch
    import transformers

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for name, spec in fixtures.items():
        make(name, spec, args.out)
