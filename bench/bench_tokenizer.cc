// Tokenizer encode throughput on one core: MB/s and tokens/s of English text, next to the Hugging Face
// `tokenizers` library (bench/tokenizers_peer.py, run in the same invocation when python3 can import it).
//   bench_tokenizer [--tokenizer tokenizer.json] [--file english.txt] [--mb 4]
// Without --file the text is synthesized from embedded English paragraphs (sentences shuffled, numbers varied).
// Text is encoded in ~1 KB chunks (paragraph-sized requests), the same chunks for both implementations.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "switchyard/core/error.h"
#include "switchyard/io/tokenizer.h"

namespace {

const char* kSentences[] = {
    "The river ran slowly past the old mill, and the miller's daughter counted the sacks of grain.",
    "Seventeen sacks in the morning and twenty-three in the afternoon: it had been a good year.",
    "She wrote the numbers in a small book with a green cover, the same book her grandmother had used.",
    "A switchyard sorts rail cars onto tracks, and a small engine pushes each one over a hump.",
    "The yard master watches from a tower and sets the switches; the work never stops, day or night.",
    "Tokens are sorted onto experts in much the same way: a router looks at each token and chooses.",
    "It's a truth that isn't often said: we'll learn more from what we've broken than from what we kept.",
    "In the spring the fields were green, and the children ran along the hedges looking for birds' nests.",
    "Nobody in the village could remember when the bridge had last been painted, or by whom.",
    "\"Are you coming to the market on Saturday?\" asked the baker, wiping flour from his hands.",
    "The committee met on Tuesday to discuss the budget, the new school building and the drainage.",
    "Scientists measured the temperature of the lake every hour for three years and published the data.",
    "Most of the letters were never answered, but a few replies arrived months later from abroad.",
    "He opened the window, listened to the rain, and decided that the report could wait until morning.",
};

std::string synthesize(size_t bytes) {
  std::mt19937 rng(42);
  std::string text;
  std::uniform_int_distribution<int> pick(0, sizeof(kSentences) / sizeof(kSentences[0]) - 1), num(1, 99999);
  while (text.size() < bytes) {
    for (int s = 0; s < 6; ++s) {
      text += kSentences[pick(rng)];
      if (rng() % 3 == 0) text += " In " + std::to_string(1800 + num(rng) % 224) + " there were " + std::to_string(num(rng)) + " of them.";
      text += ' ';
    }
    text += "\n\n";
  }
  return text;
}

std::vector<std::string> chunks_of(const std::string& text) {
  std::vector<std::string> chunks;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', std::min(text.size(), start + 1024));
    end = end == std::string::npos ? text.size() : end + 1;
    chunks.push_back(text.substr(start, end - start));
    start = end;
  }
  return chunks;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  fs::path src = fs::path(__FILE__).parent_path();
  std::string tok_path = (src.parent_path() / "tests/fixtures/tokenizers/qwen2_split/tokenizer.json").string();
  std::string file;
  double mb = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--tokenizer") tok_path = argv[i + 1];
    else if (a == "--file") file = argv[i + 1];
    else if (a == "--mb") mb = std::stod(argv[i + 1]);
  }
  try {
    std::string text;
    if (file.empty()) {
      text = synthesize(static_cast<size_t>(mb * 1e6));
      file = (fs::temp_directory_path() / "sy_bench_tokenizer.txt").string();
      std::ofstream(file, std::ios::binary) << text;
    } else {
      std::ifstream in(file, std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
    auto chunks = chunks_of(text);
    sy::Tokenizer tok = sy::Tokenizer::from_file(tok_path);
    size_t num_tokens = 0;
    for (const auto& c : chunks) num_tokens += tok.encode(c, false).size();  // warm-up (fills the word cache)
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      size_t n = 0;
      for (const auto& c : chunks) n += tok.encode(c, false).size();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
      num_tokens = n;
    }
    // Cold: a fresh tokenizer, so every distinct word goes through the BPE merge loop once.
    sy::Tokenizer cold = sy::Tokenizer::from_file(tok_path);
    auto t0 = std::chrono::steady_clock::now();
    for (const auto& c : chunks) cold.encode(c, false);
    double cold_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::printf("tokenizer   %s\ntext        %s (%.2f MB, %zu chunks)\n", tok_path.c_str(), file.c_str(),
                text.size() / 1e6, chunks.size());
    std::printf("switchyard  encode %.1f MB/s (first pass %.1f MB/s), %.2f M tokens/s, %zu tokens, 1 thread\n",
                text.size() / 1e6 / best, text.size() / 1e6 / cold_s, num_tokens / 1e6 / best, num_tokens);
    std::fflush(stdout);
    std::string cmd = "python3 '" + (src / "tokenizers_peer.py").string() + "' --tokenizer '" + tok_path +
                      "' --file '" + file + "' 2>&1";
    if (std::system(cmd.c_str()) != 0) std::printf("peer        unavailable (pip install tokenizers)\n");
  } catch (const sy::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
