// What: `meshtrain bench data DATASET`: the loader's throughput against the raw rate of the
// same shards. First every train shard is read sequentially with H5Dread in 1 Mi-token blocks
// (the raw rate, tokens/s, best of --passes); then a Loader (one replica, its background
// thread, the configured mode) delivers batches to a consumer that does nothing
// else for --passes epochs, and its best epoch's tokens/s (tokens of the samples delivered) is
// compared with the raw rate. It also prints the padding: positions without a target / all
// positions the loader delivered (what documents mode pads and packed mode saves).
// Both run after Dataset::open has read every shard once, so both read from the page cache.
// Why: the loader must never be the bottleneck: the target is >= 90% of the raw rate.
#pragma once

#include <string>

namespace mt::launch {

struct BenchDataArgs {
  std::string dataset;
  std::string mode = "concat";  // concat | documents | packed
  int seq_len = 1024;
  int batch = 32;               // concat: samples per step; packed: rows per step
  int eod_token = -1;           // documents/packed: data.eod_token
  long long batch_tokens = 0;   // documents: targets per step (0 = batch x seq_len)
  int micro_batch = 8;
  int prefetch = 2;
  int passes = 3;               // raw passes (the best is reported)
  std::string json_out;
};

int cmd_bench_data(const BenchDataArgs& a);

}  // namespace mt::launch
