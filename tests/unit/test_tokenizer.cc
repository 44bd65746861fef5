// Tokenizer behaviour beyond the goldens: decode(encode(s)) == s on random Unicode for lossless tokenizers,
// streaming decode, and bad input (missing file, malformed JSON, unknown types, inconsistent merges,
// invalid UTF-8), each a typed error with the [tokenizer] prefix.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "switchyard/core/error.h"
#include "switchyard/io/tokenizer.h"

namespace {

std::string fixture(const std::string& name) {
  return std::string(SY_FIXTURES_DIR) + "/tokenizers/" + name + "/tokenizer.json";
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// A random string mixing ASCII, whitespace runs, Latin-1, combining marks, CJK, emoji and rare planes.
std::string random_text(std::mt19937& rng) {
  static const char32_t kPicks[] = {' ', ' ', '\n', '\t', '\r', 0x85, 0xA0, 0x2028, 0x301, 0x308, 0x200D, 0xFE0F,
                                    0x4E2D, 0x6587, 0x1F600, 0x1F3FD, 0xE9, 0xDF, 0x3A3, 0x430, 0xFFFD, 0x10FFFF};
  std::uniform_int_distribution<int> len(0, 40), kind(0, 9), ascii(32, 126), any(0xA0, 0x2FFFF);
  std::string s;
  int n = len(rng);
  for (int i = 0; i < n; ++i) {
    int k = kind(rng);
    char32_t c;
    if (k < 5) c = static_cast<char32_t>(ascii(rng));
    else if (k < 8) c = kPicks[rng() % (sizeof(kPicks) / sizeof(kPicks[0]))];
    else c = static_cast<char32_t>(any(rng));
    if (c >= 0xD800 && c <= 0xDFFF) c = 'x';
    append_utf8(s, c);
  }
  return s;
}

class Lossless : public ::testing::TestWithParam<std::string> {};

TEST_P(Lossless, DecodeOfEncodeIsIdentityOnRandomUnicode) {
  sy::Tokenizer tok = sy::Tokenizer::from_file(fixture(GetParam()));
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string s = random_text(rng);
    auto ids = tok.encode(s, false);
    ASSERT_EQ(tok.decode(ids), s) << "trial " << trial;
  }
}

INSTANTIATE_TEST_SUITE_P(ByteLevel, Lossless,
                         ::testing::Values("gpt2_bytelevel", "llama3_split", "o200k_split"),
                         [](const auto& info) { return info.param; });

// Streams ids one at a time and checks that the pieces are valid UTF-8 and concatenate to the full decode.
void check_stream(const sy::Tokenizer& tok, const std::string& text, bool skip_special) {
  auto ids = tok.encode(text, true);
  sy::StreamDecoder stream(tok, skip_special);
  std::string joined;
  for (int32_t id : ids) {
    std::string piece = stream.step(id);
    // No piece may end inside a UTF-8 character.
    size_t i = 0;
    while (i < piece.size()) {
      auto c = static_cast<unsigned char>(piece[i]);
      size_t len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      ASSERT_LE(i + len, piece.size()) << "piece ends mid-character";
      i += len;
    }
    joined += piece;
  }
  joined += stream.flush();
  EXPECT_EQ(joined, tok.decode(ids, skip_special));
}

TEST(TokenizerStream, ByteLevelHoldsBackPartialCharacters) {
  sy::Tokenizer tok = sy::Tokenizer::from_file(fixture("gpt2_bytelevel"));
  check_stream(tok, "日本語 and emoji 😀🎉 👩‍💻 then text", false);
  // A 4-byte emoji split into single-byte tokens yields nothing until its last byte arrives.
  auto ids = tok.encode("😀", false);
  ASSERT_GT(ids.size(), 1u);
  sy::StreamDecoder stream(tok);
  for (size_t k = 0; k + 1 < ids.size(); ++k) EXPECT_EQ(stream.step(ids[k]), "");
  EXPECT_EQ(stream.step(ids.back()), "😀");
}

TEST(TokenizerStream, ByteFallbackAndMetaspace) {
  sy::Tokenizer tok = sy::Tokenizer::from_file(fixture("llama_bytefallback"));
  check_stream(tok, "Hello world, 日本語 😀 and more words here", false);
  check_stream(tok, "Hello world, 日本語 😀 and more words here", true);
  // The first word's space is stripped exactly as in a whole decode; later ones are kept.
  sy::StreamDecoder stream(tok, true);
  std::string out;
  for (int32_t id : tok.encode("the river ran", true)) out += stream.step(id);
  out += stream.flush();
  EXPECT_EQ(out, "the river ran");
}

TEST(TokenizerStream, AllFixtures) {
  for (const char* name : {"qwen2_split", "o200k_split", "mistral_prepend", "nfkc_lower", "added_tokens"}) {
    SCOPED_TRACE(name);
    sy::Tokenizer tok = sy::Tokenizer::from_file(fixture(name));
    check_stream(tok, "The cat <mask> sat. 東京 😀 <|im_start|>x 123", false);
  }
}

// Expects `fn` to throw E whose message starts with "[tokenizer] " and contains `needle`.
template <typename E, typename Fn>
void expect_error(Fn fn, const std::string& needle) {
  try {
    fn();
    FAIL() << "expected an error mentioning \"" << needle << "\"";
  } catch (const E& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("[tokenizer] ", 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

const char* kTinyBpe = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})";

TEST(TokenizerErrors, MissingFile) {
  expect_error<sy::IoError>([] { sy::Tokenizer::from_file("/nonexistent/tokenizer.json"); }, "cannot open");
}

TEST(TokenizerErrors, MalformedJson) {
  expect_error<sy::FormatError>([] { sy::Tokenizer::from_json("{\"model\": {", "t.json"); }, "not valid JSON");
  expect_error<sy::FormatError>([] { sy::Tokenizer::from_json("[1, 2]", "t.json"); }, "JSON object");
  expect_error<sy::FormatError>([] { sy::Tokenizer::from_json("{}", "t.json"); }, "\"model\"");
  expect_error<sy::FormatError>(
      [] { sy::Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": [], "merges": []}})"); }, "vocab");
  expect_error<sy::FormatError>(
      [] { sy::Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})"); }, "id");
  expect_error<sy::FormatError>(
      [] { sy::Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}})"); }, "merge #0");
}

