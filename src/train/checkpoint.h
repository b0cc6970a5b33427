// checkpoint.h — training checkpoints as one safetensors file.
//
// Layout: every model parameter under its own name (f32), the AdamW moments
// as "optimizer.m.<name>" / "optimizer.v.<name>", and the string metadata
// "efficientllm.*": format version, optimizer step, the model card (YAML),
// the data loader's state (JSON) and the training config (JSON). Written to a
// temporary file and renamed, so a crash never leaves a torn checkpoint.
#pragma once

#include <map>
#include <string>

#include "core/error.h"
#include "models/decoder_lm.h"
#include "train/optimizer.h"

namespace el {

struct CheckpointState {
  int64_t step = 0;              // optimizer steps completed
  std::string loader_state;      // DataLoader state, JSON
  std::string config_json;       // the TrainConfig that produced it
  std::string model_card_yaml;   // the card, for `efficientllm` to rebuild the model
};

Status save_checkpoint(const std::string& path, const DecoderLM& model, AdamW* optimizer,
                       const CheckpointState& state);

// Loads parameters (and optimizer moments when `optimizer` is given) into an
// already-built model. A checkpoint from another card fails with the first
// tensor whose name or shape differs.
Result<CheckpointState> load_checkpoint(const std::string& path, DecoderLM& model,
                                        AdamW* optimizer);

// Only the metadata (to rebuild the model's card before loading).
Result<CheckpointState> read_checkpoint_state(const std::string& path);

}  // namespace el
