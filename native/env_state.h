// Per-environment state: the main thread and every worker get their own, so handles opened in
// a worker are released when that worker exits, whatever the main thread is doing.
#pragma once
#include <napi.h>
#include <memory>
#include <unordered_map>
#include <unordered_set>

namespace ivshmem {

struct Mapping;
class Watcher;

struct EnvState {
  Napi::FunctionReference errorClass;
  Napi::FunctionReference watcherClass;
  std::unordered_set<int> fds;
  std::unordered_map<void*, Mapping*> mappings;
  std::unordered_set<Watcher*> watchers;
  bool tearingDown = false;
};

// Mappings and watchers hold a share of the state: their finalizers may run during teardown
// after Node has dropped the instance data.
std::shared_ptr<EnvState> SharedState(Napi::Env env);
inline EnvState& State(Napi::Env env) { return *SharedState(env); }

// Each primitive file registers its functions on the exports object.
void InitErrors(Napi::Env env, Napi::Object exports);
void InitFds(Napi::Env env, Napi::Object exports);
void InitMapping(Napi::Env env, Napi::Object exports);
void InitMmio(Napi::Env env, Napi::Object exports);
void InitEventfd(Napi::Env env, Napi::Object exports);
void InitWatcher(Napi::Env env, Napi::Object exports);
void InitWait(Napi::Env env, Napi::Object exports);
void InitUnixSocket(Napi::Env env, Napi::Object exports);
void InitVfio(Napi::Env env, Napi::Object exports);

// Cleanup of what an environment still holds when it goes away.
void CloseAllWatchers(EnvState& state);
void CloseAllFds(EnvState& state);
// libuv aborts when a polled fd disappears under it: close() stops its watchers first.
void CloseWatchersOf(EnvState& state, int fd);

}  // namespace ivshmem
