// The alpha-beta cost model of `meshtrain scale` (launch/cost_model.h): the fit recovers known
// parameters from synthetic ring timings, also when the table spans 4 KiB to 16 MiB (where a
// fit on absolute seconds loses alpha), and the ring formula matches its definition.
#include <gtest/gtest.h>


#include "core/error.h"
#include "launch/cost_model.h"
#include "launch/network_bench.h"

using namespace mt::launch;

TEST(CostModel, RingFormula) {
  const AlphaBeta ab{5e-6, 1.0 / 10e9};
  EXPECT_EQ(ring_allreduce_s(ab, 1e6, 1), 0.0);
  // 2(n-1) alpha + 2(n-1)/n B beta for n = 4, B = 1 MB: 6 x 5 us + 1.5 x 100 us
  EXPECT_NEAR(ring_allreduce_s(ab, 1e6, 4), 30e-6 + 150e-6, 1e-12);
}

TEST(CostModel, FitRecoversAlphaAndBetaAcrossSizes) {
  const AlphaBeta truth{3e-6, 1.0 / 6e9};
  for (int n : {2, 4, 8}) {
    std::vector<std::pair<double, double>> pts;
    int i = 0;
    for (double b = 4096; b <= 16 << 20; b *= 2, ++i) {
      const double noise = 1.0 + 0.03 * ((i % 3) - 1);  // +-3%, deterministic
      pts.emplace_back(b, ring_allreduce_s(truth, b, n) * noise);
    }
    const AlphaBeta fit = fit_alpha_beta(pts, n);
    EXPECT_NEAR(fit.alpha_s, truth.alpha_s, 0.15 * truth.alpha_s) << "n " << n;
    EXPECT_NEAR(fit.beta_s, truth.beta_s, 0.05 * truth.beta_s) << "n " << n;
    // and so the smallest message is predicted within a few percent, not 100% off
    const double t0 = pts.front().second;
    EXPECT_NEAR(ring_allreduce_s(fit, pts.front().first, n), t0, 0.1 * t0);
  }
}

TEST(CostModel, ExtrapolationTableHasTheScales) {
  const std::string md = extrapolation_table(h100_cluster(), 1e15, 500e6);
  for (const char* n : {"| 8 |", "| 64 |", "| 256 |", "| 1024 |"}) EXPECT_NE(md.find(n), std::string::npos) << n;
}

// Pipeline step (pipeline_time): numbers computed by hand from the formulas in cost_model.h.
TEST(CostModel, PipelineOneFOneB) {
  using mt::parallel::PipeSchedule;
  const AlphaBeta link{5e-6, 1.0 / 10e9};  // one 1 MB message: 5 us + 100 us = 105 us
  // pp 4, m 8: bubble 3 / 11, so 8 ms of stage work takes 8 x 11/8 = 11 ms
  const PipelineTime t = pipeline_time(8e-3, PipeSchedule::OneFOneB, 4, 1, 8, 1e6, link);
  EXPECT_NEAR(t.bubble, 3.0 / 11, 1e-12);
  EXPECT_NEAR(t.compute_s, 11e-3, 1e-12);
  // 2 messages x 8 micro-batches x 105 us, stretched by 11/8: 2.31 ms
  EXPECT_NEAR(t.p2p_s, 2.31e-3, 1e-12);
  EXPECT_NEAR(t.p2p_bytes, 2.0 * 8 * 3 * 1e6, 1e-3);  // forward + backward over 3 boundaries
  EXPECT_NEAR(t.step_s(), 13.31e-3, 1e-12);
  // gpipe has the same bubble
  EXPECT_NEAR(pipeline_time(8e-3, PipeSchedule::GPipe, 4, 1, 8, 1e6, link).compute_s, 11e-3, 1e-12);
}

