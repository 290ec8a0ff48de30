// What: checkpoint shards (HDF5 C API), manifest, listing, verification and pruning.
#include "io/checkpoint.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "core/error.h"
#include "io/h5_util.h"
#include "io/metrics.h"

namespace mt::io {

namespace fs = std::filesystem;

namespace {

// Every HDF5 failure on a checkpoint shard carries the same hint.
void check_h5(herr_t rc, const char* call, const std::string& file) {
  h5check(rc, call, file, "check free disk space and permissions of the checkpoint directory");
}

void write_f32(hid_t file, const char* name, const float* data, int64_t n, const std::string& path) {
  hsize_t dims[1] = {static_cast<hsize_t>(n)};
  H5Handle space{H5Screate_simple(1, dims, nullptr), H5Sclose};
  H5Handle ds{H5Dcreate2(file, name, H5T_IEEE_F32LE, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  check_h5(ds.id, "H5Dcreate2", path);
  if (n > 0) check_h5(H5Dwrite(ds.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "H5Dwrite", path);
}

void read_f32(hid_t file, const char* name, std::vector<float>& out, const std::string& path) {
  H5Handle ds{H5Dopen2(file, name, H5P_DEFAULT), H5Dclose};
  if (ds.id < 0) throw core::Error(fmt::format("dataset '{}' missing", name)).with_file(path);
  H5Handle space{H5Dget_space(ds.id), H5Sclose};
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space.id, dims, nullptr);
  out.resize(dims[0]);
  if (dims[0] > 0) {
    check_h5(H5Dread(ds.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), "H5Dread", path);
  }
}

int64_t step_of(const std::string& name) {
  if (name.rfind("step_", 0) != 0) return -1;
  try {
    size_t pos = 0;
    const int64_t s = std::stoll(name.substr(5), &pos);
    return pos == name.size() - 5 ? s : -1;
  } catch (...) {
    return -1;
  }
}

}  // namespace

std::string checkpoint_name(int64_t step) { return fmt::format("step_{:08d}", step); }
std::string shard_file_name(int rank) { return fmt::format("shard_{:05d}.h5", rank); }

uint64_t write_shard(const std::string& tmp_dir, int rank, const ShardData& d) {
  const std::string path = tmp_dir + "/" + shard_file_name(rank);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back as return codes
  {
    H5Handle f{H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
    check_h5(f.id, "H5Fcreate", path);
    write_f32(f.id, "params", d.params, d.num_params, path);
    write_f32(f.id, "optim_m", d.m, d.m ? d.num_state : 0, path);
    write_f32(f.id, "optim_v", d.v, d.v ? d.num_state : 0, path);
    std::vector<int64_t> flat;
    for (const auto& [b, e] : d.ranges) flat.insert(flat.end(), {b, e});
    hsize_t dims[1] = {flat.size()};
    H5Handle space{H5Screate_simple(1, dims, nullptr), H5Sclose};
    H5Handle ds{H5Dcreate2(f.id, "optim_ranges", H5T_STD_I64LE, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
    check_h5(ds.id, "H5Dcreate2", path);
    if (!flat.empty()) {
      check_h5(H5Dwrite(ds.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, flat.data()), "H5Dwrite", path);
    }
    if (!d.loader_state.empty()) {
      hsize_t n[1] = {d.loader_state.size()};
      H5Handle ls{H5Screate_simple(1, n, nullptr), H5Sclose};
      H5Handle lds{H5Dcreate2(f.id, "loader_state", H5T_STD_U8LE, ls.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
      check_h5(lds.id, "H5Dcreate2(loader_state)", path);
      check_h5(H5Dwrite(lds.id, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, d.loader_state.data()), "H5Dwrite", path);
    }
    check_h5(H5Fflush(f.id, H5F_SCOPE_GLOBAL), "H5Fflush", path);
  }
  fsync_path(path);  // on disk before the manifest can name it: a node crash cannot lose it
  // The checksum covers the file's bytes as written, so truncation or bit flips are caught.
  return file_checksum(path);
}

void read_shard(const std::string& path, uint64_t expected, std::vector<float>& params, std::vector<float>& m,
                std::vector<float>& v, std::vector<std::pair<int64_t, int64_t>>& ranges) {
  const uint64_t got = file_checksum(path);
  if (got != expected) {
    throw core::Error(fmt::format("checkpoint shard checksum mismatch: expected {:016x}, file has {:016x}", expected, got))
        .with_file(path).with_hint("the shard is truncated or corrupted; resume=auto falls back to an older checkpoint");
  }
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Handle f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  check_h5(f.id, "H5Fopen", path);
  read_f32(f.id, "params", params, path);
  read_f32(f.id, "optim_m", m, path);
  read_f32(f.id, "optim_v", v, path);
  H5Handle ds{H5Dopen2(f.id, "optim_ranges", H5P_DEFAULT), H5Dclose};
  check_h5(ds.id, "H5Dopen2(optim_ranges)", path);
  H5Handle space{H5Dget_space(ds.id), H5Sclose};
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space.id, dims, nullptr);
  std::vector<int64_t> flat(dims[0]);
  if (!flat.empty()) check_h5(H5Dread(ds.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, flat.data()), "H5Dread", path);
  ranges.clear();
  for (size_t i = 0; i + 1 < flat.size(); i += 2) ranges.emplace_back(flat[i], flat[i + 1]);
}

std::string read_shard_loader_state(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Handle f{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  check_h5(f.id, "H5Fopen", path);
  if (H5Lexists(f.id, "loader_state", H5P_DEFAULT) <= 0) return "";
  H5Handle ds{H5Dopen2(f.id, "loader_state", H5P_DEFAULT), H5Dclose};
  check_h5(ds.id, "H5Dopen2(loader_state)", path);
  H5Handle space{H5Dget_space(ds.id), H5Sclose};
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space.id, dims, nullptr);
  std::string out(dims[0], '\0');
  if (!out.empty()) check_h5(H5Dread(ds.id, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), "H5Dread", path);
  return out;
}

void finalize_checkpoint(const std::string& tmp_dir, const std::string& final_dir, const nlohmann::json& manifest) {
  write_file_atomic(tmp_dir + "/manifest.json", manifest.dump(2) + "\n");
  write_file_atomic(tmp_dir + "/COMPLETE", "ok\n");
  std::error_code ec;
  fs::remove_all(final_dir, ec);  // a same-step checkpoint from an earlier attempt
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) throw core::Error("cannot rename the checkpoint into place").with_file(final_dir).with_library(ec.message());
  fsync_path(fs::path(final_dir).parent_path().string());  // the rename itself is durable
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const int64_t s = step_of(name);
    if (s >= 0 && fs::exists(e.path() / "COMPLETE")) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& [s, p] : found) out.push_back(p);
  return out;
}

nlohmann::json read_manifest(const std::string& ckpt_dir) {
  const std::string path = ckpt_dir + "/manifest.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw core::Error("unreadable checkpoint manifest").with_file(path).with_library(e.what());
  }
  const int version = j.value("format_version", -1);
  if (version != kCheckpointFormatVersion) {
    throw core::Error(fmt::format("checkpoint format version {} is not supported (this build reads {})", version,
                                  kCheckpointFormatVersion))
        .with_file(path).with_hint("use the meshtrain version that wrote it, or start a new run.dir");
  }
  return j;
}

int checkpoint_format_version(const std::string& ckpt_dir) {
  try {
    const auto j = nlohmann::json::parse(read_file(ckpt_dir + "/manifest.json"));
    return j.is_object() ? j.value("format_version", -1) : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

std::string verify_checkpoint(const std::string& ckpt_dir, int first, int stride) {
  try {
    const auto j = read_manifest(ckpt_dir);
    // step_<N> names the step: a manifest that says another one (hand-edited, or a directory
    // renamed) cannot be trusted to resume from either
    fs::path p(ckpt_dir);
    if (p.filename().empty()) p = p.parent_path();
    const int64_t named = step_of(p.filename().string());
    const auto step = j.find("step");
    if (named >= 0 && (step == j.end() || !step->is_number_integer() || step->get<int64_t>() != named)) {
      return fmt::format("{}/manifest.json: the manifest's step ({}) is not the directory name's ({}): the checkpoint "
                         "was edited or renamed", ckpt_dir, step == j.end() ? "missing" : step->dump(), named);
    }
    const auto& shards = j.at("shards");
    for (size_t i = static_cast<size_t>(first); i < shards.size(); i += static_cast<size_t>(std::max(stride, 1))) {
      const auto& s = shards.at(i);
      const std::string path = ckpt_dir + "/" + s.at("file").get<std::string>();
      std::error_code ec;
      if (!fs::exists(path, ec)) return path + ": missing shard";
      const uint64_t want = std::stoull(s.at("checksum").get<std::string>(), nullptr, 16);
      if (file_checksum(path) != want) return path + ": checksum mismatch (truncated or corrupted)";
    }
  } catch (const core::Error& e) {  // file, message and library text: the caller adds the rank
    const auto& c = e.context();
    return (c.file.empty() ? "" : c.file + ": ") + e.message() + (c.library.empty() ? "" : " [" + c.library + "]");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void prune_checkpoints(const std::string& dir, int keep) {
  const auto all = list_checkpoints(dir);
  std::error_code ec;
  for (size_t i = static_cast<size_t>(std::max(keep, 1)); i < all.size(); ++i) fs::remove_all(all[i], ec);
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) fs::remove_all(e.path(), ec);
  }
}

std::pair<std::string, std::vector<std::string>> supersede_checkpoints(const std::string& dir, int64_t step) {
  std::vector<std::string> newer;
  for (const auto& c : list_checkpoints(dir)) {
    const std::string name = fs::path(c).filename().string();
    if (step_of(name) > step) newer.push_back(name);
  }
  if (newer.empty()) return {"", {}};
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
  std::string aside = fmt::format("{}/superseded_{}", dir, stamp);
  for (int k = 1; fs::exists(aside); ++k) aside = fmt::format("{}/superseded_{}_{}", dir, stamp, k);
  ensure_directory(aside);
  for (const auto& name : newer) {
    std::error_code ec;
    fs::rename(dir + "/" + name, aside + "/" + name, ec);
    if (ec) {
      throw core::Error("cannot move a superseded checkpoint aside").with_file(dir + "/" + name)
          .with_library(ec.message()).with_hint("remove the checkpoints newer than the step this run starts from");
    }
  }
  fsync_path(dir);
  return {aside, newer};
}

}  // namespace mt::io
