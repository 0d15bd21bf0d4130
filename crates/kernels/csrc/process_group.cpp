// A c10d process group for data-parallel training: libtorch's TCPStore for the rendezvous
// and its Gloo backend for the collectives, the engine torch.distributed uses. The
// collectives run inside libtorch_cpu; this file only creates them and waits for them.
//
// Errors never cross the C boundary: each entry point catches them, keeps the message for
// `strata_process_group_last_error` and returns null or -1.

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "shim_error.h"

#include <chrono>
#include <exception>
#include <string>
#include <vector>

namespace {

thread_local std::string last_error;

// One rank's membership of a group: the store it met the others through and the backend.
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

template <typename F>
int guarded(F&& body) {
  return strata_shim::capture(last_error, body) ? 0 : -1;
}

std::vector<at::Tensor> tensors_of(at::Tensor** tensors, int64_t count) {
  std::vector<at::Tensor> out;
  out.reserve(count);
  for (int64_t i = 0; i < count; ++i) out.push_back(*tensors[i]);
  return out;
}

// Waits for every launched collective, so none is left running on a tensor the caller frees.
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works, std::chrono::milliseconds timeout) {
  std::exception_ptr first;
  for (auto& work : works) {
    try {
      work->wait(timeout);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace

extern "C" {

const char* strata_process_group_last_error() { return last_error.c_str(); }

// Joins the group of `world` ranks whose store rank 0 serves at host:port; every step that
// waits on another rank (connecting, the rendezvous, each collective) gives up after
// `timeout_ms`. Null on failure.
void* strata_process_group_new(const char* host, int port, int rank, int world, int64_t timeout_ms) {
  Group* group = nullptr;
  guarded([&] {
    const auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(port);
    options.isServer = rank == 0;
    options.numWorkers = world;
    options.waitWorkers = true;
    options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    auto gloo = c10d::ProcessGroupGloo::Options::create_default(timeout);
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, gloo);
    group = new Group{store, backend, timeout};
  });
  return group;
}

void strata_process_group_free(void* group) { delete static_cast<Group*>(group); }

// Sums (op 0) or takes the maximum (op 1) of each tensor across the ranks, in place; the
// tensors' collectives are launched together and all waited for. 0 on success.
int strata_process_group_all_reduce(void* handle, at::Tensor** tensors, int64_t count, int op) {
  return guarded([&] {
    auto* group = static_cast<Group*>(handle);
    c10d::AllreduceOptions options;
    options.reduceOp = op == 1 ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    options.timeout = group->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int64_t i = 0; i < count; ++i) {
      std::vector<at::Tensor> one{*tensors[i]};
      works.push_back(group->backend->allreduce(one, options));
    }
    wait_all(works, group->timeout);
  });
}

// Copies each tensor of rank `root` into the others' tensors, in place. 0 on success.
int strata_process_group_broadcast(void* handle, at::Tensor** tensors, int64_t count, int root) {
  return guarded([&] {
    auto* group = static_cast<Group*>(handle);
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = group->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int64_t i = 0; i < count; ++i) {
      std::vector<at::Tensor> one{*tensors[i]};
      works.push_back(group->backend->broadcast(one, options));
    }
    wait_all(works, group->timeout);
  });
}

}  // extern "C"
