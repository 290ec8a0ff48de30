// What: BpeTokenizer (see bpe_tokenizer.h): loading tokenizer.json, encode, decode.
#include "io/text/bpe_tokenizer.h"

#include <algorithm>
#include <cstring>
#include <queue>

#include "core/error.h"
#include "core/log.h"

namespace mt::io {

namespace {

constexpr uint64_t kEmpty = ~0ull;
constexpr size_t kCacheCapacity = 1 << 16;  // pieces cached (then the cache stops growing)
constexpr size_t kCacheMaxPiece = 256;      // longer pieces are not cached (as the library)
constexpr size_t kLinearMax = 64;           // pieces up to this many bytes merge by linear scans

uint64_t pair_key(int32_t a, int32_t b) { return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b); }
uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = mix(h ^ w) * 0x9E3779B97F4A7C15ull;
  }
  uint64_t w = 0;
  std::memcpy(&w, s.data() + i, s.size() - i);
  return mix(h ^ w);
}

std::string type_of(const nlohmann::json& j) { return j.is_object() ? j.value("type", std::string()) : std::string(); }

// The post-processor's single-sequence template: ids before and after the sequence.
void add_post_processor(const nlohmann::json& j, const std::string& where, std::vector<int32_t>& prefix,
                        std::vector<int32_t>& suffix) {
  if (j.is_null()) return;
  const std::string type = type_of(j);
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    for (const auto& p : j.at("processors")) add_post_processor(p, where, prefix, suffix);
    return;
  }
  if (type != "TemplateProcessing") {
    throw core::Error(fmt::format("unsupported post_processor type '{}'", type))
        .with_file(where)
        .with_hint("supported: null, ByteLevel, TemplateProcessing, and a Sequence of them");
  }
  bool seen_sequence = false;
  for (const auto& piece : j.at("single")) {
    if (piece.contains("Sequence")) {
      if (piece["Sequence"].value("id", "A") != "A")
        throw core::Error("TemplateProcessing: the single template names sequence B").with_file(where);
      seen_sequence = true;
    } else if (piece.contains("SpecialToken")) {
      const std::string id = piece["SpecialToken"].at("id").get<std::string>();
      const auto& specials = j.at("special_tokens");
      if (!specials.contains(id))
        throw core::Error(fmt::format("TemplateProcessing: special token '{}' is not in special_tokens", id)).with_file(where);
      auto& dst = seen_sequence ? suffix : prefix;
      for (const auto& v : specials[id].at("ids")) dst.push_back(v.get<int32_t>());
    } else {
      throw core::Error(fmt::format("TemplateProcessing: unknown template piece {}", piece.dump())).with_file(where);
    }
  }
}

}  // namespace

void BpeTokenizer::PairTable::init(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  keys.assign(cap, kEmpty);
  vals.assign(cap, 0);
  mask = cap - 1;
}

void BpeTokenizer::PairTable::put(int32_t a, int32_t b, uint32_t rank, int32_t id) {
  const uint64_t k = pair_key(a, b);
  for (uint64_t i = mix(k) & mask;; i = (i + 1) & mask) {
    if (keys[i] == kEmpty || keys[i] == k) {  // a repeated merge takes the later rank (a Rust HashMap collect)
      keys[i] = k;
      vals[i] = static_cast<uint64_t>(rank) << 32 | static_cast<uint32_t>(id);
      return;
    }
  }
}

const uint64_t* BpeTokenizer::PairTable::find(int32_t a, int32_t b) const {
  const uint64_t k = pair_key(a, b);
  for (uint64_t i = mix(k) & mask;; i = (i + 1) & mask) {
    if (keys[i] == k) return &vals[i];
    if (keys[i] == kEmpty) return nullptr;
  }
}

const BpeTokenizer::StringTable::Slot* BpeTokenizer::StringTable::find(std::string_view k) const {
  const uint64_t h = hash_bytes(k);
  const size_t mask = slots.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (!s.used) return nullptr;
    if (s.hash == h && s.key_len == k.size() && std::memcmp(keys.data() + s.key, k.data(), k.size()) == 0) return &s;
  }
}

