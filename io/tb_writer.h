// What: a TensorBoard event-file writer for scalars: `<run.dir>/tb/events.out.tfevents.*`,
// so `tensorboard --logdir <run.dir>/tb` shows the run.
// Why hand-rolled (measured need, small surface): the format is TFRecord framing (length,
// masked CRC-32C, payload, masked CRC-32C) around a tiny protobuf (Event{wall_time, step,
// summary{value{tag, simple_value}}}); the only C++ writers live inside TensorFlow/PyTorch,
// and Debian has no libprotobuf-based TensorBoard package. ~150 lines beat a protobuf
// dependency and a generated schema for four fields.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "io/metrics.h"

namespace mt::io {

class TbWriter {
 public:
  TbWriter() = default;
  explicit TbWriter(const std::string& dir);  // creates dir and a new event file

  void scalar(const std::string& tag, int64_t step, float value);
  void flush();
  bool is_open() const { return f_ != nullptr; }
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);
  FilePtr f_{nullptr, std::fclose};
  std::string path_;
};

uint32_t crc32c(const void* data, size_t n);  // Castagnoli, as TFRecord uses

}  // namespace mt::io
