#pragma once
// Declarations for compiling c10d/ProcessGroupGloo.hpp without Gloo's headers: see README.md.
namespace gloo::transport {
class Device;
class UnboundBuffer;
}  // namespace gloo::transport