void BpeTokenizer::StringTable::put(std::string_view k, const int32_t* ids, size_t n) {
  if (find(k)) return;
  if (2 * (count + 1) > slots.size()) {  // grow to keep the load under 1/2
    std::vector<Slot> old(slots.size() * 2);
    old.swap(slots);
    const size_t mask = slots.size() - 1;
    for (const Slot& s : old) {
      if (!s.used) continue;
      size_t i = s.hash & mask;
      while (slots[i].used) i = (i + 1) & mask;
      slots[i] = s;
    }
  }
  const uint64_t h = hash_bytes(k);
  const size_t mask = slots.size() - 1;
  size_t i = h & mask;
  while (slots[i].used) i = (i + 1) & mask;
  slots[i] = {h, static_cast<uint32_t>(keys.size()), static_cast<uint32_t>(k.size()), static_cast<uint32_t>(vals.size()),
              static_cast<uint32_t>(n), true};
  keys.append(k);
  vals.insert(vals.end(), ids, ids + n);
  ++count;
}

BpeTokenizer::BpeTokenizer(const nlohmann::json& j, const std::string& path) : path_(path) {
  auto fail = [&](const std::string& msg) { return core::Error(msg).with_file(path); };
  if (!j.is_object() || !j.contains("model")) throw fail("not a tokenizer.json: no \"model\"");
  const auto& m = j["model"];
  const std::string mtype = m.is_object() ? m.value("type", m.contains("merges") ? "BPE" : "") : "";
  if (mtype != "BPE") {
    throw fail(fmt::format("unsupported tokenizer model type '{}'", mtype))
        .with_hint("meshtrain reads byte-level BPE tokenizers (GPT-2, Llama-3 style); not WordPiece, Unigram, "
                   "WordLevel");
  }
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    throw fail(fmt::format("unsupported BPE option dropout = {}", m["dropout"].dump()));
  if (m.value("byte_fallback", false)) throw fail("unsupported BPE option byte_fallback = true");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && !m[k].is_null() && !m[k].get<std::string>().empty())
      throw fail(fmt::format("unsupported BPE option {} = {}", k, m[k].dump()));
  ignore_merges_ = m.value("ignore_merges", false);
  fuse_unk_ = m.value("fuse_unk", false);

  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    throw fail(fmt::format("unsupported normalizer type '{}'", type_of(j["normalizer"])))
        .with_hint("only tokenizers without a normalizer (null) are supported");
  }
  pre_ = PreTokenizer::from_json(j.value("pre_tokenizer", nlohmann::json()), path);
  if (!pre_.has_byte_level()) {
    throw fail(fmt::format("unsupported pre_tokenizer '{}': a byte-level BPE needs a ByteLevel pre-tokenizer",
                           type_of(j.value("pre_tokenizer", nlohmann::json()))));
  }
  const std::string dtype = type_of(j.value("decoder", nlohmann::json()));
  if (dtype != "ByteLevel") throw fail(fmt::format("unsupported decoder type '{}' (expected ByteLevel)", dtype));
  add_post_processor(j.value("post_processor", nlohmann::json()), path, prefix_ids_, suffix_ids_);
  for (const char* k : {"truncation", "padding"})
    if (j.contains(k) && !j[k].is_null())
      core::log::warn("{}: the tokenizer's {} settings are ignored (meshtrain encodes whole texts)", path, k);

  // vocabulary
  int32_t max_id = -1;
  std::vector<std::string> id_token;
  for (const auto& [tok, v] : m.at("vocab").items()) {
    const int32_t id = v.get<int32_t>();
    if (id < 0) throw fail(fmt::format("negative id {} of token '{}'", id, tok));
    token_to_id_.emplace(tok, id);
    max_id = std::max(max_id, id);
    if (static_cast<size_t>(id) >= id_token.size()) id_token.resize(id + 1);
    id_token[id] = tok;
    std::string raw;
    if (byte_level_decode(tok, raw)) bytes_to_id_.put(raw, &id, 1);
  }
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
  const auto& chars = byte_level_chars();
  for (int b = 0; b < 256; ++b)
    if (auto it = token_to_id_.find(chars[b]); it != token_to_id_.end()) byte_id_[b] = it->second;
  if (m.contains("unk_token") && !m["unk_token"].is_null()) {
    const auto it = token_to_id_.find(m["unk_token"].get<std::string>());
    if (it == token_to_id_.end()) throw fail(fmt::format("unk_token {} is not in the vocabulary", m["unk_token"].dump()));
    unk_ = it->second;
  }

  // merges: rank = position in the list
  const auto& merges = m.at("merges");
  merges_.init(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& e = merges[r];
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw fail(fmt::format("merge {} is not two tokens separated by one space", e.dump()));
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2) {
      a = e[0].get<std::string>(), b = e[1].get<std::string>();
    } else {
      throw fail(fmt::format("merge {} is neither \"a b\" nor [a, b]", e.dump()));
    }
    const auto ia = token_to_id_.find(a), ib = token_to_id_.find(b), iab = token_to_id_.find(a + b);
    if (ia == token_to_id_.end() || ib == token_to_id_.end() || iab == token_to_id_.end())
      throw fail(fmt::format("merge #{} ({} {}) uses a token that is not in the vocabulary", r, a, b));
    merges_.put(ia->second, ib->second, static_cast<uint32_t>(r), iab->second);
  }

  // added tokens: they take precedence over the vocabulary for id -> token
  std::vector<AddedToken> raw, normalized;
  if (j.contains("added_tokens")) {
    for (const auto& t : j["added_tokens"]) {
      AddedToken a;
      a.content = t.at("content").get<std::string>();
      a.id = t.at("id").get<int32_t>();
      a.special = t.value("special", false);
      a.single_word = t.value("single_word", false);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      a.normalized = t.value("normalized", !a.special);
      if (a.single_word) throw fail(fmt::format("added token '{}': single_word = true is not supported", a.content));
      if (a.content.empty()) throw fail(fmt::format("added token {} has empty content", a.id));
      token_to_id_[a.content] = a.id;
      max_id = std::max(max_id, a.id);
      if (static_cast<size_t>(a.id) >= id_token.size()) id_token.resize(a.id + 1);
      id_token[a.id] = a.content;
      (a.normalized ? normalized : raw).push_back(std::move(a));
    }
  }
  added_raw_ = AddedTokens(std::move(raw));
  added_normalized_ = AddedTokens(std::move(normalized));
  vocab_size_ = max_id + 1;
  id_bytes_.resize(vocab_size_);
  for (int32_t id = 0; id < vocab_size_; ++id)
    if (!byte_level_decode(id_token[id], id_bytes_[id])) id_bytes_[id] = id_token[id];
  for (int32_t id : prefix_ids_)
    if (id < 0 || id >= vocab_size_) throw fail(fmt::format("post_processor id {} is outside the vocabulary", id));
  for (int32_t id : suffix_ids_)
    if (id < 0 || id >= vocab_size_) throw fail(fmt::format("post_processor id {} is outside the vocabulary", id));

  // The end-of-text token: the first of these that the vocabulary (added tokens included) has:
  // GPT-2's <|endoftext|>, Llama-3's <|end_of_text|>, SentencePiece-era </s>.
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>"}) {
    if (auto id = token_id(name)) {
      eos_ = id;
      break;
    }
  }
}

