// dataset.cpp — the dataset builder and its manifest.
#include "data/dataset.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "data/corpus.h"
#include "data/sha256.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "io/atomic_file.h"
#include "io/file_util.h"

namespace el::data {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using nlohmann::json;

bool is_validation_document(int64_t index, uint64_t seed, double fraction) {
  // splitmix64 of a seed-dependent stream position: well mixed even for
  // consecutive indices, so validation documents are spread through the corpus.
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(index) + 1;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const double u = static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
  return u < fraction;
}

namespace {

// Accumulates one split's tokens and cuts them into shards of at most
// max_tokens tokens: <dir>/<prefix>_NNNNNN.bin.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string prefix, int vocab, int64_t max_tokens,
              std::vector<std::string>* shards, int64_t* tokens, int64_t* documents,
              std::vector<std::string>* written)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), vocab_(vocab),
        max_tokens_(static_cast<size_t>(max_tokens)), shards_(shards), tokens_(tokens),
        documents_(documents), written_(written) {}

  Status add(const std::vector<int32_t>& ids, int eos) {
    for (int32_t id : ids) buf_.push_back(static_cast<uint32_t>(id));
    if (eos >= 0) buf_.push_back(static_cast<uint32_t>(eos));
    *tokens_ += static_cast<int64_t>(ids.size()) + (eos >= 0 ? 1 : 0);
    ++*documents_;
    while (buf_.size() >= max_tokens_) {
      std::vector<uint32_t> chunk(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(max_tokens_));
      buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(max_tokens_));
      EL_TRY(write(chunk));
    }
    return Status::Ok();
  }

  // Writes the remainder (or an empty shard if the split has none yet, so
  // every split has at least one file).
  Status finish() {
    if (!buf_.empty() || shards_->empty()) EL_TRY(write(buf_));
    buf_.clear();
    return Status::Ok();
  }

 private:
  Status write(const std::vector<uint32_t>& tokens) {
    const std::string path =
        (fs::path(dir_) / fmt::format("{}_{:06d}.bin", prefix_, shards_->size())).string();
    EL_TRY(write_shard(path, tokens, vocab_));
    shards_->push_back(path);
    written_->push_back(path);
    return Status::Ok();
  }

  std::string dir_, prefix_;
  int vocab_;
  size_t max_tokens_;
  std::vector<std::string>* shards_;
  int64_t* tokens_;
  int64_t* documents_;
  std::vector<std::string>* written_;
  std::vector<uint32_t> buf_;
};

// Encodes docs[i] into out[i] on `threads` threads (dynamic scheduling:
// document sizes vary by orders of magnitude).
void encode_parallel(const Tokenizer& tok, const std::vector<Document>& docs,
                     std::vector<std::vector<int32_t>>& out, int threads) {
  out.assign(docs.size(), {});
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < docs.size(); i = next++) out[i] = tok.encode(docs[i].text);
  };
  const int n = std::max(1, std::min<int>(threads, static_cast<int>(docs.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
}

Status check_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    return make_error(fmt::format("cannot create output directory: {}",
                                  ec ? ec.message() : "exists and is not a directory"),
                      dir);
  const std::string probe = (fs::path(dir) / ".efficientllm_write_test").string();
  const Status st = io::write_file_atomic(probe, "ok");
  if (!st.ok())
    return make_error("output directory is not writable", dir, "choose another --out directory");
  fs::remove(probe, ec);
  return Status::Ok();
}

void remove_files(const std::vector<std::string>& paths) {
  std::error_code ec;
  for (const auto& p : paths) fs::remove(p, ec);
}

// Removes train_NNNNNN.bin / val_NNNNNN.bin in dir that `keep` does not list.
void remove_stale_shards(const std::string& dir, const std::vector<std::string>& keep) {
  static const std::regex kShardName(R"((train|val)_[0-9]{6}\.bin)");
  std::set<std::string> keep_names;
  for (const auto& k : keep) keep_names.insert(fs::path(k).filename().string());
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (std::regex_match(name, kShardName) && keep_names.count(name) == 0) fs::remove(it->path(), ec);
  }
}

ojson split_json(const std::vector<std::string>& shards, int64_t tokens, int64_t documents) {
  ojson names = ojson::array();
  for (const auto& p : shards) names.push_back(fs::path(p).filename().string());
  return ojson{{"documents", documents}, {"tokens", tokens}, {"shards", names}};
}

