// switchyard: the command-line entry point. Registers subcommands and maps errors to exit codes:
// 0 success, 1 a reported error (bad input, bad files), 2 bad usage (unknown flag or command), 3 internal error.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "commands.h"
#include "switchyard/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"switchyard: run, serve, train, prune and plan Mixture-of-Experts models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "switchyard 0.1.0");
  std::vector<std::pair<CLI::App*, sy::cli::CommandRunner>> commands;
  auto add = [&](sy::cli::CommandRunner (*factory)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    sy::cli::CommandRunner runner = factory(app);
    auto subs = app.get_subcommands({});
    if (subs.size() > before) commands.emplace_back(subs.back(), std::move(runner));
  };
  add(sy::cli::add_inspect_command);
  add(sy::cli::add_logits_command);
  add(sy::cli::add_generate_command);
  add(sy::cli::add_tokenize_command);
  add(sy::cli::add_plan_command);
  add(sy::cli::add_train_command);
  add(sy::cli::add_data_command);
  add(sy::cli::add_convert_command);
  add(sy::cli::add_eval_command);
  add(sy::cli::add_prune_command);
  add(sy::cli::add_layout_command);
  add(sy::cli::add_serve_command);

  auto is_command = [&](const std::string& name) {
    for (auto& entry : commands) {
      if (entry.first->get_name() == name) return true;
    }
    return false;
  };
  if (argc > 1 && argv[1][0] != '-' && !is_command(argv[1])) {
    std::string names;
    for (auto& [sub, runner] : commands) names += (names.empty() ? "" : ", ") + sub->get_name();
    std::fprintf(stderr, "error: unknown command \"%s\" (commands: %s; see switchyard --help)\n", argv[1], names.c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (auto& [sub, runner] : commands) {
      if (sub->parsed()) return runner();
    }
    return 2;
  } catch (const sy::InternalError& e) {
    std::fprintf(stderr, "error: %s\n(this is a bug in switchyard; please report it)\n", e.what());
    return 3;
  } catch (const sy::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 3;
  }
}
