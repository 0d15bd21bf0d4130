// A c10d process group for data-parallel training: libtorch's TCPStore for the rendezvous
// and its Gloo backend for the collectives, the engine torch.distributed uses. The
// collectives run inside libtorch_cpu; this file only creates them and waits for them.
// A reducer (c10d::Reducer, the engine of PyTorch's DistributedDataParallel) sums gradients
// across the ranks in buckets while backward still runs: autograd hooks launch each bucket's
// all-reduce as soon as its gradients are ready, and the end of backward waits for them.
//
// Errors never cross the C boundary: each entry point catches them, keeps the message for
// `strata_process_group_last_error` and returns null or -1.

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "shim_error.h"

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

thread_local std::string last_error;

// The first bucket's size: small, as in DistributedDataParallel, so that the first all-reduce
// starts early in backward.
constexpr int64_t kFirstBucketBytes = int64_t{1} << 20;

// One rank's membership of a group: the store it met the others through, the backend, and
// the process group that wraps it for a reducer.
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  c10::intrusive_ptr<c10d::ProcessGroup> process_group;
  std::chrono::milliseconds timeout;
};

// The reducer's communication: a plain sum of each bucket over the ranks. (Without a hook the
// reducer divides by the world size first; strata weights each rank's loss by its share of
// the batch instead, so the sum is the global batch's gradient.) Counts the buckets it
// launched.
class SumHook : public c10d::CommHookInterface {
 public:
  SumHook(c10::intrusive_ptr<c10d::Backend> backend, std::chrono::milliseconds timeout,
          std::shared_ptr<std::atomic<int64_t>> launched)
      : backend_(std::move(backend)), timeout_(timeout), launched_(std::move(launched)) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    std::vector<at::Tensor> tensors{bucket.getBufferRef()};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = timeout_;
    auto work = backend_->allreduce(tensors, options);
    launched_->fetch_add(1);
    return work->getFuture();
  }

  at::Tensor parseHookResult(const c10::IValue& result) override {
    return c10d::detail::parseCppCommHookResult(result);
  }

 private:
  c10::intrusive_ptr<c10d::Backend> backend_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<std::atomic<int64_t>> launched_;
};

// c10d's reducer with its check that the last backward pass all-reduced every bucket (a
// parameter without a gradient leaves its bucket, and the end of the pass, waiting).
class CheckedReducer : public c10d::Reducer {
 public:
  using c10d::Reducer::Reducer;

  void check_finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    ensure_prior_reduction_finished();
  }
};

// A reducer over one set of parameters and the count of bucket all-reduces it launched.
struct GradientReducer {
  std::unique_ptr<CheckedReducer> reducer;
  std::shared_ptr<std::atomic<int64_t>> launched;
  size_t buckets;
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
    auto process_group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
    process_group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, backend);
    process_group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    group = new Group{store, backend, process_group, timeout};
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

// A reducer that sums the gradients of `params` (trainable leaf tensors, the same list in
// every rank's process) across the ranks while backward runs, in buckets of about
// `bucket_bytes` (the first `kFirstBucketBytes`). Every parameter must get a gradient in each
// backward pass.
// Null on failure.
void* strata_reducer_new(void* handle, at::Tensor** params, int64_t count, int64_t bucket_bytes) {
  GradientReducer* out = nullptr;
  guarded([&] {
    auto* group = static_cast<Group*>(handle);
    auto tensors = tensors_of(params, count);
    // Buckets in reverse order of the parameters, roughly the order backward produces them.
    std::vector<int64_t> order(tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(order.size() - 1 - i);
    const std::vector<size_t> limits{static_cast<size_t>(kFirstBucketBytes),
                                     static_cast<size_t>(bucket_bytes)};
    auto assignment = c10d::compute_bucket_assignment_by_size(
        tensors, limits, std::vector<bool>(tensors.size(), false), order);
    auto buckets = std::get<0>(assignment);
    const size_t bucket_count = buckets.size();
    auto reducer = std::make_unique<CheckedReducer>(
        tensors, std::move(buckets), group->process_group, std::vector<bool>(tensors.size(), false),
        bucket_bytes, /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false,
        std::unordered_map<size_t, std::string>{}, /*first_bucket_bytes_cap=*/kFirstBucketBytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
        std::vector<int64_t>{});
    auto launched = std::make_shared<std::atomic<int64_t>>(0);
    reducer->register_comm_hook(std::make_unique<SumHook>(group->backend, group->timeout, launched));
    out = new GradientReducer{std::move(reducer), launched, bucket_count};
  });
  return out;
}

// Fails unless the last armed backward pass all-reduced every bucket. 0 on success.
int strata_reducer_check_finished(void* handle) {
  return guarded([&] { static_cast<GradientReducer*>(handle)->reducer->check_finished(); });
}

// Arms the reducer for the next backward pass: its hooks then all-reduce the gradients.
// 0 on success.
int strata_reducer_prepare(void* handle) {
  return guarded([&] {
    auto& reducer = *static_cast<GradientReducer*>(handle)->reducer;
    reducer.check_finished();
    reducer.prepare_for_backward({});
  });
}

// The number of buckets the reducer splits the parameters into.
int64_t strata_reducer_buckets(void* handle) {
  return static_cast<int64_t>(static_cast<GradientReducer*>(handle)->buckets);
}

// The bucket all-reduces the reducer launched so far.
int64_t strata_reducer_launched(void* handle) {
  return static_cast<GradientReducer*>(handle)->launched->load();
}

// Frees the reducer; 0, or -1 when its destructor reported an error (kept for
// `strata_process_group_last_error`).
int strata_reducer_free(void* handle) {
  return guarded([&] { delete static_cast<GradientReducer*>(handle); });
}

}  // extern "C"