std::string manifest_text(const Dataset& r) {
  ojson sources = ojson::array();
  for (const auto& s : r.sources)
    sources.push_back(ojson{{"path", s.path}, {"documents", s.documents}, {"bytes", s.bytes}});
  const ojson j = {
      {"format", "efficientllm-dataset"},
      {"format_version", 1},
      {"tokenizer",
       {{"path", r.tokenizer_path},
        {"sha256", r.tokenizer_sha256},
        {"vocab_size", r.vocab_size},
        {"bos_id", r.bos_id},
        {"eos_id", r.eos_id}}},
      {"options",
       {{"val_fraction", r.val_fraction},
        {"seed", r.seed},
        {"text_key", r.text_key},
        {"append_eos", r.append_eos},
        {"max_tokens_per_shard", r.max_tokens_per_shard}}},
      {"splits",
       {{"train", split_json(r.train_shards, r.train_tokens, r.train_documents)},
        {"val", split_json(r.val_shards, r.val_tokens, r.val_documents)}}},
      {"sources", sources},
      {"empty_documents_skipped", r.empty_documents},
      {"seconds", r.seconds},
  };
  return j.dump(2) + "\n";
}

}  // namespace

Result<Dataset> prepare_dataset(const PrepareOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!(o.val_fraction > 0.0 && o.val_fraction < 1.0))
    return make_error(fmt::format("val_fraction {} must be in (0, 1)", o.val_fraction), "",
                      "e.g. 0.05 keeps 5% of documents for validation");
  if (o.max_tokens_per_shard < 1 || static_cast<size_t>(o.max_tokens_per_shard) > kShardMaxTokens)
    return make_error(fmt::format("max_tokens_per_shard {} must be in [1, {}]",
                                  o.max_tokens_per_shard, kShardMaxTokens));
  if (o.out_dir.empty()) return make_error("no output directory given");

  EL_TRY_ASSIGN(const std::vector<std::string> files, expand_inputs(o.inputs));
  EL_TRY_ASSIGN(const Tokenizer tok, Tokenizer::load(o.tokenizer_path));
  EL_TRY_ASSIGN(std::string tok_hash, sha256_file(o.tokenizer_path));
  EL_TRY(check_writable_dir(o.out_dir));

  Dataset r;
  r.dir = o.out_dir;
  r.manifest_path = (fs::path(o.out_dir) / kManifestName).string();
  r.tokenizer_path = fs::absolute(o.tokenizer_path).lexically_normal().string();
  r.tokenizer_sha256 = std::move(tok_hash);
  r.vocab_size = tok.vocab_size();
  r.bos_id = tok.bos_id();
  r.eos_id = tok.eos_id();
  r.val_fraction = o.val_fraction;
  r.seed = o.seed;
  r.text_key = o.text_key;
  r.append_eos = o.append_eos;
  r.max_tokens_per_shard = o.max_tokens_per_shard;
  for (const auto& f : files) r.sources.push_back(SourceFile{f, 0, 0});

  std::vector<std::string> written;  // for cleanup on error
  SplitWriter train(o.out_dir, "train", r.vocab_size, o.max_tokens_per_shard, &r.train_shards,
                    &r.train_tokens, &r.train_documents, &written);
  SplitWriter val(o.out_dir, "val", r.vocab_size, o.max_tokens_per_shard, &r.val_shards,
                  &r.val_tokens, &r.val_documents, &written);
  const int threads =
      o.num_threads > 0 ? o.num_threads : std::max(1u, std::thread::hardware_concurrency());
  const int eos = o.append_eos ? r.eos_id : -1;

  // Documents are encoded in batches (bounded memory for large corpora) and
  // appended in input order, so the output does not depend on `threads`.
  constexpr size_t kBatchBytes = 32u << 20;
  constexpr size_t kBatchDocs = 4096;
  std::vector<Document> batch;
  size_t batch_bytes = 0;
  int64_t doc_index = 0;
  std::vector<std::vector<int32_t>> encoded;
  auto flush = [&]() -> Status {
    encode_parallel(tok, batch, encoded, threads);
    for (size_t i = 0; i < batch.size(); ++i, ++doc_index) {
      SourceFile& src = r.sources[batch[i].file_index];
      ++src.documents;
      src.bytes += static_cast<int64_t>(batch[i].text.size());
      SplitWriter& w = is_validation_document(doc_index, o.seed, o.val_fraction) ? val : train;
      EL_TRY(w.add(encoded[i], eos));
    }
    batch.clear();
    batch_bytes = 0;
    return Status::Ok();
  };

  ReadStats rs;
  Status st = for_each_document(
      files, o.text_key,
      [&](Document&& d) -> Status {
        batch_bytes += d.text.size();
        batch.push_back(std::move(d));
        if (batch.size() >= kBatchDocs || batch_bytes >= kBatchBytes) return flush();
        return Status::Ok();
      },
      &rs);
  if (st.ok()) st = flush();
  r.empty_documents = rs.empty_documents;
  if (st.ok() && (rs.documents == 0 || rs.bytes == 0)) st = empty_corpus_error(files);
  if (st.ok() && r.val_documents == 0)
    st = make_error(fmt::format("no validation documents: val_fraction {} of {} document(s) "
                                "selected none",
                                o.val_fraction, rs.documents),
                    o.out_dir,
                    "raise val_fraction, or add documents (a plain text file is one document; "
                    "JSON Lines give one per line)");
  if (st.ok() && r.train_documents == 0)
    st = make_error(fmt::format("no training documents: val_fraction {} took all {} document(s)",
                                o.val_fraction, rs.documents),
                    o.out_dir, "lower val_fraction, or add documents");
  if (st.ok()) st = train.finish();
  if (st.ok()) st = val.finish();
  if (st.ok()) {
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st = io::write_file_atomic(r.manifest_path, manifest_text(r));
  }
  if (!st.ok()) {
    remove_files(written);
    return st.error();
  }
  std::vector<std::string> keep = r.train_shards;
  keep.insert(keep.end(), r.val_shards.begin(), r.val_shards.end());
  remove_stale_shards(o.out_dir, keep);
  return r;
}

