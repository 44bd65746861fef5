// switchyard data prepare --tokenizer FILE --input F [F ...] --output OUT.npy [--eos-id N | --eos-token T]
// Tokenizes each input file as one document, appends the end-of-document id after each, and writes the flat
// ids as an int32 .npy file (the `switchyard train --data` format: documents end at each end-of-document id).
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "commands.h"
#include "switchyard/core/error.h"
#include "switchyard/io/npy.h"
#include "switchyard/io/tokenizer.h"

namespace sy::cli {

CommandRunner add_data_command(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Prepare training data");
  data->require_subcommand(1);
  auto* prep = data->add_subcommand("prepare", "Tokenize text files into a packed-document token file");
  struct Flags {
    std::string tokenizer, output, eos_token = "<|endoftext|>";
    std::vector<std::string> inputs;
    int64_t eos_id = -1;
  };
  auto f = std::make_shared<Flags>();
  prep->add_option("--tokenizer", f->tokenizer, "tokenizer.json")->required();
  prep->add_option("--input", f->inputs, "Text files, one document each")->required();
  prep->add_option("--output", f->output, "Output .npy (int32 ids)")->required();
  prep->add_option("--eos-id", f->eos_id, "End-of-document id (default: the id of --eos-token)");
  prep->add_option("--eos-token", f->eos_token, "End-of-document token")->capture_default_str();
  return [f, prep]() {
    if (!prep->parsed()) return 2;
    Tokenizer tok = Tokenizer::from_file(f->tokenizer);
    int64_t eos = f->eos_id;
    if (eos < 0) {
      auto id = tok.token_to_id(f->eos_token);
      if (!id) {
        throw make_error<InvalidArgument>("data", "the tokenizer has no token \"", f->eos_token,
                                          "\"; pass --eos-id or --eos-token");
      }
      eos = *id;
    }
    std::vector<int32_t> ids;
    for (const std::string& path : f->inputs) {
      std::ifstream in(path, std::ios::binary);
      if (!in) throw make_error<IoError>("data", "cannot read ", path);
      std::stringstream text;
      text << in.rdbuf();
      std::vector<int32_t> doc = tok.encode(text.str(), false);
      ids.insert(ids.end(), doc.begin(), doc.end());
      ids.push_back(static_cast<int32_t>(eos));
    }
    Tensor t = Tensor::empty({static_cast<int64_t>(ids.size())}, DType::kI32);
    std::copy(ids.begin(), ids.end(), t.i32());
    write_npy(f->output, t);
    std::fprintf(stderr, "data: %zu documents, %zu tokens -> %s\n", f->inputs.size(), ids.size(), f->output.c_str());
    return 0;
  };
}

}  // namespace sy::cli
