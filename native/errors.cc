#include "errors.h"

#include <uv.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "env_state.h"

namespace ivshmem {

// The errno's name: libuv's where it has one, else the C library's (strerrorname_np, glibc 2.32+),
// else a few the addon can meet that libuv does not know. Never "Unknown system error -N".
static const char* ErrnoName(int err) {
  const char* uv = uv_err_name(-err);
  if (std::strncmp(uv, "Unknown", 7) != 0) return uv;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* name = ::strerrorname_np(err)) return name;
#endif
  switch (err) {
    case ETOOMANYREFS: return "ETOOMANYREFS";
    default: return uv;
  }
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path) {
  const char* code = ErrnoName(err);
  std::string message = std::string(code) + ": " + std::strerror(err) + ", " + syscall;
  if (!path.empty()) message += " '" + path + "'";

  Napi::Object props = Napi::Object::New(env);
  props.Set("code", code);
  props.Set("errno", err);
  props.Set("syscall", syscall);
  if (!path.empty()) props.Set("path", path);

  EnvState& state = State(env);
  if (!state.errorClass.IsEmpty()) {
    Napi::Value error = state.errorClass.New({Napi::String::New(env, message), props});
    throw Napi::Error(env, error);
  }
  // Before the TypeScript layer registered its class (only in direct use of the addon).
  Napi::Error error = Napi::Error::New(env, message);
  error.Value().Set("code", code);
  error.Value().Set("errno", err);
  error.Value().Set("syscall", syscall);
  if (!path.empty()) error.Value().Set("path", path);
  throw error;
}

void ThrowErrnoArg(const Napi::CallbackInfo& info, size_t pathArg, const char* syscall) {
  int err = errno;
  ThrowErrno(info.Env(), err, syscall, ArgOptionalString(info, pathArg));
}

int32_t ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a file descriptor (a number)");
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= INT32_MAX) || std::floor(v) != v) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a non-negative integer file descriptor");
  }
  return static_cast<int32_t>(v);
}

double ArgNonNegativeInteger(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 9007199254740991.0) || std::floor(v) != v) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a non-negative safe integer");
  }
  return v;
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  double v = ArgNonNegativeInteger(info, i, name);
  if (v > UINT32_MAX) throw Napi::RangeError::New(info.Env(), std::string(name) + " must fit in 32 bits");
  return static_cast<uint32_t>(v);
}

uint32_t ArgUint32AtMost(const Napi::CallbackInfo& info, size_t i, const char* name, uint32_t max, const char* range) {
  double v = i < info.Length() && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
  if (!(v >= 0 && v <= static_cast<double>(max)) || std::floor(v) != v) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an integer " + range);
  }
  return static_cast<uint32_t>(v);
}

std::string ArgOptionalString(const Napi::CallbackInfo& info, size_t i) {
  if (i < info.Length() && info[i].IsString()) return info[i].As<Napi::String>().Utf8Value();
  return "";
}

static Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(info.Env(), "setErrorClass expects a constructor");
  }
  State(info.Env()).errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
}

}  // namespace ivshmem