// ---- reading the manifest back

namespace {

// Typed access to manifest fields; every Error names the file and the key.
class ManifestReader {
 public:
  explicit ManifestReader(std::string file) : file_(std::move(file)) {}

  Error error(const std::string& key, const std::string& what) const {
    return make_error(what, fmt::format("{}: key '{}'", file_, key),
                      "re-run prepare to rewrite the manifest");
  }
  static std::string join(const std::string& parent, const char* key) {
    return parent.empty() ? std::string(key) : parent + "." + key;
  }
  Result<const json*> at(const json& obj, const std::string& parent, const char* key) const {
    if (!obj.is_object() || !obj.contains(key)) return error(join(parent, key), "missing");
    return &obj.at(key);
  }
  Result<int64_t> integer(const json& obj, const std::string& parent, const char* key) const {
    EL_TRY_ASSIGN(const json* v, at(obj, parent, key));
    if (!v->is_number_integer()) return error(join(parent, key), "expected an integer");
    return v->get<int64_t>();
  }
  Result<double> number(const json& obj, const std::string& parent, const char* key) const {
    EL_TRY_ASSIGN(const json* v, at(obj, parent, key));
    if (!v->is_number()) return error(join(parent, key), "expected a number");
    return v->get<double>();
  }
  Result<std::string> string(const json& obj, const std::string& parent, const char* key) const {
    EL_TRY_ASSIGN(const json* v, at(obj, parent, key));
    if (!v->is_string()) return error(join(parent, key), "expected a string");
    return v->get<std::string>();
  }
  Result<bool> boolean(const json& obj, const std::string& parent, const char* key) const {
    EL_TRY_ASSIGN(const json* v, at(obj, parent, key));
    if (!v->is_boolean()) return error(join(parent, key), "expected true or false");
    return v->get<bool>();
  }
  Status split(const json& splits, const char* name, const std::string& dir,
               std::vector<std::string>* shards_out, int64_t* tokens, int64_t* documents) const {
    const std::string p = std::string("splits.") + name;
    EL_TRY_ASSIGN(const json* s, at(splits, "splits", name));
    EL_TRY_ASSIGN(*documents, integer(*s, p, "documents"));
    EL_TRY_ASSIGN(*tokens, integer(*s, p, "tokens"));
    EL_TRY_ASSIGN(const json* shards, at(*s, p, "shards"));
    if (!shards->is_array()) return error(p + ".shards", "expected an array of file names");
    for (const json& n : *shards) {
      if (!n.is_string() || n.get<std::string>().find('/') != std::string::npos)
        return error(p + ".shards", "expected plain shard file names");
      shards_out->push_back((fs::path(dir) / n.get<std::string>()).string());
    }
    return Status::Ok();
  }

 private:
  std::string file_;
};

}  // namespace

