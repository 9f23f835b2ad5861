// UNIX stream sockets that carry file descriptors (SCM_RIGHTS): what the ivshmem-server
// protocol runs on. All sockets are non-blocking; framing and policy live in TypeScript.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "env_state.h"
#include "errors.h"
#include "fds.h"

namespace ivshmem {

static constexpr int kMaxFdsPerMessage = 16;

static sockaddr_un Address(Napi::Env env, const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) ThrowErrno(env, ENAMETOOLONG, "bind", path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

static std::string ArgPath(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "socket path must be a string");
  return info[0].As<Napi::String>().Utf8Value();
}

// "No mode": the file's mode is left to the umask.
static constexpr std::optional<mode_t> kUmaskDecides = std::nullopt;

// The socket file gets exactly `mode`, whatever the umask: Linux creates it with the socket
// inode's mode minus the umask, so fchmod before bind makes it never wider than asked; bits the
// umask took away are put back on the file itself, opened with O_PATH | O_NOFOLLOW so that a
// symlink planted in its place is never followed. A failure after bind() removes the file bind()
// created, so that no half-made socket file is left behind.
static int BindWithMode(int fd, const sockaddr_un& addr, const std::string& path, std::optional<mode_t> mode) {
  if (mode && ::fchmod(fd, *mode) < 0) return errno;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) return errno;
  if (!mode) return 0;
  int file = ::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (file < 0) {
    int err = errno;
    ::unlink(path.c_str());
    return err;
  }
  struct stat st;
  int err = 0;
  if (::fstat(file, &st) < 0) err = errno;
  else if (!S_ISSOCK(st.st_mode)) err = EEXIST;
  else if ((st.st_mode & 07777) != *mode) {
    std::string proc = "/proc/self/fd/" + std::to_string(file);
    if (::chmod(proc.c_str(), *mode) < 0) err = errno;
  }
  ::close(file);
  // EEXIST: what is at the path is not what bind() made; it is not ours to remove.
  if (err != 0 && err != EEXIST) ::unlink(path.c_str());
  return err;
}

// listen(path, backlog = 128, mode?): without a mode the file's mode is left to the umask.
static Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgPath(info);
  int backlog = info.Length() > 1 && !info[1].IsUndefined() ? static_cast<int>(std::min<uint32_t>(ArgU32(info, 1, "backlog"), SOMAXCONN)) : 128;
  std::optional<mode_t> mode = info.Length() > 2 && !info[2].IsUndefined() ? std::optional<mode_t>(ArgUint32AtMost(info, 2, "mode", 07777, "0..0o7777")) : kUmaskDecides;
  sockaddr_un addr = Address(env, path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket", path);
  if (int err = BindWithMode(fd, addr, path, mode)) {
    ::close(fd);
    ThrowErrno(env, err, "bind", path);
  }
  if (::listen(fd, backlog) < 0) {
    int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    ThrowErrno(env, err, "listen", path);
  }
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

// Returns the new connection's fd, or -1 when none is pending.
static Napi::Value Accept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int client;
  do client = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (client < 0 && errno == EINTR);
  if (client < 0) {
    if (errno == EAGAIN || errno == ECONNABORTED) return Napi::Number::New(env, -1);
    ThrowErrnoArg(info, 1, "accept");
  }
  TrackFd(env, client);
  return Napi::Number::New(env, client);
}

// A UNIX-domain connect completes at once or fails; non-blocking, so a server whose backlog is
// full is an EAGAIN error instead of a stalled event loop.
static Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgPath(info);
  sockaddr_un addr = Address(env, path);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket", path);
  int rc;
  do rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int err = errno;
    ::close(fd);
    ThrowErrno(env, err, "connect", path);
  }
  TrackFd(env, fd);
  return Napi::Number::New(env, fd);
}

static Napi::Uint8Array ArgBytes(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), "data must be a Uint8Array");
  }
  return info[i].As<Napi::Uint8Array>();
}

// send(fd, bytes, fdToSend = -1) → bytes written, or -1 when the socket is full.
static Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Uint8Array data = ArgBytes(info, 1);
  int passFd = -1;
  if (info.Length() > 2 && !info[2].IsUndefined() && !(info[2].IsNumber() && info[2].As<Napi::Number>().Int32Value() == -1)) {
    passFd = ArgFd(info, 2, "fdToSend");
  }
  iovec iov{data.Data(), data.ByteLength()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (passFd >= 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &passFd, sizeof(int));
  }
  ssize_t n;
  do n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, -1);
    ThrowErrnoArg(info, 3, "sendmsg");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// receive(fd, bytes) → null when nothing is pending, else { bytes, fds, truncated }:
// bytes 0 is end of stream; truncated means the kernel dropped control data (MSG_CTRUNC).
static Napi::Value Receive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Uint8Array data = ArgBytes(info, 1);
  iovec iov{data.Data(), data.ByteLength()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return env.Null();
    ThrowErrnoArg(info, 2, "recvmsg");
  }
  Napi::Array fds = Napi::Array::New(env);
  uint32_t count = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < nfds; i++) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      TrackFd(env, received);
      fds.Set(count++, Napi::Number::New(env, received));
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytes", Napi::Number::New(env, static_cast<double>(n)));
  out.Set("fds", fds);
  out.Set("truncated", Napi::Boolean::New(env, (msg.msg_flags & MSG_CTRUNC) != 0));
  return out;
}

static Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  ::shutdown(fd, SHUT_RDWR);
  return info.Env().Undefined();
}

void InitUnixSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("socketListen", Napi::Function::New(env, Listen, "socketListen"));
  exports.Set("socketAccept", Napi::Function::New(env, Accept, "socketAccept"));
  exports.Set("socketConnect", Napi::Function::New(env, Connect, "socketConnect"));
  exports.Set("socketSend", Napi::Function::New(env, Send, "socketSend"));
  exports.Set("socketReceive", Napi::Function::New(env, Receive, "socketReceive"));
  exports.Set("socketShutdown", Napi::Function::New(env, Shutdown, "socketShutdown"));
}

}  // namespace ivshmem
