#include "bench/results.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "bench/result_stats.h"
#include "data/sha256.h"
#include "io/atomic_file.h"

namespace el::bench {
namespace {

// column name -> JSON pointer into a v2 record. Metric columns are the mean
// over repetitions; per-step distributions (al median/p90) and run facts come
// from the first repetition.
const std::vector<std::pair<std::string, std::string>>& csv_spec() {
  static const std::vector<std::pair<std::string, std::string>> spec = {
      {"run_id", "/run_id"},
      {"suite", "/suite"},
      {"variant", "/label"},
      {"card", "/card"},
      {"status", "/status"},
      {"parameters", "/parameters"},
      {"active_parameters", "/active_parameters"},
      {"perplexity", "/summary/perplexity/mean"},
      {"val_loss", "/summary/val_loss/mean"},
      {"unigram_perplexity", "/runs/0/unigram_perplexity"},
      {"epochs", "/runs/0/epochs"},
      {"amu_live_gb", "/summary/amu_live_gb/mean"},
      {"amu_rss_gb", "/summary/amu_rss_gb/mean"},
      {"peak_live_bytes", "/runs/0/metrics/memory_energy/peak_live_bytes"},
      {"mfu", "/summary/mfu/mean"},
      {"mfu_formula", "/runs/0/metrics/mfu_formula"},
      {"device_util", "/runs/0/metrics/memory_energy/mean_device_util"},
      {"al_mean_s", "/summary/al_seconds/mean"},
      {"al_median_s", "/runs/0/metrics/al_seconds/median"},
      {"al_p90_s", "/runs/0/metrics/al_seconds/p90"},
      {"tokens_per_second", "/summary/tokens_per_second/mean"},
      {"tokens_per_second_cv", "/summary/tokens_per_second/cv"},
      {"tt_tokens_per_param_per_second", "/summary/tt_tokens_per_param_per_second/mean"},
      {"tt_tokens_per_active_param_per_second", "/summary/tt_tokens_per_active_param_per_second/mean"},
      {"train_loss", "/summary/train_loss/mean"},
      {"samples_per_second", "/summary/samples_per_second/mean"},
      {"st_samples_per_param_per_second", "/summary/st_samples_per_param_per_second/mean"},
      {"pcu", "/summary/pcu/mean"},
      {"aec_avg_power_w", "/summary/aec_avg_power_w/mean"},
      {"energy_j", "/summary/energy_j/mean"},
      // Inference rows.
      {"precision", "/runs/0/precision"},
      {"bits_per_weight", "/summary/bits_per_weight/mean"},
      {"weight_bytes", "/summary/weight_bytes/mean"},
      {"choice_acc", "/summary/choice_acc/mean"},
      {"it_tokens_per_second", "/summary/it_tokens_per_second/mean"},
      {"ttft_s", "/summary/ttft_s/mean"},
      {"tpot_s", "/summary/tpot_s/mean"},
      {"latency_s", "/summary/latency_s/mean"},
      {"j_per_token", "/summary/j_per_token/mean"},
      {"repetitions", "/repetitions"},
      {"config_hash", "/config_hash"},
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

std::string errno_text(int e) { return std::strerror(e); }

// Where the last complete line ends in the open file `fd` of `size` bytes:
// the offset just past its last '\n' (0 if none).
Result<off_t> end_of_last_line(int fd, off_t size, const std::string& path) {
  char buf[4096];
  off_t end = size;
  while (end > 0) {
    const off_t start = end > static_cast<off_t>(sizeof buf) ? end - static_cast<off_t>(sizeof buf) : 0;
    const ssize_t n = ::pread(fd, buf, static_cast<size_t>(end - start), start);
    if (n != end - start) return make_error("cannot read the file: " + errno_text(errno), path);
    for (ssize_t i = n - 1; i >= 0; --i) {
      if (buf[i] == '\n') return start + i + 1;
    }
    end = start;
  }
  return static_cast<off_t>(0);
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

nlohmann::json build_info_json() {
  // The literal compiler flags are not a compile definition (yet); these
  // macros are what the flags did, which is what matters for a number.
  nlohmann::json flags = {
#ifdef __OPTIMIZE__
      {"optimized", true},
#else
      {"optimized", false},
#endif
#ifdef NDEBUG
      {"ndebug", true},
#else
      {"ndebug", false},
#endif
#ifdef _OPENMP
      {"openmp", _OPENMP},
#else
      {"openmp", nullptr},
#endif
      {"cplusplus", __cplusplus},
  };
  nlohmann::json isa = nlohmann::json::array();
#ifdef __AVX2__
  isa.push_back("avx2");
#endif
#ifdef __FMA__
  isa.push_back("fma");
#endif
#ifdef __AVX512F__
  isa.push_back("avx512f");
#endif
#ifdef __ARM_NEON
  isa.push_back("neon");
#endif
  flags["isa"] = isa;
  // The build's identity as the platform probe records it (one place reads
  // the EL_GIT_COMMIT / EL_CXX_COMPILER / EL_BUILD_TYPE definitions).
  const metrics::PlatformInfo p = metrics::collect_platform_info();
  return {{"git_commit", p.git_commit},
          {"compiler", p.compiler},
          {"build_type", p.build_type},
          {"flags", flags}};
}

nlohmann::json machine_info_json(const metrics::PlatformInfo& p) {
  nlohmann::json gpu = nullptr;
  if (p.gpu_count > 0) {
    gpu = {{"count", p.gpu_count},
           {"model", p.gpu_model},
           {"driver", p.gpu_driver},
           {"memory_bytes", p.gpu_memory_bytes > 0 ? nlohmann::json(p.gpu_memory_bytes) : nlohmann::json()}};
  }
  return {{"cpu_model", p.cpu_model},       {"physical_cores", p.physical_cores},
          {"logical_cpus", p.logical_cpus}, {"usable_cpus", p.usable_cpus},
          {"mem_total_bytes", p.mem_total_bytes}, {"os", p.os},
          {"kernel", p.kernel},             {"gpu", gpu}};
}

std::string config_hash(const nlohmann::json& config) { return data::sha256_hex(config.dump()); }

nlohmann::json make_result_record(const ExperimentInfo& info, const std::vector<nlohmann::json>& runs,
                                  const nlohmann::json& build, const nlohmann::json& machine) {
  size_t ok = 0;
  nlohmann::json first_ok, first_error;
  for (const auto& r : runs) {
    if (r.is_object() && r.value("status", "") == "ok") {
      if (ok++ == 0) first_ok = r;
    } else if (first_error.is_null() && r.is_object() && r.contains("error")) {
      first_error = r["error"];
    }
  }
  nlohmann::json rec = {{"schema", kResultSchemaV2},
                        {"suite", info.suite},
                        {"label", info.label},
                        {"axis", info.axis},
                        {"run_id", info.run_id},
                        {"status", ok == runs.size() && ok > 0 ? "ok" : ok == 0 ? "failed" : "partial"},
                        {"build", build},
                        {"machine", machine},
                        {"config", info.config},
                        {"config_hash", config_hash(info.config)},
                        {"repetitions", runs.size()}};
  if (!first_error.is_null()) rec["error"] = first_error;
  // What the experiment is (card, parameter count) comes from a run that got
  // far enough to know it.
  if (first_ok.is_object()) {
    for (const char* k : {"card", "parameters", "active_parameters"}) {
      if (first_ok.contains(k)) rec[k] = first_ok[k];
    }
  }
  if (!info.suite_spec.is_null()) rec["suite_spec"] = info.suite_spec;
  rec["runs"] = runs;
  rec["summary"] = summarize_runs(runs);
  return rec;
}

Result<nlohmann::json> merge_repetition_records(const std::vector<nlohmann::json>& records) {
  if (records.empty()) return make_error("no records to merge", "merge_repetition_records");
  std::vector<nlohmann::json> runs;
  const std::string hash = records[0].value("config_hash", "");
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (!r.is_object() || r.value("schema", "") != kResultSchemaV2) {
      return make_error(fmt::format("record {} is not a {} record", i, kResultSchemaV2), "merge_repetition_records");
    }
    if (r.value("config_hash", "") != hash) {
      return make_error(fmt::format("record {} has config hash {} but record 0 has {}: these are "
                                    "different experiments",
                                    i, r.value("config_hash", ""), hash),
                        "merge_repetition_records");
    }
    if (r.contains("runs") && r["runs"].is_array()) {
      for (const auto& run : r["runs"]) runs.push_back(run);
    }
  }
  const auto& h = records[0];
  ExperimentInfo info{h.value("suite", ""), h.value("label", ""), h.value("axis", ""),
                      h.value("run_id", ""), h.value("config", nlohmann::json()),
                      h.value("suite_spec", nlohmann::json())};
  nlohmann::json merged =
      make_result_record(info, runs, h.value("build", nlohmann::json()), h.value("machine", nlohmann::json()));
  merged["config_hash"] = hash;  // as recorded (identical to recomputing for a v2 writer)
  return merged;
}

Result<nlohmann::json> upgrade_v1_record(const nlohmann::json& v1, const std::string& where) {
  if (!v1.is_object() || v1.value("schema", "") != kResultSchemaV1) {
    return make_error(fmt::format("not a {} record", kResultSchemaV1), where);
  }
  const nlohmann::json platform = v1.value("platform", nlohmann::json::object());
  ExperimentInfo info{v1.value("suite", ""), v1.value("variant", ""), v1.value("axis", ""),
                      v1.value("run_id", ""), v1.value("config", nlohmann::json::object()),
                      v1.value("suite_spec", nlohmann::json())};
  nlohmann::json run = v1;
  for (const char* k : {"schema", "suite", "run_id", "axis", "variant", "config", "platform", "suite_spec"}) {
    run.erase(k);
  }
  nlohmann::json build = {{"git_commit", platform.value("git_commit", "unknown")},
                          {"compiler", platform.value("compiler", "unknown")},
                          {"build_type", platform.value("build_type", "unknown")},
                          {"flags", nullptr}};
  metrics::PlatformInfo p;
  p.cpu_model = platform.value("cpu_model", "unknown");
  p.physical_cores = platform.value("physical_cores", 0);
  p.logical_cpus = platform.value("logical_cpus", 0);
  p.usable_cpus = platform.value("usable_cpus", 0);
  p.mem_total_bytes = platform.value("mem_total_bytes", int64_t{0});
  p.os = platform.value("os", "unknown");
  p.kernel = platform.value("kernel", "unknown");
  nlohmann::json rec = make_result_record(info, {run}, build, machine_info_json(p));
  rec["upgraded_from"] = kResultSchemaV1;
  return rec;
}

Status write_jsonl(const std::string& path, const std::vector<nlohmann::json>& records) {
  std::string out;
  for (const auto& r : records) out += r.dump() + "\n";
  return io::write_file_atomic(path, out);
}

Status append_jsonl_record(const std::string& path, const nlohmann::json& record, std::string* warning) {
  const std::string line = record.dump() + "\n";  // dump() escapes newlines: one line
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return make_error("cannot open the results file for appending: " + errno_text(errno), path);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  // Serialises appenders (the repair below must not cut a concurrent record).
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) return make_error("cannot lock the results file: " + errno_text(errno), path);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) return make_error("cannot stat the results file: " + errno_text(errno), path);
  if (st.st_size > 0) {
    // A file ending without '\n' ends in a torn record; appending after it
    // would glue the new record onto the torn one and lose both.
    const int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (rfd < 0) return make_error("cannot read the results file: " + errno_text(errno), path);
    auto end = end_of_last_line(rfd, st.st_size, path);
    ::close(rfd);
    if (!end.ok()) return end.error();
    if (end.value() != st.st_size) {
      if (::ftruncate(fd, end.value()) != 0) {
        return make_error("cannot cut off the torn last line: " + errno_text(errno), path);
      }
      if (warning) {
        *warning = fmt::format("{}: removed a torn last line ({} bytes) left by a run killed while writing it",
                               path, st.st_size - end.value());
      }
    }
  }
  ssize_t n;
  do {
    n = ::write(fd, line.data(), line.size());
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(line.size())) {
    return make_error(n < 0 ? "cannot append the record: " + errno_text(errno)
                            : fmt::format("short write: {} of {} bytes (disk full?)", n, line.size()),
                      path);
  }
  if (::fsync(fd) != 0) return make_error("fsync failed: " + errno_text(errno), path);
  return Status::Ok();
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

Result<JsonlRecords> read_jsonl_records(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error("cannot open the results file: " + errno_text(errno), path);
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  JsonlRecords out;
  std::string first_schema_where;
  size_t pos = 0;
  for (size_t line_no = 1; pos < text.size(); ++line_no) {
    const size_t nl = text.find('\n', pos);
    const bool terminated = nl != std::string::npos;
    const std::string line = text.substr(pos, terminated ? nl - pos : std::string::npos);
    pos = terminated ? nl + 1 : text.size();
    const std::string where = fmt::format("{}:{}", path, line_no);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      if (!terminated) {  // the last line, cut short: a run killed while appending
        out.warnings.push_back(fmt::format(
            "{}: skipped a torn last line ({} bytes, no newline): a run was killed while writing it",
            where, line.size()));
        continue;
      }
      return make_error(fmt::format("not a JSON record: {}", e.what()), where,
                        "each line of a results file is one JSON object; fix or remove this line");
    }
    if (!j.is_object() || !j.contains("schema") || !j["schema"].is_string()) {
      return make_error("not a result record: no \"schema\" string field", where,
                        "results files hold efficientllm.result.v* records, one per line");
    }
    const std::string schema = j["schema"].get<std::string>();
    if (schema != kResultSchemaV1 && schema != kResultSchemaV2) {
      return make_error(fmt::format("unknown result schema '{}' (this build reads {} and {})", schema,
                                    kResultSchemaV1, kResultSchemaV2),
                        where, "read it with the efficientllm version that wrote it");
    }
    if (out.schema.empty()) {
      out.schema = schema;
      first_schema_where = where;
    } else if (schema != out.schema) {
      return make_error(fmt::format("mixed result-schema versions in one file: {} here, {} at {}", schema,
                                    out.schema, first_schema_where),
                        where, "keep records of one schema version per file");
    }
    if (schema == kResultSchemaV1) {
      EL_TRY_ASSIGN(j, upgrade_v1_record(j, where));
    }
    out.records.push_back(std::move(j));
    out.sources.push_back(where);
    out.file_index.push_back(0);
  }
  return out;
}

Result<JsonlRecords> read_jsonl_records(const std::vector<std::string>& paths) {
  JsonlRecords all;
  std::string schema_file;
  for (size_t fi = 0; fi < paths.size(); ++fi) {
    const std::string& path = paths[fi];
    EL_TRY_ASSIGN(JsonlRecords one, read_jsonl_records(path));
    if (!one.schema.empty()) {
      if (all.schema.empty()) {
        all.schema = one.schema;
        schema_file = path;
      } else if (one.schema != all.schema) {
        return make_error(fmt::format("mixed result-schema versions: {} has {}, but {} has {}", path, one.schema,
                                      schema_file, all.schema),
                          path,
                          "compare files written by the same schema version (re-run the older suite "
                          "with this build)");
      }
    }
    for (auto& r : one.records) all.records.push_back(std::move(r));
    for (auto& s : one.sources) all.sources.push_back(std::move(s));
    all.file_index.insert(all.file_index.end(), one.records.size(), fi);
    for (auto& w : one.warnings) all.warnings.push_back(std::move(w));
  }
  return all;
}

}  // namespace el::bench
