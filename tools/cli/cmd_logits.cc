// switchyard logits --model DIR --prompt-ids 1,2,3 --output FILE.npy
// Writes float32 logits of shape (prompt length, vocab) as NumPy .npy.
#include <cstdio>

#include "cli_util.h"
#include "commands.h"
#include "switchyard/io/npy.h"

namespace sy::cli {

CommandRunner add_logits_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Write the logits of every prompt position to a .npy file");
  auto model_dir = std::make_shared<std::string>();
  auto ids_text = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  cmd->add_option("--model", *model_dir, "Hugging Face model directory (default: the built-in model)");
  cmd->add_option("--prompt-ids", *ids_text, "Comma-separated token ids, e.g. 1,2,3")->required();
  cmd->add_option("--output", *output, "Output .npy file (float32, shape (prompt length, vocab))")->required();
  return [=]() {
    std::vector<int64_t> ids = parse_id_list(*ids_text, "--prompt-ids");
    auto model = load_model_or_builtin(*model_dir);
    check_ids_in_vocab(ids, model->config().vocab_size, "--prompt-ids");
    KvCache cache = model->new_cache(static_cast<int64_t>(ids.size()));
    Tensor logits = model->forward(ids, cache, true);
    write_npy(*output, logits);
    return 0;
  };
}

}  // namespace sy::cli
