#pragma once
#include <napi.h>

namespace ivshmem {
// Remember an fd this environment opened, so its cleanup hook closes it if JS never does.
void TrackFd(Napi::Env env, int fd);
}  // namespace ivshmem
