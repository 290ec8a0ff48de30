// What: TbWriter (see the header): protobuf wire encoding by hand and TFRecord framing.
#include "io/tb_writer.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "io/metrics.h"

namespace mt::io {

namespace {

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> t = [] {
    std::array<uint32_t, 256> tab{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      tab[i] = c;
    }
    return tab;
  }();
  return t;
}

uint32_t masked_crc(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// protobuf wire format helpers
void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
}
void put_tag(std::string& s, int field, int wire) { put_varint(s, (static_cast<uint64_t>(field) << 3) | wire); }
void put_bytes(std::string& s, int field, const std::string& b) {
  put_tag(s, field, 2);
  put_varint(s, b.size());
  s += b;
}
template <typename T>
void put_fixed(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian host (x86-64, aarch64)
  s.append(b, sizeof(T));
}

std::string event(int64_t step, const std::string* file_version, const std::string* summary) {
  std::string e;
  put_tag(e, 1, 1);  // wall_time: double
  put_fixed(e, std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  put_tag(e, 2, 0);  // step: int64
  put_varint(e, static_cast<uint64_t>(step));
  if (file_version) put_bytes(e, 3, *file_version);
  if (summary) put_bytes(e, 5, *summary);
  return e;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  const auto& t = crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = t[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

TbWriter::TbWriter(const std::string& dir) {
  ensure_directory(dir);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  path_ = dir + "/events.out.tfevents." + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now).count()) +
          "." + host + "." + std::to_string(getpid());
  f_ = open_file(path_, "wb");
  const std::string version = "brain.Event:2";
  write_record(event(0, &version, nullptr));
  flush();
}

void TbWriter::write_record(const std::string& payload) {
  std::string rec;
  const uint64_t len = payload.size();
  put_fixed(rec, len);
  put_fixed(rec, masked_crc(&len, sizeof(len)));
  rec += payload;
  put_fixed(rec, masked_crc(payload.data(), payload.size()));
  if (std::fwrite(rec.data(), 1, rec.size(), f_.get()) != rec.size()) {
    throw core::Error("cannot write the TensorBoard event file").with_file(path_).with_library(std::strerror(errno));
  }
}

void TbWriter::scalar(const std::string& tag, int64_t step, float value) {
  if (!f_) return;
  std::string v;
  put_bytes(v, 1, tag);  // Value.tag
  put_tag(v, 2, 5);      // Value.simple_value: float
  put_fixed(v, value);
  std::string summary;
  put_bytes(summary, 1, v);  // Summary.value
  write_record(event(step, nullptr, &summary));
}

void TbWriter::flush() {
  if (f_) std::fflush(f_.get());
}

}  // namespace mt::io
