// What: text <-> token ids. Two implementations behind one small interface:
//   ByteTokenizer  the built-in byte-level tokenizer (vocab 256, token = byte), what
//                  `prep --from text` used before tokenizers existed;
//   BpeTokenizer   a Hugging Face `tokenizer.json` with a byte-level BPE model (GPT-2 style
//                  ByteLevel pre-tokenizer, Llama-3 style Split regex + ByteLevel), encoding
//                  and decoding exactly as the `tokenizers` library does, special tokens
//                  included (io/text/bpe_tokenizer.cc).
// Why: prep, generate and eval all turn text into ids and back; they only see this header.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mt::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // "byte" or "bpe (tokenizer.json: PATH)": for logs and errors.
  virtual std::string describe() const = 0;
  // Ids of the vocabulary, special tokens included (the largest id + 1).
  virtual int vocab_size() const = 0;
  // Text -> ids. Special tokens written in the text (e.g. "<|endoftext|>") become their ids.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids -> text (bytes; a prefix of a multi-byte character may end it incomplete).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // The id of a token written as text ("<|endoftext|>"), if the vocabulary has it.
  virtual std::optional<int32_t> token_id(std::string_view token) const = 0;
  // The end-of-text token prep appends between documents and generation stops at, if any.
  virtual std::optional<int32_t> eos_id() const = 0;
};

// "byte" gives the byte tokenizer; anything else is a path to a tokenizer.json (or a directory
// holding one). Throws Error naming the file and, for an unsupported model / pre-tokenizer /
// decoder type, naming that type.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

}  // namespace mt::io
