// What: bf16 reductions of the MPI backend under 2 and 4 ranks: every collective and op
// against closed forms (values whose partial sums are exact in bf16) with every algorithm
// (recursive doubling, the ring with tiny segments, and SmallAlgorithm::Library, which bf16
// must bypass: MPI has no bf16 type); the rounding rule (each pair summed in f32, rounded to
// nearest even) checked against an independent computation for 2 ranks and bounded for
// more; bitwise-identical results on all ranks; avg rounding; NaN and infinity.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <limits>

#include "core/hash.h"
#include "collective_cases.h"
#include "parallel/mpi_communicator.h"

using namespace mt::parallel;
using namespace mt::testing;

namespace {

struct Cfg {
  const char* name;
  MpiCommOptions opt;
};
std::vector<Cfg> configs() {
  MpiCommOptions library, small, ring;
  library.ring_min_bytes = std::numeric_limits<size_t>::max();
  library.small_algorithm = SmallAlgorithm::Library;
  small.ring_min_bytes = std::numeric_limits<size_t>::max();
  small.small_piece_bytes = 64;
  ring.ring_min_bytes = 0;
  ring.segment_bytes = 256;
  return {{"library", library}, {"small_pieces64", small}, {"ring_seg256", ring}, {"default", {}}};
}

uint64_t fnv(const void* p, size_t n) { return mt::core::fnv1a64(p, n); }

// Values that need rounding: 1 + small fractions, different on every rank.
float rough(int r, size_t i) { return 1.0f + std::sin(0.37f * static_cast<float>(i) + 1.3f * r) * 0.25f + 0.01f * r; }

}  // namespace

TEST(Bf16Reduce, ClosedFormsEveryAlgorithm) {
  HostMem mem;
  for (const auto& cfg : configs()) {
    MpiCommunicator c(MPI_COMM_WORLD, cfg.name, cfg.opt);
    if (c.size() > 4) GTEST_SKIP() << "the closed forms are exact in bf16 for up to 4 ranks";
    for (bool nb : {false, true}) {
      all_reduce_case<Bf16>(c, mem, cfg.name, nb);
      for (bool ip : {false, true}) reduce_scatter_case<Bf16>(c, mem, cfg.name, nb, ip);
    }
  }
}

// With 2 ranks every algorithm adds the two operands once: the result must be exactly
// bf16(f32(a) + f32(b)) rounded to nearest even, computed here independently.
TEST(Bf16Reduce, RoundingRuleAndIdenticalBits) {
  for (const auto& cfg : configs()) {
    MpiCommunicator c(MPI_COMM_WORLD, cfg.name, cfg.opt);
    const int p = c.size(), r = c.rank();
    for (size_t n : {size_t(5), size_t(1000), size_t(300000)}) {
      // Every rank's inputs, computed once (a recomputation may contract to FMA differently).
      std::vector<Bf16> in(n * p);
      for (int q = 0; q < p; ++q)
        for (size_t i = 0; i < n; ++i) in[q * n + i] = Bf16::from_float(rough(q, i));
      std::vector<Bf16> x(in.begin() + r * n, in.begin() + (r + 1) * n), avg = x;
      c.all_reduce(x.data(), n, DType::BF16, ReduceOp::Sum);
      c.all_reduce(avg.data(), n, DType::BF16, ReduceOp::Avg);
      size_t bad = 0, bad_avg = 0;
      for (size_t i = 0; i < n; ++i) {
        double exact = 0;
        for (int q = 0; q < p; ++q) exact += in[q * n + i].to_float();
        if (p == 2) {
          const Bf16 want = Bf16::from_float(in[i].to_float() + in[n + i].to_float());
          bad += !(x[i] == want);
          bad_avg += !(avg[i] == Bf16::from_float(want.to_float() / 2.0f));
        } else {
          // p-1 roundings at most, each within half an ulp (2^-8 relative) of a partial sum
          bad += std::abs(x[i].to_float() - exact) > (p - 1) * std::ldexp(exact, -8);
          bad_avg += std::abs(avg[i].to_float() - exact / p) > p * std::ldexp(exact / p, -8);
        }
      }
      EXPECT_EQ(bad, 0u) << cfg.name << " n=" << n;
      EXPECT_EQ(bad_avg, 0u) << cfg.name << " avg n=" << n;
      uint64_t h = fnv(x.data(), n * 2) ^ fnv(avg.data(), n * 2), lo = h, hi = h;
      MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
      MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
      EXPECT_EQ(lo, hi) << cfg.name << " n=" << n << ": ranks got different bits";
    }
  }
}

TEST(Bf16Reduce, NanAndInfinity) {
  MpiCommunicator c(MPI_COMM_WORLD, "world", {});
  const int p = c.size(), r = c.rank();
  if (p < 2) GTEST_SKIP() << "needs 2 ranks";
  const float inf = std::numeric_limits<float>::infinity();
  // [0]: NaN on rank 0; [1]: +inf on rank 1; [2]: huge values that overflow to inf when summed
  std::vector<Bf16> x = {Bf16::from_float(r == 0 ? 1.0f : 2.0f), Bf16::from_float(r == 1 ? inf : 1.0f),
                         Bf16::from_float(3.0e38f)};
  if (r == 0) x[0].bits = 0x7fc0;  // quiet NaN
  std::vector<Bf16> m = x;
  c.all_reduce(x.data(), x.size(), DType::BF16, ReduceOp::Sum);
  c.all_reduce(m.data(), m.size(), DType::BF16, ReduceOp::Max);
  EXPECT_TRUE(std::isnan(x[0].to_float()));
  EXPECT_EQ(x[1].to_float(), inf);
  EXPECT_EQ(x[2].to_float(), inf);
  EXPECT_EQ(m[1].to_float(), inf);
  EXPECT_EQ(m[2].to_float(), Bf16::from_float(3.0e38f).to_float());
}
