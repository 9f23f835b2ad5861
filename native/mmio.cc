// Exact 32-bit accesses to a mapped register window (BAR0). The compiler must neither split,
// merge nor elide them: device registers act on each access.
#include <cstdint>

#include "env_state.h"
#include "errors.h"

namespace ivshmem {

static volatile uint32_t* Register(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "registers must be an ArrayBuffer");
  Napi::ArrayBuffer regs = info[0].As<Napi::ArrayBuffer>();
  double offset = ArgNonNegativeInteger(info, 1, "offset");
  if (regs.IsDetached() || regs.ByteLength() == 0) throw Napi::Error::New(env, "register window is closed");
  if (static_cast<uint64_t>(offset) % 4 != 0 || offset + 4 > regs.ByteLength()) {
    throw Napi::RangeError::New(env, "register offset must be 4-byte aligned and inside the window");
  }
  return reinterpret_cast<volatile uint32_t*>(static_cast<uint8_t*>(regs.Data()) + static_cast<size_t>(offset));
}

static Napi::Value Read32(const Napi::CallbackInfo& info) {
  volatile uint32_t* reg = Register(info);
  return Napi::Number::New(info.Env(), static_cast<double>(*reg));
}

static Napi::Value Write32(const Napi::CallbackInfo& info) {
  volatile uint32_t* reg = Register(info);
  double value = ArgNonNegativeInteger(info, 2, "value");
  if (value > UINT32_MAX) throw Napi::RangeError::New(info.Env(), "value must fit in 32 bits");
  // A doorbell store must not pass the shared-memory stores before it (a ring's published
  // tail, its wait word): the peer woken by it looks at those, and seeing the old values it
  // sleeps again, a lost wake-up until the re-check. x86 keeps stores in order, so there only
  // the compiler must not move them; arm64 may make a device store (nGnRE) visible before
  // earlier normal-memory stores unless a barrier orders them, as Linux's writel() does.
#if defined(__aarch64__)
  asm volatile("dmb oshst" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
  *reg = static_cast<uint32_t>(value);
  return info.Env().Undefined();
}

void InitMmio(Napi::Env env, Napi::Object exports) {
  exports.Set("read32", Napi::Function::New(env, Read32, "read32"));
  exports.Set("write32", Napi::Function::New(env, Write32, "write32"));
}

}  // namespace ivshmem
