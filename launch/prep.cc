// What: run_prep (see prep.h).
#include "launch/prep.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"
#include "core/log.h"
#include "io/dataset.h"
#include "io/markov_source.h"
#include "io/metrics.h"

namespace mt::launch {

namespace {

// Tokens of a NumPy .npy file (1-D, C order, '<u2' / '<u4' / '<i4').
std::vector<int32_t> read_npy(const std::string& path) {
  const std::string bytes = io::read_file(path);
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw core::Error("not a .npy file").with_file(path);
  const int major = static_cast<unsigned char>(bytes[6]);
  const size_t pre = major == 1 ? 10 : 12;  // magic, version, header length
  if (bytes.size() < pre) throw core::Error("truncated .npy file (no header)").with_file(path);
  const size_t hlen = major == 1 ? (static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8)
                                 : (static_cast<uint32_t>(static_cast<unsigned char>(bytes[8])) |
                                    static_cast<uint32_t>(static_cast<unsigned char>(bytes[9])) << 8 |
                                    static_cast<uint32_t>(static_cast<unsigned char>(bytes[10])) << 16 |
                                    static_cast<uint32_t>(static_cast<unsigned char>(bytes[11])) << 24);
  const size_t start = pre + hlen;
  if (bytes.size() < start) {
    throw core::Error(fmt::format("truncated .npy file: its header needs {} bytes, the file has {}", start,
                                  bytes.size())).with_file(path);
  }
  const std::string header = bytes.substr(pre, hlen);
  if (header.find("'fortran_order': True") != std::string::npos) throw core::Error("Fortran-order array").with_file(path);
  const auto lp = header.find("'shape': (");
  const auto rp = lp == std::string::npos ? std::string::npos : header.find(')', lp);
  if (rp == std::string::npos) throw core::Error("no shape in the .npy header").with_file(path).with_library(header);
  const std::string shape = header.substr(lp + 10, rp - lp - 10);
  if (shape.find(',') != shape.rfind(',') || shape.empty()) {
    throw core::Error(fmt::format("expected a 1-D array, shape ({})", shape)).with_file(path);
  }
  size_t width = 0;
  bool is_signed = false;
  if (header.find("'<u2'") != std::string::npos) width = 2;
  else if (header.find("'<u4'") != std::string::npos) width = 4;
  else if (header.find("'<i4'") != std::string::npos) width = 4, is_signed = true;
  else throw core::Error("unsupported dtype (use <u2, <u4 or <i4)").with_file(path)
      .with_library(header.substr(0, header.find_last_not_of(" \n") + 1));
  // the data must be exactly the shape's values: a cut-short file is an error, not a shorter document
  const uint64_t count = std::strtoull(shape.c_str(), nullptr, 10);
  if (bytes.size() - start != count * width) {
    throw core::Error(fmt::format("truncated or padded .npy file: its shape ({}) needs {} bytes of data, the file has {}",
                                  count, count * width, bytes.size() - start)).with_file(path);
  }
  const size_t n = static_cast<size_t>(count);
  std::vector<int32_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t v = 0;
    std::memcpy(&v, bytes.data() + start + i * width, width);
    out[i] = is_signed ? static_cast<int32_t>(v) : static_cast<int32_t>(v);
  }
  return out;
}

std::vector<int32_t> read_raw(const std::string& path, const std::string& dtype) {
  const std::string bytes = io::read_file(path);
  const size_t width = dtype == "uint32" ? 4 : 2;
  if (bytes.size() % width) throw core::Error(fmt::format("size is not a multiple of {} bytes", width)).with_file(path);
  std::vector<int32_t> out(bytes.size() / width);
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t v = 0;
    std::memcpy(&v, bytes.data() + i * width, width);
    out[i] = static_cast<int32_t>(v);
  }
  return out;
}

}  // namespace

