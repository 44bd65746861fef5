// PCRE2 (UTF + UCP, JIT-compiled) regexes for the tokenizer, matching as Oniguruma does inside `tokenizers`:
// \s also matches U+0085 and \w is Letter|Mark|Nd|Pc (Oniguruma's Unicode classes), and empty matches right
// after the previous match are skipped. Not a regex engine: PCRE2 does the matching.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer_internal.h"

namespace sy::tok {
namespace {

// Rewrites the Oniguruma shorthand classes whose Unicode meaning differs in PCRE2 10.42.
std::string translate_pattern(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
      } else if (e == 'w') {
        out += in_class ? "\\p{L}\\p{M}\\p{Nd}\\p{Pc}" : "[\\p{L}\\p{M}\\p{Nd}\\p{Pc}]";
      } else if (e == 'W' && !in_class) {
        out += "[^\\p{L}\\p{M}\\p{Nd}\\p{Pc}]";
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(p, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

// Per-thread PCRE2 match state: one match block and a JIT stack large enough for long whitespace runs.
struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

}  // namespace

Regex::Regex(const std::string& pattern, bool literal) : pattern_(pattern) {
  std::string translated = literal ? pattern : translate_pattern(pattern);
  uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);  // UCP is not allowed with LITERAL
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), options,
                                   &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(error, msg, sizeof(msg));
    throw make_error<FormatError>(kComponent, "cannot compile regex \"", pattern, "\" at offset ", offset, ": ",
                                  reinterpret_cast<const char*>(msg), "; fix the pattern in the tokenizer.json");
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  code_ = std::shared_ptr<void>(code, [](void* c) { pcre2_code_free(static_cast<pcre2_code*>(c)); });
}

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_.get());
  MatchState& st = match_state();
  SY_REQUIRE(st.data != nullptr, OutOfMemory, kComponent, "cannot allocate PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (pos <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.data, st.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      throw make_error<InvalidArgument>(kComponent, "regex \"", pattern_, "\" failed on the input: ",
                                        reinterpret_cast<const char*>(msg), "; shorten the input text");
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    size_t s = ov[0], e = ov[1];
    if (s == e && have_last && last_end == e) {
      // Oniguruma iteration: skip an empty match right after the previous one and step one character.
      if (pos >= text.size()) break;
      size_t i = pos;
      next_code_point(text, i);
      pos = i;
      continue;
    }
    out.emplace_back(s, e);
    pos = e;
    have_last = true;
    last_end = e;
  }
}

Regex regex_from_pattern_json(const Json& j, const char* owner) {
  SY_REQUIRE(j.is_object() && j.size() == 1, FormatError, kComponent, owner,
             ".pattern must be {\"String\": ...} or {\"Regex\": ...}; fix the tokenizer.json");
  if (j.contains("String") && j.at("String").is_string()) return Regex(j.at("String").get<std::string>(), true);
  if (j.contains("Regex") && j.at("Regex").is_string()) return Regex(j.at("Regex").get<std::string>(), false);
  throw make_error<FormatError>(kComponent, owner,
                                ".pattern must be {\"String\": ...} or {\"Regex\": ...}; fix the tokenizer.json");
}

std::string regex_replace(const Regex& re, std::string_view s, std::string_view content) {
  std::vector<std::pair<size_t, size_t>> matches;
  re.find_all(s, matches);
  if (matches.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t prev = 0;
  for (auto [b, e] : matches) {
    out.append(s.data() + prev, b - prev);
    out.append(content);
    prev = e;
  }
  out.append(s.data() + prev, s.size() - prev);
  return out;
}

}  // namespace sy::tok
