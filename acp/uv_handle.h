// RAII for libuv handles: a heap-allocated uv_T_t whose memory is freed only
// in its close callback, as libuv requires.
#pragma once

#include <memory>

#include <uv.h>

namespace harnessd::acp {

/// Deleter that closes the handle; the memory is freed in the close callback.
/// Only put a handle here after its uv_*_init succeeded (or after uv_spawn,
/// which must be closed even when it fails).
template <class T>
struct UvCloser {
  void operator()(T* h) const noexcept {
    auto* handle = reinterpret_cast<uv_handle_t*>(h);
    handle->data = nullptr;  // callbacks that still arrive (cancelled writes) see no owner
    if (uv_is_closing(handle)) return;  // closed elsewhere; its close callback frees it
    uv_close(handle, [](uv_handle_t* p) { delete reinterpret_cast<T*>(p); });
  }
};

template <class T>
using UvHandle = std::unique_ptr<T, UvCloser<T>>;

/// Returns `uv_err_name: uv_strerror` for a libuv error code.
std::string uv_error_text(int code);

}  // namespace harnessd::acp