int run_prep(const PrepArgs& a) {
  MT_CHECK(!a.out.empty(), "prep needs --out DIR");
  // options that can only give a dataset training refuses: say so before converting anything
  if (!(a.val_fraction >= 0 && a.val_fraction < 1)) {
    throw core::Error(fmt::format("--val-fraction {} leaves no train split", a.val_fraction))
        .with_hint("the share of documents in the val split: 0 <= --val-fraction < 1 (default 0.05)");
  }
  if (a.shard_tokens < 1) throw core::Error(fmt::format("--shard-tokens {} must be >= 1", a.shard_tokens));
  if (a.from == "markov" && a.docs < 1) throw core::Error(fmt::format("--docs {}: no documents to write", a.docs));
  std::vector<std::vector<int32_t>> file_docs;  // tokens / text: one document per input file
  int vocab = a.vocab;
  std::string tokenizer = "none";
  if (a.from == "markov") {
    vocab = a.markov_vocab;
    tokenizer = fmt::format("markov(order={}, sharpness={}, seed={})", a.markov_order, a.markov_sharpness, a.seed);
  } else if (a.from == "text") {
    vocab = 256;
    tokenizer = "bytes";
  } else if (a.from != "tokens") {
    throw core::Error(fmt::format("unknown --from '{}'", a.from)).with_hint("markov, tokens or text");
  }
  if (a.from != "markov") {
    if (a.inputs.empty()) throw core::Error("no input files").with_hint("pass the files to convert");
    int max_id = -1;
    for (const auto& in : a.inputs) {
      std::vector<int32_t> doc;
      if (a.from == "text") {
        const std::string s = io::read_file(in);
        doc.assign(s.begin(), s.end());
        for (auto& t : doc) t = static_cast<unsigned char>(t);
      } else {
        doc = in.size() > 4 && in.compare(in.size() - 4, 4, ".npy") == 0 ? read_npy(in) : read_raw(in, a.raw_dtype);
      }
      for (int32_t t : doc) {
        if (t < 0) throw core::Error("negative token id").with_file(in);
        max_id = std::max(max_id, t);
      }
      file_docs.push_back(std::move(doc));
    }
    if (vocab == 0) vocab = max_id + 1;
    if (max_id >= vocab) throw core::Error(fmt::format("token id {} >= --vocab {}", max_id, vocab));
  }
  io::DatasetWriterOptions o;
  if (a.from == "markov") {
    MT_CHECK(a.doc_len_dist == "fixed" || a.doc_len_dist == "uniform" || a.doc_len_dist == "skewed",
             "--doc-len-dist must be fixed, uniform or skewed, not '{}'", a.doc_len_dist);
    MT_CHECK(a.doc_len >= 1 && a.doc_len_min >= 1 && (a.doc_len_dist == "fixed" || a.doc_len_min <= a.doc_len),
             "need 1 <= --doc-len-min <= --doc-len");
    o.generator = {{"markov", {{"vocab", a.markov_vocab}, {"order", a.markov_order},
                               {"sharpness", a.markov_sharpness}, {"seed", a.seed}}},
                   {"doc_len", {{"dist", a.doc_len_dist}, {"min", a.doc_len_min}, {"max", a.doc_len}}}};
  }
  o.dir = a.out;
  o.dtype = a.dtype.empty() ? (vocab <= 65536 ? "uint16" : "uint32") : a.dtype;
  o.vocab_size = vocab;
  o.tokenizer = tokenizer;
  o.shard_tokens = a.shard_tokens;
  o.val_fraction = a.val_fraction;
  o.compress = a.compress;
  io::DatasetWriter w(o);
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  auto progress = [&](bool force) {
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last < std::chrono::seconds(2)) return;
    last = now;
    const double s = std::chrono::duration<double>(now - t0).count();
    core::log::info("prep: {} tokens written, {:.1f} MB/s", w.tokens_written(),
                    s > 0 ? w.tokens_written() * 4.0 / 1e6 / s : 0.0);
  };
  if (a.from == "markov") {
    io::MarkovSource src(a.markov_vocab, a.markov_order, a.markov_sharpness, a.seed);
    std::vector<int32_t> doc(static_cast<size_t>(a.doc_len) + 1);
    for (int64_t d = 0; d < a.docs; ++d) {
      int len = a.doc_len;
      if (a.doc_len_dist != "fixed") {
        const double u = core::uniform01_f64(a.seed, 0xd0c1e17ull, static_cast<uint64_t>(d));
        const double x = a.doc_len_dist == "skewed" ? u * u * u : u;
        len = a.doc_len_min + static_cast<int>(x * (a.doc_len - a.doc_len_min + 1));
        len = std::min(len, a.doc_len);
      }
      src.sample(io::Split::Train, static_cast<uint64_t>(d), len, doc.data());
      w.add_document(doc.data(), len);
      progress(false);
    }
  } else {
    for (const auto& doc : file_docs) {
      w.add_document(doc.data(), static_cast<int64_t>(doc.size()));
      progress(false);
    }
  }
  w.finish();
  progress(true);
  io::Dataset::open(a.out, /*verify=*/false);  // an empty train split (few documents, all drawn for val) is an error now
  std::printf("dataset written to %s (%lld tokens, vocab %d)\n", a.out.c_str(), static_cast<long long>(w.tokens_written()),
              vocab);
  return 0;
}

}  // namespace mt::launch
