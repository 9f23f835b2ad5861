// What a shared-memory fd promises the peers it is handed to: its seals (memfd_create with
// MFD_ALLOW_SEALING, fcntl F_ADD_SEALS / F_GET_SEALS) and its permission bits (fchmod). A peer
// that receives a memfd sealed against shrinking cannot be killed with SIGBUS by another peer's
// ftruncate. Which seals to ask for and what to do about missing ones is decided in TypeScript.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "env_state.h"
#include "errors.h"
#include "fds.h"

namespace ivshmem {

// memfdCreateSealable(name) → fd of a new, empty memfd that accepts seals.
static Napi::Value MemfdCreateSealable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgOptionalString(info, 0);
  if (name.empty()) name = "ivshmem";
  int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) ThrowErrno(env, errno, "memfd_create", name);
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

// addSeals(fd, seals, path?): fcntl(F_ADD_SEALS). EPERM once F_SEAL_SEAL is set; EINVAL for an
// fd that cannot carry seals (not a memfd, or one made without MFD_ALLOW_SEALING).
static Napi::Value AddSeals(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  constexpr uint32_t kKnown = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  uint32_t bits = ArgUint32AtMost(info, 1, "seals", kKnown, "made of F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW and F_SEAL_WRITE");
  int seals = static_cast<int>(bits);
  if (::fcntl(fd, F_ADD_SEALS, seals) < 0) ThrowErrnoArg(info, 2, "fcntl(F_ADD_SEALS)");
  return info.Env().Undefined();
}

// getSeals(fd, path?) → the seal bits; throws EINVAL for a file that cannot carry seals.
static Napi::Value GetSeals(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) ThrowErrnoArg(info, 1, "fcntl(F_GET_SEALS)");
  return Napi::Number::New(info.Env(), seals);
}

// fchmod(fd, mode, path?): exact permission bits, whatever the umask was at creation.
static Napi::Value Fchmod(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  mode_t mode = static_cast<mode_t>(ArgUint32AtMost(info, 1, "mode", 07777, "0..0o7777"));
  int rc;
  do rc = ::fchmod(fd, mode);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) ThrowErrnoArg(info, 2, "fchmod");
  return info.Env().Undefined();
}

void InitSeals(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreateSealable", Napi::Function::New(env, MemfdCreateSealable, "memfdCreateSealable"));
  exports.Set("addSeals", Napi::Function::New(env, AddSeals, "addSeals"));
  exports.Set("getSeals", Napi::Function::New(env, GetSeals, "getSeals"));
  exports.Set("fchmod", Napi::Function::New(env, Fchmod, "fchmod"));
  Napi::Object seals = Napi::Object::New(env);
  seals.Set("SEAL", Napi::Number::New(env, F_SEAL_SEAL));
  seals.Set("SHRINK", Napi::Number::New(env, F_SEAL_SHRINK));
  seals.Set("GROW", Napi::Number::New(env, F_SEAL_GROW));
  seals.Set("WRITE", Napi::Number::New(env, F_SEAL_WRITE));
  exports.Set("seals", seals);
}

}  // namespace ivshmem
