// sft_records.h — reading supervised fine-tuning (SFT) records from JSON files.
//
// A record becomes a Conversation (system / user / assistant turns). The
// shapes we read, one JSON object per record:
//   alpaca      {"instruction", "input" (optional, may be "" or null), "output"}
//   messages    {"messages": [{"role": "system"|"user"|"assistant", "content"}, ...]}
//   openo1      {"instruction", "output"}                    (O1-OPEN/OpenO1-SFT)
//   medical-o1  {"Question", "Complex_CoT", "Response"}      (FreedomIntelligence/
//               medical-o1-reasoning-SFT). The assistant turn is
//               "## Thinking\n\n{Complex_CoT}\n\n## Final Response\n\n{Response}",
//               the join the dataset's authors train with (HuatuoGPT-o1's
//               SFT_stage1.py), so a model learns to reason before answering.
// Other keys are ignored. Required strings must be non-empty (an empty
// answer would train only the end-of-turn token).
//
// Files: JSON Lines (one record per line, blank lines allowed, "\r\n"
// accepted), or one JSON array of records when the first non-blank byte is
// '[' (medical-o1-reasoning-SFT ships medical_o1_sft.json that way). The
// array is scanned element by element, never parsed whole, so memory stays at
// one record. A leading UTF-8 byte-order mark is skipped.
//
// The format is set explicitly or detected per file from the first record
// whose keys match a shape: "messages" -> messages; Question + Complex_CoT +
// Response -> medical-o1; instruction + output -> alpaca when "input" is
// present, else openo1. Records before that one are bad records.
//
// Untrusted input: a record longer than max_record_bytes is a bad record and
// is skipped without being stored; nothing is allocated from a size the file
// claims. A *bad record* is one that is not valid JSON / UTF-8, not an
// object, too long, or missing a required key or holding one of the wrong
// type. Policy fail: the first one is an Error "file:line: ...". Policy
// skip: each is counted, the first few are kept with file:line and reason
// (SftReadReport), and reading goes on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace el::data {

enum class SftFormat { auto_detect, alpaca, messages, openo1, medical_o1 };
const char* sft_format_name(SftFormat f);  // "auto", "alpaca", "messages", "openo1", "medical-o1"
// Parses a --format value (the names above; "medical_o1" is accepted too).
Result<SftFormat> parse_sft_format(std::string_view name);

enum class SftRole { system, user, assistant };
const char* sft_role_name(SftRole r);

struct SftTurn {
  SftRole role = SftRole::user;
  std::string content;
  // alpaca's "input": kept apart from the instruction so the alpaca template
  // can give it its own "### Input:" section; only set on a user turn.
  std::string input;
};

// Turns in order. Invariants (enforced by the readers): a system turn can
// only come first; the first non-system turn is a user turn; at least one
// assistant turn has non-empty content.
struct Conversation {
  std::vector<SftTurn> turns;
};

struct SftRecord {
  Conversation conversation;
  // 0-based position of the record among all records of all files in input
  // order, bad records included: the key of the validation split, so fixing
  // or skipping one record never moves the others between splits.
  int64_t index = 0;
  size_t file_index = 0;  // into the file list
  int64_t line = 0;       // 1-based line where the record starts
};

enum class BadRecordPolicy { skip, fail };
const char* bad_record_policy_name(BadRecordPolicy p);  // "skip", "fail"
Result<BadRecordPolicy> parse_bad_record_policy(std::string_view name);

struct SftReadOptions {
  SftFormat format = SftFormat::auto_detect;  // for every file
  BadRecordPolicy on_bad_record = BadRecordPolicy::fail;
  // Longest record accepted, in bytes (a JSON line, or an array element).
  // The longest medical-o1 / OpenO1-SFT records are tens of KB.
  int64_t max_record_bytes = 16 << 20;
  int64_t max_records = 0;   // stop after this many good records; 0 = all
  int max_reported_bad = 5;  // bad records kept with their location
};

struct BadRecord {
  std::string where;   // "path:line"
  std::string reason;  // "missing key 'output'", ...
};

struct SftReadReport {
  std::vector<std::string> files;
  std::vector<SftFormat> formats;  // per file, as detected or set; auto_detect if none was found
  int64_t records = 0;             // good records delivered
  int64_t bad_records = 0;         // skipped (policy skip)
  std::vector<BadRecord> first_bad;  // the first max_reported_bad of them

  // "N bad record(s) skipped; first: a.jsonl:4: missing key 'output'; ..."
  // or "" when there were none.
  std::string bad_summary() const;
};

// Streams every good record of `files`, in order, to `fn`; stops at the first
// Error (a file that cannot be opened, broken array structure, a bad record
// under policy fail, an Error from fn) or after max_records. Errors: an
// empty file list, max_record_bytes < 2, a file in which no record matched
// any format under auto-detection (names the keys it saw; hint --format).
Status for_each_sft_record(const std::vector<std::string>& files, const SftReadOptions& options,
                           const std::function<Status(SftRecord&&)>& fn,
                           SftReadReport* report = nullptr);

// All good records in memory (tests, small files).
Result<std::vector<SftRecord>> read_sft_records(const std::vector<std::string>& files,
                                                const SftReadOptions& options,
                                                SftReadReport* report = nullptr);

// The assistant text of a medical-o1 record (the join documented above).
std::string medical_o1_response(std::string_view complex_cot, std::string_view response);

}  // namespace el::data
