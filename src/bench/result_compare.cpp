#include "bench/result_compare.h"

#include <cmath>
#include <map>

#include "bench/result_stats.h"
#include "bench/table.h"

namespace el::bench {
namespace {

double num(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

std::string name_of(const nlohmann::json& r) { return r.value("suite", "") + "/" + r.value("label", ""); }

// Groups records by config hash, in first-seen order; several records with
// one hash are repetitions of one experiment and are merged.
Result<std::vector<nlohmann::json>> merge_by_hash(const std::vector<nlohmann::json>& records) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<nlohmann::json>> groups;
  for (const auto& r : records) {
    const std::string h = r.value("config_hash", "");
    if (!groups.count(h)) order.push_back(h);
    groups[h].push_back(r);
  }
  std::vector<nlohmann::json> out;
  for (const auto& h : order) {
    if (groups[h].size() == 1) {
      out.push_back(groups[h][0]);
      continue;
    }
    EL_TRY_ASSIGN(nlohmann::json merged, merge_repetition_records(groups[h]));
    out.push_back(std::move(merged));
  }
  return out;
}

ExperimentComparison compare_pair(const nlohmann::json& a, const nlohmann::json& b, const std::string& by) {
  ExperimentComparison e{name_of(a) == name_of(b) ? name_of(a) : name_of(a) + " vs " + name_of(b), by, {}};
  const nlohmann::json sa = a.value("summary", nlohmann::json::object());
  const nlohmann::json sb = b.value("summary", nlohmann::json::object());
  for (const auto& m : compared_metrics()) {
    if (!sa.contains(m) || !sb.contains(m)) continue;
    e.metrics.push_back(compare_metric(m, sa[m], sb[m]));
  }
  return e;
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  q += '"';
  return q;
}

std::string full_number(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : ""; }
// 4 significant digits: enough to see a 1% change in the table itself.
std::string short_number(double v) { return std::isfinite(v) ? fmt::format("{:.4g}", v) : "n/a"; }

}  // namespace

const std::vector<std::string>& compared_metrics() {
  static const std::vector<std::string> m = {"tokens_per_second", "al_seconds",      "mfu",
                                             "amu_live_gb",       "aec_avg_power_w", "perplexity"};
  return m;
}

MetricComparison compare_metric(const std::string& name, const nlohmann::json& a, const nlohmann::json& b) {
  MetricComparison c;
  c.metric = name;
  c.unit = a.value("unit", "");
  c.a = num(a, "mean");
  c.b = num(b, "mean");
  c.ratio = c.a != 0 && std::isfinite(c.a) && std::isfinite(c.b) ? c.b / c.a : NAN;
  c.n_a = a.value("n", size_t{0});
  c.n_b = b.value("n", size_t{0});
  const bool have_ci = a.contains("ci95") && a["ci95"].is_array() && a["ci95"].size() == 2 &&
                       b.contains("ci95") && b["ci95"].is_array() && b["ci95"].size() == 2 &&
                       a["ci95"][0].is_number() && a["ci95"][1].is_number() && b["ci95"][0].is_number() &&
                       b["ci95"][1].is_number();
  if (c.n_a < 2 || c.n_b < 2 || !have_ci) {
    c.verdict = fmt::format("n={}, noise unknown", std::min(c.n_a, c.n_b));
    return c;
  }
  const double alo = a["ci95"][0], ahi = a["ci95"][1], blo = b["ci95"][0], bhi = b["ci95"][1];
  c.beyond_noise = ahi < blo || bhi < alo;
  c.verdict = c.beyond_noise ? "beyond noise" : "within noise";
  return c;
}

Result<Comparison> compare_results(const std::vector<nlohmann::json>& a_in, const std::vector<nlohmann::json>& b_in,
                                   const std::string& name_a, const std::string& name_b) {
  EL_TRY_ASSIGN(std::vector<nlohmann::json> a, merge_by_hash(a_in));
  EL_TRY_ASSIGN(std::vector<nlohmann::json> b, merge_by_hash(b_in));
  Comparison out;
  std::vector<bool> used_a(a.size(), false), used_b(b.size(), false);
  // 1. same config hash
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < b.size(); ++j) {
      if (!used_b[j] && a[i].value("config_hash", "") == b[j].value("config_hash", "")) {
        out.experiments.push_back(compare_pair(a[i], b[j], "config_hash"));
        used_a[i] = used_b[j] = true;
        break;
      }
    }
  }
  // 2. suite + label, when unique among the leftovers of both sides
  std::map<std::string, std::vector<size_t>> left_a, left_b;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!used_a[i]) left_a[name_of(a[i])].push_back(i);
  }
  for (size_t j = 0; j < b.size(); ++j) {
    if (!used_b[j]) left_b[name_of(b[j])].push_back(j);
  }
  for (const auto& [key, ia] : left_a) {
    auto it = left_b.find(key);
    if (ia.size() != 1 || it == left_b.end() || it->second.size() != 1) continue;
    out.experiments.push_back(compare_pair(a[ia[0]], b[it->second[0]], "suite+label"));
    used_a[ia[0]] = used_b[it->second[0]] = true;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (!used_a[i]) out.only_a.push_back(name_of(a[i]));
  }
  for (size_t j = 0; j < b.size(); ++j) {
    if (!used_b[j]) out.only_b.push_back(name_of(b[j]));
  }
  if (out.experiments.empty()) {
    return make_error(fmt::format("no common experiments: {} ({} records) and {} ({} records) share no config "
                                  "hash and no suite+label",
                                  name_a, a.size(), name_b, b.size()),
                      "compare", "compare results of the same suite");
  }
  return out;
}

