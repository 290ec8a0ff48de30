// What: StagingCommunicator (see the header): host buffers leased from a BufferPool over
// Device::alloc_host, Works that copy back when the wrapped operation completes, the four
// collectives expressed as "copy in, run the host communicator's in-place form on the host
// buffer, copy out", and send/recv (copy out and send; receive and copy in).
#include "parallel/staging_communicator.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/log.h"
#include "parallel/buffer_pool.h"
#include "parallel/collective_args.h"

namespace mt::parallel {

namespace detail {

class StagingWork;

// Shared by a staging communicator and its splits: the pool and the operations that still
// have to copy their result back.
class StagingEngine {
 public:
  explicit StagingEngine(core::Device& dev)
      : pool([&dev](size_t bytes) { return dev.alloc_host(bytes); }, [&dev](void* p) { dev.free_host(p); }) {}
  void progress();
  std::exception_ptr wait_all();  // waits for every pending op; the first error, if any
  BufferPool pool;  // page-locked on CUDA (Device::alloc_host)
  std::vector<std::shared_ptr<StagingWork>> pending;
};

class StagingWork final : public Work {
 public:
  StagingWork(std::shared_ptr<StagingEngine> engine, std::shared_ptr<Work> inner, BufferPool::Lease lease,
              core::Device* device, void* dst, const void* src, size_t bytes)
      : engine_(std::move(engine)),
        inner_(std::move(inner)),
        lease_(std::move(lease)),
        device_(device),
        dst_(dst),
        src_(src),
        bytes_(bytes) {}

  bool test() override {
    engine_->progress();
    return completed();
  }

  void wait() override {
    if (!completed()) {
      try {
        inner_->wait();  // drives the host backend's progress; blocks the host
      } catch (...) {
        // A failed operation completes with its error (handled below); a wait that gave up
        // (a TimeoutCommunicator deadline) leaves it in flight: its buffer stays leased.
        if (!inner_->test()) throw;
      }
      engine_->progress();
    }
    if (error()) std::rethrow_exception(error());
  }

  // Engine side: true once the op is over (copied back, or failed).
  bool try_finish() {
    if (completed()) return true;
    if (!inner_->test()) return false;
    std::exception_ptr err = inner_->error();
    if (!err && bytes_ > 0) {
      try {
        device_->copy(dst_, src_, bytes_);
      } catch (...) {
        err = std::current_exception();
      }
    }
    lease_.reset();
    mark_completed(err);
    return true;
  }