TEST(TokenizerErrors, UnknownComponentTypes) {
  expect_error<sy::Unsupported>(
      [] { sy::Tokenizer::from_json(R"({"model": {"type": "Unigram", "vocab": []}})"); }, "model type \"Unigram\"");
  std::string base = kTinyBpe;
  auto with = [&](const std::string& field) {
    return "{\"model\": " + base.substr(10, base.size() - 11) + ", " + field + "}";
  };
  expect_error<sy::Unsupported>([&] { sy::Tokenizer::from_json(with(R"("normalizer": {"type": "Fancy"})")); },
                                "normalizer type \"Fancy\"");
  expect_error<sy::Unsupported>([&] { sy::Tokenizer::from_json(with(R"("pre_tokenizer": {"type": "Fancy"})")); },
                                "pre-tokenizer type \"Fancy\"");
  expect_error<sy::Unsupported>([&] { sy::Tokenizer::from_json(with(R"("decoder": {"type": "Fancy"})")); },
                                "decoder type \"Fancy\"");
  expect_error<sy::Unsupported>([&] { sy::Tokenizer::from_json(with(R"("post_processor": {"type": "Fancy"})")); },
                                "post-processor type \"Fancy\"");
  expect_error<sy::FormatError>(
      [&] {
        sy::Tokenizer::from_json(
            with(R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"})"));
      },
      "cannot compile regex");
  expect_error<sy::FormatError>(
      [&] {
        sy::Tokenizer::from_json(
            with(R"("pre_tokenizer": {"type": "Split", "pattern": {"String": "x"}, "behavior": "Sideways"})"));
      },
      "Sideways");
  EXPECT_NO_THROW(sy::Tokenizer::from_json(base));
}

TEST(TokenizerErrors, MergesReferringToUnknownTokens) {
  expect_error<sy::FormatError>(
      [] { sy::Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0, "ab": 1}, "merges": ["a b"]}})"); },
      "\"b\", which is not in the vocabulary");
  expect_error<sy::FormatError>(
      [] { sy::Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}})"); },
      "produces \"ab\"");
  expect_error<sy::FormatError>(
      [] { sy::Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]}})"); },
      "two tokens");
}

TEST(TokenizerErrors, InvalidUtf8InputAndBadIds) {
  sy::Tokenizer tok = sy::Tokenizer::from_file(fixture("gpt2_bytelevel"));
  for (std::string bad : {std::string("abc\xff"), std::string("\xc3"), std::string("a\xed\xa0\x80z"),
                          std::string("\xf4\x90\x80\x80"), std::string("\xc0\xaf")}) {
    expect_error<sy::InvalidArgument>([&] { tok.encode(bad); }, "not valid UTF-8");
  }
  std::vector<int32_t> ids = {0, 999999};
  expect_error<sy::InvalidArgument>([&] { tok.decode(ids); }, "not in the vocabulary");
  expect_error<sy::InvalidArgument>([&] { tok.id_to_token(-1); }, "not in the vocabulary");
}

TEST(TokenizerErrors, FuzzedJsonNeverCrashes) {
  std::ifstream in(fixture("added_tokens"));
  std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::mt19937 rng(7);
  int errors = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string s = good;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t pos = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[pos] = static_cast<char>(rng() % 128); break;
        case 1: s.erase(pos, 1 + rng() % 16); break;
        default: s.resize(pos); break;
      }
    }
    try {
      sy::Tokenizer t = sy::Tokenizer::from_json(s, "fuzzed.json");
      t.decode(t.encode("Hello <mask> world 123 😀"));
    } catch (const sy::InternalError&) {
      throw;
    } catch (const sy::Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

TEST(Tokenizer, Lookups) {
  sy::Tokenizer tok = sy::Tokenizer::from_file(fixture("qwen2_split"));
  auto id = tok.token_to_id("<|im_start|>");
  ASSERT_TRUE(id.has_value());
  EXPECT_TRUE(tok.is_special(*id));
  EXPECT_EQ(tok.id_to_token(*id), "<|im_start|>");
  EXPECT_FALSE(tok.token_to_id("no such token at all").has_value());
  EXPECT_GE(tok.vocab_size(), 900);
}

}  // namespace
