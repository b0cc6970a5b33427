// report.cpp — the report model: reading, merging, grouping, ranking, Pareto
// fronts, and the formatting the renderers share. Text, Markdown and CSV:
// report_text.cpp; HTML: report_html.cpp.
#include "bench/report.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <system_error>
#include <unordered_map>

#include <fmt/format.h>

#include "bench/result_stats.h"
#include "bench/table.h"

namespace el::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string json_text(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return "";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

double json_num(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

// "fixture CPU (2 cores); GPU: 1 x NVIDIA H200" from a record's machine block.
std::string machine_text(const json& m) {
  if (!m.is_object()) return "unknown";
  std::string cpu = json_text(m, "cpu_model");
  if (cpu.empty()) cpu = "unknown CPU";
  const double cores = json_num(m, "physical_cores");
  if (std::isfinite(cores) && cores > 0) cpu += fmt::format(" ({} cores)", static_cast<int64_t>(cores));
  std::string gpu = "none";
  if (m.contains("gpu") && m["gpu"].is_object()) {
    const json& g = m["gpu"];
    gpu = json_text(g, "model");
    if (gpu.empty()) gpu = "unknown";
    const double count = json_num(g, "count");
    if (std::isfinite(count) && count > 1) gpu = fmt::format("{} x {}", static_cast<int64_t>(count), gpu);
    const std::string driver = json_text(g, "driver");
    if (!driver.empty()) gpu += ", driver " + driver;
  }
  return cpu + "; GPU: " + gpu;
}

MetricCell cell_from_summary(const json& s) {
  MetricCell c;
  c.mean = json_num(s, "mean");
  const double n = json_num(s, "n");
  c.n = std::isfinite(n) && n > 0 ? static_cast<size_t>(n) : 0;
  c.cv = json_num(s, "cv");
  c.noisy = s.contains("noisy") && s["noisy"].is_boolean() && s["noisy"].get<bool>();
  if (s.contains("ci95") && s["ci95"].is_array() && s["ci95"].size() == 2 && s["ci95"][0].is_number() &&
      s["ci95"][1].is_number()) {
    c.ci_low = s["ci95"][0].get<double>();
    c.ci_high = s["ci95"][1].get<double>();
  }
  return c;
}

// A metric the record's summary lacks, summarised from its successful runs.
MetricCell cell_from_runs(const json& record, const ReportMetricSpec& m) {
  std::vector<json::json_pointer> pointers;
  if (!m.run_pointer.empty()) {
    pointers.emplace_back(m.run_pointer);
  } else {
    pointers.emplace_back("/metrics/" + m.name);
    pointers.emplace_back("/" + m.name);
  }
  std::vector<double> values;
  if (record.contains("runs") && record["runs"].is_array()) {
    for (const auto& run : record["runs"]) {
      if (!run.is_object() || run.value("status", "") != "ok") continue;
      for (const auto& p : pointers) {
        if (run.contains(p) && run.at(p).is_number()) {
          values.push_back(run.at(p).get<double>());
          break;
        }
      }
    }
  }
  MetricCell c;
  if (values.empty()) return c;
  const MetricSummary s = summarize_metric(values);
  c.mean = s.s.mean;
  c.n = s.s.n;
  c.ci_low = s.ci95_low;
  c.ci_high = s.ci95_high;
  c.cv = s.cv;
  c.noisy = s.noisy;
  return c;
}

ReportRow make_row(const json& r, std::vector<std::string> sources) {
  ReportRow row;
  row.label = json_text(r, "label");
  row.suite = json_text(r, "suite");
  row.axis = json_text(r, "axis");
  row.status = json_text(r, "status");
  if (row.status.empty()) row.status = "unknown";
  row.error = json_text(r, "error");
  if (row.error.empty()) row.error = json_text(r, "reason");
  row.card = json_text(r, "card");
  row.config_hash = json_text(r, "config_hash");
  row.run_id = json_text(r, "run_id");
  const double reps = json_num(r, "repetitions");
  row.repetitions = std::isfinite(reps) ? static_cast<int64_t>(reps)
                    : r.contains("runs") && r["runs"].is_array() ? static_cast<int64_t>(r["runs"].size())
                                                                  : 0;
  const double params = json_num(r, "parameters");
  if (std::isfinite(params)) row.parameters = static_cast<int64_t>(params);
  const double active = json_num(r, "active_parameters");
  if (std::isfinite(active)) row.active_parameters = static_cast<int64_t>(active);
  const json build = r.value("build", json::object());
  row.git_commit = json_text(build, "git_commit");
  row.compiler = json_text(build, "compiler");
  row.build_type = json_text(build, "build_type");
  row.machine = machine_text(r.value("machine", json()));
  row.sources = std::move(sources);
  const json summary = r.value("summary", json::object());
  for (const auto& m : report_metrics()) {
    MetricCell c = summary.is_object() && summary.contains(m.name) && summary[m.name].is_object()
                       ? cell_from_summary(summary[m.name])
                       : cell_from_runs(r, m);
    if (c.has_value()) row.metrics[m.name] = c;
  }
  return row;
}

// Records of one experiment → one record. Records without runs (a
// not-supported row, say) carry no measurement: merged only when nothing else
// is there, so their status survives.
Result<json> merge_experiment(const std::vector<json>& records) {
  if (records.size() == 1) return records[0];
  std::vector<json> with_runs;
  for (const auto& r : records) {
    if (r.contains("runs") && r["runs"].is_array() && !r["runs"].empty()) with_runs.push_back(r);
  }
  if (with_runs.empty()) return records[0];
  if (with_runs.size() == 1) return with_runs[0];
  return merge_repetition_records(with_runs);
}

void join_into(std::string& out, const std::string& s) {
  if (s.empty()) return;
  out += out.empty() ? s : "; " + s;
}

}  // namespace

// ---- metrics ------------------------------------------------------------------

const std::vector<ReportMetricSpec>& report_metrics() {
  // THE direction table: every renderer, rank and Pareto front reads it.
  static const std::vector<ReportMetricSpec> metrics = {
      {"perplexity", "PPL", "validation perplexity", "", Better::lower, ""},
      {"val_loss", "val loss", "validation loss", "nats/token", Better::lower, ""},
      {"loss", "loss", "fine-tuning loss", "", Better::lower, ""},
      {"train_loss", "train loss", "fine-tuning training loss (last tenth of the steps)", "nats/token",
       Better::lower, ""},
      {"quality", "quality", "task quality (average score)", "", Better::higher, ""},
      {"accuracy", "accuracy", "accuracy", "", Better::higher, ""},
      {"amu_live_gb", "AMU", "average memory utilisation (live tensor bytes)", "GB", Better::lower, ""},
      {"amu_rss_gb", "AMU RSS", "average resident memory of the process", "GB", Better::lower, ""},
      {"pcu", "PCU", "compute utilisation (mean device utilisation)", "fraction", Better::higher,
       "/metrics/memory_energy/mean_device_util"},
      {"mfu", "MFU", "model FLOP utilisation", "fraction", Better::higher, ""},
      {"al_seconds", "AL", "average latency per optimizer step", "s", Better::lower, ""},
      {"latency_ms", "latency", "latency per request", "ms", Better::lower, ""},
      {"tt_tokens_per_param_per_second", "TT", "token throughput per parameter", "tokens/param/s", Better::higher,
       ""},
      {"tt_tokens_per_active_param_per_second", "TT active",
       "token throughput per active parameter (a mixture of experts: the k of E experts a token runs)",
       "tokens/param/s", Better::higher, ""},
      {"st_samples_per_param_per_second", "ST", "sample throughput per parameter", "samples/param/s",
       Better::higher, ""},
      {"samples_per_second", "samples/s", "fine-tuning sample throughput", "samples/s", Better::higher, ""},
      {"it_tokens_per_second", "IT", "inference throughput (generated tokens/s, largest batch)", "tokens/s",
       Better::higher, ""},
      {"ttft_s", "TTFT", "time to first token (median, smallest batch)", "s", Better::lower, ""},
      {"tpot_s", "TPOT", "time per output token (median, smallest batch)", "s", Better::lower, ""},
      {"latency_s", "latency", "latency per request (mean, smallest batch)", "s", Better::lower, ""},
      {"j_per_token", "J/token", "energy per generated token", "J/token", Better::lower, ""},
      {"choice_acc", "acc", "multiple-choice accuracy", "fraction", Better::higher, ""},
      {"weight_bytes", "weights", "bytes of the weights (a mixture of experts: all E experts)", "bytes",
       Better::lower, ""},
      {"bits_per_weight", "bits/weight", "bits per quantized weight (codes + scales)", "bits", Better::lower, ""},
      {"tokens_per_second", "tok/s", "training throughput", "tokens/s", Better::higher, ""},
      {"aec_avg_power_w", "AEC", "average energy consumption (mean power)", "W", Better::lower, ""},
      {"energy_j", "energy", "energy of the run", "J", Better::lower, ""},
      {"mcr", "MCR", "model compression rate", "", Better::higher, ""},
      {"compression_ratio", "compression", "compression ratio", "x", Better::higher, ""},
  };
  return metrics;
}

const ReportMetricSpec* find_report_metric(std::string_view name) {
  for (const auto& m : report_metrics()) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

const std::vector<ParetoPlotSpec>& pareto_plots() {
  static const std::vector<ParetoPlotSpec> plots = {
      {"amu_live_gb", "perplexity"},  // quality vs memory
      {"al_seconds", "perplexity"},   // quality vs speed (every CPU run has both)
      {"aec_avg_power_w", "al_seconds"},
      {"mcr", "quality"},
      {"compression_ratio", "quality"},
  };
  return plots;
}

// ---- model ----------------------------------------------------------------------

const MetricCell& ReportRow::cell(const std::string& metric) const {
  static const MetricCell empty;
  auto it = metrics.find(metric);
  return it == metrics.end() ? empty : it->second;
}

std::string ReportGroup::title() const {
  return (suite.empty() ? std::string("(no suite)") : suite) + " / " + (axis.empty() ? "(no axis)" : axis);
}

size_t Report::experiment_count() const {
  size_t n = 0;
  for (const auto& g : groups) n += g.rows.size();
  return n;
}

Result<std::vector<std::string>> collect_result_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  std::set<std::string> seen;
  auto add = [&](const std::string& path) {
    std::error_code ec;
    const fs::path canon = fs::weakly_canonical(path, ec);
    if (seen.insert(ec ? path : canon.string()).second) files.push_back(path);
  };
  for (const auto& in : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(in, ec);
    if (ec || !fs::exists(st)) {
      return make_error("no such file or directory", in, "pass result files (.jsonl) or directories holding them");
    }
    if (!fs::is_directory(st)) {
      add(in);
      continue;
    }
    std::vector<std::string> found;
    for (fs::directory_iterator it(in, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code fec;
      if (it->path().extension() == ".jsonl" && it->is_regular_file(fec)) found.push_back(it->path().string());
    }
    if (ec) return make_error("cannot list the directory: " + ec.message(), in);
    if (found.empty()) {
      return make_error("no *.jsonl result files in the directory", in,
                        "point at the --results-dir of `efficientllm bench` or at .jsonl files");
    }
    std::sort(found.begin(), found.end());
    for (const auto& f : found) add(f);
  }
  if (files.empty()) return make_error("no result files given", "report");
  return files;
}

Result<Report> build_report(const JsonlRecords& recs, const std::vector<std::string>& files) {
  Report report;
  report.files = files;
  if (recs.records.empty()) {
    return make_error("no result records in the input", files.empty() ? "report" : files[0],
                      "the files are empty: run `efficientllm bench` first");
  }
  // 1. Drop exact duplicates; bucket the rest by config hash (first-seen order).
  std::unordered_map<std::string, std::string> seen;  // dump -> source
  std::vector<std::string> order;
  std::map<std::string, std::vector<size_t>> by_hash;
  for (size_t i = 0; i < recs.records.size(); ++i) {
    const std::string source = i < recs.sources.size() ? recs.sources[i] : fmt::format("record {}", i);
    const std::string dump = recs.records[i].dump();
    auto [it, fresh] = seen.emplace(dump, source);
    if (!fresh) {
      report.warnings.push_back(
          fmt::format("{}: the same record as {} (a copy), counted once", source, it->second));
      continue;
    }
    // Repetitions = same config hash in the same suite, on the same build and
    // machine. The same config on another build or machine is another row (a
    // comparison, not more samples of one distribution); so is the same config
    // in another suite (each suite's group shows its own row). A record
    // without a hash is an experiment of its own.
    const json& r = recs.records[i];
    std::string key = json_text(r, "config_hash");
    if (key.empty()) {
      key = "\x01" + source;
    } else {
      const json build = r.value("build", json::object());
      for (const std::string& part :
           {json_text(r, "suite"), json_text(r, "axis"), json_text(build, "git_commit"), json_text(build, "compiler"),
            json_text(build, "build_type"), machine_text(r.value("machine", json()))}) {
        key += "\x1f" + part;
      }
    }
    if (!by_hash.count(key)) order.push_back(key);
    by_hash[key].push_back(i);
  }
  // 2. One row per experiment, grouped by suite + axis.
  std::map<std::pair<std::string, std::string>, size_t> group_of;
  for (const auto& key : order) {
    std::vector<json> records;
    std::vector<std::string> sources;
    for (size_t i : by_hash[key]) {
      records.push_back(recs.records[i]);
      sources.push_back(i < recs.sources.size() ? recs.sources[i] : "");
    }
    auto merged = merge_experiment(records);
    if (!merged.ok()) {
      Error e = merged.error();
      e.where = sources[0];
      return e;
    }
    ReportRow row = make_row(merged.value(), std::move(sources));
    const auto gk = std::make_pair(row.suite, row.axis);
    auto git = group_of.find(gk);
    if (git == group_of.end()) {
      git = group_of.emplace(gk, report.groups.size()).first;
      report.groups.push_back(ReportGroup{row.suite, row.axis, {}, {}});
    }
    report.groups[git->second].rows.push_back(std::move(row));
  }
  // 3. Per group: unique names, the metrics shown, ranks.
  for (auto& g : report.groups) {
    // Unique names: a label shared by rows of several builds gets "@commit",
    // one shared by several configs the hash prefix, anything left "#n".
    std::map<std::string, std::set<std::string>> commits, hashes;
    for (const auto& r : g.rows) {
      commits[r.label].insert(r.git_commit);
      hashes[r.label].insert(r.config_hash);
    }
    std::set<std::string> names;
    for (size_t i = 0; i < g.rows.size(); ++i) {
      ReportRow& r = g.rows[i];
      r.name = r.label.empty() ? "(no label)" : r.label;
      for (char& c : r.name) {
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';  // one line in every table
      }
      if (commits[r.label].size() > 1) r.name += " @" + (r.git_commit.empty() ? "unknown" : r.git_commit);
      if (hashes[r.label].size() > 1 && !r.config_hash.empty()) r.name += " [" + r.config_hash.substr(0, 8) + "]";
      while (!names.insert(r.name).second) r.name += fmt::format(" #{}", i + 1);
    }
    for (const auto& m : report_metrics()) {
      std::vector<double> values;
      bool any = false;
      for (const auto& r : g.rows) {
        values.push_back(r.cell(m.name).mean);
        any = any || r.cell(m.name).has_value();
      }
      if (!any) continue;
      g.metrics.push_back(m.name);
      const std::vector<int> ranks = rank_values(values, m.better);
      for (size_t i = 0; i < g.rows.size(); ++i) {
        auto it = g.rows[i].metrics.find(m.name);
        if (it != g.rows[i].metrics.end()) it->second.rank = ranks[i];
      }
    }
  }
  for (const auto& w : recs.warnings) report.warnings.push_back(w);
  return report;
}

Result<Report> load_report(const std::vector<std::string>& inputs) {
  EL_TRY_ASSIGN(std::vector<std::string> files, collect_result_files(inputs));
  EL_TRY_ASSIGN(JsonlRecords recs, read_jsonl_records(files));
  return build_report(recs, files);
}

std::vector<int> rank_values(const std::vector<double>& values, Better better) {
  auto strictly_better = [better](double a, double b) {  // a beats b beyond float noise
    const double tol = 1e-9 * std::max(std::fabs(a), std::fabs(b));
    return better == Better::lower ? a < b - tol : a > b + tol;
  };
  std::vector<int> ranks(values.size(), 0);
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) continue;
    int r = 1;
    for (size_t j = 0; j < values.size(); ++j) {
      if (j != i && std::isfinite(values[j]) && strictly_better(values[j], values[i])) ++r;
    }
    ranks[i] = r;
  }
  return ranks;
}

