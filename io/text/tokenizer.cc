// What: the byte tokenizer and load_tokenizer (see tokenizer.h), the dispatcher: "byte", or a
// tokenizer.json (a file, or a directory holding one) read with nlohmann-json and handed to
// BpeTokenizer (io/text/bpe_tokenizer.h), which refuses what it does not support.
#include "io/text/tokenizer.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/text/bpe_tokenizer.h"

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
  namespace fs = std::filesystem;
  std::string path = spec;
  std::error_code ec;
  if (fs::is_directory(path, ec)) path = (fs::path(path) / "tokenizer.json").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw core::Error("cannot open the tokenizer").with_file(path).with_hint(
        "--tokenizer takes \"byte\", a tokenizer.json or a directory holding one");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw core::Error("malformed tokenizer JSON").with_file(path).with_library(e.what());
  }
  try {
    return std::make_unique<BpeTokenizer>(j, path);
  } catch (const nlohmann::json::exception& e) {  // a key of the wrong type or missing
    throw core::Error("unexpected tokenizer.json content").with_file(path).with_library(e.what());
  }
}

}  // namespace mt::io