 private:
  std::shared_ptr<StagingEngine> engine_;
  std::shared_ptr<Work> inner_;
  BufferPool::Lease lease_;
  core::Device* device_;
  void* dst_;
  const void* src_;
  size_t bytes_;
};

void StagingEngine::progress() {
  // Index loop, no copy of the list (this runs on every call and every test()): try_finish
  // never adds operations, and an exception leaves the list whole (the erase comes after).
  for (size_t i = 0; i < pending.size(); ++i) pending[i]->try_finish();
  pending.erase(std::remove_if(pending.begin(), pending.end(), [](const auto& w) { return w->completed(); }),
                pending.end());
}

std::exception_ptr StagingEngine::wait_all() {
  std::exception_ptr first;
  while (!pending.empty()) {
    auto w = pending.front();
    try {
      w->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
      if (!w->completed()) return first;  // a deadline: the op is still in flight
    }
    progress();
  }
  return first;
}

}  // namespace detail

using detail::StagingEngine;
using detail::StagingWork;

StagingCommunicator::StagingCommunicator(Communicator& host, core::Device& device)
    : StagingCommunicator(nullptr, &host, device, std::make_shared<StagingEngine>(device)) {}

StagingCommunicator::StagingCommunicator(std::unique_ptr<Communicator> host, core::Device& device)
    : StagingCommunicator(nullptr, host.get(), device, std::make_shared<StagingEngine>(device)) {
  owned_ = std::move(host);
}

StagingCommunicator::StagingCommunicator(std::unique_ptr<Communicator> owned, Communicator* host,
                                         core::Device& device, std::shared_ptr<StagingEngine> engine)
    : owned_(std::move(owned)), host_(host), device_(device), engine_(std::move(engine)) {
  MT_CHECK(host_ != nullptr, "a staging communicator needs a host communicator");
  set_name(host_->name());
}

StagingCommunicator::~StagingCommunicator() {
  engine_->progress();
  if (!engine_->pending.empty())
    core::log::warn("staging communicator '{}' destroyed with {} operation(s) not yet copied back", name(),
                    engine_->pending.size());
}

size_t StagingCommunicator::staging_bytes() const { return engine_->pool.total_bytes(); }
size_t StagingCommunicator::outstanding() const { return engine_->pending.size(); }

void StagingCommunicator::ready_device() {
  // Wait for what the device has queued (a backward pass still writing the gradients). The
  // CPU device's events are always complete; CUDA records on the compute stream.
  if (!ready_) ready_ = device_.create_event();
  ready_->record();
  ready_->synchronize();
}

namespace {
std::shared_ptr<Work> track(const std::shared_ptr<StagingEngine>& engine, std::shared_ptr<Work> inner,
                            BufferPool::Lease lease, core::Device& dev, void* dst, const void* src, size_t bytes) {
  auto w = std::make_shared<StagingWork>(engine, std::move(inner), std::move(lease), &dev, dst, src, bytes);
  engine->pending.push_back(w);
  engine->progress();  // completes at once when the host op already has (one rank, small op)
  return w;
}
}  // namespace

std::shared_ptr<Work> StagingCommunicator::do_iall_reduce(void* buf, size_t count, DType dtype, ReduceOp op) {
  engine_->progress();
  const size_t bytes = count * dtype_size(dtype);
  if (count == 0) return host_->iall_reduce(nullptr, 0, dtype, op);  // still a collective call
  check_buffer(buf, "all_reduce", count, name());
  auto lease = engine_->pool.acquire(bytes);
  std::byte* h = lease.data();
  ready_device();
  device_.copy(h, buf, bytes);
  auto inner = host_->iall_reduce(h, count, dtype, op);
  return track(engine_, std::move(inner), std::move(lease), device_, buf, h, bytes);
}

std::shared_ptr<Work> StagingCommunicator::do_ireduce_scatter(const void* send, void* recv, size_t recv_count,
                                                              DType dtype, ReduceOp op) {
  engine_->progress();
  const size_t block = recv_count * dtype_size(dtype), bytes = block * size();
  if (recv_count == 0) return host_->ireduce_scatter(nullptr, nullptr, 0, dtype, op);
  check_reduce_scatter_buffers(send, recv, block, rank(), size(), name());
  // On the host always the in-place form: one buffer of size() blocks, the result in block rank().
  auto lease = engine_->pool.acquire(bytes);
  std::byte* h = lease.data();
  std::byte* own = h + rank() * block;
  ready_device();
  device_.copy(h, send, bytes);
  auto inner = host_->ireduce_scatter(h, own, recv_count, dtype, op);
  return track(engine_, std::move(inner), std::move(lease), device_, recv, own, block);
}

std::shared_ptr<Work> StagingCommunicator::do_iall_gather(const void* send, void* recv, size_t send_count,
                                                          DType dtype) {
  engine_->progress();
  const size_t block = send_count * dtype_size(dtype), bytes = block * size();
  if (send_count == 0) return host_->iall_gather(nullptr, nullptr, 0, dtype);
  check_all_gather_buffers(send, recv, block, rank(), size(), name());
  auto lease = engine_->pool.acquire(bytes);
  std::byte* h = lease.data();
  std::byte* own = h + rank() * block;
  ready_device();
  device_.copy(own, send, block);
  auto inner = host_->iall_gather(own, h, send_count, dtype);
  return track(engine_, std::move(inner), std::move(lease), device_, recv, h, bytes);
}

std::shared_ptr<Work> StagingCommunicator::do_ibroadcast(void* buf, size_t count, DType dtype, int root) {
  engine_->progress();
  const size_t bytes = count * dtype_size(dtype);
  check_broadcast_root(root, size(), name());
  if (count == 0) return host_->ibroadcast(nullptr, 0, dtype, root);  // still a collective call
  check_buffer(buf, "broadcast", count, name());
  auto lease = engine_->pool.acquire(bytes);
  std::byte* h = lease.data();
  if (rank() == root) {
    ready_device();
    device_.copy(h, buf, bytes);
  }
  auto inner = host_->ibroadcast(h, count, dtype, root);
  // The root's buffer already holds the data: nothing to copy back, but the lease stays
  // until the host operation is done with it.
  return track(engine_, std::move(inner), std::move(lease), device_, buf, h, rank() == root ? 0 : bytes);
}

std::shared_ptr<Work> StagingCommunicator::do_isend(const void* buf, size_t count, DType dtype, int peer, int tag) {
  engine_->progress();
  const size_t bytes = count * dtype_size(dtype);
  auto lease = engine_->pool.acquire(bytes);
  std::byte* h = lease.data();
  ready_device();
  device_.copy(h, buf, bytes);
  auto inner = host_->isend(h, count, dtype, peer, tag);
  // Nothing to copy back; the lease stays until the host send is done with it.
  return track(engine_, std::move(inner), std::move(lease), device_, nullptr, h, 0);
}

std::shared_ptr<Work> StagingCommunicator::do_irecv(void* buf, size_t count, DType dtype, int peer, int tag) {
  engine_->progress();
  const size_t bytes = count * dtype_size(dtype);
  auto lease = engine_->pool.acquire(bytes);
  std::byte* h = lease.data();
  auto inner = host_->irecv(h, count, dtype, peer, tag);
  return track(engine_, std::move(inner), std::move(lease), device_, buf, h, bytes);
}

void StagingCommunicator::do_synchronize() {
  if (auto err = engine_->wait_all()) std::rethrow_exception(err);
  host_->synchronize();
}

std::unique_ptr<Communicator> StagingCommunicator::split(int color, int key) {
  engine_->progress();
  auto sub = host_->split(color, key);
  if (!sub) return nullptr;
  Communicator* raw = sub.get();
  return std::unique_ptr<Communicator>(new StagingCommunicator(std::move(sub), raw, device_, engine_));
}

void StagingCommunicator::abort(int code) {
  host_->abort(code);
  std::abort();  // not reached: the host backend's abort does not return
}

}  // namespace mt::parallel
