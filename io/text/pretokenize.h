// What: the text-splitting stages of a Hugging Face tokenizer, before the BPE model sees a
// piece (io/text/bpe_tokenizer.cc):
//   Regex         a PCRE2 pattern (UTF + UCP, JIT-compiled): `\p{L}`, `\p{N}`, `(?i:...)`,
//                 lookahead, as the `tokenizers` library's Oniguruma patterns need;
//   PreTokenizer  the `pre_tokenizer` of tokenizer.json: ByteLevel (add_prefix_space,
//                 use_regex: the GPT-2 pattern), Split (Regex or String pattern, behavior
//                 Removed / Isolated / MergedWithPrevious / MergedWithNext / Contiguous,
//                 invert) and Sequence of them, applied as `tokenizers` applies them: each
//                 step splits every piece the previous step produced;
//   AddedTokens   the added / special tokens, found in the text before pre-tokenization
//                 (leftmost-longest, lstrip / rstrip / single_word as `tokenizers` does).
// Pieces are string_views into the input text or, for a prepended prefix space, into
// strings an Arena owns for the duration of one encode.
// Why: std::regex has no Unicode classes; byte-exact agreement with `tokenizers` needs its
// splitting rules reproduced step by step (the tests compare against the library's ids).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace mt::io {

class Regex {
 public:
  // `literal`: the pattern is a plain string (Split's {"String": ...}). `where` names the
  // tokenizer file in errors.
  Regex(const std::string& pattern, bool literal, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Appends the [start, end) byte ranges of the non-overlapping matches in `s`, left to
  // right; after an empty match the search resumes one character later. `s` must be valid
  // UTF-8 (checked once per encode by the caller, not per match).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// Owns the strings pieces may point into (a piece with a prepended space) during one encode.
using Arena = std::deque<std::string>;

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizerStep {
  enum class Kind { ByteLevel, Split } kind = Kind::ByteLevel;
  bool add_prefix_space = false;  // ByteLevel
  bool use_regex = true;          // ByteLevel: split with the GPT-2 pattern
  std::shared_ptr<Regex> regex;   // Split (or ByteLevel's GPT-2 pattern)
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;            // Split: the pattern marks the pieces to keep between
};

class PreTokenizer {
 public:
  // From tokenizer.json's "pre_tokenizer" (null: the text is one piece). Throws Error naming
  // `where` and an unsupported type. has_byte_level() says whether ByteLevel is among the steps.
  static PreTokenizer from_json(const nlohmann::json& j, const std::string& where);
  bool has_byte_level() const;
  // Appends the pieces of `text` (empty pieces dropped, as `tokenizers` drops them).
  void run(std::string_view text, std::vector<std::string_view>& out, Arena& arena) const;

 private:
  std::vector<PreTokenizerStep> steps_;
};

// GPT-2's pre-tokenization pattern (ByteLevel with use_regex).
extern const char* const kGpt2Pattern;

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

// A text segment: an added token (id >= 0, [start, end) the text it consumed) or text to
// pre-tokenize (id = -1).
struct Segment {
  int32_t id;
  size_t start, end;
};

class AddedTokens {
 public:
  AddedTokens() = default;
  explicit AddedTokens(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  // Splits `text` on the tokens, leftmost first and at one position the longest, as the
  // `tokenizers` library's AddedVocabulary::find_matches (Aho-Corasick, LeftmostLongest).
  void split(std::string_view text, std::vector<Segment>& out) const;

 private:
  std::vector<AddedToken> tokens_;
  std::vector<std::vector<int>> by_first_byte_;  // [256]: indexes into tokens_, longest first
};

// The byte <-> unicode-character map of GPT-2's ByteLevel (printable bytes map to
// themselves, the others to U+0100...), as UTF-8 strings.
const std::vector<std::string>& byte_level_chars();  // [256]
// UTF-8 of a ByteLevel-mapped token -> its bytes; false if a character is not in the map.
bool byte_level_decode(std::string_view token, std::string& bytes);

// Index of the first invalid UTF-8 byte of `s`, or npos (overlongs, surrogates and code
// points past U+10FFFF are invalid, as in Rust's str).
size_t find_invalid_utf8(std::string_view s);

}  // namespace mt::io
