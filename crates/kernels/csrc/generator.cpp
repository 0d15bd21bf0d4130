// A random-number generator of strata's own: libtorch's CPU generator (mt19937), made, seeded
// and drawn from by its owner, so that its draws never touch the process-wide default generator
// and need no process-wide lock. tch exposes no `at::Generator`; this shim does, for dropout
// masks. Errors never cross the C boundary.

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <string>

#include "shim_error.h"

namespace {
thread_local std::string last_error;
}  // namespace

extern "C" {

// The message of the last failed call on this thread.
const char* strata_generator_last_error() { return last_error.c_str(); }

// A new CPU generator seeded with `seed`, or null.
void* strata_generator_new(uint64_t seed) {
  at::Generator* out = nullptr;
  strata_shim::capture(last_error, [&] {
    out = new at::Generator(at::make_generator<at::CPUGeneratorImpl>(seed));
  });
  return out;
}

// Frees a generator made by `strata_generator_new`.
void strata_generator_free(void* generator) { delete static_cast<at::Generator*>(generator); }

// Restarts the generator's stream from `seed`. 0 on success.
int strata_generator_seed(void* generator, uint64_t seed) {
  return strata_shim::capture(last_error,
                              [&] {
                                auto& gen = *static_cast<at::Generator*>(generator);
                                std::lock_guard<std::mutex> lock(gen.mutex());
                                gen.set_current_seed(seed);
                              })
             ? 0
             : -1;
}

// A tensor of `like`'s shape, dtype and (CPU) device, without gradient history, whose elements
// are 1/keep with probability `keep` and 0 otherwise, drawn from the generator; or null.
at::Tensor* strata_generator_keep_mask(void* generator, const at::Tensor* like, double keep) {
  at::Tensor* out = nullptr;
  strata_shim::capture(last_error, [&] {
    auto& gen = *static_cast<at::Generator*>(generator);
    auto mask = at::empty(like->sizes(), like->options().requires_grad(false));
    // The CPU kernel takes the generator's own lock for the draw.
    mask.bernoulli_(keep, gen);
    mask.div_(keep);
    out = new at::Tensor(std::move(mask));
  });
  return out;
}

}  // extern "C"