TEST(CostModel, PipelineInterleavedAndNoPipeline) {
  using mt::parallel::PipeSchedule;
  const AlphaBeta link{5e-6, 1.0 / 10e9};
  // pp 2, v 2, m 4: bubble 1 / (2 x 4 + 1) = 1/9; compute 8 ms x 9/8 = 9 ms
  const PipelineTime t = pipeline_time(8e-3, PipeSchedule::Interleaved, 2, 2, 4, 1e6, link);
  EXPECT_NEAR(t.bubble, 1.0 / 9, 1e-12);
  EXPECT_NEAR(t.compute_s, 9e-3, 1e-12);
  EXPECT_NEAR(t.p2p_s, 2.0 * 4 * 2 * 105e-6 * 9 / 8, 1e-12);  // 1.89 ms
  EXPECT_NEAR(t.p2p_bytes, 2.0 * 4 * 3 * 1e6, 1e-3);         // 3 boundaries: 0>1, 1>0 (wrap), 0>1
  // pp 1: the stage is the whole replica, no bubble, no messages
  const PipelineTime one = pipeline_time(8e-3, PipeSchedule::OneFOneB, 1, 1, 3, 1e6, link);
  EXPECT_EQ(one.bubble, 0.0);
  EXPECT_EQ(one.compute_s, 8e-3);
  EXPECT_EQ(one.p2p_s, 0.0);
  // 1f1b with fewer micro-batches than stages is refused (check_pipeline)
  EXPECT_THROW(pipeline_time(8e-3, PipeSchedule::OneFOneB, 4, 1, 2, 1e6, link), mt::core::Error);
}

// Two-level network (Network in cost_model.h): numbers computed by hand from the formulas
// there. intra: 2 us, 10 GB/s; inter: 20 us, 1 GB/s; 2 ranks per host, one link per host;
// the MPI backend's switch at 256 KiB (recursive doubling below, ring from there).
namespace {
Network two_level() {
  Network net;
  net.intra = {2e-6, 1.0 / 10e9};
  net.inter = {20e-6, 1.0 / 1e9};
  net.ranks_per_host = 2;
  net.links_per_host = 1;
  net.ring_min_bytes = 256 << 10;
  return net;
}
}  // namespace

TEST(CostModel, TwoLevelFlatRing) {
  const Network net = two_level();
  const double mib = 1 << 20;
  EXPECT_EQ(hosts_spanned(net, 2), 1);
  EXPECT_EQ(hosts_spanned(net, 3), 2);
  EXPECT_EQ(hosts_spanned(net, 8), 4);
  EXPECT_EQ(flat_allreduce_s(net, mib, 1), 0.0);
  // one host, 2 ranks: the intra ring, 2 x 2 us + 1 x 1 MiB / 10 GB/s = 4 + 104.8576 us
  EXPECT_NEAR(flat_allreduce_s(net, mib, 2), 108.8576e-6, 1e-12);
  // 2 hosts x 2 ranks: every ring step waits for the inter-host hop: 6 x 20 us + 1.5 MiB / 1 GB/s
  EXPECT_NEAR(flat_allreduce_s(net, mib, 4), 120e-6 + 1572.864e-6, 1e-12);
  const LevelTerms t = flat_allreduce_terms(net, mib, 4);
  EXPECT_EQ(t.intra.steps, 0.0);
  EXPECT_EQ(t.inter.steps, 6.0);
  EXPECT_NEAR(t.inter.coef_bytes, 1.5 * mib, 1e-6);
  // 3 ranks (not a power of two) from 256 KiB: the ring across 2 hosts, 4 x 20 us + 4/3 x 262144 B / 1 GB/s
  EXPECT_NEAR(flat_allreduce_s(net, 262144, 3), 80e-6 + 4.0 / 3 * 262.144e-6, 1e-12);
}

