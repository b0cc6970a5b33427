// sft_records_test.cpp — the SFT record readers: every shape, detection,
// JSON arrays, bad records (skip / fail, counts, file:line), size caps.
#include <gtest/gtest.h>

#include "core/rng.h"
#include "data/sft_records.h"
#include "data_test_util.h"

namespace el::data {
namespace {

using testing::expect_error;
using testing::TempDir;
using testing::write_text;

std::string fixture(const std::string& name) {
  return std::string(EL_TEST_DATA_DIR) + "/sft/" + name;
}

std::vector<SftRecord> read_ok(const std::vector<std::string>& files, SftReadOptions o = {},
                               SftReadReport* rep = nullptr) {
  auto r = read_sft_records(files, o, rep);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? r.value() : std::vector<SftRecord>{};
}

// "user:...|assistant:..." with the input as "[input]": compact expectations.
std::string show(const Conversation& c) {
  std::string s;
  for (const SftTurn& t : c.turns) {
    if (!s.empty()) s += "|";
    s += std::string(sft_role_name(t.role)) + ":" + t.content;
    if (!t.input.empty()) s += "[" + t.input + "]";
  }
  return s;
}

TEST(SftRecords, AlpacaWithAndWithoutInput) {
  SftReadReport rep;
  const auto recs = read_ok({fixture("alpaca.jsonl")}, {}, &rep);
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(show(recs[0].conversation),
            "user:Give three tips for staying healthy.|assistant:1. Eat well.\n2. Exercise.\n3. Sleep.");
  EXPECT_EQ(show(recs[1].conversation), "user:Translate to French.[Good morning]|assistant:Bonjour");
  EXPECT_EQ(show(recs[2].conversation), "user:Name a primary colour.|assistant:Red");  // null input
  EXPECT_EQ(show(recs[3].conversation), "user:Add the numbers.[2 and 3]|assistant:5");
  // Line numbers count the blank line; indexes do not.
  EXPECT_EQ(recs[3].line, 5);
  EXPECT_EQ(recs[3].index, 3);
  ASSERT_EQ(rep.formats.size(), 1u);
  EXPECT_EQ(rep.formats[0], SftFormat::alpaca);
  EXPECT_EQ(rep.records, 4);
  EXPECT_EQ(rep.bad_records, 0);
  EXPECT_EQ(rep.bad_summary(), "");
}

TEST(SftRecords, MessagesKeepEveryTurn) {
  SftReadReport rep;
  const auto recs = read_ok({fixture("messages.jsonl")}, {}, &rep);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(show(recs[0].conversation), "system:You are terse.|user:Hi|assistant:Hello.");
  EXPECT_EQ(show(recs[1].conversation), "user:2+2?|assistant:4|user:3+3?|assistant:6");
  EXPECT_EQ(rep.formats[0], SftFormat::messages);
}

TEST(SftRecords, OpenO1WithCrlfLines) {
  SftReadReport rep;
  const auto recs = read_ok({fixture("openo1.jsonl")}, {}, &rep);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(rep.formats[0], SftFormat::openo1);
  EXPECT_EQ(show(recs[1].conversation),
            "user:Reverse the word cat.|assistant:<Thought>\nRead it backwards.\n</Thought>\n"
            "<Output>\ntac\n</Output>");
  EXPECT_EQ(recs[1].line, 2);
}

TEST(SftRecords, MedicalO1ArrayJoinsThinkingAndResponse) {
  SftReadReport rep;
  const auto recs = read_ok({fixture("medical_o1.json")}, {}, &rep);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(rep.formats[0], SftFormat::medical_o1);
  const auto& turns = recs[0].conversation.turns;
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_EQ(turns[0].content,
            "A patient has a fever and a stiff neck. What should be ruled out first?");
  EXPECT_EQ(turns[1].content,
            "## Thinking\n\nFever with neck stiffness suggests meningeal irritation. Bacterial "
            "meningitis is dangerous and treatable.\n\n## Final Response\n\nBacterial meningitis.");
  // Brackets, braces and escaped quotes inside strings do not cut elements.
  EXPECT_NE(recs[1].conversation.turns[1].content.find("\"quotes\""), std::string::npos);
  EXPECT_EQ(recs[0].line, 2);  // where each element starts
  EXPECT_EQ(recs[1].line, 7);
  EXPECT_EQ(recs[1].index, 1);
  EXPECT_EQ(medical_o1_response("c", "r"), "## Thinking\n\nc\n\n## Final Response\n\nr");
}

TEST(SftRecords, FormatsDetectedPerFileAndIndexesRunAcrossFiles) {
  SftReadReport rep;
  const auto recs = read_ok({fixture("alpaca.jsonl"), fixture("messages.jsonl"),
                             fixture("medical_o1.json")},
                            {}, &rep);
  ASSERT_EQ(recs.size(), 9u);
  EXPECT_EQ(rep.formats,
            (std::vector<SftFormat>{SftFormat::alpaca, SftFormat::messages, SftFormat::medical_o1}));
  for (size_t i = 0; i < recs.size(); ++i) EXPECT_EQ(recs[i].index, static_cast<int64_t>(i));
  EXPECT_EQ(recs[4].file_index, 1u);
  EXPECT_EQ(recs[4].line, 1);
}

TEST(SftRecords, ExplicitFormatOverridesDetection) {
  // Alpaca records read as openo1: the input is ignored.
  SftReadOptions o;
  o.format = SftFormat::openo1;
  SftReadReport rep;
  const auto recs = read_ok({fixture("alpaca.jsonl")}, o, &rep);
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(show(recs[1].conversation), "user:Translate to French.|assistant:Bonjour");
  EXPECT_EQ(rep.formats[0], SftFormat::openo1);
  // Alpaca records read as messages: every record is bad.
  o.format = SftFormat::messages;
  expect_error(read_sft_records({fixture("alpaca.jsonl")}, o),
               {"alpaca.jsonl:1", "missing key 'messages' (messages record)"});
}

TEST(SftRecords, BadRecordsSkippedWithCountsAndLines) {
  SftReadOptions o;
  o.on_bad_record = BadRecordPolicy::skip;
  SftReadReport rep;
  const auto recs = read_ok({fixture("bad.jsonl")}, o, &rep);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[1].line, 7);
  EXPECT_EQ(recs[1].index, 6);  // bad records keep their index
  EXPECT_EQ(rep.records, 2);
  EXPECT_EQ(rep.bad_records, 6);
  ASSERT_EQ(rep.first_bad.size(), 5u);  // max_reported_bad
  const std::string f = fixture("bad.jsonl");
  EXPECT_EQ(rep.first_bad[0].where, f + ":2");
  EXPECT_EQ(rep.first_bad[0].reason, "missing key 'output' (alpaca record)");
  EXPECT_EQ(rep.first_bad[1].where, f + ":3");
  EXPECT_NE(rep.first_bad[1].reason.find("invalid JSON"), std::string::npos);
  EXPECT_EQ(rep.first_bad[2].where, f + ":4");
  EXPECT_EQ(rep.first_bad[2].reason,
            "key 'instruction' is a number, expected a string (alpaca record)");
  EXPECT_EQ(rep.first_bad[3].reason, "expected a JSON object, found an array");
  EXPECT_EQ(rep.first_bad[4].where, f + ":6");
  EXPECT_EQ(rep.first_bad[4].reason, "key 'output' is an empty string (alpaca record)");
  const std::string sum = rep.bad_summary();
  EXPECT_NE(sum.find("6 bad record(s) skipped; first: " + f + ":2: missing key 'output'"),
            std::string::npos)
      << sum;
}

TEST(SftRecords, BadRecordFailsByDefault) {
  expect_error(read_sft_records({fixture("bad.jsonl")}, {}),
               {"bad.jsonl:2", "missing key 'output'", "policy skip"});
}

TEST(SftRecords, MessagesValidation) {
  TempDir dir;
  struct Case {
    std::string record, reason;
  };
  const std::vector<Case> cases = {
      {R"({"messages": "hello"})", "key 'messages' is a string, expected an array"},
      {R"({"messages": []})", "key 'messages' is an empty array"},
      {R"({"messages": [1]})", "messages[0] is not an object"},
      {R"({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]})",
       "messages[0]: unknown role 'tool' (expected system, user or assistant)"},
      {R"({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]})",
       "messages[1]: a system message can only come first"},
      {R"({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]})",
       "messages[1]: the first non-system message must be from the user"},
      {R"({"messages": [{"role": "user", "content": "q"}]})",
       "messages: no assistant message with non-empty content"},
      {R"({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]})",
       "messages[0]: missing key 'content'"},
      {R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null}]})",
       "messages[1]: key 'content' is null, expected a string"},
      {R"({"messages": [{"content": "q"}]})", "messages[0]: missing key 'role'"},
  };
  for (const Case& c : cases) {
    const std::string good =
        R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})";
    const std::string path = write_text(dir.file("m.jsonl"), good + "\n" + c.record + "\n");
    expect_error(read_sft_records({path}, {}), {path + ":2: " + c.reason + " (messages record)"});
  }
}

