// Entry point: builds the per-environment state and registers every primitive.
#include <napi.h>

#include "env_state.h"

namespace ivshmem {

using StateHolder = std::shared_ptr<EnvState>;

void InitSeals(Napi::Env env, Napi::Object exports);

std::shared_ptr<EnvState> SharedState(Napi::Env env) { return *env.GetInstanceData<StateHolder>(); }

static void Cleanup(void* arg) {
  auto* state = static_cast<EnvState*>(arg);
  state->tearingDown = true;
  CloseAllWatchers(*state);
  CloseAllFds(*state);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* holder = new StateHolder(std::make_shared<EnvState>());
  env.SetInstanceData<StateHolder>(holder);
  // The hook runs before Node drops the instance data, so the raw pointer is still valid then.
  napi_add_env_cleanup_hook(env, Cleanup, holder->get());

  InitErrors(env, exports);
  InitFds(env, exports);
  InitMapping(env, exports);
  InitMmio(env, exports);
  InitEventfd(env, exports);
  InitWatcher(env, exports);
  InitWait(env, exports);
  InitUnixSocket(env, exports);
  InitVfio(env, exports);
  InitSeals(env, exports);
  return exports;
}

}  // namespace ivshmem

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return ivshmem::Init(env, exports); }

NODE_API_MODULE(ivshmem, InitAddon)
