// report_html.cpp — the self-contained HTML report: tables, inline SVG charts
// (report_svg.h), light inline CSS and a small hand-written inline script
// (sort by clicking a header, filter with a text box, a self-test behind the
// URL hash #selftest). No network, no external file: it opens offline.
//
// Stable hooks for tests and readers: body[data-experiments|data-groups],
// body[data-report-ready="1"] once the script ran, body[data-script-errors]
// (window.onerror count); section.group#group-G; table.ranks#ranks-G and
// table.values#values-G (one tbody row per experiment, tr[data-label]);
// figure.chart.bar#bar-G-<metric> and figure.chart.pareto#pareto-G-<x>-<y>.
#include <fmt/format.h>

#include "bench/report.h"
#include "bench/report_svg.h"

namespace el::bench {
namespace {

constexpr const char* kCss = R"CSS(
:root { --fg:#1d2430; --muted:#5c6673; --line:#d8dde4; --bg:#ffffff; --alt:#f5f7fa; --accent:#2f6fde;
        --good:#1f8a4c; --bad:#c0392b; --warn:#b7791f; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 24px 28px 60px; color: var(--fg); background: var(--bg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 36px 0 6px; border-bottom: 2px solid var(--line);
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 22px 0 6px; color: var(--muted); text-transform: uppercase;
     letter-spacing: .04em; }
.lead, .note, .provenance { color: var(--muted); }
.toolbar { position: sticky; top: 0; background: var(--bg); padding: 10px 0; z-index: 2;
           border-bottom: 1px solid var(--line); }
#filter { font: inherit; padding: 6px 10px; width: 340px; border: 1px solid var(--line); border-radius: 6px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
dl.provenance { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0; font-size: 13px; }
dl.provenance dt { font-weight: 600; } dl.provenance dd { margin: 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 4px 0 8px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left; white-space: nowrap; }
th { background: var(--alt); cursor: pointer; user-select: none; position: sticky; top: 0; }
th.num, td.num { text-align: right; }
th[aria-sort=ascending]::after { content: " \25B2"; font-size: 10px; }
th[aria-sort=descending]::after { content: " \25BC"; font-size: 10px; }
tbody tr:nth-child(even) { background: var(--alt); }
tbody tr:hover { background: #e8f0fd; }
td.rank { text-align: center; font-weight: 600; }
td.r1 { background: #cdebd8; color: #135c32; } td.r2 { background: #eef7f1; }
td.missing { color: #9aa3ad; }
.status { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600; }
.status-ok { background: #dff3e6; color: var(--good); } .status-failed { background: #fbe3e0; color: var(--bad); }
.status-partial { background: #fcf0d9; color: var(--warn); } .status-other { background: #eceff3; color: var(--muted); }
.noisy { display: inline-block; margin-left: 4px; padding: 0 5px; border-radius: 8px; font-size: 11px;
         background: #fcf0d9; color: var(--warn); }
td.error { white-space: normal; max-width: 420px; color: var(--bad); font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; }
figure.chart { margin: 0; padding: 8px; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
figure.chart figcaption { font-size: 12px; color: var(--muted); max-width: 600px; }
svg.chart-svg { display: block; max-width: 100%; height: auto; font-size: 12px; }
svg .chart-title { font-weight: 600; font-size: 13px; fill: var(--fg); }
svg .grid { stroke: #e6e9ee; } svg .axis-line, svg .plot-frame { stroke: #9aa3ad; fill: none; }
svg .tick { fill: var(--muted); font-size: 11px; } svg .axis-title { fill: var(--fg); font-size: 12px; }
svg .bar { fill: #8fb0ea; } svg .best .bar { fill: var(--good); } svg .noisy .bar { fill-opacity: .55; }
svg .errbar { stroke: #333; stroke-width: 1.2; fill: none; }
svg .bar-label, svg .bar-value { fill: var(--fg); } svg .bar-missing { fill: #9aa3ad; font-style: italic; }
svg .point circle { fill: #97a1ad; stroke: #fff; stroke-width: 1; }
svg .point.front circle { fill: #d9480f; } svg .point-label { fill: var(--fg); font-size: 11px; }
svg .front-line { stroke: #d9480f; stroke-width: 1.8; fill: none; stroke-dasharray: 5 3; }
footer { margin-top: 40px; font-size: 12px; color: var(--muted); }
code { font-size: 12px; }
)CSS";

// Sorting, filtering, self-test. The first statement installs the error
// counter so any later failure shows up in data-script-errors.
constexpr const char* kScript = R"JS(
(function () {
  'use strict';
  var body = document.body;
  window.onerror = function () {
    body.setAttribute('data-script-errors', String((parseInt(body.getAttribute('data-script-errors'), 10) || 0) + 1));
  };
  function each(list, f) { Array.prototype.forEach.call(list, f); }
  // A cell's sort key: data-sort when present (numbers at full precision),
  // else its text; null = missing, always sorted last.
  function key(td, numeric) {
    var v = td.getAttribute('data-sort');
    if (v === null) v = td.textContent.trim();
    if (!numeric) return v.toLowerCase();
    if (v === '' || v === '-') return null;
    var f = parseFloat(v);
    return isNaN(f) ? null : f;
  }
  function sortTable(table, col, ascending) {
    var th = table.tHead.rows[0].cells[col];
    var numeric = th.getAttribute('data-type') === 'num';
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var order = rows.map(function (r, i) { return { row: r, i: i, k: key(r.cells[col], numeric) }; });
    order.sort(function (a, b) {
      if (a.k === null || b.k === null) return a.k === b.k ? a.i - b.i : (a.k === null ? 1 : -1);
      var c = numeric ? a.k - b.k : (a.k < b.k ? -1 : a.k > b.k ? 1 : 0);
      return (ascending ? c : -c) || a.i - b.i;
    });
    order.forEach(function (o) { tbody.appendChild(o.row); });
    each(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  }
  each(document.querySelectorAll('table.sortable'), function (table) {
    each(table.tHead.rows[0].cells, function (th, col) {
      if (!th.title) th.title = 'click to sort';
      th.addEventListener('click', function () {
        sortTable(table, col, th.getAttribute('aria-sort') !== 'ascending');
      });
    });
  });
  function applyFilter(text) {
    var q = text.trim().toLowerCase(), shown = 0;
    each(document.querySelectorAll('table.filterable tbody tr'), function (r) {
      var hit = q === '' || r.textContent.toLowerCase().indexOf(q) >= 0;
      r.hidden = !hit;
      if (hit) shown++;
    });
    body.setAttribute('data-visible-rows', String(shown));
  }
  var box = document.getElementById('filter');
  if (box) box.addEventListener('input', function () { applyFilter(box.value); });
  // #selftest: click the first metric header of a values table twice and check
  // that the rows come out in ascending, then descending order; then filter.
  function selftest() {
    var problems = [];
    var th = document.querySelector('table.values th[data-metric]');  // the first group with a metric
    var table = th && th.closest('table');
    if (!th) {
      problems.push('no metric column to sort');
    } else {
      var col = th.cellIndex;
      body.setAttribute('data-selftest-metric', th.getAttribute('data-metric'));
      [true, false].forEach(function (ascending) {
        th.click();
        var want = ascending ? 'ascending' : 'descending';
        if (th.getAttribute('aria-sort') !== want) problems.push('click did not sort ' + want);
        var rows = table.tBodies[0].rows, prev = null, seenMissing = false;
        for (var i = 0; i < rows.length; i++) {
          var k = key(rows[i].cells[col], true);
          if (k === null) { seenMissing = true; continue; }
          if (seenMissing) problems.push('a missing value sorted before a number');
          if (prev !== null && (ascending ? k < prev : k > prev)) problems.push('out of order at row ' + i);
          prev = k;
        }
        body.setAttribute(ascending ? 'data-selftest-first-asc' : 'data-selftest-first-desc',
                          rows.length ? rows[0].getAttribute('data-label') : '');
      });
      var first = table.tBodies[0].rows[0];
      var all = document.querySelectorAll('table.filterable tbody tr').length;
      applyFilter(first.getAttribute('data-label'));
      var visible = parseInt(body.getAttribute('data-visible-rows'), 10);
      if (!(visible >= 1) || first.hidden) problems.push('filter hid the row it matches');
      applyFilter('no row contains this \u2603 text');
      if (body.getAttribute('data-visible-rows') !== '0') problems.push('filter kept rows that do not match');
      applyFilter('');
      if (body.getAttribute('data-visible-rows') !== String(all)) problems.push('clearing the filter lost rows');
    }
    body.setAttribute('data-selftest', problems.length ? 'fail: ' + problems.join('; ') : 'pass');
  }
  if (window.location.hash === '#selftest') selftest();
  body.setAttribute('data-report-ready', '1');
})();
)JS";

using svg::Bar;
using svg::Point;

std::string esc(std::string_view s) { return html_escape(s); }

std::string status_badge(const std::string& status) {
  const char* cls = status == "ok"       ? "status-ok"
                    : status == "failed" ? "status-failed"
                    : status == "partial" ? "status-partial"
                                          : "status-other";
  return fmt::format("<span class=\"status {}\">{}</span>", cls, esc(status));
}

// 950000 → "950.0K", 1.54e9 → "1.54B": parameter counts at a glance.
std::string short_count(int64_t n) {
  const double v = static_cast<double>(n);
  if (v >= 1e9) return fmt::format("{:.2f}B", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f}K", v / 1e3);
  return std::to_string(n);
}

std::string full(double v) { return std::isfinite(v) ? fmt::format("{}", v) : ""; }

std::string axis_title(const ReportMetricSpec& m) {
  return metric_column_title(m) + (m.better == Better::lower ? ", lower is better" : ", higher is better");
}

std::string rank_table(const ReportGroup& g, size_t gi) {
  std::string s = fmt::format(
      "<div class=\"table-wrap\"><table id=\"ranks-{}\" class=\"ranks sortable filterable\"><thead><tr>"
      "<th data-type=\"text\">experiment</th><th data-type=\"text\">status</th>",
      gi);
  for (const auto& name : g.metrics) {
    const ReportMetricSpec* m = find_report_metric(name);
    s += fmt::format("<th class=\"num\" data-type=\"num\" data-metric=\"{}\" title=\"{}\">{}</th>", esc(name),
                     esc(m->title + (m->better == Better::lower ? " (lower is better)" : " (higher is better)")),
                     esc(m->label));
  }
  s += "</tr></thead><tbody>";
  for (const auto& r : g.rows) {
    s += fmt::format("<tr data-label=\"{}\" data-status=\"{}\"><td>{}</td><td>{}</td>", esc(r.name), esc(r.status),
                     esc(r.name), status_badge(r.status));
    for (const auto& name : g.metrics) {
      const MetricCell& c = r.cell(name);
      if (c.rank > 0) {
        const std::string tier = c.rank <= 2 ? fmt::format(" r{}", c.rank) : "";  // ranks 1 and 2 tinted
        s += fmt::format("<td class=\"rank{}\" data-sort=\"{}\">{}</td>", tier, c.rank, c.rank);
      } else {
        s += "<td class=\"rank missing\" data-sort=\"\">-</td>";
      }
    }
    s += "</tr>";
  }
  return s + "</tbody></table></div>";
}

std::string value_table(const ReportGroup& g, size_t gi) {
  std::string s = fmt::format(
      "<div class=\"table-wrap\"><table id=\"values-{}\" class=\"values sortable filterable\"><thead><tr>"
      "<th data-type=\"text\">experiment</th><th data-type=\"text\">status</th>"
      "<th class=\"num\" data-type=\"num\">reps</th>",
      gi);
  for (const auto& name : g.metrics) {
    const ReportMetricSpec* m = find_report_metric(name);
    s += fmt::format("<th class=\"num\" data-type=\"num\" data-metric=\"{}\" title=\"{}\">{}</th>", esc(name),
                     esc(m->title), esc(metric_column_title(*m)));
  }
  s += "<th data-type=\"text\">card</th><th class=\"num\" data-type=\"num\">parameters</th>"
       "<th data-type=\"text\">build</th><th data-type=\"text\">note</th></tr></thead><tbody>";
  for (const auto& r : g.rows) {
    s += fmt::format("<tr data-label=\"{}\" data-status=\"{}\"><td title=\"{}\">{}</td><td>{}</td>"
                     "<td class=\"num\">{}</td>",
                     esc(r.name), esc(r.status), esc("config " + r.config_hash), esc(r.name), status_badge(r.status),
                     r.repetitions);
    for (const auto& name : g.metrics) {
      const MetricCell& c = r.cell(name);
      if (!c.has_value()) {
        s += "<td class=\"num missing\" data-sort=\"\">-</td>";
        continue;
      }
      const ReportMetricSpec* m = find_report_metric(name);
      const double f = display_factor(*m);
      std::string tip = fmt::format("n = {}", c.n);
      if (std::isfinite(c.ci_low)) {
        tip += fmt::format("; 95% CI [{}, {}] {}", format_metric_value(c.ci_low * f),
                           format_metric_value(c.ci_high * f), display_unit(*m));
      }
      if (std::isfinite(c.cv)) tip += fmt::format("; CV {:.1f}%", 100 * c.cv);
      s += fmt::format("<td class=\"num\" data-sort=\"{}\" title=\"{}\">{}{}</td>", full(c.mean), esc(tip),
                       esc(format_metric_cell(c, *m, "\xC2\xB1")),
                       c.noisy ? "<span class=\"noisy\" title=\"CV above 5%: needs more repetitions\">noisy</span>"
                               : "");
    }
    s += fmt::format("<td>{}</td><td class=\"num\" data-sort=\"{}\">{}</td><td title=\"{}\">{}</td>", esc(r.card),
                     r.parameters >= 0 ? std::to_string(r.parameters) : "",
                     r.parameters < 0 ? std::string("-")
                     // A mixture of experts: the parameters a token runs too.
                     : r.active_parameters >= 0 && r.active_parameters != r.parameters
                         ? short_count(r.parameters) + " (" + short_count(r.active_parameters) + " active)"
                         : short_count(r.parameters),
                     esc(r.compiler + " " + r.build_type + "; " + r.machine), esc(r.git_commit));
    if (r.error.empty()) {
      s += "<td></td>";
    } else {
      s += fmt::format("<td class=\"error\" title=\"{}\">{}</td>", esc(truncate_utf8(r.error, 4000)),
                       esc(truncate_utf8(r.error, 200)));
    }
    s += "</tr>";
  }
  return s + "</tbody></table></div>";
}

std::string bar_charts(const ReportGroup& g, size_t gi) {
  std::string s;
  for (const auto& name : g.metrics) {
    const ReportMetricSpec* m = find_report_metric(name);
    std::vector<Bar> bars;
    for (const auto& r : g.rows) {
      const MetricCell& c = r.cell(name);
      const double f = display_factor(*m);
      bars.push_back(Bar{r.name, c.mean * f, c.ci_low * f, c.ci_high * f, c.rank == 1, c.noisy});
    }
    const std::string id = fmt::format("bar-{}-{}", gi, name);
    s += fmt::format("<figure class=\"chart bar\" id=\"{}\" data-metric=\"{}\">{}</figure>", esc(id), esc(name),
                     svg::bar_chart(id + "-svg", m->label + ": " + m->title, axis_title(*m), bars));
  }
  return s;
}

// Returns the figures and how many there are.
std::pair<std::string, size_t> pareto_charts(const ReportGroup& g, size_t gi) {
  std::string s;
  size_t count = 0;
  for (const auto& plot : pareto_plots()) {
    const ReportMetricSpec* mx = find_report_metric(plot.x);
    const ReportMetricSpec* my = find_report_metric(plot.y);
    if (!mx || !my) continue;
    std::vector<double> xs, ys;
    size_t both = 0;
    for (const auto& r : g.rows) {
      xs.push_back(r.cell(plot.x).mean);
      ys.push_back(r.cell(plot.y).mean);
      if (std::isfinite(xs.back()) && std::isfinite(ys.back())) ++both;
    }
    if (both < 2) continue;
    const std::vector<size_t> front = pareto_front(xs, ys, mx->better, my->better);
    std::vector<Point> points;
    const double fx = display_factor(*mx), fy = display_factor(*my);
    for (size_t i = 0; i < g.rows.size(); ++i) {
      points.push_back(Point{g.rows[i].name, xs[i] * fx, ys[i] * fy, false});
    }
    std::string on_front;
    for (size_t i : front) {
      points[i].front = true;
      on_front += (on_front.empty() ? "" : ", ") + g.rows[i].name;
    }
    const std::string id = fmt::format("pareto-{}-{}-{}", gi, plot.x, plot.y);
    s += fmt::format(
        "<figure class=\"chart pareto\" id=\"{}\" data-x=\"{}\" data-y=\"{}\" data-front=\"{}\">{}"
        "<figcaption>Pareto front ({} of {}): {}. No other experiment is at least as good on both axes and "
        "better on one.</figcaption></figure>",
        esc(id), esc(plot.x), esc(plot.y), front.size(),
        svg::scatter_chart(id + "-svg", my->label + " vs " + mx->label, axis_title(*mx), axis_title(*my), points,
                           front),
        front.size(), both, esc(on_front));
    ++count;
  }
  return {s, count};
}

}  // namespace

std::string render_report_html(const Report& report) {
  std::string s = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                  "<title>EfficientLLM report</title><style>";
  s += kCss;
  s += fmt::format("</style></head>\n<body data-report-ready=\"0\" data-script-errors=\"0\" data-experiments=\"{}\" "
                   "data-groups=\"{}\">\n",
                   report.experiment_count(), report.groups.size());
  s += fmt::format("<header><h1>EfficientLLM report</h1><p class=\"lead\">{} experiment{} in {} group{} (suite / "
                   "axis), from {} result file{}. Rank 1 = best in its group per metric, as in the paper's "
                   "leaderboard.</p>",
                   report.experiment_count(), report.experiment_count() == 1 ? "" : "s", report.groups.size(),
                   report.groups.size() == 1 ? "" : "s", report.files.size(), report.files.size() == 1 ? "" : "s");
  s += "</header>\n<div class=\"toolbar\"><input id=\"filter\" type=\"search\" "
       "placeholder=\"Filter rows: label, status, card, commit...\" aria-label=\"filter table rows\"> <nav>";
  for (size_t gi = 0; gi < report.groups.size(); ++gi) {
    s += fmt::format("<a href=\"#group-{}\">{}</a>", gi, esc(report.groups[gi].title()));
  }
  s += "</nav></div>\n<main>";
  for (size_t gi = 0; gi < report.groups.size(); ++gi) {
    const ReportGroup& g = report.groups[gi];
    s += fmt::format("<section class=\"group\" id=\"group-{}\" data-suite=\"{}\" data-axis=\"{}\" data-rows=\"{}\">"
                     "<h2>{} <small class=\"note\">({} experiment{})</small></h2><dl class=\"provenance\">",
                     gi, esc(g.suite), esc(g.axis), g.rows.size(), esc(g.title()), g.rows.size(),
                     g.rows.size() == 1 ? "" : "s");
    for (const auto& [k, v] : group_provenance(g)) s += fmt::format("<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    s += "</dl>";
    s += "<h3>Ranks</h3><p class=\"note\">1 = best per metric within this group; equal values share a rank "
         "(1, 2, 2, 4); - = not measured (no rank). ";
    const std::string legend = direction_legend(g.metrics);
    s += esc(legend) + (legend.empty() ? "</p>" : ".</p>") + rank_table(g, gi);
    s += "<h3>Values</h3><p class=\"note\">Mean over repetitions; \xC2\xB1 is the half-width of the 95% confidence "
         "interval of the mean (Student t, shown when n \xE2\x89\xA5 2); <span class=\"noisy\">noisy</span> marks a "
         "coefficient of variation above 5%. Hover a value for n, the interval and the CV.</p>";
    s += value_table(g, gi);
    if (!g.metrics.empty()) {
      s += "<h3>Charts</h3><div class=\"charts\">" + bar_charts(g, gi) + "</div>";
    }
    auto [pareto, n_pareto] = pareto_charts(g, gi);
    if (n_pareto > 0) {
      s += "<h3>Pareto fronts</h3><p class=\"note\">Trade-offs between two metrics: the highlighted points, joined "
           "by the dashed line, are the experiments no other one beats on both.</p><div class=\"charts\">" +
           pareto + "</div>";
    }
    s += "</section>\n";
  }
  s += "</main><footer><p>Source files:</p><ul class=\"sources\">";
  for (const auto& f : report.files) s += "<li><code>" + esc(f) + "</code></li>";
  s += "</ul>";
  if (!report.warnings.empty()) {
    s += "<p>Warnings while reading:</p><ul class=\"warnings\">";
    for (const auto& w : report.warnings) s += "<li>" + esc(w) + "</li>";
    s += "</ul>";
  }
  s += "<p>Generated by <code>efficientllm report</code>; the schema and the rules are in docs/RESULTS.md.</p>"
       "</footer>\n<script>";
  s += kScript;
  s += "</script>\n</body></html>\n";
  return s;
}

}  // namespace el::bench
