#include "bench/results.h"

#include <filesystem>
#include <utility>

#include "io/atomic_file.h"

namespace el::bench {
namespace {

// column name -> JSON pointer into a result record
const std::vector<std::pair<std::string, std::string>>& csv_spec() {
  static const std::vector<std::pair<std::string, std::string>> spec = {
      {"run_id", "/run_id"},
      {"suite", "/suite"},
      {"variant", "/variant"},
      {"card", "/card"},
      {"status", "/status"},
      {"parameters", "/parameters"},
      {"perplexity", "/perplexity"},
      {"val_loss", "/val_loss"},
      {"unigram_perplexity", "/unigram_perplexity"},
      {"epochs", "/epochs"},
      {"amu_live_gb", "/metrics/memory_energy/amu_live_gb"},
      {"amu_rss_gb", "/metrics/memory_energy/amu_rss_gb"},
      {"peak_live_bytes", "/metrics/memory_energy/peak_live_bytes"},
      {"mfu", "/metrics/mfu"},
      {"mfu_formula", "/metrics/mfu_formula"},
      {"device_util", "/metrics/memory_energy/mean_device_util"},
      {"al_mean_s", "/metrics/al_seconds/mean"},
      {"al_median_s", "/metrics/al_seconds/median"},
      {"al_p90_s", "/metrics/al_seconds/p90"},
      {"tokens_per_second", "/metrics/tokens_per_second"},
      {"tt_tokens_per_param_per_second", "/metrics/tt_tokens_per_param_per_second"},
      {"aec_avg_power_w", "/metrics/memory_energy/avg_power_w"},
      {"energy_j", "/metrics/memory_energy/energy_j"},
      {"error", "/error"},
  };
  return spec;
}

std::string csv_cell(const nlohmann::json& v) {
  if (v.is_null()) return "";
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

Status ensure_writable_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return make_error(fmt::format("cannot create the results directory: {}", ec.message()), dir,
                      "pass a writable --results-dir");
  }
  const std::string probe = dir + "/.write-test";
  Status st = io::write_file_atomic(probe, "ok\n");
  if (!st.ok()) {
    return make_error("the results directory is not writable", dir, "pass a writable --results-dir");
  }
  std::filesystem::remove(probe, ec);
  return Status::Ok();
}

Status write_jsonl(const std::string& path, const std::vector<nlohmann::json>& records) {
  std::string out;
  for (const auto& r : records) out += r.dump() + "\n";
  return io::write_file_atomic(path, out);
}

const std::vector<std::string>& csv_columns() {
  static const std::vector<std::string> cols = [] {
    std::vector<std::string> c;
    for (const auto& [name, ptr] : csv_spec()) c.push_back(name);
    return c;
  }();
  return cols;
}

Status write_csv(const std::string& path, const std::vector<nlohmann::json>& records) {
  std::string out;
  for (size_t i = 0; i < csv_columns().size(); ++i) out += (i ? "," : "") + csv_columns()[i];
  out += "\n";
  for (const auto& r : records) {
    bool first = true;
    for (const auto& [name, ptr] : csv_spec()) {
      const nlohmann::json::json_pointer p(ptr);
      out += first ? "" : ",";
      out += r.contains(p) ? csv_cell(r.at(p)) : "";
      first = false;
    }
    out += "\n";
  }
  return io::write_file_atomic(path, out);
}

}  // namespace el::bench