TEST(CostModel, TwoLevelFlatRecursiveDoublingNotAPowerOfTwo) {
  const Network net = two_level();
  // 3 ranks of 64 KiB (the backend runs recursive doubling below 256 KiB whatever n is): rank 0
  // hands its data to rank 1 and gets the result back (inside host 0: 2 x (2 + 6.5536) us), in
  // between rank 1 exchanges with rank 2 on the other host (20 + 65.536 us, one flow per link)
  const LevelTerms t = flat_allreduce_terms(net, 65536, 3);
  EXPECT_EQ(t.intra.steps, 2.0);
  EXPECT_EQ(t.inter.steps, 1.0);
  EXPECT_NEAR(flat_allreduce_s(net, 65536, 3), 17.1072e-6 + 85.536e-6, 1e-12);
  // 6 ranks on 3 hosts: the pairs (0,1), (2,3) inside hosts; then ranks 1, 3, 4, 5 exchange
  // with newrank ^ 1: (1,3) across (one flow per link; (4,5) inside host 2), then ^ 2: (1,4),
  // (3,5), both into host 2: two flows share its link
  const LevelTerms six = flat_allreduce_terms(net, 65536, 6);
  EXPECT_EQ(six.intra.steps, 2.0);
  EXPECT_EQ(six.inter.steps, 2.0);
  EXPECT_NEAR(six.inter.coef_bytes, 65536.0 * (1 + 2), 1e-6);
}

TEST(CostModel, TwoLevelFlatRecursiveDoubling) {
  const Network net = two_level();
  // 64 KiB on 2 hosts x 2: exchange with rank+-1 inside the host (2 us + 6.5536 us), then with
  // rank+-2 across: both ranks of a host send at once through its one link (20 us + 2 x 65.536 us)
  EXPECT_NEAR(flat_allreduce_s(net, 65536, 4), 8.5536e-6 + 151.072e-6, 1e-12);
  // 4 hosts x 2: one more exchange across hosts (rank+-4)
  EXPECT_NEAR(flat_allreduce_s(net, 65536, 8), 8.5536e-6 + 2 * 151.072e-6, 1e-12);
  // a link per rank (rail-optimised): no sharing, 20 us + 65.536 us across
  Network rails = net;
  rails.links_per_host = 2;
  EXPECT_NEAR(flat_allreduce_s(rails, 65536, 4), 8.5536e-6 + 85.536e-6, 1e-12);
  // ring_min_bytes 0 (NCCL): always the ring, 6 x 20 us + 1.5 x 65.536 us
  Network ring = net;
  ring.ring_min_bytes = 0;
  EXPECT_NEAR(flat_allreduce_s(ring, 65536, 4), 120e-6 + 98.304e-6, 1e-12);
}

TEST(CostModel, TwoLevelHierarchical) {
  const Network net = two_level();
  const double mib = 1 << 20;
  // reduce-scatter + all-gather inside the host (= the intra ring of 2: 108.8576 us), then the
  // ring of 2 hosts on each rank's 512 KiB shard, the host's 2 rings sharing its one link:
  // 2 x 20 us + 524288 B x 2 / 1 GB/s = 40 + 1048.576 us
  EXPECT_NEAR(hierarchical_allreduce_s(net, mib, 4), 108.8576e-6 + 1088.576e-6, 1e-12);
  // flat / hierarchical = 1692.864 / 1197.4336: 1.41x on inter-bound links
  EXPECT_NEAR(flat_allreduce_s(net, mib, 4) / hierarchical_allreduce_s(net, mib, 4), 1692.864 / 1197.4336, 1e-9);
  // one link per rank: 40 + 524.288 us across
  Network rails = net;
  rails.links_per_host = 2;
  EXPECT_NEAR(hierarchical_allreduce_s(rails, mib, 4), 108.8576e-6 + 564.288e-6, 1e-12);
  // one host: the intra ring only; 1 rank per host: the inter ring only
  EXPECT_NEAR(hierarchical_allreduce_s(net, mib, 2), 108.8576e-6, 1e-12);
  Network single = net;
  single.ranks_per_host = 1;
  EXPECT_NEAR(hierarchical_allreduce_s(single, mib, 2), 40e-6 + mib * 1e-9, 1e-12);
  // the shard below ring_min_bytes: recursive doubling across the hosts, as the backend runs it:
  // 256 KiB on 2 hosts x 2: intra ring of 2 (2 x 2 us + 26.2144 us), then one exchange of the
  // 128 KiB shard across, the host's 2 shards sharing its link (20 us + 2 x 131.072 us)
  EXPECT_NEAR(hierarchical_allreduce_s(net, 262144, 4), 30.2144e-6 + 282.144e-6, 1e-12);
  // below hier_min_bytes the backend stays flat
  Network hmin = net;
  hmin.hier_min_bytes = 64 << 10;
  EXPECT_NEAR(hierarchical_allreduce_s(hmin, 32768, 4), flat_allreduce_s(hmin, 32768, 4), 1e-15);
  EXPECT_LT(hierarchical_allreduce_s(hmin, 65536, 4), flat_allreduce_s(hmin, 65536, 4) * 0.99);
  // the GPU-cluster form (one NIC per GPU) is the Network form with links_per_host = GPUs per node
  const ClusterAssumption c = h100_cluster();
  EXPECT_NEAR(hierarchical_allreduce_s(c, 500e6, 64, 8),
              ring_allreduce_s(c.intra, 500e6, 8) + ring_allreduce_s(c.inter, 500e6 / 8, 8), 1e-12);
}

