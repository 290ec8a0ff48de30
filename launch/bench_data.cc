// What: cmd_bench_data (see bench_data.h).
#include "launch/bench_data.h"

#include <hdf5.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/dataset.h"
#include "io/loader.h"
#include "launch/train/train_util.h"

namespace mt::launch {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Sequential H5Dread of every train shard in blocks of 1 Mi tokens: tokens per second, into
// the file's own type (`as_int32` false) or converted by HDF5 to int32 (what the model reads).
double raw_read_rate(const io::Dataset& ds, bool as_int32) {
  const bool u32 = ds.dtype() == "uint32";
  const hsize_t block = 1 << 20;
  std::vector<unsigned char> buf(block * (u32 || as_int32 ? 4 : 2));
  const hid_t mem = as_int32 ? H5T_NATIVE_INT32 : u32 ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT16;
  int64_t tokens = 0;
  uint64_t sink = 0;
  const auto t0 = Clock::now();
  for (const auto& s : ds.shards("train")) {
    const std::string path = ds.dir() + "/" + s.file;
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "tokens", H5P_DEFAULT);
    const hid_t fs = H5Dget_space(d);
    for (hsize_t start = 0; start < static_cast<hsize_t>(s.tokens); start += block) {
      hsize_t cnt[1] = {std::min<hsize_t>(block, static_cast<hsize_t>(s.tokens) - start)}, off[1] = {start};
      const hid_t ms = H5Screate_simple(1, cnt, nullptr);
      H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, nullptr, cnt, nullptr);
      if (H5Dread(d, mem, ms, fs, H5P_DEFAULT, buf.data()) < 0) {
        throw core::Error("H5Dread failed").with_file(path);
      }
      H5Sclose(ms);
      sink += buf[0];
      tokens += static_cast<int64_t>(cnt[0]);
    }
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
  }
  const double s = seconds_since(t0);
  if (sink == 0xdeadbeef) std::printf(" ");  // keep the reads
  return tokens / s;
}
}  // namespace

int cmd_bench_data(const BenchDataArgs& a) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  set_threads(1);  // no BLAS here: keep OpenBLAS's pool from spinning beside the loader
  const auto t_open = Clock::now();
  const io::Dataset ds = io::Dataset::open(a.dataset, /*verify=*/true);  // also warms the page cache
  const double open_s = seconds_since(t_open);
  double raw = 0, raw32 = 0;
  for (int p = 0; p < a.passes; ++p) {
    raw = std::max(raw, raw_read_rate(ds, false));
    raw32 = std::max(raw32, raw_read_rate(ds, true));
  }

  const io::SampleMode mode = io::parse_sample_mode(a.mode);
  io::Hdf5Source src(a.dataset, ds.vocab_size(), a.seq_len, mode, /*verify=*/false, 0, 1, a.eod_token);
  io::LoaderOptions o;
  o.mode = mode;
  o.policy = io::SchedulePolicy::Static;
  o.seq_len = a.seq_len;
  o.micro_batch = a.micro_batch;
  o.batch_samples = a.batch;
  o.batch_tokens = a.batch_tokens > 0 ? a.batch_tokens : static_cast<int64_t>(a.batch) * a.seq_len;
  o.prefetch = a.prefetch;
  o.eod_token = a.eod_token;
  io::Loader loader(src, o, a.dataset);
  // epochs back to back through one loader; the best epoch is reported (like the raw passes)
  int64_t tokens = 0, steps = 0, step = 0, targets = 0, positions = 0;
  double secs = 1e300;
  for (int e = 0; e < a.passes; ++e) {
    int64_t t = 0, n = 0;
    const auto t0 = Clock::now();
    for (;; ++step) {
      const io::Batch& b = loader.next(step);
      for (const auto& r : b.samples) t += r.tokens;
      if (e == 0) targets += b.global_targets, positions += b.global_positions;  // epoch 0's padding
      ++n;
      if (b.after.epoch > static_cast<uint64_t>(e)) break;  // epoch e delivered
    }
    ++step;
    const double s = seconds_since(t0);
    if (s / t < secs / std::max<int64_t>(tokens, 1)) secs = s, tokens = t, steps = n;
  }
  const double rate = tokens / secs;
  const size_t width = ds.dtype() == "uint32" ? 4 : 2;
  std::printf("bench data: %s (%lld train tokens in %zu shard(s), %s, %d/%d mapped; open + verify %.2f s)\n",
              a.dataset.c_str(), static_cast<long long>(ds.num_tokens("train")), ds.shards("train").size(),
              ds.dtype().c_str(), ds.mapped_shards(), ds.num_shards(), open_s);
  std::printf("  raw sequential H5Dread   %12.0f tokens/s  (%7.1f MB/s, best of %d passes, 1 Mi-token blocks)\n", raw,
              raw * width / 1e6, a.passes);
  std::printf("  ... converted to int32   %12.0f tokens/s\n", raw32);
  std::printf("  loader (%s, seq_len %d) %12.0f tokens/s  (%7.1f MB/s; best epoch of %d: %lld steps, %lld tokens)\n",
              a.mode.c_str(), a.seq_len, rate, rate * width / 1e6, a.passes, static_cast<long long>(steps),
              static_cast<long long>(tokens));
  std::printf("  loader / raw             %11.1f%%   (loader / raw int32 %.1f%%)\n", 100.0 * rate / raw, 100.0 * rate / raw32);
  const double pad = positions > 0 ? 1.0 - static_cast<double>(targets) / static_cast<double>(positions) : 0.0;
  std::printf("  padding (mode %s): %.1f%% of positions have no target (epoch 0: %lld targets in %lld positions)\n",
              a.mode.c_str(), 100.0 * pad, static_cast<long long>(targets),
              static_cast<long long>(positions));
  if (!a.json_out.empty()) {
    nlohmann::json j{{"raw_tokens_per_s", raw}, {"raw_int32_tokens_per_s", raw32}, {"loader_tokens_per_s", rate}, {"ratio", rate / raw},
                     {"pad_fraction", pad},
                     {"mode", a.mode}, {"seq_len", a.seq_len}, {"steps", steps}, {"tokens", tokens},
                     {"mapped_shards", ds.mapped_shards()}, {"shards", ds.num_shards()}};
    std::ofstream(a.json_out) << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace mt::launch
