// The subcommands of the switchyard binary. Each lives in its own cmd_*.cc and only maps flags to the
// public API; main.cc registers them and turns sy::Error into "error: ..." and a non-zero exit.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace sy::cli {

// A registered command: `run` executes after parsing when its subcommand was chosen; returns the exit code.
using CommandRunner = std::function<int()>;

CommandRunner add_inspect_command(CLI::App& app);
CommandRunner add_logits_command(CLI::App& app);
CommandRunner add_generate_command(CLI::App& app);
CommandRunner add_tokenize_command(CLI::App& app);
CommandRunner add_plan_command(CLI::App& app);
CommandRunner add_train_command(CLI::App& app);
CommandRunner add_data_command(CLI::App& app);
CommandRunner add_convert_command(CLI::App& app);
CommandRunner add_eval_command(CLI::App& app);
CommandRunner add_prune_command(CLI::App& app);  // PreMoe: cmd_prune.cc
CommandRunner add_layout_command(CLI::App& app);
CommandRunner add_serve_command(CLI::App& app);    // OpenAI-compatible server: cmd_serve.cc

}  // namespace sy::cli
