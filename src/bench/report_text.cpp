// report_text.cpp — the text, Markdown and CSV renderers of the report
// (bench/report.h) and the format names.
#include <cmath>

#include <fmt/format.h>

#include "bench/report.h"
#include "bench/table.h"

namespace el::bench {
namespace {

std::string markdown_cell(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n' || c == '\r') out += ' ';
    else if (c == '<') out += "&lt;";  // no raw HTML through a Markdown renderer
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                           size_t first_numeric) {
  auto line = [](const std::vector<std::string>& cells) {
    std::string s = "|";
    for (const auto& c : cells) {
      s += ' ';  // (one += per piece: GCC 12 warns a false -Wrestrict on " " + x + " |")
      s += markdown_cell(c);
      s += " |";
    }
    return s + "\n";
  };
  std::string out = line(header) + "|";
  for (size_t i = 0; i < header.size(); ++i) out += i >= first_numeric ? "---:|" : "---|";
  out += "\n";
  for (const auto& r : rows) out += line(r);
  return out;
}

std::string first_line(const std::string& s) {
  const size_t nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl) + " ...";
}

std::string full_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : ""; }

}  // namespace

// ---- renderers ------------------------------------------------------------------------

Result<ReportFormat> parse_report_format(const std::string& name) {
  if (name == "text" || name == "txt") return ReportFormat::text;
  if (name == "md" || name == "markdown") return ReportFormat::markdown;
  if (name == "csv") return ReportFormat::csv;
  if (name == "html") return ReportFormat::html;
  return make_error(fmt::format("unknown report format '{}'", name), "--format", "use text, md, csv, html or all");
}

const char* report_extension(ReportFormat format) {
  switch (format) {
    case ReportFormat::text: return "txt";
    case ReportFormat::markdown: return "md";
    case ReportFormat::csv: return "csv";
    case ReportFormat::html: return "html";
  }
  return "txt";
}

std::string render_report(const Report& report, ReportFormat format) {
  switch (format) {
    case ReportFormat::text: return render_report_text(report);
    case ReportFormat::markdown: return render_report_markdown(report);
    case ReportFormat::csv: return render_report_csv(report);
    case ReportFormat::html: return render_report_html(report);
  }
  return {};
}

namespace {

// The rank and value tables of a group as header + rows (shared by text and
// Markdown; `pm` is the ± sign the format can show).
struct GroupTables {
  std::vector<std::string> rank_header, value_header;
  std::vector<std::vector<std::string>> ranks, values;
};

GroupTables group_tables(const ReportGroup& g, std::string_view pm) {
  GroupTables t;
  t.rank_header = {"experiment", "status"};
  t.value_header = {"experiment", "status", "reps"};
  for (const auto& name : g.metrics) {
    const ReportMetricSpec* m = find_report_metric(name);
    t.rank_header.push_back(m->label);
    t.value_header.push_back(metric_column_title(*m));
  }
  for (const auto& r : g.rows) {
    std::vector<std::string> rank_row = {r.name, r.status};
    std::vector<std::string> value_row = {r.name, r.status, std::to_string(r.repetitions)};
    for (const auto& name : g.metrics) {
      const MetricCell& c = r.cell(name);
      rank_row.push_back(c.rank > 0 ? std::to_string(c.rank) : "-");
      value_row.push_back(format_metric_cell(c, *find_report_metric(name), pm) + (c.noisy ? " (noisy)" : ""));
    }
    t.ranks.push_back(std::move(rank_row));
    t.values.push_back(std::move(value_row));
  }
  return t;
}

std::string report_heading(const Report& report) {
  return fmt::format("{} experiment{} in {} group{}, from {} file{}", report.experiment_count(),
                     report.experiment_count() == 1 ? "" : "s", report.groups.size(),
                     report.groups.size() == 1 ? "" : "s", report.files.size(), report.files.size() == 1 ? "" : "s");
}

constexpr const char* kRankRule =
    "rank 1 = best in the group per metric; equal values share a rank (1, 2, 2, 4); - = not measured";
constexpr const char* kValueRule = "mean over repetitions; ± = half-width of the 95% CI of the mean (n >= 2); "
                                   "noisy = coefficient of variation above 5%";

}  // namespace