TEST(SftRecords, MedicalAndOpenO1RequiredKeys) {
  TempDir dir;
  const std::string med = write_text(
      dir.file("med.jsonl"),
      R"({"Question": "q", "Complex_CoT": "c", "Response": "r"})"
      "\n"
      R"({"Question": "q", "Complex_CoT": ["c"], "Response": "r"})"
      "\n");
  expect_error(read_sft_records({med}, {}),
               {med + ":2", "key 'Complex_CoT' is an array, expected a string (medical-o1 record)"});
  const std::string o1 = write_text(dir.file("o1.jsonl"),
                                    R"({"instruction": "i", "output": "o"})"
                                    "\n"
                                    R"({"instruction": "", "output": "o"})"
                                    "\n");
  expect_error(read_sft_records({o1}, {}),
               {o1 + ":2", "key 'instruction' is an empty string (openo1 record)"});
}

TEST(SftRecords, UnknownShapeNamesKeys) {
  // Policy fail: the first record is the error, with the keys it had.
  expect_error(read_sft_records({fixture("unknown.jsonl")}, {}),
               {"unknown.jsonl:1", "keys 'id', 'text' match no known SFT format", "--format"});
  // Policy skip: all records are bad, and a file where nothing matched is an error.
  SftReadOptions o;
  o.on_bad_record = BadRecordPolicy::skip;
  SftReadReport rep;
  expect_error(read_sft_records({fixture("unknown.jsonl")}, o, &rep),
               {"unknown.jsonl", "no record matches a known SFT format", "'id', 'text'"});
  EXPECT_EQ(rep.bad_records, 2);
}

