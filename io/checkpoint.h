// What: sharded checkpoints in HDF5. Each rank writes one shard (its flat parameters, its
// optimizer state and their ranges, and the data loader's state as JSON bytes); rank 0 writes manifest.json (step, layout, model sizes,
// the resolved config, every shard's checksum, trainer state) and a COMPLETE marker, all in
// `<dir>/step_<N>.tmp`, which it then renames to `<dir>/step_<N>`. A checkpoint counts only
// if the directory has no .tmp suffix, holds COMPLETE, and every shard matches its checksum.
// Why: a run killed at any moment (even mid-write) leaves either the previous checkpoint or
// the new one, never a half one that resume would trust. Resume with the same layout
// reproduces the uninterrupted run bit for bit (all randomness is counter-based).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace mt::io {

constexpr int kCheckpointFormatVersion = 1;

// What one rank contributes.
struct ShardData {
  const float* params = nullptr;
  int64_t num_params = 0;
  const float* m = nullptr;  // optimizer state over `ranges` (may be empty)
  const float* v = nullptr;
  int64_t num_state = 0;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::string loader_state;  // io/loader.h state (JSON), the same on every rank; "" = none
};

// Writes this rank's shard into `tmp_dir` and returns its checksum (FNV-1a 64 of the bytes).
uint64_t write_shard(const std::string& tmp_dir, int rank, const ShardData& d);
// Reads a shard back into caller buffers of the sizes recorded in it (sizes must match).
// Verifies the checksum against `expected_checksum`. Throws Error naming the file.
void read_shard(const std::string& path, uint64_t expected_checksum, std::vector<float>& params,
                std::vector<float>& m, std::vector<float>& v,
                std::vector<std::pair<int64_t, int64_t>>& ranges);

// The loader state stored in a shard ("" if the shard has none: checkpoints from before it).
std::string read_shard_loader_state(const std::string& path);

std::string checkpoint_name(int64_t step);          // "step_00000100"
std::string shard_file_name(int rank);              // "shard_00003.h5"
// Rank 0, after every shard is written: manifest + COMPLETE, then rename tmp -> final.
void finalize_checkpoint(const std::string& tmp_dir, const std::string& final_dir,
                         const nlohmann::json& manifest);
// Complete checkpoints under `dir`, newest first (by step), without verifying shards.
std::vector<std::string> list_checkpoints(const std::string& dir);
nlohmann::json read_manifest(const std::string& ckpt_dir);
// The manifest's format_version (-1 if the manifest is missing or unreadable), without
// judging it: resume=auto refuses a newer one instead of falling back past it.
int checkpoint_format_version(const std::string& ckpt_dir);
// Verifies that a step_<N> directory's manifest says step N, and the shards' checksums (every
// shard, or those with index = first mod stride, so that ranks can share the work); returns ""
// if valid, else what is wrong (file and reason).
std::string verify_checkpoint(const std::string& ckpt_dir, int first = 0, int stride = 1);
// Deletes all but the `keep` newest complete checkpoints and any stale *.tmp directories.
void prune_checkpoints(const std::string& dir, int keep);
// Checkpoints under `dir` newer than `step` (the step a run starts from) belong to a run it
// replaces (a fresh start in a used directory, or a resume from an older checkpoint): left in
// place, pruning would keep them and delete the new run's, and resume=auto would pick them.
// Moves them into a new `dir/superseded_<time>/` (nothing is deleted); returns that directory
// and the names moved ("" and none if there were none).
std::pair<std::string, std::vector<std::string>> supersede_checkpoints(const std::string& dir, int64_t step);

}  // namespace mt::io
