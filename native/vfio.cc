// VFIO ioctls a guest needs to drive an ivshmem device from user space: container, group,
// device fd, regions, MSI-X eventfds, and pread/pwrite for config space. Each call is one
// syscall; which IOMMU type, which regions and which vectors is decided in TypeScript.
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "env_state.h"
#include "errors.h"
#include "fds.h"

namespace ivshmem {

static int Ioctl(int fd, unsigned long request, void* arg) {
  int rc;
  do rc = ::ioctl(fd, request, arg);
  while (rc < 0 && errno == EINTR);
  return rc;
}

static int IoctlValue(int fd, unsigned long request, unsigned long arg) {
  int rc;
  do rc = ::ioctl(fd, request, arg);
  while (rc < 0 && errno == EINTR);
  return rc;
}

// vfioGetApiVersion(containerFd, path?) → VFIO_API_VERSION of the running kernel.
static Napi::Value GetApiVersion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "containerFd");
  int rc = IoctlValue(fd, VFIO_GET_API_VERSION, 0);
  if (rc < 0) ThrowErrnoArg(info, 1, "ioctl(VFIO_GET_API_VERSION)");
  return Napi::Number::New(env, rc);
}

// vfioCheckExtension(containerFd, extension, path?) → > 0 when supported.
static Napi::Value CheckExtension(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "containerFd");
  uint32_t ext = ArgU32(info, 1, "extension");
  int rc = IoctlValue(fd, VFIO_CHECK_EXTENSION, ext);
  if (rc < 0) ThrowErrnoArg(info, 2, "ioctl(VFIO_CHECK_EXTENSION)");
  return Napi::Number::New(env, rc);
}

// vfioGroupGetStatus(groupFd, path?) → { viable, containerSet }.
static Napi::Value GroupGetStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "groupFd");
  vfio_group_status status;
  std::memset(&status, 0, sizeof status);
  status.argsz = sizeof status;
  if (Ioctl(fd, VFIO_GROUP_GET_STATUS, &status) < 0) {
    ThrowErrnoArg(info, 1, "ioctl(VFIO_GROUP_GET_STATUS)");
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("viable", Napi::Boolean::New(env, (status.flags & VFIO_GROUP_FLAGS_VIABLE) != 0));
  out.Set("containerSet", Napi::Boolean::New(env, (status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET) != 0));
  return out;
}

// vfioGroupSetContainer(groupFd, containerFd, path?)
static Napi::Value GroupSetContainer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "groupFd");
  int container = ArgFd(info, 1, "containerFd");
  if (Ioctl(fd, VFIO_GROUP_SET_CONTAINER, &container) < 0) {
    ThrowErrnoArg(info, 2, "ioctl(VFIO_GROUP_SET_CONTAINER)");
  }
  return env.Undefined();
}

// vfioSetIommu(containerFd, type, path?)
static Napi::Value SetIommu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "containerFd");
  uint32_t type = ArgU32(info, 1, "type");
  if (IoctlValue(fd, VFIO_SET_IOMMU, type) < 0) ThrowErrnoArg(info, 2, "ioctl(VFIO_SET_IOMMU)");
  return env.Undefined();
}

// vfioGroupGetDeviceFd(groupFd, deviceName, path?) → a device fd this environment owns.
static Napi::Value GroupGetDeviceFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "groupFd");
  if (info.Length() < 2 || !info[1].IsString()) throw Napi::TypeError::New(env, "deviceName must be a string");
  std::string name = info[1].As<Napi::String>().Utf8Value();
  int device = Ioctl(fd, VFIO_GROUP_GET_DEVICE_FD, const_cast<char*>(name.c_str()));
  if (device < 0) ThrowErrno(env, errno, "ioctl(VFIO_GROUP_GET_DEVICE_FD)", name);
  TrackFd(env, device);
  return Napi::Number::New(env, device);
}

// vfioDeviceGetInfo(deviceFd, path?) → { flags, numRegions, numIrqs }.
static Napi::Value DeviceGetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "deviceFd");
  vfio_device_info dev;
  std::memset(&dev, 0, sizeof dev);
  dev.argsz = sizeof dev;
  if (Ioctl(fd, VFIO_DEVICE_GET_INFO, &dev) < 0) ThrowErrnoArg(info, 1, "ioctl(VFIO_DEVICE_GET_INFO)");
  Napi::Object out = Napi::Object::New(env);
  out.Set("flags", Napi::Number::New(env, dev.flags));
  out.Set("numRegions", Napi::Number::New(env, dev.num_regions));
  out.Set("numIrqs", Napi::Number::New(env, dev.num_irqs));
  return out;
}