TEST(CostModel, TwoLevelFitRecoversEachLevel) {
  // bench network fits each level on terms from the algorithm that ran at each size: synthetic
  // timings from the model come back as the model's alpha and beta
  const Network truth = two_level();
  Network one_per_host = truth;
  one_per_host.ranks_per_host = 1;
  std::vector<std::pair<CostTerms, double>> intra, inter;
  for (double b = 4096; b <= 16 << 20; b *= 2) {
    intra.push_back({flat_allreduce_terms(truth, b, 2).intra, flat_allreduce_s(truth, b, 2)});
    inter.push_back({flat_allreduce_terms(one_per_host, b, 4).inter, flat_allreduce_s(one_per_host, b, 4)});
  }
  const AlphaBeta fi = fit_alpha_beta_terms(intra), fe = fit_alpha_beta_terms(inter);
  EXPECT_NEAR(fi.alpha_s, truth.intra.alpha_s, 1e-3 * truth.intra.alpha_s);
  EXPECT_NEAR(fi.beta_s, truth.intra.beta_s, 1e-3 * truth.intra.beta_s);
  EXPECT_NEAR(fe.alpha_s, truth.inter.alpha_s, 1e-3 * truth.inter.alpha_s);
  EXPECT_NEAR(fe.beta_s, truth.inter.beta_s, 1e-3 * truth.inter.beta_s);
}

TEST(CostModel, NetworkJsonRoundTripAndErrors) {
  const Network net = two_level();
  const Network back = network_from_json(network_to_json(net), "test");
  EXPECT_NEAR(back.intra.alpha_s, net.intra.alpha_s, 1e-15);
  EXPECT_NEAR(back.inter.beta_s, net.inter.beta_s, 1e-18);
  EXPECT_EQ(back.ranks_per_host, 2);
  EXPECT_EQ(back.ring_min_bytes, 256 << 10);
  // the file bench network writes nests it under "network"
  const auto j = nlohmann::json::parse(
      R"({"hosts": 2, "network": {"intra": {"alpha_us": 2, "gbytes_per_s": 10},
          "inter": {"alpha_us": 20, "gbytes_per_s": 1}, "ranks_per_host": 2}})");
  const Network f = network_from_json(j, "f.json");
  EXPECT_NEAR(f.inter.alpha_s, 20e-6, 1e-15);
  EXPECT_NEAR(f.intra.beta_s, 1e-10, 1e-20);
  EXPECT_EQ(f.links_per_host, 1);
  EXPECT_EQ(f.ring_min_bytes, 256 << 10);  // the MPI backend's default when not given
  try {
    network_from_json(nlohmann::json::parse(R"({"intra": {"alpha_us": 2, "gbytes_per_s": 10}})"), "x.yaml");
    FAIL() << "missing inter accepted";
  } catch (const mt::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing 'inter'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("x.yaml"), std::string::npos) << e.what();
  }
}
