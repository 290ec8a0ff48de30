// What: BpeTokenizer, a Hugging Face `tokenizer.json` with a byte-level BPE model, encoding
// and decoding as the `tokenizers` library (0.23) does:
//   encode(text) = Tokenizer.encode(text).ids: added tokens split out of the text first
//     (special tokens written in the text become their ids), each remaining segment
//     pre-tokenized (ByteLevel / Split, pretokenize.h) and each piece BPE-merged (lowest merge
//     rank first, leftmost among equal ranks, as tokenizers' Word::merge_all), then the
//     post-processor's single-sequence template (TemplateProcessing: e.g. Llama-3's
//     <|begin_of_text|> in front; ByteLevel and null add nothing);
//   decode(ids) = Tokenizer.decode(ids, skip_special_tokens=False) as bytes: each id's token
//     through the ByteLevel inverse map (a token with a character outside the map, such as an
//     added token's content, as its own UTF-8), unknown ids skipped. The one difference: the
//     library replaces invalid UTF-8 (an incomplete character at the end) by U+FFFD; we return
//     the bytes, so that streaming generation can finish the character with the next token.
// Supported (anything else is an Error naming the file and the type or key):
//   model BPE with byte-level vocabulary, merges as "a b" strings or [a, b] pairs,
//     ignore_merges, unk_token; not dropout > 0, byte_fallback, continuing_subword_prefix,
//     end_of_word_suffix; normalizer null; pre_tokenizer ByteLevel, Split, Sequence (with a
//     ByteLevel among them); decoder ByteLevel; post_processor null, ByteLevel,
//     TemplateProcessing (single sequence), Sequence of those; added tokens with lstrip /
//     rstrip / normalized (not single_word). truncation / padding are ignored (a warning).
// Invalid UTF-8 input is refused (an Error with the byte offset): the library only accepts
// Python str, which cannot hold it, so there is no reference behaviour to follow.
// Speed: pieces of one byte map through a table, others through a cache piece -> ids (as the
// library's), misses merge on ids with an open-addressing pair -> (rank, id) table; short
// pieces by a linear scan of the pair ranks, long ones with a heap.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "io/text/pretokenize.h"
#include "io/text/tokenizer.h"

namespace mt::io {

class BpeTokenizer final : public Tokenizer {
 public:
  // `path`: the tokenizer.json file (for errors and describe()).
  BpeTokenizer(const nlohmann::json& j, const std::string& path);
  std::string describe() const override { return "bpe (tokenizer.json: " + path_ + ")"; }
  int vocab_size() const override { return vocab_size_; }
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::optional<int32_t> token_id(std::string_view token) const override;
  std::optional<int32_t> eos_id() const override { return eos_; }

  // One pre-tokenized piece (raw bytes) -> ids appended to `out`, without the cache (tests).
  void merge_piece(std::string_view piece, std::vector<int32_t>& out, bool heap) const;

 private:
  // bytes -> ids, open addressing over one key arena and one id arena (no allocation per entry)
  struct StringTable {
    struct Slot {
      uint64_t hash = 0;
      uint32_t key = 0, key_len = 0, val = 0, val_len = 0;
      bool used = false;
    };
    std::vector<Slot> slots;
    std::string keys;
    std::vector<int32_t> vals;
    size_t count = 0;
    StringTable() { slots.resize(1024); }
    const Slot* find(std::string_view k) const;
    void put(std::string_view k, const int32_t* ids, size_t n);  // keeps an existing entry
  };
  using StringMap = std::unordered_map<std::string, int32_t>;
  // (left id, right id) -> (rank, merged id), open addressing
  struct PairTable {
    std::vector<uint64_t> keys, vals;
    uint64_t mask = 0;
    void init(size_t n);
    void put(int32_t a, int32_t b, uint32_t rank, int32_t id);
    const uint64_t* find(int32_t a, int32_t b) const;  // rank << 32 | id, or nullptr
  };
  void piece_ids(std::string_view piece, std::vector<int32_t>& out, bool cache) const;

  std::string path_;
  PreTokenizer pre_;
  AddedTokens added_raw_, added_normalized_;  // matched before / after normalization
  StringMap token_to_id_;                     // tokens as written in the file (added first)
  StringTable bytes_to_id_;                   // vocabulary tokens as raw bytes (ignore_merges)
  std::vector<std::string> id_bytes_;         // decode: id -> bytes
  int32_t byte_id_[256];                      // single-byte tokens (-1: not in the vocabulary)
  PairTable merges_;
  bool ignore_merges_ = false;
  int32_t unk_ = -1;
  bool fuse_unk_ = false;
  std::vector<int32_t> prefix_ids_, suffix_ids_;  // post-processor template around the sequence
  int vocab_size_ = 0;
  std::optional<int32_t> eos_;

  mutable std::mutex cache_mu_;  // held (try_lock) for a whole encode; a busy cache is skipped
  mutable StringTable cache_;
};

}  // namespace mt::io
