// builtin_suites.h — the suites compiled into `efficientllm bench`.
//
//   quick     CPU, f32: the paper's architecture axis at toy scale (~1M
//             parameters): MHA / GQA / MQA / MLA / NSA, four positional
//             encodings, a mixture of experts, Mamba, RWKV and Pythia, each
//             400 steps of 16 x 128 tokens, plus the `small` card MFU probe,
//             then fine-tuning and inference rows; about 14 minutes on 2 CPU
//             cores. The default on the CPU.
//   gpu-lite  one GPU, bf16: the same comparison at the paper's smallest
//             architecture size, Qwen2.5-0.5B shapes with an 8,192-piece
//             vocabulary (lite-* cards), 16 x 1024 tokens per step, three
//             runs each, then fine-tuning and inference rows; sized for about
//             1 h 45 min on one H100/H200 (half of it the four
//             architecture-II variants, Mamba's slow training most). The
//             default on a GPU.
// The numbers and the reasons for them are in builtin_suites.cpp.
#pragma once

#include <string>
#include <vector>

#include "bench/suite.h"
#include "core/device.h"
#include "core/error.h"

namespace el::bench {

SuiteSpec quick_suite();
SuiteSpec gpu_lite_suite();

// Names of the built-in suites, in the order help texts list them.
std::vector<std::string> builtin_suite_names();

// The built-in suite called `name`; for any other name an Error whose `where`
// is "--suite" and whose message lists the valid names.
Result<SuiteSpec> find_builtin_suite(const std::string& name);

// The suite `bench` runs when --suite is not given: gpu-lite on a GPU, quick
// on the CPU.
std::string default_suite_name(Device device);

}  // namespace el::bench
