// Readiness of an fd on the environment's own libuv loop (never uv_default_loop(): a worker
// has its own). The callback enters JavaScript through MakeCallback so async hooks, domains and
// microtasks behave as for any Node callback.
#include <uv.h>

#include <memory>

#include "env_state.h"
#include "errors.h"

namespace ivshmem {

class Watcher : public Napi::ObjectWrap<Watcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Watcher", {
      InstanceMethod<&Watcher::Start>("start"),
      InstanceMethod<&Watcher::Stop>("stop"),
      InstanceMethod<&Watcher::RefHandle>("ref"),
      InstanceMethod<&Watcher::UnrefHandle>("unref"),
      InstanceMethod<&Watcher::Close>("close"),
    });
  }

  // new Watcher(fd, callback(status, events))
  explicit Watcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Watcher>(info) {
    Napi::Env env = info.Env();
    int fd = ArgFd(info, 0, "fd");
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "IvshmemWatcher");
    owner_ = SharedState(env);
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop for this environment");
    handle_ = new uv_poll_t;
    int rc = uv_poll_init(loop, handle_, fd);
    if (rc < 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(env, -rc, "uv_poll_init");
    }
    handle_->data = this;
    fd_ = fd;
    owner_->watchers.insert(this);
  }

  ~Watcher() override {
    CloseHandle();
    owner_->watchers.erase(this);
  }

  // Also called by the environment's cleanup hook.
  void CloseHandle() {
    if (handle_ == nullptr) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
    if (active_ && !owner_->tearingDown) Unref();
    active_ = false;
    // The callback usually closes over the object that holds this watcher: a strong reference
    // kept past close() would make that cycle uncollectable (one leaked socket per client).
    if (!owner_->tearingDown) callback_.Reset();
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int events = info.Length() > 0 ? static_cast<int>(ArgU32(info, 0, "events")) : UV_READABLE;
    // libuv asserts on unknown bits: refuse them here instead of aborting the process.
    if ((events & ~(UV_READABLE | UV_WRITABLE | UV_DISCONNECT | UV_PRIORITIZED)) != 0 || events == 0) {
      throw Napi::TypeError::New(env, "events must be a non-empty combination of READABLE, WRITABLE and DISCONNECT");
    }
    if (handle_ == nullptr) throw Napi::Error::New(env, "watcher is closed");
    int rc = uv_poll_start(handle_, events, OnPoll);
    if (rc < 0) ThrowErrno(env, -rc, "uv_poll_start");
    // While polling, the JS object must stay alive for the callback to have somewhere to go.
    if (!active_) Ref();
    active_ = true;
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    if (active_) Unref();
    active_ = false;
    return info.Env().Undefined();
  }

  Napi::Value RefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    return info.Env().Undefined();
  }

  // Plain N-API calls, status checked, no C++ wrapper: while a worker is being terminated (or
  // the process exits under it) its loop still turns with JavaScript forbidden, and every call
  // into the engine fails. The wrappers turn such a failure into a Napi::Error, whose own
  // creation fails too and aborts the process. A poll that cannot reach JavaScript is dropped:
  // the environment is going away with everything that would have heard it.
  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<Watcher*>(handle->data);
    if (self == nullptr || self->owner_->tearingDown) return;
    napi_env env = self->Env();
    napi_handle_scope scope = nullptr;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value recv = nullptr, fn = nullptr, args[2] = {nullptr, nullptr}, result = nullptr;
    const char* code = status < 0 ? uv_err_name(status) : nullptr;
    bool ready = napi_get_reference_value(env, static_cast<napi_ref>(*self), &recv) == napi_ok && recv != nullptr &&
                 napi_get_reference_value(env, static_cast<napi_ref>(self->callback_), &fn) == napi_ok && fn != nullptr &&
                 (code ? napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &args[0]) : napi_get_null(env, &args[0])) == napi_ok &&
                 napi_create_int32(env, events, &args[1]) == napi_ok;
    if (ready && napi_make_callback(env, static_cast<napi_async_context>(*self->context_), recv, fn, 2, args, &result) != napi_ok) {
      // A throwing listener has no JavaScript caller to return to: report it as uncaught. A call
      // refused because JavaScript may no longer run leaves no exception, and nothing to report.
      bool pending = false;
      napi_value error = nullptr;
      if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
          napi_get_and_clear_last_exception(env, &error) == napi_ok && error != nullptr) {
        napi_fatal_exception(env, error);
      }
    }
    napi_close_handle_scope(env, scope);
  }

  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
  std::shared_ptr<EnvState> owner_;
  uv_poll_t* handle_ = nullptr;
  int fd_ = -1;
  bool active_ = false;

  friend void CloseWatchersOf(EnvState& state, int fd);
};

void CloseWatchersOf(EnvState& state, int fd) {
  for (Watcher* w : state.watchers) {
    if (w->fd_ == fd) w->CloseHandle();
  }
}

void CloseAllWatchers(EnvState& state) {
  // CloseHandle does not erase from the set; the destructor does, later.
  for (Watcher* w : state.watchers) w->CloseHandle();
}

void InitWatcher(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = Watcher::Define(env);
  State(env).watcherClass = Napi::Persistent(ctor);
  exports.Set("Watcher", ctor);
  exports.Set("READABLE", Napi::Number::New(env, UV_READABLE));
  exports.Set("WRITABLE", Napi::Number::New(env, UV_WRITABLE));
  exports.Set("DISCONNECT", Napi::Number::New(env, UV_DISCONNECT));
}

}  // namespace ivshmem
