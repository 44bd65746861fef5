// `switchyard tokenize`: encode text (or a file) to ids, or decode ids to text, with a tokenizer.json.
// Only maps flags to sy::Tokenizer; prints {"ids": [...]} / {"text": ...} (json) or plain ids / text (text).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "switchyard/core/error.h"
#include "switchyard/io/tokenizer.h"

namespace sy::cli {
namespace {

struct TokenizeOptions {
  std::string tokenizer, text, file, decode, format = "json";
  bool no_special = false, skip_special = false;
};

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::string item;
  std::string cleaned = s;
  for (char& c : cleaned)
    if (c == ',' || c == '[' || c == ']') c = ' ';
  std::istringstream in(cleaned);
  while (in >> item) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SY_REQUIRE(used == item.size() && v >= 0 && v < (1LL << 31), InvalidArgument, "tokenize", "--decode: \"", item,
               "\" is not a token id; pass ids like 1,2,3");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

int run_tokenize(const TokenizeOptions& o) {
  std::string path = o.tokenizer;
  if (std::filesystem::is_directory(path)) path = (std::filesystem::path(path) / "tokenizer.json").string();
  Tokenizer tok = Tokenizer::from_file(path);
  bool json = o.format == "json";
  if (!o.decode.empty()) {
    std::string text = tok.decode(parse_ids(o.decode), o.skip_special);
    if (json) std::cout << nlohmann::json{{"text", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    else std::cout << text << "\n";
    return 0;
  }
  std::string text = o.text;
  if (!o.file.empty()) {
    std::ifstream in(o.file, std::ios::binary);
    SY_REQUIRE(in, IoError, "tokenize", "cannot open --file ", o.file, "; check the path");
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  std::vector<int32_t> ids = tok.encode(text, !o.no_special);
  if (json) {
    std::cout << nlohmann::json{{"ids", ids}}.dump() << "\n";
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

CommandRunner add_tokenize_command(CLI::App& app) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* sub = app.add_subcommand("tokenize", "encode text to token ids, or decode ids to text (tokenizer.json)");
  sub->add_option("--tokenizer", opts->tokenizer, "tokenizer.json, or a model directory containing one")->required();
  auto* text = sub->add_option("--text", opts->text, "text to encode");
  auto* file = sub->add_option("--file", opts->file, "file whose contents to encode");
  auto* decode = sub->add_option("--decode", opts->decode, "ids to decode, e.g. 1,2,3");
  text->excludes(file);
  decode->excludes(text)->excludes(file);
  sub->add_option("--format", opts->format, "output format")->check(CLI::IsMember({"json", "text"}));
  sub->add_flag("--no-special", opts->no_special, "encode without the post-processor's special tokens (e.g. BOS)");
  sub->add_flag("--skip-special", opts->skip_special, "decode without special tokens");
  sub->callback([sub, text, file, decode] {
    if (text->count() + file->count() + decode->count() == 0)
      throw CLI::RequiredError("one of --text, --file or --decode");
  });
  return [opts] { return run_tokenize(*opts); };
}

}  // namespace sy::cli
