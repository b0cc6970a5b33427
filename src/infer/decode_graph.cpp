#include "infer/decode_graph.h"

#include <cstring>
#include <exception>
#include <string>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "ops/ops.h"

namespace el::infer {

DecodeGraph::DecodeGraph(Backend& backend, KvCache& cache, bool greedy)
    : backend_(backend), cache_(cache), greedy_(greedy), batch_(cache.batch) {}

DecodeGraph::~DecodeGraph() {
  // Unread tokens: their reads hold slots of the backend's ring, and waiting
  // for them also waits for the replays before the graph goes.
  for (const int64_t ticket : unread_) (void)backend_.read_wait(ticket);
  // The graph first: its pool's blocks (logits_, next_ and the freed
  // intermediates) then rejoin the general cache as the tensors go.
  if (captured_) backend_.graph_destroy(handle_);
}

Result<std::unique_ptr<DecodeGraph>> DecodeGraph::capture(const DecoderLM& model, KvCache& cache,
                                                          bool greedy) {
  const std::string where = "decode graph";
  const Device dev = model.device();
  EL_TRY_ASSIGN(Backend * backend, try_backend_for(dev));
  if (!backend->supports_graphs()) {
    return make_error(fmt::format("backend {} has no graphs", backend->name()), where,
                      "decode eagerly");
  }
  if (greedy && !backend->supports_read_later()) {  // (replays read their tokens that way)
    return make_error(fmt::format("backend {} has no queued reads", backend->name()), where,
                      "decode eagerly");
  }
  const int64_t B = cache.batch;
  if (B <= 0 || !cache.positions.defined() || static_cast<int64_t>(cache.host_positions.size()) != B) {
    return make_error(fmt::format("the KV cache has batch {} and {} host positions", B,
                                  cache.host_positions.size()),
                      where, "create it with KvCache::create");
  }
  if (cache.positions.device() != dev) {
    return make_error(fmt::format("the KV cache is on {}, the model on {}",
                                  cache.positions.device().str(), dev.str()),
                      where);
  }
  if (cache.empty()) {
    return make_error("the KV cache is empty: a decode step follows a prefill", where,
                      "run the prefill (and one eager decode step) before capturing");
  }
  for (int64_t b = 0; b < B; ++b) {
    if (cache.host_positions[b] + 1 > cache.max_len) {
      return make_error(fmt::format("row {} is at position {} of a cache of {}: no room for "
                                    "another token",
                                    b, cache.host_positions[b], cache.max_len),
                        where);
    }
  }

  std::unique_ptr<DecodeGraph> g(new DecodeGraph(*backend, cache, greedy));
  // Allocated before the capture (general cache) and held by the graph for
  // its lifetime: the one input the host writes between replays.
  g->step_ids_ = Tensor::zeros({B, 1}, DType::i32, dev);

  NoGrad no_grad;
  EL_TRY(backend->graph_begin_capture());
  std::string failure;
  try {
    Tensor logits = model.forward_cached(g->step_ids_, cache);  // [B, 1, V]
    if (greedy) {
      Tensor next = ops::argmax_rows(logits);  // [B]
      backend->copy(next, g->step_ids_);        // the next replay's input
      g->next_ = next;
    }
    ops::increment_i32(cache.positions, 1);
    g->logits_ = logits;
  } catch (const std::exception& e) {
    failure = e.what();
  }
  // Always ends the capture, so the stream is usable again whatever happened.
  Result<GraphHandle> handle = backend->graph_end_capture();
  if (!failure.empty()) {
    if (handle.ok()) backend->graph_destroy(*handle);
    return make_error("capturing the decode step failed: " + failure, where,
                      handle.ok() ? std::string("run one decode step eagerly first, then capture")
                                  : handle.error().hint);
  }
  if (!handle.ok()) return handle.error();
  g->handle_ = *handle;
  g->captured_ = true;
  return g;
}

void DecodeGraph::set_tokens(const std::vector<int32_t>& ids) {
  EL_ENSURE(static_cast<int64_t>(ids.size()) == batch_, "DecodeGraph::set_tokens: {} ids for batch {}",
            ids.size(), batch_);
  // A copy from pageable host memory returns once the bytes are staged, and
  // is queued before the next replay.
  step_ids_.copy_from(Tensor::from_ints(ids, {batch_, 1}));
}

Status DecodeGraph::replay() {
  for (int64_t b = 0; b < batch_; ++b) {
    if (cache_.host_positions[b] + 1 > cache_.max_len) {
      return make_error(fmt::format("row {} is at position {} of a cache of {}: no room for "
                                    "another token",
                                    b, cache_.host_positions[b], cache_.max_len),
                        "decode graph replay", "create the cache for prompt + new tokens");
    }
  }
  if (greedy_ && unread() >= Backend::kReadLaterSlots) {
    return make_error(fmt::format("{} replays' tokens are unread", unread()), "decode graph replay",
                      "read them with tokens() first");
  }
  EL_TRY(backend_.graph_replay(handle_));
  if (greedy_) {
    EL_TRY_ASSIGN(const int64_t ticket, backend_.read_later(next_));
    unread_.push_back(ticket);
  }
  // The graph advanced the device positions; the host's copy follows (the
  // forward only reads it at capture, to check room and pick the path).
  for (int32_t& p : cache_.host_positions) ++p;
  ++replays_;
  return Status::Ok();
}

Result<std::vector<int32_t>> DecodeGraph::tokens() {
  EL_ENSURE(greedy_ && next_.defined(),
            "DecodeGraph::tokens: a sampling graph has no tokens (read logits())");
  if (unread_.empty()) {
    return make_error("every replay's tokens have been read", "decode graph tokens",
                      "replay() before reading tokens");
  }
  const int64_t ticket = unread_.front();
  unread_.pop_front();
  std::vector<int32_t> ids(static_cast<size_t>(batch_));
  EL_TRY_ASSIGN(const std::vector<uint8_t> bytes, backend_.read_wait(ticket));
  EL_ENSURE(bytes.size() == ids.size() * sizeof(int32_t), "DecodeGraph::tokens: {} bytes for batch {}",
            bytes.size(), batch_);
  std::memcpy(ids.data(), bytes.data(), bytes.size());
  return ids;
}

}  // namespace el::infer
