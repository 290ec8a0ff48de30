// What: cmd_bench_tokenizer (see bench_tokenizer.h).
#include "launch/bench_tokenizer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/metrics.h"
#include "io/text/tokenizer.h"
#include "launch/scale.h"

namespace mt::launch {

namespace {

namespace fs = std::filesystem;

// Paragraphs of the license texts, shuffled and repeated to about `mb` megabytes.
std::string generate_text(double mb) {
  const fs::path dir = "/usr/share/common-licenses";
  std::vector<std::string> paras;
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const std::string s = io::read_file(f.string());
    size_t pos = 0;
    while (pos < s.size()) {
      size_t end = s.find("\n\n", pos);
      if (end == std::string::npos) end = s.size();
      if (end > pos) paras.push_back(s.substr(pos, end - pos));
      pos = end + 2;
    }
  }
  if (paras.empty()) {
    throw core::Error("no license texts to generate the benchmark text from").with_file(dir.string())
        .with_hint("pass a TEXT_FILE");
  }
  const size_t target = static_cast<size_t>(mb * 1e6);
  std::string out;
  out.reserve(target + 8192);
  std::mt19937_64 rng(1);
  while (out.size() < target) {
    std::shuffle(paras.begin(), paras.end(), rng);
    for (const auto& p : paras) {
      if (out.size() >= target) break;
      if (!out.empty()) out += "\n\n";
      out += p;
    }
  }
  return out;
}

std::string default_tokenizer() {
  const fs::path rel = "tests/fixtures/hf/bpe-gpt2style/tokenizer.json";
  std::vector<fs::path> roots = {fs::current_path()};
  const fs::path self = self_path();
  if (!self.empty()) roots.push_back(self.parent_path().parent_path().parent_path());  // build/bin/meshtrain
  for (const auto& r : roots)
    if (fs::exists(r / rel)) return (r / rel).string();
  throw core::Error("no --tokenizer given and no " + rel.string() + " found here or beside the binary")
      .with_hint("pass --tokenizer PATH (a tokenizer.json or a directory holding one)");
}

}  // namespace

int cmd_bench_tokenizer(const BenchTokenizerArgs& a) {
  MT_CHECK(a.mb > 0 && a.passes >= 1, "need --mb > 0 and --passes >= 1");
  const std::string tok_path = a.tokenizer.empty() ? default_tokenizer() : a.tokenizer;
  const auto tok = io::load_tokenizer(tok_path);
  const std::string text = a.text_file.empty() ? generate_text(a.mb) : io::read_file(a.text_file);
  if (!a.save_text.empty()) {
    std::ofstream f(a.save_text, std::ios::binary);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!f) throw core::Error("cannot write the text").with_file(a.save_text);
  }
  std::vector<std::string_view> docs;
  for (size_t pos = 0; pos <= text.size();) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    docs.push_back(std::string_view(text).substr(pos, end - pos));
    pos = end + 2;
  }
  size_t bytes = 0;
  for (auto d : docs) bytes += d.size();
  double best = 1e30;
  uint64_t hash = 0, tokens = 0;
  for (int p = 0; p < a.passes; ++p) {
    uint64_t h = 0, n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (auto d : docs) {
      const auto ids = tok->encode(d);
      n += ids.size();
      for (int32_t id : ids) h = h * 1000003u + static_cast<uint64_t>(id);
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    hash = h, tokens = n;
  }
  const double mbs = bytes / 1e6 / best;
  std::printf("tokenizer   %s\n", tok->describe().c_str());
  std::printf("text        %s: %.1f MB in %zu documents (split at blank lines)\n",
              a.text_file.empty() ? "generated from /usr/share/common-licenses" : a.text_file.c_str(), bytes / 1e6,
              docs.size());
  std::printf("tokens      %llu (%.2f bytes/token), ids hash %016llx\n", static_cast<unsigned long long>(tokens),
              tokens ? static_cast<double>(bytes) / tokens : 0.0, static_cast<unsigned long long>(hash));
  std::printf("meshtrain   %.2f MB/s on one thread (%.2f s, best of %d)\n", mbs, best, a.passes);
  if (!a.json_out.empty()) {
    const nlohmann::json j = {{"tokenizer", tok_path}, {"bytes", bytes}, {"documents", docs.size()},
                              {"tokens", tokens}, {"hash", fmt::format("{:016x}", hash)}, {"seconds", best},
                              {"mb_per_s", mbs}};
    std::ofstream(a.json_out) << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace mt::launch