Result<Dataset> load_dataset_manifest(const std::string& dir) {
  const std::string file = (fs::path(dir) / kManifestName).string();
  std::error_code ec;
  if (!fs::is_regular_file(file, ec))
    return make_error("dataset manifest not found", file,
                      "prepare the dataset first (prepare_dataset writes dataset.json)");
  EL_TRY_ASSIGN(const std::string text, io::read_file(file));
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    return make_error(fmt::format("malformed JSON: {}", e.what()), file);
  }
  const ManifestReader m(file);
  EL_TRY_ASSIGN(const std::string format, m.string(j, "", "format"));
  if (format != "efficientllm-dataset")
    return m.error("format", fmt::format("is '{}', expected 'efficientllm-dataset'", format));
  EL_TRY_ASSIGN(const int64_t version, m.integer(j, "", "format_version"));
  if (version != 1)
    return m.error("format_version", fmt::format("unsupported version {} (expected 1)", version));

  Dataset r;
  r.dir = dir;
  r.manifest_path = file;
  EL_TRY_ASSIGN(const json* tok, m.at(j, "", "tokenizer"));
  EL_TRY_ASSIGN(r.tokenizer_path, m.string(*tok, "tokenizer", "path"));
  EL_TRY_ASSIGN(r.tokenizer_sha256, m.string(*tok, "tokenizer", "sha256"));
  EL_TRY_ASSIGN(const int64_t vocab, m.integer(*tok, "tokenizer", "vocab_size"));
  EL_TRY_ASSIGN(const int64_t bos, m.integer(*tok, "tokenizer", "bos_id"));
  EL_TRY_ASSIGN(const int64_t eos, m.integer(*tok, "tokenizer", "eos_id"));
  if (vocab < 1 || vocab > (int64_t{1} << 31) - 1)
    return m.error("tokenizer.vocab_size", fmt::format("{} is not a valid vocab size", vocab));
  r.vocab_size = static_cast<int>(vocab);
  r.bos_id = static_cast<int>(bos);
  r.eos_id = static_cast<int>(eos);
  EL_TRY_ASSIGN(const json* opt, m.at(j, "", "options"));
  EL_TRY_ASSIGN(r.val_fraction, m.number(*opt, "options", "val_fraction"));
  EL_TRY_ASSIGN(const int64_t seed, m.integer(*opt, "options", "seed"));
  r.seed = static_cast<uint64_t>(seed);
  EL_TRY_ASSIGN(r.text_key, m.string(*opt, "options", "text_key"));
  EL_TRY_ASSIGN(r.append_eos, m.boolean(*opt, "options", "append_eos"));
  EL_TRY_ASSIGN(r.max_tokens_per_shard, m.integer(*opt, "options", "max_tokens_per_shard"));
  EL_TRY_ASSIGN(const json* splits, m.at(j, "", "splits"));
  EL_TRY(m.split(*splits, "train", dir, &r.train_shards, &r.train_tokens, &r.train_documents));
  EL_TRY(m.split(*splits, "val", dir, &r.val_shards, &r.val_tokens, &r.val_documents));
  EL_TRY_ASSIGN(const json* sources, m.at(j, "", "sources"));
  if (!sources->is_array()) return m.error("sources", "expected an array");
  for (const json& s : *sources) {
    SourceFile f;
    EL_TRY_ASSIGN(f.path, m.string(s, "sources[]", "path"));
    EL_TRY_ASSIGN(f.documents, m.integer(s, "sources[]", "documents"));
    EL_TRY_ASSIGN(f.bytes, m.integer(s, "sources[]", "bytes"));
    r.sources.push_back(std::move(f));
  }
  EL_TRY_ASSIGN(r.empty_documents, m.integer(j, "", "empty_documents_skipped"));
  EL_TRY_ASSIGN(r.seconds, m.number(j, "", "seconds"));
  return r;
}

std::string describe(const Dataset& d) {
  return fmt::format(
      "dataset: {} ({} source file(s), {} document(s){})\n"
      "tokenizer: {} (vocab {}, sha256 {})\n"
      "train: {} documents, {} tokens in {} shard(s)\n"
      "val:   {} documents, {} tokens in {} shard(s) (val_fraction {}, seed {})\n"
      "prepared in {:.1f} s",
      d.manifest_path, d.sources.size(), d.train_documents + d.val_documents,
      d.empty_documents > 0 ? fmt::format(", {} empty skipped", d.empty_documents) : "",
      d.tokenizer_path, d.vocab_size, d.tokenizer_sha256.substr(0, 12), d.train_documents,
      d.train_tokens, d.train_shards.size(), d.val_documents, d.val_tokens, d.val_shards.size(),
      d.val_fraction, d.seed, d.seconds);
}

}  // namespace el::data
