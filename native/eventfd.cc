// eventfd: the doorbell between processes on one host, and what VFIO and QEMU signal MSI-X on.
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "env_state.h"
#include "errors.h"
#include "fds.h"

namespace ivshmem {

static Napi::Value Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned initial = info.Length() > 0 ? ArgU32(info, 0, "initial") : 0;
  int fd = ::eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "eventfd");
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

// Adds to the counter; false when the counter is full (EAGAIN), which only a reader that never
// drains can cause.
static Napi::Value Signal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t value = info.Length() > 1 ? static_cast<uint64_t>(ArgNonNegativeInteger(info, 1, "value")) : 1;
  ssize_t n;
  do n = ::write(fd, &value, sizeof value);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Boolean::New(env, false);
    ThrowErrnoArg(info, 2, "write");
  }
  return Napi::Boolean::New(env, true);
}

// Returns the counter and resets it; 0 when nothing was pending. The fd must be non-blocking.
static Napi::Value Drain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t value = 0;
  ssize_t n;
  do n = ::read(fd, &value, sizeof value);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, 0);
    ThrowErrnoArg(info, 1, "read");
  }
  return Napi::Number::New(env, static_cast<double>(value));
}

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfdCreate", Napi::Function::New(env, Create, "eventfdCreate"));
  exports.Set("eventfdSignal", Napi::Function::New(env, Signal, "eventfdSignal"));
  exports.Set("eventfdDrain", Napi::Function::New(env, Drain, "eventfdDrain"));
}

}  // namespace ivshmem
