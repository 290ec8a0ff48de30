// What: the all-reduce benchmark table. See allreduce_bench.h.
#include "parallel/allreduce_bench.h"

#include <algorithm>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "core/device.h"
#include "core/error.h"

namespace mt::parallel {

namespace {

// Element i on rank r is (r+1) * (i%13 + 1); the sum over n ranks is n(n+1)/2 * (i%13 + 1),
// exact in f32 for any realistic n.
void fill_values(float* x, size_t n, int rank) {
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>((rank + 1) * static_cast<int>(i % 13 + 1));
}
bool verify(const float* x, size_t n, int size) {
  const double tri = 0.5 * size * (size + 1);
  for (size_t i = 0; i < n; ++i)
    if (x[i] != static_cast<float>(tri * static_cast<double>(i % 13 + 1))) return false;
  return true;
}

// Max over ranks of the mean time per iteration of `iters` calls of f followed by one
// sync() (device backends only enqueue in f), in microseconds.
template <class F, class S>
double time_us(MPI_Comm raw, int iters, F&& f, S&& sync) {
  MPI_Barrier(raw);
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) f();
  sync();
  double t = (MPI_Wtime() - t0) / iters * 1e6;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, raw);
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

bool all_ranks(MPI_Comm raw, bool ok) {
  int v = ok ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MIN, raw);
  return v == 1;
}

}  // namespace