// vfioDeviceGetRegionInfo(deviceFd, index, path?) → { index, flags, size, offset }. The offset
// (index << 40 on vfio-pci) stays below 2^53, so a double holds it exactly.
static Napi::Value DeviceGetRegionInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "deviceFd");
  vfio_region_info region;
  std::memset(&region, 0, sizeof region);
  region.argsz = sizeof region;
  region.index = ArgU32(info, 1, "index");
  if (Ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &region) < 0) {
    ThrowErrnoArg(info, 2, "ioctl(VFIO_DEVICE_GET_REGION_INFO)");
  }
  if (region.offset > (1ULL << 53) || region.size > (1ULL << 53)) ThrowErrno(env, EOVERFLOW, "ioctl(VFIO_DEVICE_GET_REGION_INFO)", ArgOptionalString(info, 2));
  Napi::Object out = Napi::Object::New(env);
  out.Set("index", Napi::Number::New(env, region.index));
  out.Set("flags", Napi::Number::New(env, region.flags));
  out.Set("size", Napi::Number::New(env, static_cast<double>(region.size)));
  out.Set("offset", Napi::Number::New(env, static_cast<double>(region.offset)));
  return out;
}

// vfioDeviceGetIrqInfo(deviceFd, index, path?) → { index, flags, count }.
static Napi::Value DeviceGetIrqInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "deviceFd");
  vfio_irq_info irq;
  std::memset(&irq, 0, sizeof irq);
  irq.argsz = sizeof irq;
  irq.index = ArgU32(info, 1, "index");
  if (Ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, &irq) < 0) ThrowErrnoArg(info, 2, "ioctl(VFIO_DEVICE_GET_IRQ_INFO)");
  Napi::Object out = Napi::Object::New(env);
  out.Set("index", Napi::Number::New(env, irq.index));
  out.Set("flags", Napi::Number::New(env, irq.flags));
  out.Set("count", Napi::Number::New(env, irq.count));
  return out;
}

// vfioDeviceSetIrqs(deviceFd, index, start, eventfds, path?): DATA_EVENTFD | ACTION_TRIGGER,
// eventfds[i] signalled for vector start + i. An empty array disables every vector of the
// index (DATA_NONE with count 0), which is how VFIO is told to tear MSI-X down.
static Napi::Value DeviceSetIrqs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "deviceFd");
  uint32_t index = ArgU32(info, 1, "index");
  uint32_t start = ArgU32(info, 2, "start");
  if (info.Length() < 4 || !info[3].IsArray()) throw Napi::TypeError::New(env, "eventfds must be an array of file descriptors");
  Napi::Array list = info[3].As<Napi::Array>();
  std::vector<int32_t> fds;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, "eventfds must be an array of file descriptors");
    int32_t efd = v.As<Napi::Number>().Int32Value();
    // -1 leaves a vector unwired, as VFIO allows.
    if (efd < -1) throw Napi::TypeError::New(env, "eventfds must hold file descriptors or -1");
    fds.push_back(efd);
  }
  size_t size = sizeof(vfio_irq_set) + fds.size() * sizeof(int32_t);
  std::vector<uint8_t> buffer(size, 0);
  auto* set = reinterpret_cast<vfio_irq_set*>(buffer.data());
  set->argsz = static_cast<uint32_t>(size);
  set->index = index;
  set->start = fds.empty() ? 0 : start;
  set->count = static_cast<uint32_t>(fds.size());
  set->flags = (fds.empty() ? VFIO_IRQ_SET_DATA_NONE : VFIO_IRQ_SET_DATA_EVENTFD) | VFIO_IRQ_SET_ACTION_TRIGGER;
  if (!fds.empty()) std::memcpy(set->data, fds.data(), fds.size() * sizeof(int32_t));
  if (Ioctl(fd, VFIO_DEVICE_SET_IRQS, set) < 0) ThrowErrnoArg(info, 4, "ioctl(VFIO_DEVICE_SET_IRQS)");
  return env.Undefined();
}

static Napi::Uint8Array ArgBytes(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), "data must be a Uint8Array");
  }
  return info[i].As<Napi::Uint8Array>();
}

// pread(fd, data, offset, path?) → bytes read. Config space and other regions without mmap.
static Napi::Value Pread(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Uint8Array data = ArgBytes(info, 1);
  off_t offset = static_cast<off_t>(ArgNonNegativeInteger(info, 2, "offset"));
  ssize_t n;
  do n = ::pread(fd, data.Data(), data.ByteLength(), offset);
  while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrnoArg(info, 3, "pread");
  return Napi::Number::New(env, static_cast<double>(n));
}

