#pragma once
#include <napi.h>
#include <string>

namespace ivshmem {

// Throws an IvshmemError (the class handed over from TypeScript) carrying code, errno, syscall
// and, when known, the path the failing call was about.
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path = "");

// The same for the current errno, with the path taken from argument `pathArg` if it is a
// string. errno is read before anything else can change it.
[[noreturn]] void ThrowErrnoArg(const Napi::CallbackInfo& info, size_t pathArg, const char* syscall);

// Argument checks: a wrong type from JavaScript is a TypeError, never a crash.
int32_t ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name);
double ArgNonNegativeInteger(const Napi::CallbackInfo& info, size_t i, const char* name);
// Converting a double that does not fit is undefined behaviour: flags, modes and counts go
// through this range check first.
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name);
// An integer 0..max, checked as the double it arrives as (casting first is undefined beyond the
// target type and wraps 2^32 + x to x); `range` names the bound in the error, e.g. "0..0o7777".
uint32_t ArgUint32AtMost(const Napi::CallbackInfo& info, size_t i, const char* name, uint32_t max, const char* range);
std::string ArgOptionalString(const Napi::CallbackInfo& info, size_t i);

}  // namespace ivshmem
