// File descriptors the environment owns: open, close, size, truncate, memfd. Every fd opened
// here is remembered so that an exiting worker (or the process) closes what it left open.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "env_state.h"
#include "errors.h"
#include "fds.h"

namespace ivshmem {

void TrackFd(Napi::Env env, int fd) { State(env).fds.insert(fd); }

void CloseAllFds(EnvState& state) {
  for (int fd : state.fds) ::close(fd);
  state.fds.clear();
}

static Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int flags = static_cast<int>(ArgU32(info, 1, "flags"));
  mode_t mode = info.Length() > 2 ? static_cast<mode_t>(ArgU32(info, 2, "mode")) : 0600;
  int fd;
  do fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) ThrowErrno(env, errno, "open", path);
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

static Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  EnvState& state = State(env);
  CloseWatchersOf(state, fd);
  state.fds.erase(fd);
  // Linux releases the fd even when close() reports EINTR: never retry.
  if (::close(fd) < 0 && errno != EINTR) ThrowErrnoArg(info, 1, "close");
  return env.Undefined();
}

static Napi::Value Fstat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  struct stat st;
  if (::fstat(fd, &st) < 0) ThrowErrnoArg(info, 1, "fstat");
  Napi::Object out = Napi::Object::New(env);
  out.Set("size", Napi::Number::New(env, static_cast<double>(st.st_size)));
  out.Set("mode", Napi::Number::New(env, st.st_mode));
  out.Set("dev", Napi::Number::New(env, static_cast<double>(st.st_dev)));
  out.Set("ino", Napi::Number::New(env, static_cast<double>(st.st_ino)));
  return out;
}

static Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  off_t size = static_cast<off_t>(ArgNonNegativeInteger(info, 1, "size"));
  int rc;
  do rc = ::ftruncate(fd, size);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) ThrowErrnoArg(info, 2, "ftruncate");
  return env.Undefined();
}

static Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgOptionalString(info, 0);
  if (name.empty()) name = "ivshmem";
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "memfd_create", name);
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

static Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) ThrowErrnoArg(info, 1, "fcntl");
  return env.Undefined();
}

// flock(fd, LOCK_EX | LOCK_NB): true when taken, false when another open file holds it. The
// kernel drops the lock when the fd closes, also when its process dies.
static Napi::Value TryLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int rc;
  do rc = ::flock(fd, LOCK_EX | LOCK_NB);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    ThrowErrnoArg(info, 1, "flock");
  }
  return Napi::Boolean::New(env, true);
}

void InitFds(Napi::Env env, Napi::Object exports) {
  exports.Set("tryLock", Napi::Function::New(env, TryLock, "tryLock"));
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("fstat", Napi::Function::New(env, Fstat, "fstat"));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate, "ftruncate"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("setNonBlocking", Napi::Function::New(env, SetNonBlocking, "setNonBlocking"));
}

}  // namespace ivshmem
