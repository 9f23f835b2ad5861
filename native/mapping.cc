// mmap of an fd as an external ArrayBuffer. unmap() detaches the buffer before munmap, so a late
// JavaScript access sees a zero-length buffer rather than freed memory; a buffer that is never
// unmapped is unmapped when it is collected.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "env_state.h"
#include "errors.h"

namespace ivshmem {

struct Mapping {
  void* addr;
  size_t length;
  bool mapped;
  std::shared_ptr<EnvState> owner;
};

static void Release(Mapping* m) {
  if (!m->mapped) return;
  ::munmap(m->addr, m->length);
  m->mapped = false;
  m->owner->mappings.erase(m->addr);
}

static Napi::Value Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  double offset = ArgNonNegativeInteger(info, 1, "offset");
  double length = ArgNonNegativeInteger(info, 2, "length");
  if (info.Length() < 4 || !info[3].IsBoolean()) throw Napi::TypeError::New(env, "writable must be a boolean");
  bool writable = info[3].As<Napi::Boolean>().Value();
  std::string path = ArgOptionalString(info, 4);
  if (length == 0) ThrowErrno(env, EINVAL, "mmap", path);

  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* addr = ::mmap(nullptr, static_cast<size_t>(length), prot, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) ThrowErrno(env, errno, "mmap", path);

  auto* m = new Mapping{addr, static_cast<size_t>(length), true, SharedState(env)};
  m->owner->mappings[addr] = m;
  return Napi::ArrayBuffer::New(env, addr, m->length, [](Napi::Env, void*, Mapping* hint) {
    Release(hint);
    delete hint;
  }, m);
}

static Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "unmap expects an ArrayBuffer from map()");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  if (buffer.IsDetached()) return env.Undefined();
  EnvState& state = State(env);
  auto it = state.mappings.find(buffer.Data());
  if (it == state.mappings.end() || it->second->length != buffer.ByteLength()) {
    throw Napi::TypeError::New(env, "unmap expects an ArrayBuffer returned by map() in this thread");
  }
  Mapping* m = it->second;
  buffer.Detach();
  Release(m);
  return env.Undefined();
}

void InitMapping(Napi::Env env, Napi::Object exports) {
  exports.Set("map", Napi::Function::New(env, Map, "map"));
  exports.Set("unmap", Napi::Function::New(env, Unmap, "unmap"));
  exports.Set("pageSize", Napi::Number::New(env, static_cast<double>(::sysconf(_SC_PAGESIZE))));
}

}  // namespace ivshmem