std::vector<size_t> pareto_front(const std::vector<double>& x, const std::vector<double>& y, Better x_better,
                                 Better y_better) {
  auto at_least = [](double a, double b, Better d) { return d == Better::lower ? a <= b : a >= b; };
  auto strictly = [](double a, double b, Better d) { return d == Better::lower ? a < b : a > b; };
  const size_t n = std::min(x.size(), y.size());
  std::vector<size_t> front;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) continue;
    bool dominated = false;
    for (size_t j = 0; j < n && !dominated; ++j) {
      if (j == i || !std::isfinite(x[j]) || !std::isfinite(y[j])) continue;
      dominated = at_least(x[j], x[i], x_better) && at_least(y[j], y[i], y_better) &&
                  (strictly(x[j], x[i], x_better) || strictly(y[j], y[i], y_better));
    }
    if (!dominated) front.push_back(i);
  }
  std::sort(front.begin(), front.end(), [&](size_t a, size_t b) { return x[a] != x[b] ? x[a] < x[b] : y[a] < y[b]; });
  return front;
}

// ---- shared formatting ----------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> group_provenance(const ReportGroup& g) {
  std::vector<std::string> builds, machines, runs;
  auto add_unique = [](std::vector<std::string>& v, const std::string& s) {
    if (!s.empty() && std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
  };
  for (const auto& r : g.rows) {
    std::string b = r.git_commit.empty() ? "unknown commit" : r.git_commit;
    const std::string how = r.compiler + (r.compiler.empty() || r.build_type.empty() ? "" : " ") + r.build_type;
    if (!how.empty()) b += " (" + how + ")";
    add_unique(builds, b);
    add_unique(machines, r.machine);
    add_unique(runs, r.run_id);
  }
  std::pair<std::string, std::string> b{"build", ""}, m{"machine", ""}, ru{"run ids", ""};
  for (const auto& s : builds) join_into(b.second, s);
  for (const auto& s : machines) join_into(m.second, s);
  for (const auto& s : runs) join_into(ru.second, s);
  return {b, m, ru};
}

