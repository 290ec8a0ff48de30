// What: backend-independent checks of a Communicator's collectives against closed forms,
// shared by the staging, bf16 and NCCL tests: every collective (all_reduce, reduce_scatter,
// all_gather, broadcast) x dtype (f32, f64, i32, i64, bf16) x op (sum, avg for floating
// types, max), blocking and nonblocking (waited in a different order on odd ranks), in place
// and out of place, at sizes 1 .. 20000 that do not divide evenly.
// Buffers live where the communicator wants them: a Mem uploads the host reference data
// before the collectives and downloads the results after comm.synchronize() (a no-op on host
// backends; on device backends it is what makes the results visible to the host).
// All collectives of a case are issued before anything is checked, and checks use EXPECT_,
// so a failing rank does not leave its peers blocked (tests/mpi_main.cc).
// Point-to-point cases (p2p_*): a ring, a pairwise exchange of large messages in both
// directions and a blocking exchange in the order device backends need, several messages on
// one tag (matched in order), zero counts; each received value against the closed form the
// sender computed. They are valid on NCCL too: crossing exchanges sit in group_start/end and
// tags are not relied on, except in p2p_tags_case (host backends only).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "parallel/communicator.h"

namespace mt::testing {

using parallel::Communicator;
using parallel::DType;
using parallel::ReduceOp;
using parallel::Work;

// bf16 as the test sees it: the upper 16 bits of an f32, narrowed with round-to-nearest-even.
// Written here independently of the backends' own conversions.
struct Bf16 {
  uint16_t bits = 0;
  static Bf16 from_float(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t lsb = (u >> 16) & 1u;
    return Bf16{static_cast<uint16_t>((u + 0x7fffu + lsb) >> 16)};  // finite inputs only
  }
  float to_float() const {
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  bool operator==(const Bf16& o) const { return bits == o.bits; }
  Bf16 operator/(const Bf16& o) const { return from_float(to_float() / o.to_float()); }
};
inline std::string to_string(const Bf16& b) { return std::to_string(b.to_float()) + " (bf16)"; }
template <class T>
std::string to_string(const T& x) {
  return std::to_string(x);
}

template <class T> struct Ty;
template <> struct Ty<float> { static constexpr DType dt = DType::F32; };
template <> struct Ty<double> { static constexpr DType dt = DType::F64; };
template <> struct Ty<int32_t> { static constexpr DType dt = DType::I32; };
template <> struct Ty<int64_t> { static constexpr DType dt = DType::I64; };
template <> struct Ty<Bf16> { static constexpr DType dt = DType::BF16; };

// ---- closed forms ----
// w(r, i) = ((r + i) % p + 1) * (i % 11 + 1) - 5: over the p ranks the first factor takes
// every value 1..p once, so sum = p(p+1)/2 * (i%11+1) - 5p and max = p * (i%11+1) - 5.
// For p <= 4 every partial sum is an integer below 256 in magnitude: exact in bf16 too, so
// the result does not depend on the order or the number of roundings.
inline long long w(int r, size_t i, int p) {
  return static_cast<long long>((r + i) % static_cast<size_t>(p) + 1) * static_cast<long long>(i % 11 + 1) - 5;
}
inline long long w_sum(size_t i, int p) {
  return static_cast<long long>(p) * (p + 1) / 2 * static_cast<long long>(i % 11 + 1) - 5LL * p;
}
inline long long w_max(size_t i, int p) { return static_cast<long long>(p) * static_cast<long long>(i % 11 + 1) - 5; }
// all_gather / broadcast payload: block q comes from rank q.
inline long long g(int q, size_t i) { return q * 100000LL + static_cast<long long>(i % 99991) - 3; }

// 64-bit types get values beyond 32 bits (x 2^33; exact for both).
template <class T>
T val(long long x) {
  if constexpr (std::is_same_v<T, Bf16>) {
    return Bf16::from_float(static_cast<float>(x));
  } else if constexpr (sizeof(T) == 8) {
    if constexpr (std::is_integral_v<T>) return static_cast<T>(x * (1LL << 33));
    else return static_cast<T>(static_cast<double>(x) * 8589934592.0);
  } else {
    return static_cast<T>(x);
  }
}
template <class T>
T expected(ReduceOp op, size_t i, int p) {
  if (op == ReduceOp::Max) return val<T>(w_max(i, p));
  const T s = val<T>(w_sum(i, p));
  if (op == ReduceOp::Avg) {  // avg of p <= 4 ranks: exact for these values
    if constexpr (std::is_same_v<T, Bf16>) return s / Bf16::from_float(static_cast<float>(p));
    else return s / static_cast<T>(p);
  }
  return s;
}

template <class T>
bool is_floating_t() {
  return std::is_floating_point_v<T> || std::is_same_v<T, Bf16>;
}
template <class T>
std::vector<ReduceOp> ops_for() {
  if (is_floating_t<T>()) return {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max};
  return {ReduceOp::Sum, ReduceOp::Max};
}

// Number of mismatches; the first is described in *msg.
template <class T, class F>
size_t mismatches(const T* x, size_t n, F&& want, std::string* msg) {
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const T e = want(i);
    if (!(x[i] == e)) {
      if (bad == 0 && msg) *msg = "first at " + std::to_string(i) + ": got " + to_string(x[i]) + " want " + to_string(e);
      ++bad;
    }
  }
  return bad;
}

// Where a communicator's buffers live.
class Mem {
 public:
  virtual ~Mem() = default;
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;    // host -> buffer
  virtual void download(void* dst, const void* src, size_t bytes) = 0;  // buffer -> host
};
class HostMem final : public Mem {
 public:
  void* alloc(size_t bytes) override { return ::operator new(bytes > 0 ? bytes : 1); }
  void free(void* p) override { ::operator delete(p); }
  void upload(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
  void download(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); }
};

// A host vector with its twin in Mem.
template <class T>
class Buf {
 public:
  Buf(Mem& m, std::vector<T> host) : m_(m), host_(std::move(host)) {
    dev_ = static_cast<T*>(m_.alloc(host_.size() * sizeof(T)));
    m_.upload(dev_, host_.data(), host_.size() * sizeof(T));
  }
  Buf(Buf&& o) noexcept : m_(o.m_), host_(std::move(o.host_)), dev_(o.dev_) { o.dev_ = nullptr; }
  Buf(const Buf&) = delete;
  ~Buf() {
    if (dev_) m_.free(dev_);
  }
  T* dev() { return dev_; }
  const std::vector<T>& download() {
    m_.download(host_.data(), dev_, host_.size() * sizeof(T));
    return host_;
  }