// pwrite(fd, data, offset, path?) → bytes written.
static Napi::Value Pwrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Uint8Array data = ArgBytes(info, 1);
  off_t offset = static_cast<off_t>(ArgNonNegativeInteger(info, 2, "offset"));
  ssize_t n;
  do n = ::pwrite(fd, data.Data(), data.ByteLength(), offset);
  while (n < 0 && errno == EINTR);
  if (n < 0) ThrowErrnoArg(info, 3, "pwrite");
  return Napi::Number::New(env, static_cast<double>(n));
}

static Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("API_VERSION", VFIO_API_VERSION);
  c.Set("TYPE1_IOMMU", VFIO_TYPE1_IOMMU);
  c.Set("TYPE1v2_IOMMU", VFIO_TYPE1v2_IOMMU);
  c.Set("NOIOMMU_IOMMU", VFIO_NOIOMMU_IOMMU);
  c.Set("PCI_BAR0_REGION_INDEX", static_cast<uint32_t>(VFIO_PCI_BAR0_REGION_INDEX));
  c.Set("PCI_BAR1_REGION_INDEX", static_cast<uint32_t>(VFIO_PCI_BAR1_REGION_INDEX));
  c.Set("PCI_BAR2_REGION_INDEX", static_cast<uint32_t>(VFIO_PCI_BAR2_REGION_INDEX));
  c.Set("PCI_CONFIG_REGION_INDEX", static_cast<uint32_t>(VFIO_PCI_CONFIG_REGION_INDEX));
  c.Set("PCI_INTX_IRQ_INDEX", static_cast<uint32_t>(VFIO_PCI_INTX_IRQ_INDEX));
  c.Set("PCI_MSI_IRQ_INDEX", static_cast<uint32_t>(VFIO_PCI_MSI_IRQ_INDEX));
  c.Set("PCI_MSIX_IRQ_INDEX", static_cast<uint32_t>(VFIO_PCI_MSIX_IRQ_INDEX));
  c.Set("REGION_INFO_FLAG_READ", VFIO_REGION_INFO_FLAG_READ);
  c.Set("REGION_INFO_FLAG_WRITE", VFIO_REGION_INFO_FLAG_WRITE);
  c.Set("REGION_INFO_FLAG_MMAP", VFIO_REGION_INFO_FLAG_MMAP);
  c.Set("IRQ_INFO_EVENTFD", VFIO_IRQ_INFO_EVENTFD);
  c.Set("DEVICE_FLAGS_PCI", VFIO_DEVICE_FLAGS_PCI);
  return c;
}

void InitVfio(Napi::Env env, Napi::Object exports) {
  exports.Set("vfioGetApiVersion", Napi::Function::New(env, GetApiVersion, "vfioGetApiVersion"));
  exports.Set("vfioCheckExtension", Napi::Function::New(env, CheckExtension, "vfioCheckExtension"));
  exports.Set("vfioGroupGetStatus", Napi::Function::New(env, GroupGetStatus, "vfioGroupGetStatus"));
  exports.Set("vfioGroupSetContainer", Napi::Function::New(env, GroupSetContainer, "vfioGroupSetContainer"));
  exports.Set("vfioSetIommu", Napi::Function::New(env, SetIommu, "vfioSetIommu"));
  exports.Set("vfioGroupGetDeviceFd", Napi::Function::New(env, GroupGetDeviceFd, "vfioGroupGetDeviceFd"));
  exports.Set("vfioDeviceGetInfo", Napi::Function::New(env, DeviceGetInfo, "vfioDeviceGetInfo"));
  exports.Set("vfioDeviceGetRegionInfo", Napi::Function::New(env, DeviceGetRegionInfo, "vfioDeviceGetRegionInfo"));
  exports.Set("vfioDeviceGetIrqInfo", Napi::Function::New(env, DeviceGetIrqInfo, "vfioDeviceGetIrqInfo"));
  exports.Set("vfioDeviceSetIrqs", Napi::Function::New(env, DeviceSetIrqs, "vfioDeviceSetIrqs"));
  exports.Set("pread", Napi::Function::New(env, Pread, "pread"));
  exports.Set("pwrite", Napi::Function::New(env, Pwrite, "pwrite"));
  exports.Set("vfio", Constants(env));
}

}  // namespace ivshmem
