#include "bench/result_stats.h"

#include <cmath>

namespace el::bench {

double student_t_975(int df) {
  // t_{0.975, df}, df = 1..30 (standard tables, e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
  static constexpr double kTable[30] = {
      12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
      2.262157,  2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
      2.109816,  2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
      2.059539,  2.055529, 2.051831, 2.048407, 2.045230, 2.042272};
  if (df < 1) return metrics::Summary::kNaN;
  if (df <= 30) return kTable[df - 1];
  return 1.959964;  // the normal quantile z_{0.975}
}

MetricSummary summarize_metric(const std::vector<double>& values) {
  MetricSummary m;
  for (double v : values) {
    if (!std::isnan(v)) m.values.push_back(v);
  }
  m.s = metrics::summarize(m.values);
  if (m.s.n < kMinNForP90) m.s.p90 = metrics::Summary::kNaN;
  if (m.s.n < kMinNForP99) m.s.p99 = metrics::Summary::kNaN;
  if (m.s.n >= 2) {
    const double half = student_t_975(static_cast<int>(m.s.n) - 1) * m.s.stddev /
                        std::sqrt(static_cast<double>(m.s.n));
    m.ci95_low = m.s.mean - half;
    m.ci95_high = m.s.mean + half;
    if (m.s.mean != 0.0) m.cv = m.s.stddev / std::fabs(m.s.mean);
    m.noisy = !std::isnan(m.cv) && m.cv > kNoisyCv;
  }
  return m;
}

nlohmann::json to_json(const MetricSummary& m) {
  nlohmann::json j = metrics::to_json(m.s);
  j["ci95"] = std::isnan(m.ci95_low)
                  ? nlohmann::json()
                  : nlohmann::json::array({metrics::json_number_or_null(m.ci95_low),
                                           metrics::json_number_or_null(m.ci95_high)});
  j["cv"] = metrics::json_number_or_null(m.cv);
  j["noisy"] = std::isnan(m.cv) ? nlohmann::json() : nlohmann::json(m.noisy);
  nlohmann::json vals = nlohmann::json::array();
  for (double v : m.values) vals.push_back(metrics::json_number_or_null(v));
  j["values"] = vals;
  return j;
}

const std::vector<HeadlineMetric>& headline_metrics() {
  static const std::vector<HeadlineMetric> metrics = {
      {"tokens_per_second", "/metrics/tokens_per_second", "tokens/s", true},
      {"al_seconds", "/metrics/al_seconds/mean", "s", false},
      {"tt_tokens_per_param_per_second", "/metrics/tt_tokens_per_param_per_second", "tokens/param/s", true},
      // A mixture of experts' TT per active parameter (bench/runner.cpp).
      {"tt_tokens_per_active_param_per_second", "/metrics/tt_tokens_per_active_param_per_second",
       "tokens/param/s", true},
      {"mfu", "/metrics/mfu", "fraction", true},
      {"amu_live_gb", "/metrics/memory_energy/amu_live_gb", "GB", false},
      {"amu_rss_gb", "/metrics/memory_energy/amu_rss_gb", "GB", false},
      {"aec_avg_power_w", "/metrics/memory_energy/avg_power_w", "W", false},
      {"energy_j", "/metrics/memory_energy/energy_j", "J", false},
      {"perplexity", "/perplexity", "", false},
      {"val_loss", "/val_loss", "nats/token", false},
      // The fine-tuning axis (finetune/sft_trainer.h): response tokens only.
      {"train_loss", "/train_loss", "nats/token", false},
      {"samples_per_second", "/metrics/samples_per_second", "samples/s", true},
      {"st_samples_per_param_per_second", "/metrics/st_samples_per_param_per_second", "samples/param/s", true},
      {"pcu", "/metrics/memory_energy/mean_device_util", "fraction", true},
      // The inference axis (infer/infer_experiment.h): IT at the largest
      // batch, TTFT / TPOT medians and the mean request latency at the
      // smallest, quality, and what the weights take.
      {"it_tokens_per_second", "/metrics/it_tokens_per_second", "tokens/s", true},
      {"ttft_s", "/metrics/ttft_s_p50", "s", false},
      {"tpot_s", "/metrics/tpot_s_p50", "s", false},
      {"latency_s", "/metrics/latency_s/mean", "s", false},
      {"j_per_token", "/metrics/j_per_token", "J/token", false},
      {"choice_acc", "/metrics/choice_acc", "fraction", true},
      {"weight_bytes", "/metrics/weight_bytes", "bytes", false},
      {"bits_per_weight", "/metrics/bits_per_weight", "bits", false},
  };
  return metrics;
}

nlohmann::json summarize_runs(const std::vector<nlohmann::json>& runs) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& hm : headline_metrics()) {
    const nlohmann::json::json_pointer ptr(hm.pointer);
    std::vector<double> values;
    bool any = false;
    for (const auto& run : runs) {
      if (!run.is_object() || run.value("status", "") != "ok") continue;
      if (run.contains(ptr) && run.at(ptr).is_number()) {
        values.push_back(run.at(ptr).get<double>());
        any = true;
      } else {
        values.push_back(metrics::Summary::kNaN);  // dropped by summarize_metric
      }
    }
    if (!any) continue;
    nlohmann::json j = to_json(summarize_metric(values));
    j["unit"] = hm.unit;
    out[hm.name] = j;
  }
  return out;
}

}  // namespace el::bench
