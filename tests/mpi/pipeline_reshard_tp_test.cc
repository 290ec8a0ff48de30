// What: checkpoints of pipeline stages resharded across tensor-parallel sizes together with pp,
// dp and ZeRO-1 (#17), under mpirun -np 2 and 4 (tp = world): GPT-2 (tied head) and Llama
// (untied; tied) checkpoints written at dp x pp x tp = world (each rank writing the shards of
// its tp rank, with the real shard writer and a manifest as CheckpointManager::save writes it)
// reshard into tp 1 layouts (pp 1, pp 4, dp 2 x pp 2 interleaved, ZeRO-1); checkpoints written
// at tp 1 reshard into tp = world layouts (pp 1, pp 4, dp 2 x pp 2 ZeRO-1). Every parameter is
// compared by name with a whole model's init_weights(seed) (vocabulary padding, which differs
// per tp, zero), and the Adam moments over the new owned ranges with a formula of the
// full-tensor index, exactly (tests/pipeline_ckpt_util.h).
// Why: the "resharding across pp sizes and to/from pp 1" combined with tp changes;
// the last stage's copy of a tied embedding holds other values, so only a reader that takes
// the first stage's copy passes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "pipeline_ckpt_util.h"

using namespace mt;
using namespace mt::pp_ckpt;
namespace fs = std::filesystem;

namespace {

// A fresh directory, the same on every rank (rank 0's pid).
std::string shared_dir(Communicator& world, const std::string& name) {
  int64_t pid = ::getpid();
  world.broadcast(&pid, 1, DType::I64, 0);
  const std::string d = (fs::temp_directory_path() / fmt::format("mt_pp_tp_{}_{}", name, pid)).string();
  if (world.rank() == 0) {
    fs::remove_all(d);
    fs::create_directories(d);
  }
  world.barrier();
  return d;
}

void cleanup(Communicator& world, const std::string& d) {
  world.barrier();
  if (world.rank() == 0) fs::remove_all(d);
}

void from_tp_world(const std::string& name, const core::Config& cfg) {
  auto world = make_world_communicator("mpi");
  const std::string root = shared_dir(*world, name);
  const Layout sources[] = {
      {2, 2, 1, {{0, 2}, {2, 6}}},                  // dp 2 x pp 2 x tp W, ZeRO-1
      {1, 2, 0, {{0, 1}, {1, 3}, {3, 4}, {4, 6}}},  // pp 2 x 2 virtual x tp W
  };
  int i = 0;
  for (const Layout& from : sources) {
    const std::string ckpt = write_checkpoint(fmt::format("{}/{}", root, i++), cfg, from, 99, world.get());
    for (const Layout& to : {Layout{1, 1, 0, {{0, 6}}}, Layout{2, 4, 1, {{0, 1}, {1, 3}, {3, 5}, {5, 6}}},
                             Layout{2, 2, 1, {{0, 1}, {1, 2}, {2, 4}, {4, 6}}}}) {
      SCOPED_TRACE(fmt::format("{}: dp {} pp {} ({} vstages) tp {} -> dp {} pp {} ({} vstages) tp 1", name, from.dp,
                               from.pp, from.vstages.size(), world->size(), to.dp, to.pp, to.vstages.size()));
      check_reshard(ckpt, cfg, to, 99);
    }
    // and into tp W at another pipeline
    SCOPED_TRACE(fmt::format("{}: -> pp 3 tp {}", name, world->size()));
    check_reshard(ckpt, cfg, Layout{1, 3, 0, {{0, 2}, {2, 3}, {3, 6}}}, 99, world.get());
  }
  cleanup(*world, root);
}

void to_tp_world(const std::string& name, const core::Config& cfg) {
  auto world = make_world_communicator("mpi");
  const std::string root = shared_dir(*world, name);
  std::string ckpt = root + "/step_00000005";
  if (world->rank() == 0) write_checkpoint(root, cfg, Layout{1, 2, 0, {{0, 4}, {4, 6}}}, 7);  // pp 2 x tp 1
  world->barrier();
  for (const Layout& to : {Layout{1, 1, 0, {{0, 6}}}, Layout{1, 4, 0, {{0, 1}, {1, 2}, {2, 3}, {3, 6}}},
                           Layout{2, 2, 1, {{0, 3}, {3, 6}}}}) {
    SCOPED_TRACE(fmt::format("{}: pp 2 tp 1 -> dp {} pp {} tp {}", name, to.dp, to.pp, world->size()));
    check_reshard(ckpt, cfg, to, 7, world.get());
  }
  cleanup(*world, root);
}

}  // namespace

TEST(PipelineReshardTp, Gpt2FromTpWorld) { from_tp_world("gpt2_from", gpt2_cfg()); }
TEST(PipelineReshardTp, LlamaUntiedFromTpWorld) { from_tp_world("llama_from", llama_cfg(false)); }
TEST(PipelineReshardTp, LlamaTiedFromTpWorld) { from_tp_world("llama_tied_from", llama_cfg(true)); }
TEST(PipelineReshardTp, Gpt2ToTpWorld) { to_tp_world("gpt2_to", gpt2_cfg()); }
TEST(PipelineReshardTp, LlamaUntiedToTpWorld) { to_tp_world("llama_to", llama_cfg(false)); }
