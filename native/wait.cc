// One blocking wait for a thread that owns its data path (run-to-completion): until a 32-bit
// word in a mapped buffer differs from an expected value, or an fd becomes readable, or a
// timeout. Spins on the word first, then sleeps in poll(2) on the fd. Everything else (what the
// word means, announcing sleep, draining the fd, re-checking, timeouts as errors) is the
// caller's policy.
#include <poll.h>
#include <sched.h>
#include <time.h>

#include <cerrno>
#include <cmath>
#include <cstdint>

#include "env_state.h"
#include "errors.h"

namespace ivshmem {

namespace {

constexpr int kWord = 1;      // the word differs from the expected value
constexpr int kReadable = 2;  // the fd is readable (or hung up: reading it tells)
constexpr int64_t kPureSpinNs = 2000;
constexpr int64_t kYieldNs = 2000;
// The longest spin: a thread that spins longer should sleep (and the cap keeps a caller's huge
// spin from hiding a readable fd, which is only looked at after the spin, for hours).
constexpr double kMaxSpinNs = 1e9;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Acquire: a changed word (a tail or head position) publishes what the peer wrote before it.
inline bool Changed(const uint32_t* word, uint32_t expected) {
  return __atomic_load_n(word, __ATOMIC_ACQUIRE) != expected;
}

}  // namespace

// waitWord(buffer, byteOffset, expected, fd, spinNs, timeoutNs) -> bitmask of kWord/kReadable,
// 0 on timeout. spinNs is capped at 1 s. fd -1: no fd, the wait after the spin is a plain sleep of timeoutNs that ends
// with one more look at the word. timeoutNs -1: no timeout (an fd is then required).
static Napi::Value WaitWord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) throw Napi::TypeError::New(env, "buffer must be an ArrayBuffer");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  double offset = ArgNonNegativeInteger(info, 1, "byteOffset");
  double expectedArg = ArgNonNegativeInteger(info, 2, "expected");
  if (expectedArg > UINT32_MAX) throw Napi::RangeError::New(env, "expected must fit in 32 bits");
  // Exactly -1 is "no fd": Int32Value() would also map 4294967295 and -1.5 to it.
  int fd = -1;
  if (info.Length() > 3 && !(info[3].IsNumber() && info[3].As<Napi::Number>().DoubleValue() == -1)) fd = ArgFd(info, 3, "fd");
  double spinNs = ArgNonNegativeInteger(info, 4, "spinNs");
  double timeoutNs = -1;
  if (info.Length() > 5 && !(info[5].IsNumber() && info[5].As<Napi::Number>().DoubleValue() == -1)) {
    timeoutNs = ArgNonNegativeInteger(info, 5, "timeoutNs");
  }
  if (fd < 0 && timeoutNs < 0) throw Napi::RangeError::New(env, "a wait without an fd needs a timeout");
  if (buffer.IsDetached() || buffer.ByteLength() == 0) throw Napi::Error::New(env, "the buffer is closed");
  if (static_cast<uint64_t>(offset) % 4 != 0 || offset + 4 > buffer.ByteLength()) {
    throw Napi::RangeError::New(env, "byteOffset must be 4-byte aligned and inside the buffer");
  }
  const uint32_t* word = reinterpret_cast<const uint32_t*>(static_cast<uint8_t*>(buffer.Data()) + static_cast<size_t>(offset));
  const uint32_t expected = static_cast<uint32_t>(expectedArg);

  const int64_t start = NowNs();
  const int64_t spinEnd = start + static_cast<int64_t>(std::fmin(spinNs, kMaxSpinNs));
  const int64_t deadline = timeoutNs < 0 ? INT64_MAX : start + static_cast<int64_t>(std::fmin(timeoutNs, 9e18));
  // The clock is read every 64 looks: a look costs a few ns, a vDSO clock read ~20.
  // After kPureSpinNs the spin yields the CPU every kYieldNs: the peer that will answer may
  // have been woken on this very CPU (the scheduler places a woken thread near its waker), and
  // a spin that never yields keeps it from running until the spin ends (measured: every round
  // trip then took twice the spin budget). Not from the start: a peer on another CPU answers
  // within the pure spin (2.5 µs round trips measured), and on a loaded machine each yield may
  // hand the CPU to another process. Two ends on one CPU then pass it back and forth by
  // yields (~14 µs round trips, as a sleep would cost; 31 µs with a 10 µs pure spin).
  int64_t yieldAt = start + kPureSpinNs;
  for (unsigned i = 0;; i++) {
    if (Changed(word, expected)) return Napi::Number::New(env, kWord);
    if ((i & 63) == 63) {
      int64_t now = NowNs();
      if (now >= spinEnd || now >= deadline) break;
      if (now >= yieldAt) {
        sched_yield();
        yieldAt = now + kYieldNs;
      }
    }
    CpuRelax();
  }
  if (Changed(word, expected)) return Napi::Number::New(env, kWord);

  for (;;) {
    int64_t now = NowNs();
    if (now >= deadline) break;
    int64_t left = deadline - now;
    timespec ts{static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
    pollfd p{fd, POLLIN, 0};
    int rc = ::ppoll(fd >= 0 ? &p : nullptr, fd >= 0 ? 1 : 0, deadline == INT64_MAX ? nullptr : &ts, nullptr);
    if (rc < 0) {
      if (errno == EINTR) continue;  // a signal handler ran: wait for what is left
      ThrowErrno(env, errno, "ppoll");
    }
    if (rc > 0) {
      if (p.revents & POLLNVAL) ThrowErrno(env, EBADF, "ppoll");
      // POLLHUP/POLLERR count as readable: the caller's read reports what happened.
      return Napi::Number::New(env, kReadable | (Changed(word, expected) ? kWord : 0));
    }
    if (fd < 0) break;  // the sleep ran its course
  }
  return Napi::Number::New(env, Changed(word, expected) ? kWord : 0);
}

void InitWait(Napi::Env env, Napi::Object exports) {
  exports.Set("waitWord", Napi::Function::New(env, WaitWord, "waitWord"));
  exports.Set("WAIT_WORD", Napi::Number::New(env, kWord));
  exports.Set("WAIT_READABLE", Napi::Number::New(env, kReadable));
}

}  // namespace ivshmem