std::string render_report_text(const Report& report) {
  std::string out = "EfficientLLM report: " + report_heading(report) + "\n";
  for (const auto& f : report.files) out += "  " + f + "\n";
  for (const auto& g : report.groups) {
    out += fmt::format("\n== {}: {} experiment{} ==\n", g.title(), g.rows.size(), g.rows.size() == 1 ? "" : "s");
    for (const auto& [k, v] : group_provenance(g)) out += fmt::format("{:<9}{}\n", k + ":", v);
    const GroupTables t = group_tables(g, "+-");
    out += fmt::format("\nRanks ({})\n", kRankRule);
    if (!g.metrics.empty()) out += direction_legend(g.metrics) + "\n";
    TextTable ranks(t.rank_header);
    for (const auto& r : t.ranks) ranks.add_row(r);
    out += ranks.render();
    out += "\nValues (mean +- half-width of the 95% CI when n >= 2; (noisy) = CV > 5%)\n";
    TextTable values(t.value_header);
    for (const auto& r : t.values) values.add_row(r);
    out += values.render();
    bool header = false;
    for (const auto& r : g.rows) {
      if (r.error.empty()) continue;
      if (!header) out += "\nErrors:\n";
      header = true;
      out += fmt::format("  {} ({}): {}\n", r.name, r.status, truncate_utf8(first_line(r.error), 200));
    }
  }
  return out;
}

std::string render_report_markdown(const Report& report) {
  std::string out = "# EfficientLLM report\n\n" + report_heading(report) + ":\n\n";
  for (const auto& f : report.files) out += "- `" + markdown_cell(f) + "`\n";
  for (const auto& g : report.groups) {
    out += fmt::format("\n## {}\n\n", markdown_cell(g.title()));
    for (const auto& [k, v] : group_provenance(g)) out += fmt::format("- {}: {}\n", k, markdown_cell(v));
    const GroupTables t = group_tables(g, "±");
    out += fmt::format("\n### Ranks\n\n{}", std::string(kRankRule));
    if (!g.metrics.empty()) out += "; " + direction_legend(g.metrics);
    out += ".\n\n" + markdown_table(t.rank_header, t.ranks, 2);
    out += fmt::format("\n### Values\n\n{}.\n\n", std::string(kValueRule));
    out += markdown_table(t.value_header, t.values, 2);
    bool header = false;
    for (const auto& r : g.rows) {
      if (r.error.empty()) continue;
      if (!header) out += "\nErrors:\n\n";
      header = true;
      out += fmt::format("- {} ({}): {}\n", markdown_cell(r.name), markdown_cell(r.status),
                         markdown_cell(truncate_utf8(first_line(r.error), 200)));
    }
  }
  return out;
}

std::string render_report_csv(const Report& report) {
  std::string out =
      "suite,axis,experiment,label,status,repetitions,metric,unit,better,mean,ci95_low,ci95_high,n,cv,noisy,"
      "rank,card,parameters,active_parameters,git_commit,machine,run_id,config_hash,error\n";
  for (const auto& g : report.groups) {
    for (const auto& r : g.rows) {
      auto line = [&](const ReportMetricSpec* m) {
        const MetricCell empty;
        const MetricCell& c = m ? r.cell(m->name) : empty;
        std::vector<std::string> f = {
            csv_text_field(r.suite),
            csv_text_field(r.axis),
            csv_text_field(r.name),
            csv_text_field(r.label),
            csv_text_field(r.status),
            std::to_string(r.repetitions),
            m ? m->name : "",
            m ? csv_field(m->unit) : "",
            m ? (m->better == Better::lower ? "lower" : "higher") : "",
            full_number(c.mean),
            full_number(c.ci_low),
            full_number(c.ci_high),
            c.has_value() ? std::to_string(c.n) : "",
            full_number(c.cv),
            c.has_value() && std::isfinite(c.cv) ? (c.noisy ? "true" : "false") : "",
            c.rank > 0 ? std::to_string(c.rank) : "",
            csv_text_field(r.card),
            r.parameters >= 0 ? std::to_string(r.parameters) : "",
            r.active_parameters >= 0 ? std::to_string(r.active_parameters) : "",
            csv_text_field(r.git_commit),
            csv_text_field(r.machine),
            csv_text_field(r.run_id),
            csv_text_field(r.config_hash),
            csv_text_field(r.error),
        };
        std::string s;
        for (size_t i = 0; i < f.size(); ++i) s += (i ? "," : "") + f[i];
        out += s + "\n";
      };
      if (g.metrics.empty()) line(nullptr);
      for (const auto& name : g.metrics) line(find_report_metric(name));
    }
  }
  return out;
}

}  // namespace el::bench