std::string render_comparison(const Comparison& c, CompareFormat format) {
  const std::vector<std::string> header = {"experiment", "matched by", "metric", "unit", "A",
                                           "B",          "B/A",        "n A",    "n B",  "verdict"};
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : c.experiments) {
    for (const auto& m : e.metrics) {
      const bool csv = format == CompareFormat::csv;
      rows.push_back({e.name, e.matched_by, m.metric, m.unit, csv ? full_number(m.a) : short_number(m.a),
                      csv ? full_number(m.b) : short_number(m.b),
                      csv ? full_number(m.ratio) : std::isfinite(m.ratio) ? fmt::format("{:.3f}", m.ratio) : "n/a",
                      std::to_string(m.n_a), std::to_string(m.n_b), m.verdict});
    }
  }
  std::string out;
  if (format == CompareFormat::text) {
    TextTable t(header);
    for (auto& r : rows) t.add_row(r);
    out = t.render();
  } else if (format == CompareFormat::markdown) {
    auto line = [](const std::vector<std::string>& cells) {
      std::string s = "|";
      for (const auto& x : cells) {
        std::string esc;
        for (char ch : x) {
          if (ch == '|') esc += '\\';
          esc += ch;
        }
        s += ' ';
        s += esc;
        s += " |";
      }
      return s + "\n";
    };
    out = line(header);
    out += "|";
    for (size_t i = 0; i < header.size(); ++i) out += i >= 4 && i <= 8 ? "---:|" : "---|";
    out += "\n";
    for (auto& r : rows) out += line(r);
  } else {
    const std::vector<std::string> csv_header = {"experiment", "matched_by", "metric", "unit", "a_mean",
                                                 "b_mean",     "ratio_b_over_a", "n_a", "n_b", "verdict"};
    for (size_t i = 0; i < csv_header.size(); ++i) {
      if (i) out += ',';
      out += csv_header[i];
    }
    out += "\n";
    for (auto& r : rows) {
      for (size_t i = 0; i < r.size(); ++i) {
        if (i) out += ',';
        out += csv_cell(r[i]);
      }
      out += "\n";
    }
  }
  return out;
}

}  // namespace el::bench
