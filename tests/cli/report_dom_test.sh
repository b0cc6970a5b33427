#!/usr/bin/env bash
# Browser test of `efficientllm report --format html`: renders the page of
# tests/fixtures/results/report_mixed.jsonl in headless Chromium (Debian's
# `chromium`, installed by scripts/setup.sh on Debian) with the URL hash
# #selftest, and checks the DOM after the inline script ran: one table row per
# experiment, a bar chart per metric and the Pareto plots (each an <svg>), no
# script error, the script's click-sort and filter self-test passed, and the
# HTML in labels stayed text. Exit 77 (ctest SKIP) when no Chromium exists.
# Usage: report_dom_test.sh <efficientllm binary> <fixtures dir>
set -uo pipefail
BIN=$1
FIX=$2
TMP=$(mktemp -d /tmp/el_report_dom.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

fail() { echo "FAIL: $*"; exit 1; }

CHROMIUM=${EL_CHROMIUM:-}
if [ -z "$CHROMIUM" ]; then
  for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then CHROMIUM=$(command -v "$c"); break; fi
  done
fi
if [ -z "$CHROMIUM" ]; then
  echo "SKIP: no chromium binary (install Debian's chromium, e.g. scripts/setup.sh, or set EL_CHROMIUM)"
  exit 77
fi

"$BIN" report "$FIX/results/report_mixed.jsonl" --format html -o "$TMP/report.html" 2>"$TMP/err" ||
  fail "report --format html failed: $(cat "$TMP/err")"

# Its own profile directory (no clash with another Chromium) and HOME (it
# writes there); --virtual-time-budget lets the page finish before the dump.
HOME="$TMP" timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
  --user-data-dir="$TMP/profile" --virtual-time-budget=5000 \
  --dump-dom "file://$TMP/report.html#selftest" >"$TMP/dom.html" 2>"$TMP/chromium.err"
rc=$?
[ $rc -eq 0 ] || fail "chromium exited $rc: $(tail -5 "$TMP/chromium.err")"
[ -s "$TMP/dom.html" ] || fail "chromium dumped no DOM: $(tail -5 "$TMP/chromium.err")"

python3 - "$TMP/dom.html" <<'PY' || exit 1
import sys
from html.parser import HTMLParser

class Dom(HTMLParser):
    """Collects what the checks need: body attributes, rows per table, charts."""
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.body = {}
        self.stack = []          # open elements as (tag, attrs)
        self.rows = {}           # table id -> tbody rows
        self.figures = []        # (id, classes, has_svg)
        self.tags = {}
        self.table = None
        self.in_tbody = False
        self.figure = None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "body":
            self.body = a
        elif tag == "table":
            self.table = a.get("id")
            self.rows[self.table] = 0
        elif tag == "tbody":
            self.in_tbody = True
        elif tag == "tr" and self.in_tbody and self.table:
            self.rows[self.table] += 1
        elif tag == "figure":
            self.figure = [a.get("id", ""), a.get("class", "").split(), False]
            self.figures.append(self.figure)
        elif tag == "svg" and self.figure is not None:
            self.figure[2] = True
    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_tbody = False
        elif tag == "table":
            self.table = None
        elif tag == "figure":
            self.figure = None

dom = Dom()
dom.feed(open(sys.argv[1], encoding="utf-8").read())
b = dom.body
problems = []
def check(cond, what):
    if not cond:
        problems.append(what)

check(b.get("data-report-ready") == "1", f"data-report-ready={b.get('data-report-ready')!r}: the script did not finish")
check(b.get("data-script-errors") == "0", f"data-script-errors={b.get('data-script-errors')!r}")
check(b.get("data-selftest") == "pass", f"self-test: {b.get('data-selftest')!r}")
# Sorting by the first metric (PPL, lower first): GQA 120 < MHA 131 < MQA 135; the failed row (no PPL) stays last.
check(b.get("data-selftest-metric") == "perplexity", f"self-test sorted {b.get('data-selftest-metric')!r}")
check(b.get("data-selftest-first-asc") == "GQA", f"ascending sort starts with {b.get('data-selftest-first-asc')!r}")
check(b.get("data-selftest-first-desc") == "MQA", f"descending sort starts with {b.get('data-selftest-first-desc')!r}")
experiments = int(b.get("data-experiments", "-1"))
check(experiments == 6, f"data-experiments={experiments}")
value_rows = sum(n for t, n in dom.rows.items() if t and t.startswith("values-"))
rank_rows = sum(n for t, n in dom.rows.items() if t and t.startswith("ranks-"))
check(value_rows == experiments, f"{value_rows} value-table rows for {experiments} experiments ({dom.rows})")
check(rank_rows == experiments, f"{rank_rows} rank-table rows for {experiments} experiments")
bars = [f for f in dom.figures if "bar" in f[1]]
paretos = [f for f in dom.figures if "pareto" in f[1]]
want_bars = {f"bar-0-{m}" for m in ["perplexity", "amu_live_gb", "pcu", "mfu", "al_seconds", "tokens_per_second"]}
check({f[0] for f in bars} == want_bars, f"bar charts {sorted(f[0] for f in bars)}")
check({f[0] for f in paretos} == {"pareto-0-amu_live_gb-perplexity", "pareto-0-al_seconds-perplexity"},
      f"pareto charts {sorted(f[0] for f in paretos)}")
check(all(f[2] for f in dom.figures), f"figures without an svg: {[f[0] for f in dom.figures if not f[2]]}")
# The label "<b>evil</b>" and the error's "<script>" are text, not elements.
check(dom.tags.get("b", 0) == 0, "a <b> element came from a record's label")
check(dom.tags.get("script", 0) == 1, f"{dom.tags.get('script', 0)} script elements")
if problems:
    print("FAIL: " + "\nFAIL: ".join(problems))
    sys.exit(1)
print(f"ok: {experiments} experiments, {value_rows} value rows, {len(bars)} bar charts, {len(paretos)} Pareto plots, "
      "script ran without errors, click-sort and filter self-test passed")
PY
