// What: run_prep (see prep.h).
#include "launch/prep.h"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "core/log.h"
#include "io/dataset.h"
#include "io/markov_source.h"
#include "io/metrics.h"
#include "io/text/tokenizer.h"

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
  int ndim = 0;  // "(12,)" is 1-D, "(3, 4)" 2-D, "()" 0-D
  for (size_t at = 0; at <= shape.size();) {
    const size_t comma = std::min(shape.find(',', at), shape.size());
    if (shape.substr(at, comma - at).find_first_not_of(" ") != std::string::npos) ++ndim;
    at = comma + 1;
  }
  if (ndim != 1) {
    throw core::Error(fmt::format("the array is {}-D (shape ({})); prep reads 1-D token arrays, one document per "
                                  "file", ndim, shape))
        .with_file(path).with_hint("flatten it (numpy.ravel) or save each document as its own 1-D .npy");
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

namespace fs = std::filesystem;

// The documents one rank tokenized: lengths and tokens end to end.
struct DocBatch {
  std::vector<int64_t> lens;
  std::vector<int32_t> tokens;
};

// Line number (1-based) of byte `offset` of a file, for error messages.
int64_t line_of(const std::string& path, int64_t offset) {
  std::ifstream in(path, std::ios::binary);
  int64_t line = 1;
  char c;
  for (int64_t i = 0; i < offset && in.get(c); ++i) line += c == '\n';
  return line;
}

// This rank's documents of text / jsonl inputs (see prep.h: byte ranges, a document belongs to
// the rank whose range holds its first byte).
DocBatch tokenize_slice(const PrepArgs& a, const io::Tokenizer& tok, int rank, int size) {
  std::vector<int64_t> start{0};  // global offset of each input
  for (const auto& in : a.inputs) {
    std::error_code ec;
    const auto n = fs::file_size(in, ec);
    if (ec) throw core::Error("cannot read the input").with_file(in).with_library(ec.message());
    if (n == 0) {
      throw core::Error(fmt::format("empty input file: no {} in it", a.from == "jsonl" ? "lines" : "text"))
          .with_file(in).with_hint("remove it from the inputs (an empty document trains nothing)");
    }
    start.push_back(start.back() + static_cast<int64_t>(n));
  }
  const int64_t total = start.back();
  const auto lo_of = [&](int r) { return r >= size ? total : static_cast<int64_t>(static_cast<__int128>(total) * r / size); };
  const int64_t lo = lo_of(rank), hi = lo_of(rank + 1);
  const auto eos = tok.eos_id();
  DocBatch out;
  auto add = [&](std::string_view text, const std::string& file, int64_t offset) {
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(text);
    } catch (core::Error& e) {
      throw e.with_file(a.from == "jsonl" ? fmt::format("{}:{}", file, line_of(file, offset)) : file);
    }
    if (eos) ids.push_back(*eos);
    out.lens.push_back(static_cast<int64_t>(ids.size()));
    out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
  };
  for (size_t f = 0; f < a.inputs.size(); ++f) {
    const std::string& path = a.inputs[f];
    const int64_t g0 = start[f], g1 = start[f + 1];
    if (a.from == "text") {  // the whole file; an empty file at the very end belongs to the last rank
      const bool mine = (g0 >= lo && g0 < hi) || (g0 == total && rank == size - 1);
      if (mine) add(io::read_file(path), path, 0);
      continue;
    }
    if (g1 <= lo || g0 >= hi) continue;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw core::Error("cannot open the input").with_file(path).with_library(std::strerror(errno));
    int64_t pos = std::max(lo, g0) - g0;
    const int64_t end = std::min(hi, g1) - g0;
    std::string line;
    if (pos > 0) {  // a line that began before this rank's range is the previous rank's
      in.seekg(pos - 1);
      char c = 0;
      in.get(c);
      if (c != '\n') {
        std::getline(in, line);
        pos += static_cast<int64_t>(line.size()) + 1;
      }
    }
    while (pos < end && std::getline(in, line)) {
      const int64_t here = pos;
      pos += static_cast<int64_t>(line.size()) + 1;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank: no document
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw core::Error("not a JSON line").with_file(fmt::format("{}:{}", path, line_of(path, here))).with_library(e.what());
      }
      const auto it = j.is_object() ? j.find(a.text_key) : j.end();
      if (!j.is_object() || it == j.end() || !it->is_string()) {
        throw core::Error(fmt::format("no string \"{}\" in this line", a.text_key))
            .with_file(fmt::format("{}:{}", path, line_of(path, here)))
            .with_hint("--text-key names the key holding each document's text");
      }
      add(it->get_ref<const std::string&>(), path, here);
    }
  }
  return out;
}