 private:
  Mem& m_;
  std::vector<T> host_;
  T* dev_ = nullptr;
};

inline const std::vector<size_t>& case_sizes() {
  static const std::vector<size_t> s = {1, 7, 64, 1023, 4099, 20000};
  return s;
}

// Waits on the works; odd ranks wait in reverse order (waits need not be in the same order).
inline void wait_all(std::vector<std::shared_ptr<Work>>& ws, int rank) {
  if (rank % 2 == 0) {
    for (auto& x : ws) x->wait();
  } else {
    for (auto it = ws.rbegin(); it != ws.rend(); ++it) (*it)->wait();
  }
}

template <class T>
void all_reduce_case(Communicator& c, Mem& m, const std::string& tag, bool nonblocking) {
  const int p = c.size(), r = c.rank();
  constexpr DType dt = Ty<T>::dt;
  for (ReduceOp op : ops_for<T>()) {
    std::vector<Buf<T>> bufs;
    for (size_t n : case_sizes()) {
      std::vector<T> b(n);
      for (size_t i = 0; i < n; ++i) b[i] = val<T>(w(r, i, p));
      bufs.emplace_back(m, std::move(b));
    }
    std::vector<std::shared_ptr<Work>> works;
    for (size_t k = 0; k < bufs.size(); ++k) {
      const size_t n = case_sizes()[k];
      if (nonblocking) works.push_back(c.iall_reduce(bufs[k].dev(), n, dt, op));
      else c.all_reduce(bufs[k].dev(), n, dt, op);
    }
    if (nonblocking) wait_all(works, r);
    c.synchronize();
    for (auto& b : bufs) {
      const auto& x = b.download();
      std::string msg;
      EXPECT_EQ(mismatches(x.data(), x.size(), [&](size_t i) { return expected<T>(op, i, p); }, &msg), 0u)
          << tag << " all_reduce " << dtype_name(dt) << " " << reduce_op_name(op) << " n=" << x.size()
          << (nonblocking ? " nonblocking " : " blocking ") << msg;
    }
  }
}

// send has p*n elements; rank r gets block r. In place: recv = send + r*n.
template <class T>
void reduce_scatter_case(Communicator& c, Mem& m, const std::string& tag, bool nonblocking, bool in_place) {
  const int p = c.size(), r = c.rank();
  constexpr DType dt = Ty<T>::dt;
  for (ReduceOp op : ops_for<T>()) {
    std::vector<Buf<T>> sends, recvs;
    for (size_t n : case_sizes()) {
      std::vector<T> s(n * p);
      for (size_t j = 0; j < s.size(); ++j) s[j] = val<T>(w(r, j, p));
      sends.emplace_back(m, std::move(s));
      recvs.emplace_back(m, std::vector<T>(in_place ? 1 : n, val<T>(-77)));
    }
    std::vector<std::shared_ptr<Work>> works;
    for (size_t k = 0; k < sends.size(); ++k) {
      const size_t n = case_sizes()[k];
      T* out = in_place ? sends[k].dev() + r * n : recvs[k].dev();
      if (nonblocking) works.push_back(c.ireduce_scatter(sends[k].dev(), out, n, dt, op));
      else c.reduce_scatter(sends[k].dev(), out, n, dt, op);
    }
    if (nonblocking) wait_all(works, r);
    c.synchronize();
    for (size_t k = 0; k < sends.size(); ++k) {
      const size_t n = case_sizes()[k];
      const auto& s = sends[k].download();
      const T* out = in_place ? s.data() + r * n : recvs[k].download().data();
      std::string msg;
      EXPECT_EQ(mismatches(out, n, [&](size_t i) { return expected<T>(op, r * n + i, p); }, &msg), 0u)
          << tag << " reduce_scatter " << dtype_name(dt) << " " << reduce_op_name(op) << " n=" << n
          << (in_place ? " in place" : "") << (nonblocking ? " nonblocking " : " blocking ") << msg;
      if (!in_place) {  // the send buffer is untouched
        EXPECT_EQ(mismatches(s.data(), n * p, [&](size_t j) { return val<T>(w(r, j, p)); }, &msg), 0u)
            << tag << " reduce_scatter modified its send buffer, n=" << n << " " << msg;
      }
    }
  }
}

// Block q of recv comes from rank q. In place: send = recv + r*n.
template <class T>
void all_gather_case(Communicator& c, Mem& m, const std::string& tag, bool nonblocking, bool in_place) {
  const int p = c.size(), r = c.rank();
  constexpr DType dt = Ty<T>::dt;
  std::vector<Buf<T>> sends, recvs;
  for (size_t n : case_sizes()) {
    std::vector<T> s(n);
    for (size_t i = 0; i < n; ++i) s[i] = val<T>(g(r, i));
    std::vector<T> out(n * p, val<T>(-1));
    if (in_place) std::copy(s.begin(), s.end(), out.begin() + r * n);
    sends.emplace_back(m, std::move(s));
    recvs.emplace_back(m, std::move(out));
  }
  std::vector<std::shared_ptr<Work>> works;
  for (size_t k = 0; k < sends.size(); ++k) {
    const size_t n = case_sizes()[k];
    const T* src = in_place ? recvs[k].dev() + r * n : sends[k].dev();
    if (nonblocking) works.push_back(c.iall_gather(src, recvs[k].dev(), n, dt));
    else c.all_gather(src, recvs[k].dev(), n, dt);
  }
  if (nonblocking) wait_all(works, r);
  c.synchronize();
  for (size_t k = 0; k < sends.size(); ++k) {
    const size_t n = case_sizes()[k];
    const auto& x = recvs[k].download();
    std::string msg;
    EXPECT_EQ(mismatches(x.data(), n * p, [&](size_t j) { return val<T>(g(static_cast<int>(j / n), j % n)); }, &msg), 0u)
        << tag << " all_gather " << dtype_name(dt) << " n=" << n << (in_place ? " in place" : "")
        << (nonblocking ? " nonblocking " : " blocking ") << msg;
  }
}

// From every root, the last rank first.
template <class T>
void broadcast_case(Communicator& c, Mem& m, const std::string& tag, bool nonblocking) {
  const int p = c.size(), r = c.rank();
  constexpr DType dt = Ty<T>::dt;
  for (int root = p - 1; root >= 0; --root) {
    std::vector<Buf<T>> bufs;
    for (size_t n : case_sizes()) {
      std::vector<T> b(n, val<T>(-1));
      if (r == root)
        for (size_t i = 0; i < n; ++i) b[i] = val<T>(g(root, i));
      bufs.emplace_back(m, std::move(b));
    }
    std::vector<std::shared_ptr<Work>> works;
    for (size_t k = 0; k < bufs.size(); ++k) {
      if (nonblocking) works.push_back(c.ibroadcast(bufs[k].dev(), case_sizes()[k], dt, root));
      else c.broadcast(bufs[k].dev(), case_sizes()[k], dt, root);
    }
    if (nonblocking) wait_all(works, r);
    c.synchronize();
    for (auto& b : bufs) {
      const auto& x = b.download();
      std::string msg;
      EXPECT_EQ(mismatches(x.data(), x.size(), [&](size_t i) { return val<T>(g(root, i)); }, &msg), 0u)
          << tag << " broadcast " << dtype_name(dt) << " root " << root << " n=" << x.size() << msg;
    }
  }
}

template <class T>
void all_cases(Communicator& c, Mem& m, const std::string& tag) {
  for (bool nb : {false, true}) {
    all_reduce_case<T>(c, m, tag, nb);
    broadcast_case<T>(c, m, tag, nb);
    for (bool ip : {false, true}) {
      reduce_scatter_case<T>(c, m, tag, nb, ip);
      all_gather_case<T>(c, m, tag, nb, ip);
    }
  }
}

// Zero counts: valid no-ops that still count as collective calls.
inline void zero_size_case(Communicator& c, const std::string& tag) {
  std::vector<std::shared_ptr<Work>> ws;
  ws.push_back(c.iall_reduce(nullptr, 0, DType::F32, ReduceOp::Sum));
  ws.push_back(c.ireduce_scatter(nullptr, nullptr, 0, DType::F64, ReduceOp::Avg));
  ws.push_back(c.iall_gather(nullptr, nullptr, 0, DType::I32));
  ws.push_back(c.ibroadcast(nullptr, 0, DType::BF16, c.size() - 1));
  for (auto& x : ws) {
    x->wait();
    EXPECT_TRUE(x->test()) << tag;
    EXPECT_EQ(x->error(), nullptr) << tag;
  }
  c.synchronize();
}

// ---- point-to-point ----
// Payload of message j (of a case) sent by rank q: distinct per sender, message and element
// (bf16: small integers, exact, shifted per sender and message).
template <class T>
T p2p_val(int q, int j, size_t i) {
  if constexpr (std::is_same_v<T, Bf16>)
    return val<T>(static_cast<long long>((q * 31 + j * 7 + i) % 251) - 100);
  else
    return val<T>(g(q, i) + 1000LL * (j % 97));
}

// Ring: every rank sends to r+1 and receives from r-1, one message per case size on tag 0
// (so they are matched by order: the sizes differ), all posted (in one group) before any
// wait; odd ranks wait in reverse order.
template <class T>
void p2p_ring_case(Communicator& c, Mem& m, const std::string& tag) {
  const int p = c.size(), r = c.rank();
  if (p < 2) return;
  constexpr DType dt = Ty<T>::dt;
  const int next = (r + 1) % p, prev = (r + p - 1) % p;
  std::vector<Buf<T>> sends, recvs;
  for (size_t k = 0; k < case_sizes().size(); ++k) {
    const size_t n = case_sizes()[k];
    std::vector<T> s(n);
    for (size_t i = 0; i < n; ++i) s[i] = p2p_val<T>(r, static_cast<int>(k), i);
    sends.emplace_back(m, std::move(s));
    recvs.emplace_back(m, std::vector<T>(n, val<T>(-1)));
  }
  std::vector<std::shared_ptr<Work>> works;
  c.group_start();
  for (size_t k = 0; k < sends.size(); ++k) {
    const size_t n = case_sizes()[k];
    works.push_back(c.irecv(recvs[k].dev(), n, dt, prev));
    works.push_back(c.isend(sends[k].dev(), n, dt, next));
  }
  c.group_end();
  wait_all(works, r);
  c.synchronize();
  for (size_t k = 0; k < recvs.size(); ++k) {
    const auto& x = recvs[k].download();
    std::string msg;
    EXPECT_EQ(mismatches(x.data(), x.size(), [&](size_t i) { return p2p_val<T>(prev, static_cast<int>(k), i); }, &msg),
              0u)
        << tag << " ring recv " << dtype_name(dt) << " n=" << x.size() << " from " << prev << " " << msg;
    const auto& s = sends[k].download();
    EXPECT_EQ(mismatches(s.data(), s.size(), [&](size_t i) { return p2p_val<T>(r, static_cast<int>(k), i); }, &msg), 0u)
        << tag << " ring: send modified its buffer " << msg;
  }
}

// Pairs (0,1), (2,3), ...: both partners exchange `n` elements at once (in one group), and
// then in the order a device backend needs without a group: the even rank send()s then
// recv()s, the odd one recv()s then send()s (blocking calls). A rank without a partner
// (odd size) sits out.
template <class T>
void p2p_pairwise_case(Communicator& c, Mem& m, const std::string& tag, size_t n) {
  const int p = c.size(), r = c.rank(), partner = r ^ 1;
  if (partner >= p) return;
  constexpr DType dt = Ty<T>::dt;
  for (int round = 0; round < 2; ++round) {
    std::vector<T> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = p2p_val<T>(r, round, i);
    Buf<T> s(m, std::move(h)), out(m, std::vector<T>(n, val<T>(-1)));
    if (round == 0) {
      c.group_start();
      auto ws = c.isend(s.dev(), n, dt, partner);
      auto wr = c.irecv(out.dev(), n, dt, partner);
      c.group_end();
      if (r % 2) {
        ws->wait();
        wr->wait();
      } else {
        wr->wait();
        ws->wait();
      }
    } else if (r % 2 == 0) {
      c.send(s.dev(), n, dt, partner);
      c.recv(out.dev(), n, dt, partner);
    } else {
      c.recv(out.dev(), n, dt, partner);
      c.send(s.dev(), n, dt, partner);
    }
    c.synchronize();
    const auto& x = out.download();
    std::string msg;
    EXPECT_EQ(mismatches(x.data(), n, [&](size_t i) { return p2p_val<T>(partner, round, i); }, &msg), 0u)
        << tag << " pairwise " << (round == 0 ? "simultaneous" : "ordered") << " " << dtype_name(dt) << " n=" << n
        << " from " << partner << " " << msg;
  }
}

// Five equal-sized messages on one tag from each even rank to its odd partner: received in
// the order sent (all recvs posted before any is waited for).
template <class T>
void p2p_order_case(Communicator& c, Mem& m, const std::string& tag) {
  const int p = c.size(), r = c.rank(), partner = r ^ 1;
  if (partner >= p) return;
  constexpr DType dt = Ty<T>::dt;
  const size_t n = 300;
  std::vector<Buf<T>> bufs;
  std::vector<std::shared_ptr<Work>> ws;
  for (int j = 0; j < 5; ++j) {
    std::vector<T> h(n, val<T>(-1));
    if (r % 2 == 0)
      for (size_t i = 0; i < n; ++i) h[i] = p2p_val<T>(r, j, i);
    bufs.emplace_back(m, std::move(h));
  }
  for (int j = 0; j < 5; ++j) {
    if (r % 2 == 0) ws.push_back(c.isend(bufs[j].dev(), n, dt, partner, 3));
    else ws.push_back(c.irecv(bufs[j].dev(), n, dt, partner, 3));
  }
  wait_all(ws, r / 2);  // receivers of odd pairs wait in reverse
  c.synchronize();
  if (r % 2 == 0) return;
  for (int j = 0; j < 5; ++j) {
    const auto& x = bufs[j].download();
    std::string msg;
    EXPECT_EQ(mismatches(x.data(), n, [&](size_t i) { return p2p_val<T>(partner, j, i); }, &msg), 0u)
        << tag << " order: message " << j << " " << dtype_name(dt) << " " << msg;
  }
}

// Zero counts: complete at once, counted as p2p ops of 0 bytes, nothing on the wire.
inline void p2p_zero_case(Communicator& c, const std::string& tag) {
  const int p = c.size(), r = c.rank();
  if (p < 2) return;
  const uint64_t before = c.stats().p2p_ops;
  auto a = c.isend(nullptr, 0, DType::F32, (r + 1) % p, 9);
  auto b = c.irecv(nullptr, 0, DType::BF16, (r + p - 1) % p, 9);
  EXPECT_TRUE(a->test()) << tag;
  EXPECT_TRUE(b->completed()) << tag;
  a->wait();
  b->wait();
  c.send(nullptr, 0, DType::I32, (r + 1) % p);
  EXPECT_EQ(c.stats().p2p_ops, before + 3) << tag;
  EXPECT_EQ(a->bytes(), 0u) << tag;
  EXPECT_STREQ(a->op(), "send") << tag;
  EXPECT_STREQ(b->op(), "recv") << tag;
}

// Tags separate messages (host backends: NCCL has no tags). Each even rank sends tag 7, then
// tag 3, then tag 5; its partner receives 3, 5, 7 in that order, each of a different size.
template <class T>
void p2p_tags_case(Communicator& c, Mem& m, const std::string& tag) {
  const int p = c.size(), r = c.rank(), partner = r ^ 1;
  if (partner >= p) return;
  constexpr DType dt = Ty<T>::dt;
  const int tags[3] = {7, 3, 5};
  const size_t sizes[3] = {70, 30, 5000};
  std::vector<Buf<T>> bufs;
  for (int j = 0; j < 3; ++j) {
    std::vector<T> h(sizes[j], val<T>(-1));
    if (r % 2 == 0)
      for (size_t i = 0; i < sizes[j]; ++i) h[i] = p2p_val<T>(r, tags[j], i);
    bufs.emplace_back(m, std::move(h));
  }
  std::vector<std::shared_ptr<Work>> ws;
  if (r % 2 == 0) {
    for (int j = 0; j < 3; ++j) ws.push_back(c.isend(bufs[j].dev(), sizes[j], dt, partner, tags[j]));
  } else {
    for (int j : {1, 2, 0}) ws.push_back(c.irecv(bufs[j].dev(), sizes[j], dt, partner, tags[j]));
  }
  for (auto& w : ws) w->wait();
  c.synchronize();
  if (r % 2 == 0) return;
  for (int j = 0; j < 3; ++j) {
    const auto& x = bufs[j].download();
    std::string msg;
    EXPECT_EQ(mismatches(x.data(), sizes[j], [&](size_t i) { return p2p_val<T>(partner, tags[j], i); }, &msg), 0u)
        << tag << " tag " << tags[j] << " " << dtype_name(dt) << " " << msg;
  }
}

// Every p2p case that is valid on any backend, for dtype T (`large`: the pairwise size).
template <class T>
void p2p_cases(Communicator& c, Mem& m, const std::string& tag, size_t large = 1 << 20) {
  p2p_ring_case<T>(c, m, tag);
  p2p_pairwise_case<T>(c, m, tag, 5);
  p2p_pairwise_case<T>(c, m, tag, large);
  p2p_order_case<T>(c, m, tag);
}

}  // namespace mt::testing