TEST(SftRecords, DetectionSkipsLeadingBadRecords) {
  TempDir dir;
  const std::string path = write_text(dir.file("late.jsonl"),
                                      "{\"text\": \"x\"}\n{\"messages\": [{\"role\": \"user\", "
                                      "\"content\": \"q\"}, {\"role\": \"assistant\", "
                                      "\"content\": \"a\"}]}\n");
  SftReadOptions o;
  o.on_bad_record = BadRecordPolicy::skip;
  SftReadReport rep;
  const auto recs = read_ok({path}, o, &rep);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(rep.formats[0], SftFormat::messages);
  EXPECT_EQ(rep.bad_records, 1);
  EXPECT_EQ(rep.first_bad[0].where, path + ":1");
}

TEST(SftRecords, OverlongRecordIsBadAndNotStored) {
  TempDir dir;
  const std::string big(5000, 'x');
  const std::string path = write_text(
      dir.file("long.jsonl"), "{\"instruction\": \"" + big + "\", \"output\": \"o\"}\n" +
                                  "{\"instruction\": \"short\", \"output\": \"o\"}\n");
  SftReadOptions o;
  o.max_record_bytes = 1000;
  expect_error(read_sft_records({path}, o),
               {path + ":1", "record longer than max_record_bytes (1000 bytes)"});
  o.on_bad_record = BadRecordPolicy::skip;
  SftReadReport rep;
  const auto recs = read_ok({path}, o, &rep);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].line, 2);
  EXPECT_EQ(recs[0].index, 1);
  EXPECT_EQ(rep.bad_records, 1);
  // The same cap applies to the elements of a JSON array.
  const std::string arr = write_text(
      dir.file("long.json"), "[{\"instruction\": \"" + big + "\", \"output\": \"o\"},\n" +
                                 " {\"instruction\": \"short\", \"output\": \"o\"}]\n");
  const auto recs2 = read_ok({arr}, o, &rep);
  ASSERT_EQ(recs2.size(), 1u);
  EXPECT_EQ(recs2[0].line, 2);
  EXPECT_EQ(rep.first_bad[0].where, arr + ":1");
}

TEST(SftRecords, ByteOrderMarkAndMaxRecords) {
  TempDir dir;
  const std::string path =
      write_text(dir.file("bom.jsonl"), "\xEF\xBB\xBF{\"instruction\": \"a\", \"output\": \"b\"}\n"
                                        "{\"instruction\": \"c\", \"output\": \"d\"}\n"
                                        "{\"instruction\": \"e\", \"output\": \"f\"}\n");
  SftReadOptions o;
  o.max_records = 2;
  SftReadReport rep;
  const auto recs = read_ok({path, fixture("alpaca.jsonl")}, o, &rep);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(show(recs[1].conversation), "user:c|assistant:d");
  EXPECT_EQ(rep.files.size(), 1u);  // stopped before the second file
}