// MPI: rank r > 0 sends its batch to rank 0 (counts, lengths, tokens, in chunks).
constexpr int64_t kChunk = int64_t{1} << 28;
void mpi_check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw core::Error(fmt::format("{} failed during prep", what));
}
void send_batch(const DocBatch& b) {
  const int64_t n[2] = {static_cast<int64_t>(b.lens.size()), static_cast<int64_t>(b.tokens.size())};
  mpi_check(MPI_Send(n, 2, MPI_INT64_T, 0, 1, MPI_COMM_WORLD), "MPI_Send");
  for (int64_t i = 0; i < n[0]; i += kChunk)
    mpi_check(MPI_Send(b.lens.data() + i, static_cast<int>(std::min(kChunk, n[0] - i)), MPI_INT64_T, 0, 2, MPI_COMM_WORLD), "MPI_Send");
  for (int64_t i = 0; i < n[1]; i += kChunk)
    mpi_check(MPI_Send(b.tokens.data() + i, static_cast<int>(std::min(kChunk, n[1] - i)), MPI_INT32_T, 0, 3, MPI_COMM_WORLD), "MPI_Send");
}
DocBatch recv_batch(int from) {
  int64_t n[2];
  mpi_check(MPI_Recv(n, 2, MPI_INT64_T, from, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
  DocBatch b;
  b.lens.resize(n[0]);
  b.tokens.resize(n[1]);
  for (int64_t i = 0; i < n[0]; i += kChunk)
    mpi_check(MPI_Recv(b.lens.data() + i, static_cast<int>(std::min(kChunk, n[0] - i)), MPI_INT64_T, from, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
  for (int64_t i = 0; i < n[1]; i += kChunk)
    mpi_check(MPI_Recv(b.tokens.data() + i, static_cast<int>(std::min(kChunk, n[1] - i)), MPI_INT32_T, from, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
  return b;
}

// A dataset already in `out` (its manifest or shards): refused, unless --overwrite, which
// removes its files first (the manifest first: a prep cut short leaves no manifest naming
// missing shards), so no orphan shard of the old dataset stays beside the new one. Other
// files in the directory are left alone.
void clear_out_dir(const PrepArgs& a) {
  std::error_code ec;
  if (!fs::is_directory(a.out, ec)) return;
  std::vector<fs::path> old;
  bool manifest = false, old_tokenizer = false;
  for (const auto& e : fs::directory_iterator(a.out, ec)) {
    const std::string n = e.path().filename().string();
    const auto ends = [&](const std::string& x) { return n.size() >= x.size() && n.compare(n.size() - x.size(), x.size(), x) == 0; };
    const bool shard = (n.rfind("train_", 0) == 0 || n.rfind("val_", 0) == 0) && (ends(".h5") || ends(".h5.tmp"));
    if (n == "manifest.json") manifest = true;
    else if (shard || n == "manifest.json.tmp") old.push_back(e.path());
  }
  if (!manifest && old.empty()) return;
  if (!a.overwrite) {
    throw core::Error(fmt::format("--out {} already holds a dataset ({}{} shard file(s))", a.out,
                                  manifest ? "manifest.json and " : "", old.size()))
        .with_file(a.out)
        .with_hint("pass --overwrite to replace it (its manifest and shards are removed first), or choose another --out");
  }
  if (manifest) {  // its tokenizer.json is the old dataset's too (unless it is this prep's --tokenizer)
    try {
      const auto m = nlohmann::json::parse(io::read_file(a.out + "/manifest.json"));
      old_tokenizer = m.value("tokenizer", std::string()) == "tokenizer.json";
    } catch (const std::exception&) {
    }
    const fs::path tj = fs::path(a.out) / "tokenizer.json";
    std::string src = a.tokenizer;
    if (!src.empty() && fs::is_directory(src, ec)) src = (fs::path(src) / "tokenizer.json").string();
    if (old_tokenizer && fs::exists(tj, ec) && !(!src.empty() && fs::equivalent(src, tj, ec))) old.push_back(tj);
    fs::remove(fs::path(a.out) / "manifest.json", ec);
    if (ec) throw core::Error("cannot remove the old dataset's manifest").with_file(a.out + "/manifest.json")
        .with_library(ec.message());
  }
  for (const auto& p : old) {
    fs::remove(p, ec);
    if (ec) throw core::Error("cannot remove the old dataset's file").with_file(p.string()).with_library(ec.message());
  }
  core::log::info("prep --overwrite: removed the dataset in {} ({}{} file(s))", a.out, manifest ? "manifest.json + " : "",
                  old.size());
}

}  // namespace

bool started_by_mpi_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

int run_prep(const PrepArgs& a, int rank, int size) {
  MT_CHECK(!a.out.empty(), "prep needs --out DIR");
  // options that can only give a dataset training refuses: say so before converting anything
  if (!(a.val_fraction >= 0 && a.val_fraction < 1)) {
    throw core::Error(fmt::format("--val-fraction {} leaves no train split", a.val_fraction))
        .with_hint("the share of documents in the val split: 0 <= --val-fraction < 1 (default 0.05)");
  }
  if (a.shard_tokens < 1) throw core::Error(fmt::format("--shard-tokens {} must be >= 1", a.shard_tokens));
  if (a.from == "markov" && a.docs < 1) throw core::Error(fmt::format("--docs {}: no documents to write", a.docs));
  if (a.from == "markov" && !a.inputs.empty()) {  // they would be ignored: a Markov dataset instead of theirs
    std::string names;
    for (size_t i = 0; i < a.inputs.size() && i < 3; ++i) names += fmt::format("{}'{}'", i ? ", " : "", a.inputs[i]);
    if (a.inputs.size() > 3) names += ", ...";
    const bool kind_first = a.inputs.front() == "tokens" || a.inputs.front() == "text" || a.inputs.front() == "jsonl";
    throw core::Error(fmt::format("--from markov (the default) generates its documents and reads no input files, "
                                  "but {} given: {}", a.inputs.size() == 1 ? "one is" : fmt::format("{} are", a.inputs.size()), names))
        .with_hint(kind_first ? fmt::format("to convert files: meshtrain prep --from {} FILE... --out DIR", a.inputs.front())
                              : "pass --from tokens, text or jsonl to convert the files, or drop them for a Markov dataset");
  }
  std::vector<std::vector<int32_t>> file_docs;  // tokens / text: one document per input file
  int vocab = a.vocab;
  std::string tokenizer = "none";
  if (a.from == "markov") {
    vocab = a.markov_vocab;
    tokenizer = fmt::format("markov(order={}, sharpness={}, seed={})", a.markov_order, a.markov_sharpness, a.seed);
  } else if (a.from != "tokens" && a.from != "text" && a.from != "jsonl") {
    throw core::Error(fmt::format("unknown --from '{}'", a.from)).with_hint("markov, tokens, text or jsonl");
  }
  if (!a.tokenizer.empty() && a.from != "text" && a.from != "jsonl")
    throw core::Error(fmt::format("--tokenizer is for --from text or jsonl, not {}", a.from));
  const bool textual = a.from == "text" || a.from == "jsonl";
  const bool parallel = textual && size > 1;
  if (rank == 0) clear_out_dir(a);  // before any work (and before the other ranks send theirs)
  if (!textual && rank != 0) return 0;  // markov, tokens: rank 0 alone
  if (!textual && size > 1) core::log::info("prep --from {} runs on rank 0 alone", a.from);
  std::unique_ptr<io::Tokenizer> tok;
  DocBatch mine;
  if (textual) {
    if (a.inputs.empty()) throw core::Error("no input files").with_hint("pass the files to convert");
    tok = io::load_tokenizer(a.tokenizer.empty() ? "byte" : a.tokenizer);
    vocab = tok->vocab_size();
    tokenizer = a.tokenizer.empty() || a.tokenizer == "byte" ? "bytes" : "tokenizer.json";
    const auto t0 = std::chrono::steady_clock::now();
    mine = tokenize_slice(a, *tok, rank, size);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (size > 1)
      core::log::info("prep rank {}/{}: {} documents, {} tokens in {:.1f} s", rank, size, mine.lens.size(),
                      mine.tokens.size(), s);
    if (rank != 0) {
      send_batch(mine);
      return 0;
    }
  }
  if (a.from == "tokens") {
    if (a.inputs.empty()) throw core::Error("no input files").with_hint("pass the files to convert");
    int max_id = -1;
    std::string max_file;  // the first file holding max_id
    for (const auto& in : a.inputs) {
      std::vector<int32_t> doc =
          in.size() > 4 && in.compare(in.size() - 4, 4, ".npy") == 0 ? read_npy(in) : read_raw(in, a.raw_dtype);
      if (doc.empty()) {
        throw core::Error("empty input file: no tokens in it").with_file(in)
            .with_hint("remove it from the inputs (each file is one document)");
      }
      for (int32_t t : doc) {
        if (t < 0) throw core::Error("negative token id").with_file(in);
        if (t > max_id) max_id = t, max_file = in;
      }
      file_docs.push_back(std::move(doc));
    }
    if (vocab == 0) vocab = max_id + 1;
    if (max_id >= vocab) {
      throw core::Error(fmt::format("token id {} >= --vocab {}", max_id, vocab)).with_file(max_file)
          .with_hint("--vocab is the vocabulary size: every id must be below it (0 = the largest id + 1)");
    }
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
  if (textual && tokenizer == "tokenizer.json") {
    o.generator = {{"text", {{"from", a.from}, {"tokenizer", "tokenizer.json"}, {"source", tok->describe()},
                             {"eos_id", tok->eos_id() ? nlohmann::json(*tok->eos_id()) : nlohmann::json()},
                             {"text_key", a.from == "jsonl" ? nlohmann::json(a.text_key) : nlohmann::json()}}}};
  }
  {  // the output directory, with an error that names --out (not run.dir)
    std::error_code ec;
    fs::create_directories(a.out, ec);
    if (ec || !fs::is_directory(a.out)) {
      throw core::Error("cannot create the output directory").with_file(a.out)
          .with_library(ec ? ec.message() : "not a directory")
          .with_hint("check --out (the dataset directory prep writes) and the permissions of its parent");
    }
  }
  io::DatasetWriter w(o);
  if (tokenizer == "tokenizer.json") {  // beside the shards, for generate and eval (before the manifest)
    std::string src = a.tokenizer;
    if (fs::is_directory(src)) src = (fs::path(src) / "tokenizer.json").string();
    const std::string dst = (fs::path(a.out) / "tokenizer.json").string();
    std::error_code ec;
    if (!fs::equivalent(src, dst, ec)) fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec);
    if (ec) throw core::Error("cannot copy the tokenizer into the dataset").with_file(dst).with_library(ec.message());
  }
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
  } else if (textual) {
    auto write_batch = [&](const DocBatch& b) {
      int64_t off = 0;
      for (int64_t len : b.lens) {
        w.add_document(b.tokens.data() + off, len);
        off += len;
        progress(false);
      }
    };
    write_batch(mine);
    mine = {};
    for (int r = 1; r < size; ++r) write_batch(recv_batch(r));
  } else {
    for (const auto& doc : file_docs) {
      w.add_document(doc.data(), static_cast<int64_t>(doc.size()));
      progress(false);
    }
  }
  w.finish();
  progress(true);
  io::Dataset::open(a.out, /*verify=*/false);  // an empty train split (few documents, all drawn for val) is an error now
  std::printf("dataset written to %s (%lld tokens, vocab %d%s)\n", a.out.c_str(), static_cast<long long>(w.tokens_written()),
              vocab, parallel ? fmt::format(", {} ranks", size).c_str() : "");
  return 0;
}

}  // namespace mt::launch
