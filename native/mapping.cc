// mmap of an fd as an external ArrayBuffer. unmap() detaches the buffer before munmap, so a late
// JavaScript access sees a zero-length buffer rather than freed memory; a buffer that is never
// unmapped is unmapped when it is collected.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

#include "env_state.h"
#include "errors.h"

namespace ivshmem {

struct Mapping {
  void* addr;
  size_t length;
  bool mapped;
  // True while napi_create_external_arraybuffer runs: Node 20 calls the finalizer from inside a
  // failing call (lengths over buffer.constants.MAX_LENGTH) and then reports the failure, so the
  // finalizer must not free the Mapping under Map(); `finalized` records that it ran.
  bool creating;
  bool finalized;
  std::shared_ptr<EnvState> owner;
};

static void Release(Mapping* m) {
  if (!m->mapped) return;
  ::munmap(m->addr, m->length);
  m->mapped = false;
  m->owner->mappings.erase(m->addr);
}

static void Finalize(napi_env, void*, void* hint) {
  auto* m = static_cast<Mapping*>(hint);
  Release(m);
  if (m->creating) m->finalized = true;
  else delete m;
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

  auto* m = new Mapping{addr, static_cast<size_t>(length), true, true, false, SharedState(env)};
  m->owner->mappings[addr] = m;
  napi_value buffer;
  napi_status status = napi_create_external_arraybuffer(env, addr, m->length, Finalize, m, &buffer);
  if (status != napi_ok) {
    // The memory goes now, whatever Node did. The Mapping is freed here if the finalizer already
    // ran; otherwise by the finalizer, should a Node defer or skip it (then it leaks, on this
    // failure path only, rather than risk a use after free).
    Release(m);
    if (m->finalized) delete m;
    else m->creating = false;
    // Node may have left its own exception pending (ERR_BUFFER_TOO_LARGE); ours replaces it.
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    throw Napi::RangeError::New(env, "mmap: " + std::to_string(static_cast<uint64_t>(length)) +
                                         " bytes cannot be one ArrayBuffer in this Node.js (see buffer.constants.MAX_LENGTH)");
  }
  m->creating = false;
  return Napi::Value(env, buffer);
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
