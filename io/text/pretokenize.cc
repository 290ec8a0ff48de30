// What: Regex (PCRE2), PreTokenizer, AddedTokens and the ByteLevel map (see pretokenize.h).
// The splitting rules follow the `tokenizers` library (tokenizers/src/tokenizer/normalizer.rs
// `split`, pre_tokenizers/byte_level.rs, added_vocabulary.rs `find_matches`) rule by rule.
#include "io/text/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "core/error.h"

namespace mt::io {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// One match data block per thread (a pcre2 match data must not be shared by threads), with a
// JIT stack large enough for long pieces.
struct MatchScratch {
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  pcre2_match_context* ctx = pcre2_match_context_create(nullptr);
  MatchScratch() { pcre2_jit_stack_assign(ctx, nullptr, stack); }
  ~MatchScratch() {
    pcre2_match_context_free(ctx);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(md);
  }
};

// Unicode White_Space (Rust's char::is_whitespace), for added tokens' lstrip / rstrip.
bool is_whitespace(uint32_t cp) {
  return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

uint32_t decode_at(std::string_view s, size_t i, size_t* len) {
  const auto c = static_cast<unsigned char>(s[i]);
  *len = utf8_len(c);
  uint32_t cp = *len == 1 ? c : *len == 2 ? c & 0x1F : *len == 3 ? c & 0x0F : c & 0x07;
  for (size_t k = 1; k < *len; ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

// Start of the UTF-8 character that ends at `end` (exclusive).
size_t prev_char(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

SplitBehavior parse_behavior(const std::string& b, const std::string& where) {
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  throw core::Error(fmt::format("unknown Split behavior '{}'", b)).with_file(where);
}

void add_steps(const nlohmann::json& j, const std::string& where, std::vector<PreTokenizerStep>& steps) {
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const auto& p : j.at("pretokenizers")) add_steps(p, where, steps);
  } else if (type == "ByteLevel") {
    PreTokenizerStep s;
    s.kind = PreTokenizerStep::Kind::ByteLevel;
    s.add_prefix_space = j.value("add_prefix_space", false);
    s.use_regex = j.value("use_regex", true);
    if (s.use_regex) {
      static const auto gpt2 = std::make_shared<Regex>(kGpt2Pattern, false, "the GPT-2 pattern");
      s.regex = gpt2;
    }
    steps.push_back(std::move(s));
  } else if (type == "Split") {
    PreTokenizerStep s;
    s.kind = PreTokenizerStep::Kind::Split;
    const auto& pat = j.at("pattern");
    if (pat.contains("Regex")) s.regex = std::make_shared<Regex>(pat["Regex"].get<std::string>(), false, where);
    else if (pat.contains("String")) s.regex = std::make_shared<Regex>(pat["String"].get<std::string>(), true, where);
    else throw core::Error("Split pre-tokenizer without a Regex or String pattern").with_file(where);
    s.behavior = parse_behavior(j.value("behavior", "Isolated"), where);
    s.invert = j.value("invert", false);
    steps.push_back(std::move(s));
  } else {
    throw core::Error(fmt::format("unsupported pre_tokenizer type '{}'", type))
        .with_file(where)
        .with_hint("supported: ByteLevel, Split, and a Sequence of them");
  }
}

// One Split step on one piece: the pieces it keeps, in order (tokenizers' NormalizedString::split).
void split_piece(std::string_view p, const PreTokenizerStep& s, std::vector<std::string_view>& out,
                 std::vector<std::pair<size_t, size_t>>& found) {
  found.clear();
  s.regex->find_all(p, found);
  struct Part {
    size_t a, b;
    bool match;
  };
  std::vector<Part> parts;
  parts.reserve(found.size() * 2 + 1);
  size_t prev = 0;
  for (auto [a, b] : found) {
    if (prev != a) parts.push_back({prev, a, s.invert});
    parts.push_back({a, b, !s.invert});
    prev = b;
  }
  if (prev != p.size()) parts.push_back({prev, p.size(), s.invert});
  std::vector<Part> acc;
  acc.reserve(parts.size());
  bool previous = false;
  switch (s.behavior) {
    case SplitBehavior::Isolated:
      acc = parts;
      break;
    case SplitBehavior::Removed:
      for (const auto& x : parts)
        if (!x.match) acc.push_back(x);
      break;
    case SplitBehavior::Contiguous:
      for (const auto& x : parts) {
        if (x.match == previous && !acc.empty()) acc.back().b = x.b;
        else acc.push_back(x);
        previous = x.match;
      }
      break;
    case SplitBehavior::MergedWithPrevious:
      for (const auto& x : parts) {
        if (x.match && !previous && !acc.empty()) acc.back().b = x.b;
        else acc.push_back(x);
        previous = x.match;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->match && !previous && !acc.empty()) acc.back().a = it->a;
        else acc.push_back(*it);
        previous = it->match;
      }
      std::reverse(acc.begin(), acc.end());
      break;
  }
  for (const auto& x : acc)
    if (x.b > x.a) out.push_back(p.substr(x.a, x.b - x.a));
}

}  // namespace

Regex::Regex(const std::string& pattern, bool literal, const std::string& where) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  const uint32_t opts = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err, &off, nullptr);
  if (!code_) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw core::Error(fmt::format("cannot compile the regex '{}' (at offset {})", pattern, off))
        .with_file(where)
        .with_library(reinterpret_cast<const char*>(msg));
  }
  jit_ = pcre2_jit_compile(static_cast<pcre2_code*>(code_), PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  thread_local MatchScratch scratch;
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  while (pos <= s.size()) {
    const int rc = jit_ ? pcre2_jit_match(code, subject, s.size(), pos, 0, scratch.md, scratch.ctx)
                        : pcre2_match(code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, scratch.md, scratch.ctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw core::Error(fmt::format("regex '{}' failed on a piece of {} bytes", pattern_, s.size()))
          .with_library(reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.md);
    out.emplace_back(ov[0], ov[1]);
    if (ov[1] > ov[0]) {
      pos = ov[1];
    } else {
      if (ov[1] >= s.size()) break;
      pos = ov[1] + utf8_len(static_cast<unsigned char>(s[ov[1]]));
    }
  }
}

PreTokenizer PreTokenizer::from_json(const nlohmann::json& j, const std::string& where) {
  PreTokenizer p;
  if (!j.is_null()) add_steps(j, where, p.steps_);
  return p;
}

bool PreTokenizer::has_byte_level() const {
  return std::any_of(steps_.begin(), steps_.end(),
                     [](const PreTokenizerStep& s) { return s.kind == PreTokenizerStep::Kind::ByteLevel; });
}

void PreTokenizer::run(std::string_view text, std::vector<std::string_view>& out, Arena& arena) const {
  if (text.empty()) return;
  if (steps_.empty()) {
    out.push_back(text);
    return;
  }
  thread_local std::vector<std::string_view> cur, next;
  thread_local std::vector<std::pair<size_t, size_t>> found;
  cur.assign(1, text);
  for (size_t k = 0; k < steps_.size(); ++k) {
    const auto& s = steps_[k];
    auto& dst = k + 1 == steps_.size() ? out : next;
    if (&dst == &next) next.clear();
    for (std::string_view p : cur) {
      if (s.kind == PreTokenizerStep::Kind::ByteLevel) {
        if (s.add_prefix_space && p.front() != ' ') {
          arena.push_back(" ");
          arena.back().append(p);
          p = arena.back();
        }
        if (!s.use_regex) {
          dst.push_back(p);
          continue;
        }
        // ByteLevel's regex split is Isolated: every match and every gap is a piece
      }
      split_piece(p, s, dst, found);
    }
    if (&dst == &next) std::swap(cur, next);
  }
}

AddedTokens::AddedTokens(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)), by_first_byte_(256) {
  for (size_t i = 0; i < tokens_.size(); ++i)
    if (!tokens_[i].content.empty())
      by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(static_cast<int>(i));
  for (auto& v : by_first_byte_)
    std::stable_sort(v.begin(), v.end(),
                     [&](int a, int b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
}

void AddedTokens::split(std::string_view text, std::vector<Segment>& out) const {
  size_t start_offset = 0, i = 0;
  while (i < text.size()) {
    const auto& cands = by_first_byte_[static_cast<unsigned char>(text[i])];
    const AddedToken* hit = nullptr;
    for (int c : cands) {
      const auto& t = tokens_[c];
      if (text.compare(i, t.content.size(), t.content) == 0) {
        hit = &t;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + hit->content.size();
    i = stop;
    if (hit->lstrip) {
      size_t ns = start;
      while (ns > 0) {
        const size_t b = prev_char(text, ns);
        size_t len = 0;
        if (!is_whitespace(decode_at(text, b, &len))) break;
        ns = b;
      }
      start = std::max(ns, start_offset);
    }
    if (hit->rstrip) {
      while (stop < text.size()) {
        size_t len = 0;
        if (!is_whitespace(decode_at(text, stop, &len))) break;
        stop += len;
      }
      i = stop;
    }
    if (start_offset < start) out.push_back({-1, start_offset, start});
    out.push_back({hit->id, start, stop});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({-1, start_offset, text.size()});
}

const std::vector<std::string>& byte_level_chars() {
  static const std::vector<std::string> chars = [] {
    std::array<int, 256> cp{};
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) cp[b] = direct[b] ? b : 256 + n++;
    std::vector<std::string> out(256);
    for (int b = 0; b < 256; ++b) {
      const int c = cp[b];
      if (c < 0x80) out[b] = std::string(1, static_cast<char>(c));
      else out[b] = {static_cast<char>(0xC0 | c >> 6), static_cast<char>(0x80 | (c & 0x3F))};
    }
    return out;
  }();
  return chars;
}

bool byte_level_decode(std::string_view token, std::string& bytes) {
  static const std::vector<int> inverse = [] {
    std::vector<int> inv(0x144, -1);
    const auto& chars = byte_level_chars();
    for (int b = 0; b < 256; ++b) {
      size_t len = 0;
      inv[decode_at(chars[b], 0, &len)] = b;
    }
    return inv;
  }();
  bytes.clear();
  for (size_t i = 0; i < token.size();) {
    size_t len = 0;
    if (i + utf8_len(static_cast<unsigned char>(token[i])) > token.size()) return false;
    const uint32_t cp = decode_at(token, i, &len);
    if (cp >= inverse.size() || inverse[cp] < 0) return false;
    bytes.push_back(static_cast<char>(inverse[cp]));
    i += len;
  }
  return true;
}

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return i;
    if (i + len > n) return i;
    uint32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = cp << 6 | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

}  // namespace mt::io
