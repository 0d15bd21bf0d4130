// Exceptions never cross the C boundary of strata's C++ shims: an entry point runs its body
// through `strata_shim::capture`, which keeps the message of anything thrown for the shim's
// `..._last_error` function and reports failure to the caller.

#pragma once

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace strata_shim {

// Runs `body`; on an exception stores its message (libtorch's without the C++ backtrace) in
// `last_error` and returns false.
template <typename F>
bool capture(std::string& last_error, F&& body) {
  try {
    body();
    return true;
  } catch (const c10::Error& e) {
    last_error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return false;
}

}  // namespace strata_shim