std::string direction_legend(const std::vector<std::string>& metrics) {
  std::string lower, higher;
  for (const auto& name : metrics) {
    const ReportMetricSpec* m = find_report_metric(name);
    if (!m) continue;
    std::string& s = m->better == Better::lower ? lower : higher;
    s += (s.empty() ? "" : ", ") + m->label;
  }
  std::string out;
  if (!lower.empty()) out += "lower is better: " + lower;
  if (!higher.empty()) out += (out.empty() ? "" : "; ") + std::string("higher is better: ") + higher;
  return out;
}

std::string format_metric_value(double v) {
  if (!std::isfinite(v)) return "-";
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e6 || a < 1e-3) return fmt::format("{:.3e}", v);
  // 4 significant digits (0.02831, 1.536, 131.0, 1692); larger integers whole.
  const int decimals = std::max(0, 3 - static_cast<int>(std::floor(std::log10(a))));
  return fmt::format("{:.{}f}", v, decimals);
}

double display_factor(const ReportMetricSpec& m) { return m.unit == "fraction" ? 100.0 : 1.0; }

std::string display_unit(const ReportMetricSpec& m) { return m.unit == "fraction" ? "%" : m.unit; }

std::string format_metric_cell(const MetricCell& c, const ReportMetricSpec& m, std::string_view plus_minus) {
  if (!c.has_value()) return "-";
  const double f = display_factor(m);
  std::string s = format_metric_value(c.mean * f);
  if (std::isfinite(c.ci_low) && std::isfinite(c.ci_high)) {
    const double half = (c.ci_high - c.ci_low) / 2 * f;
    // Identical repetitions leave float noise (3e-16), not an interval.
    const bool zero = std::fabs(half) <= 1e-9 * std::fabs(c.mean * f);
    s += fmt::format(" {} {}", plus_minus, zero ? std::string("0") : format_number(std::fabs(half), 3));
  }
  return s;
}

std::string metric_column_title(const ReportMetricSpec& m) {
  const std::string unit = display_unit(m);
  return unit.empty() ? m.label : m.label + " (" + unit + ")";
}

std::string truncate_utf8(std::string_view s, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;  // continuation byte
    if (chars++ == max_chars) return std::string(s.substr(0, i)) + "\xE2\x80\xA6";  // "…"
  }
  return std::string(s);
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string csv_field(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

std::string csv_text_field(std::string_view s) {
  if (!s.empty() && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r')) {
    return csv_field("'" + std::string(s));
  }
  return csv_field(s);
}

}  // namespace el::bench
