#pragma once
// Declarations for compiling c10d/ProcessGroupGloo.hpp without Gloo's headers: see README.md.
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
