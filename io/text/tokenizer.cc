// What: the byte tokenizer and load_tokenizer (see tokenizer.h). The BPE tokenizer is issue
// #15's branch tok; until it lands a tokenizer.json is refused.
#include "io/text/tokenizer.h"

#include "core/error.h"

namespace mt::io {
namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::string describe() const override { return "byte"; }
  int vocab_size() const override { return 256; }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    s.reserve(ids.size());
    for (int32_t id : ids)
      if (id >= 0 && id < 256) s.push_back(static_cast<char>(id));
    return s;
  }
  std::optional<int32_t> token_id(std::string_view) const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
};

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  throw core::Error("BPE tokenizers are not built yet (" + spec + ")");
}

}  // namespace mt::io