TEST(SftRecords, BrokenArrayStructureIsAFileError) {
  TempDir dir;
  struct Case {
    std::string text, what;
  };
  const std::string rec = R"({"instruction": "a", "output": "b"})";
  const std::vector<Case> cases = {
      {"[" + rec + "\n" + rec + "]", "expected ',' or ']' after an array element"},
      {"[" + rec + ",\n" + rec, "the file ends inside the JSON array (truncated?)"},
      {"[" + rec + ", ,]", "an empty element in the JSON array"},
      {"[" + rec + "] x", "text after the closing ']' of the JSON array"},
      {"[" + rec + ",\n{\"instruction\": \"a\", \"output\": \"b]", "the file ends inside"},
  };
  for (const Case& c : cases) {
    const std::string path = write_text(dir.file("broken.json"), c.text);
    expect_error(read_sft_records({path}, {}), {path + ":", c.what});
  }
  // An empty array is fine (no records), and so are scalar elements as bad records.
  const std::string empty = write_text(dir.file("empty.json"), " [ ] \n");
  EXPECT_TRUE(read_ok({empty}).empty());
  SftReadOptions o;
  o.on_bad_record = BadRecordPolicy::skip;
  SftReadReport rep;
  const std::string mixed = write_text(dir.file("mixed.json"), "[3, \"s\", " + rec + "]");
  EXPECT_EQ(read_ok({mixed}, o, &rep).size(), 1u);
  EXPECT_EQ(rep.bad_records, 2);
  EXPECT_EQ(rep.first_bad[1].reason, "expected a JSON object, found a string");
}

TEST(SftRecords, HostileInputIsCountedNotFatal) {
  // Deep nesting, control bytes, invalid UTF-8 and random bytes: each a bad
  // record under policy skip, never a crash.
  TempDir dir;
  const std::string rec = R"({"instruction": "a", "output": "b"})";
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  std::string random;
  Rng rng(3);
  for (int i = 0; i < 4000; ++i) {
    const char c = static_cast<char>(rng.below(256));
    random.push_back(c == '\n' ? ' ' : c);
  }
  const std::string lines = rec + "\n" + deep + "\n{\"instruction\": \"\xff\xfe\", \"output\": \"b\"}\n" +
                            std::string("{\"instruction\": \"a\0b\", \"output\": \"c\"}\n", 38) +
                            random + "\n" + rec + "\n";
  SftReadOptions o;
  o.on_bad_record = BadRecordPolicy::skip;
  SftReadReport rep;
  const auto recs = read_ok({write_text(dir.file("hostile.jsonl"), lines)}, o, &rep);
  EXPECT_EQ(recs.size(), 2u);
  EXPECT_EQ(rep.bad_records, 4);
  EXPECT_EQ(rep.first_bad[0].reason, "expected a JSON object, found an array");
  EXPECT_NE(rep.first_bad[1].reason.find("invalid JSON"), std::string::npos);
  // The same deep nesting as an array element.
  const auto recs2 =
      read_ok({write_text(dir.file("hostile.json"), "[" + deep + ", " + rec + "]")}, o, &rep);
  EXPECT_EQ(recs2.size(), 1u);
  EXPECT_EQ(rep.bad_records, 1);
}

TEST(SftRecords, OptionErrors) {
  expect_error(read_sft_records({}, {}), {"no SFT data files given"});
  expect_error(read_sft_records({"/nonexistent/x.jsonl"}, {}),
               {"/nonexistent/x.jsonl", "cannot open the SFT data file"});
  TempDir dir;
  expect_error(read_sft_records({dir.path()}, {}), {dir.path(), "read error"});
  SftReadOptions o;
  o.max_record_bytes = 1;
  expect_error(read_sft_records({fixture("alpaca.jsonl")}, o), {"max_record_bytes 1 is too small"});
  expect_error(parse_sft_format("sharegpt"), {"unknown SFT data format 'sharegpt'", "medical-o1"});
  EXPECT_EQ(parse_sft_format("medical_o1").value(), SftFormat::medical_o1);
  EXPECT_EQ(parse_sft_format("auto").value(), SftFormat::auto_detect);
  expect_error(parse_bad_record_policy("ignore"), {"unknown bad-record policy 'ignore'"});
  EXPECT_EQ(parse_bad_record_policy("skip").value(), BadRecordPolicy::skip);
}

}  // namespace
}  // namespace el::data
