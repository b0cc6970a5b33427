// checkpoint.h — training checkpoints as one safetensors file.
//
// Layout: every model parameter under its own name (in its own dtype: f32,
// or bf16/f16 under mixed precision), the AdamW moments as
// "optimizer.m.<name>" / "optimizer.v.<name>", the f32 master copy of a
// bf16/f16 parameter as "optimizer.master.<name>" (so a resumed run continues
// from the exact f32 weights, not their rounding), and the string metadata
// "efficientllm.*": format version, trainer step, optimizer step, the fp16
// loss scaler's state, the model card (YAML), the data loader's state (JSON)
// and the training config (JSON). Written to a temporary file and renamed,
// so a crash never leaves a torn checkpoint.
#pragma once

#include <map>
#include <string>

#include "core/error.h"
#include "models/decoder_lm.h"
#include "train/optimizer.h"

namespace el {

struct CheckpointState {
  int64_t step = 0;              // trainer steps completed
  // AdamW updates applied: fewer than `step` when fp16 overflow (or NaN)
  // steps were skipped; -1 = same as step (files that predate the key).
  int64_t optimizer_steps = -1;
  float loss_scale = 0.0f;            // fp16 loss scaler's scale; 0 = no scaler
  int64_t loss_scale_good_steps = 0;  // and its consecutive finite steps
  std::string loader_state;      // DataLoader state, JSON
  std::string config_json;       // the TrainConfig that produced it
  std::string model_card_yaml;   // the card, for `efficientllm` to rebuild the model
};

Status save_checkpoint(const std::string& path, const DecoderLM& model, AdamW* optimizer,
                       const CheckpointState& state);

// Loads parameters (and optimizer moments when `optimizer` is given) into an
// already-built model, converting dtypes where the model's differ from the
// file's. Masters: a bf16/f16 parameter's master comes from
// "optimizer.master.<name>", or from the parameter itself when the file has
// none (an f32 checkpoint); an f32 parameter is loaded from the master when
// the file has one (a bf16 run continued or evaluated in f32). A checkpoint from another card fails
// with the first tensor whose name or shape differs.
Result<CheckpointState> load_checkpoint(const std::string& path, DecoderLM& model,
                                        AdamW* optimizer);

// Only the metadata (to rebuild the model's card before loading).
Result<CheckpointState> read_checkpoint_state(const std::string& path);

}  // namespace el