std::vector<AllreduceBenchRow> run_allreduce_bench(Communicator& comm, core::Device& device,
                                                   const AllreduceBaseline& raw_call, MPI_Comm raw,
                                                   const AllreduceBenchOptions& opt, std::ostream& out) {
  int raw_size = 0, raw_rank = 0;
  MPI_Comm_size(raw, &raw_size);
  MPI_Comm_rank(raw, &raw_rank);
  MT_CHECK(raw_size == comm.size() && raw_rank == comm.rank(),
           "bench allreduce: the raw MPI communicator (rank {} of {}) must have the same ranks as '{}' ({} of {})",
           raw_rank, raw_size, comm.name(), comm.rank(), comm.size());
  MT_CHECK(opt.min_bytes >= 4 && opt.max_bytes >= opt.min_bytes && opt.factor >= 2 && opt.iters >= 1 &&
               opt.warmup >= 0 && opt.rounds >= 1,
           "bench allreduce: need 4 <= min_bytes <= max_bytes, factor >= 2, iters >= 1, warmup >= 0, rounds >= 1 "
           "(got {}, {}, {}, {}, {}, {})",
           opt.min_bytes, opt.max_bytes, opt.factor, opt.iters, opt.warmup, opt.rounds);
  const int n = comm.size(), rank = comm.rank();
  const bool print = rank == 0;
  const double bus = n > 1 ? 2.0 * (n - 1) / n : 0.0;
  const bool on_host = device.kind() == core::DeviceKind::CPU;

  // One buffer for every size, touched once here: fresh pages are slow on these VMs. On a
  // device, `host` stages the closed-form data in and the results out (untimed).
  const size_t max_count = opt.max_bytes / sizeof(float);
  std::vector<float> host(max_count, 0.0f);
  struct DeviceBuf {
    core::Device& dev;
    float* p;
    ~DeviceBuf() { dev.free(p); }
  };
  DeviceBuf dbuf{device, on_host ? nullptr : static_cast<float*>(device.alloc(max_count * sizeof(float)))};
  float* x = on_host ? host.data() : dbuf.p;
  if (!on_host) device.memset_zero(x, max_count * sizeof(float));
  auto fill = [&](size_t cnt) {
    fill_values(host.data(), cnt, rank);
    if (!on_host) device.copy(x, host.data(), cnt * sizeof(float));
  };
  auto check = [&](size_t cnt) {
    if (!on_host) device.copy(host.data(), x, cnt * sizeof(float));
    return all_ranks(raw, verify(host.data(), cnt, n));
  };

  if (print) {
    out << fmt::format("# all_reduce benchmark: f32 sum in place, {} rank(s), backend {} on {}; {} warm-up, then {} "
                       "rounds of {} iterations alternating framework/raw; time = median round of (max over "
                       "ranks of the mean per iteration); busbw = algbw x 2(n-1)/n; fw/raw = busbw ratio\n",
                       n, comm.backend_name(), device.name(), opt.warmup, opt.rounds, opt.iters);
    out << fmt::format("# {:>10} {:>10}  {:^27}  {:^27}\n", "", "", "framework all_reduce",
                       raw_call.name.size() <= 27 ? "raw " + raw_call.name : raw_call.name);
    out << fmt::format("# {:>10} {:>10}  {:>9} {:>8} {:>8}  {:>9} {:>8} {:>8}  {:>6}  {}\n", "bytes", "count",
                       "time(us)", "algbw", "busbw", "time(us)", "algbw", "busbw", "fw/raw", "check");
    out.flush();
  }

  std::vector<AllreduceBenchRow> rows;
  for (size_t bytes = opt.min_bytes; bytes <= opt.max_bytes; bytes *= static_cast<size_t>(opt.factor)) {
    AllreduceBenchRow row;
    row.count = bytes / sizeof(float);
    row.bytes = row.count * sizeof(float);
    const size_t cnt = row.count;

    fill(cnt);
    comm.all_reduce(x, cnt, DType::F32, ReduceOp::Sum);
    comm.synchronize();
    row.fw_ok = check(cnt);
    if (raw_call.uses_buffer) {
      fill(cnt);
      raw_call.run(x, cnt);
      raw_call.sync();
      row.raw_ok = check(cnt);
    } else {
      row.raw_ok = true;
    }

    // timed runs reduce zeros: no growth towards inf
    if (on_host) std::fill(x, x + cnt, 0.0f);
    else device.memset_zero(x, cnt * sizeof(float));
    // wait_stream(): enqueued and ordered, like the raw call, with one host wait per loop
    // (fw_sync); a host backend's wait_stream() is its wait().
    auto fw = [&] { comm.iall_reduce(x, cnt, DType::F32, ReduceOp::Sum)->wait_stream(); };
    auto fw_sync = [&] {
      comm.synchronize();
      device.synchronize();
    };
    auto base = [&] { raw_call.run(x, cnt); };
    for (int i = 0; i < opt.warmup; ++i) fw(), base();
    fw_sync();
    raw_call.sync();
    // Rounds alternate which side goes first; the median round damps VM noise.
    std::vector<double> fw_t, raw_t;
    for (int k = 0; k < opt.rounds; ++k) {
      if (k % 2 == 0) {
        fw_t.push_back(time_us(raw, opt.iters, fw, fw_sync));
        raw_t.push_back(time_us(raw, opt.iters, base, raw_call.sync));
      } else {
        raw_t.push_back(time_us(raw, opt.iters, base, raw_call.sync));
        fw_t.push_back(time_us(raw, opt.iters, fw, fw_sync));
      }
    }
    row.fw_us = median(fw_t);
    row.raw_us = median(raw_t);
    row.fw_algbw = row.bytes / row.fw_us * 1e-3;
    row.raw_algbw = row.bytes / row.raw_us * 1e-3;
    row.fw_busbw = row.fw_algbw * bus;
    row.raw_busbw = row.raw_algbw * bus;
    row.ratio = row.raw_algbw > 0 ? row.fw_algbw / row.raw_algbw : 0.0;
    if (print) {
      out << fmt::format("  {:>10} {:>10}  {:>9.1f} {:>8.2f} {:>8.2f}  {:>9.1f} {:>8.2f} {:>8.2f}  {:>6.2f}  {}\n",
                         row.bytes, row.count, row.fw_us, row.fw_algbw, row.fw_busbw, row.raw_us, row.raw_algbw,
                         row.raw_busbw, row.ratio,
                         row.fw_ok && row.raw_ok ? "ok" : (row.fw_ok ? "raw WRONG" : "framework WRONG"));
      out.flush();
    }
    rows.push_back(row);
    if (bytes > opt.max_bytes / static_cast<size_t>(opt.factor)) break;  // no overflow of bytes *= factor
  }
  return rows;
}

}  // namespace mt::parallel