std::optional<int32_t> BpeTokenizer::token_id(std::string_view token) const {
  const auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

void BpeTokenizer::merge_piece(std::string_view piece, std::vector<int32_t>& out, bool heap) const {
  // initial symbols: one per byte (unknown bytes: the unk token, fused if fuse_unk, or dropped)
  thread_local std::vector<int32_t> sym;
  sym.clear();
  for (char c : piece) {
    const int32_t id = byte_id_[static_cast<unsigned char>(c)];
    if (id >= 0) sym.push_back(id);
    else if (unk_ >= 0 && !(fuse_unk_ && !sym.empty() && sym.back() == unk_)) sym.push_back(unk_);
  }
  const size_t n = sym.size();
  if (n < 2) {
    out.insert(out.end(), sym.begin(), sym.end());
    return;
  }
  if (!heap) {
    // linear: rank[i] = rank of the pair (sym[i], sym[i+1]); merge the lowest, leftmost first
    thread_local std::vector<uint64_t> val;
    val.resize(n);
    auto look = [&](size_t i) {
      const uint64_t* v = merges_.find(sym[i], sym[i + 1]);
      val[i] = v ? *v : kEmpty;
    };
    size_t len = n;
    for (size_t i = 0; i + 1 < len; ++i) look(i);
    while (len > 1) {
      size_t best = 0;
      uint64_t bv = kEmpty;
      for (size_t i = 0; i + 1 < len; ++i)
        if ((val[i] >> 32) < (bv >> 32)) bv = val[i], best = i;  // strict <: leftmost among equal ranks
      if (bv == kEmpty) break;
      sym[best] = static_cast<int32_t>(bv & 0xffffffffu);
      std::memmove(&sym[best + 1], &sym[best + 2], (len - best - 2) * sizeof(int32_t));
      std::memmove(&val[best + 1], &val[best + 2], (len - best - 2) * sizeof(uint64_t));
      --len;
      if (best > 0) look(best - 1);
      if (best + 1 < len) look(best);
    }
    out.insert(out.end(), sym.begin(), sym.begin() + static_cast<std::ptrdiff_t>(len));
    return;
  }
  // heap (tokenizers' Word::merge_all): a queue of (rank, position) over a linked list
  struct Sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Sym> s(n);
  for (size_t i = 0; i < n; ++i) s[i] = {sym[i], static_cast<int32_t>(i) - 1, static_cast<int32_t>(i + 1), true};
  using Item = std::pair<uint64_t, int32_t>;  // (rank << 32 | new id, position); smallest first
  auto cmp = [](const Item& x, const Item& y) {
    return (x.first >> 32) != (y.first >> 32) ? (x.first >> 32) > (y.first >> 32) : x.second > y.second;
  };
  std::priority_queue<Item, std::vector<Item>, decltype(cmp)> q(cmp);
  for (size_t i = 0; i + 1 < n; ++i)
    if (const uint64_t* v = merges_.find(s[i].id, s[i + 1].id)) q.push({*v, static_cast<int32_t>(i)});
  while (!q.empty()) {
    const auto [v, pos] = q.top();
    q.pop();
    Sym& cur = s[pos];
    if (!cur.alive || cur.next >= static_cast<int32_t>(n)) continue;
    const int32_t nx = cur.next;
    const uint64_t* now = merges_.find(cur.id, s[nx].id);
    if (!now || (*now & 0xffffffffu) != (v & 0xffffffffu)) continue;  // stale
    cur.id = static_cast<int32_t>(v & 0xffffffffu);
    s[nx].alive = false;
    cur.next = s[nx].next;
    if (cur.next < static_cast<int32_t>(n)) s[cur.next].prev = pos;
    if (cur.prev >= 0)
      if (const uint64_t* w = merges_.find(s[cur.prev].id, cur.id)) q.push({*w, cur.prev});
    if (cur.next < static_cast<int32_t>(n))
      if (const uint64_t* w = merges_.find(cur.id, s[cur.next].id)) q.push({*w, pos});
  }
  for (const auto& x : s)
    if (x.alive) out.push_back(x.id);
}

void BpeTokenizer::piece_ids(std::string_view piece, std::vector<int32_t>& out, bool cache) const {
  if (piece.size() == 1 && byte_id_[static_cast<unsigned char>(piece[0])] >= 0) {
    out.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  const bool cacheable = cache && piece.size() <= kCacheMaxPiece;
  if (cacheable) {  // first: one lookup for the frequent pieces, whole-vocabulary words included
    if (const auto* e = cache_.find(piece)) {
      out.insert(out.end(), cache_.vals.begin() + e->val, cache_.vals.begin() + e->val + e->val_len);
      return;
    }
  }
  const size_t first = out.size();
  const StringTable::Slot* whole = ignore_merges_ ? bytes_to_id_.find(piece) : nullptr;
  if (whole) out.push_back(bytes_to_id_.vals[whole->val]);
  else merge_piece(piece, out, piece.size() > kLinearMax);
  if (cacheable && cache_.count < kCacheCapacity) cache_.put(piece, out.data() + first, out.size() - first);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos) {
    throw core::Error(fmt::format("text is not valid UTF-8 (byte {} of {}: 0x{:02x})", bad, text.size(),
                                  static_cast<unsigned char>(text[bad])))
        .with_hint("decode the corpus to UTF-8 first (the tokenizers library, too, accepts only valid text)");
  }
  std::unique_lock<std::mutex> lock(cache_mu_, std::try_to_lock);
  const bool cache = lock.owns_lock();
  std::vector<int32_t> ids(prefix_ids_);
  ids.reserve(prefix_ids_.size() + text.size() / 3 + suffix_ids_.size());
  thread_local std::vector<Segment> segs, inner;
  thread_local std::vector<std::string_view> pieces;
  Arena arena;
  segs.clear();
  if (added_raw_.empty()) segs.push_back({-1, 0, text.size()});
  else added_raw_.split(text, segs);
  for (const Segment& s : segs) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    if (s.end == s.start) continue;
    inner.clear();
    const std::string_view gap = text.substr(s.start, s.end - s.start);
    if (added_normalized_.empty()) inner.push_back({-1, 0, gap.size()});
    else added_normalized_.split(gap, inner);  // normalizer null: the normalized text is the text
    for (const Segment& t : inner) {
      if (t.id >= 0) {
        ids.push_back(t.id);
        continue;
      }
      pieces.clear();
      pre_.run(gap.substr(t.start, t.end - t.start), pieces, arena);
      for (std::string_view p : pieces) piece_ids(p, ids, cache);
    }
  }
  ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids)
    if (id >= 0 && id < vocab_size_) out += id_bytes_[id];
  return out;
}

}  // namespace mt::io
