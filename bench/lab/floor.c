// The C floors of the lab benchmark, run inside a lab guest: what the hardware path costs with
// no runtime in the way. Prints one JSON line: the round-trip samples in microseconds.
//
//   floor doorbell <pci address> ping|echo <peer id> <round trips> <BAR2 offset>
//     VFIO, one MSI-X vector on an eventfd; the pinger writes a sequence number into a word of
//     BAR2 and rings the peer, the echoer copies it into the next word and rings back. The
//     device must be bound to vfio-pci already. "echo" prints {"ready":true} once its interrupt
//     is set up, so the pinger can be told to start.
//   floor tcp-server <port> <round trips> <bytes>
//   floor tcp-client <address> <port> <round trips> <bytes>
//     One message of <bytes> out and back per round trip, TCP_NODELAY.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/vfio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// ivshmem BAR0 registers (QEMU's ivshmem spec): the doorbell takes (peer << 16) | vector.
#define REG_DOORBELL 12
#define PCI_COMMAND 4
#define PCI_COMMAND_MASTER 0x4

static void die(const char *what) {
  fprintf(stderr, "floor: %s: %s\n", what, errno ? strerror(errno) : "failed");
  exit(1);
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void print_samples(const char *kind, const double *samples, long n) {
  printf("{\"kind\":\"%s\",\"samples\":[", kind);
  for (long i = 0; i < n; i++) printf(i ? ",%.2f" : "%.2f", samples[i]);
  printf("]}\n");
}

static void *map_region(int device, unsigned index, size_t *size) {
  struct vfio_region_info info = {.argsz = sizeof info, .index = index};
  if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &info) < 0) die("VFIO_DEVICE_GET_REGION_INFO");
  void *at = mmap(NULL, info.size, PROT_READ | PROT_WRITE, MAP_SHARED, device, (off_t)info.offset);
  if (at == MAP_FAILED) die("mmap BAR");
  *size = info.size;
  return at;
}

static int doorbell(int argc, char **argv) {
  if (argc != 7) die("usage: floor doorbell <pci address> ping|echo <peer> <round trips> <offset>");
  const char *address = argv[2];
  int ping = strcmp(argv[3], "ping") == 0;
  uint32_t peer = (uint32_t)atoi(argv[4]);
  long rounds = atol(argv[5]);
  size_t offset = (size_t)atol(argv[6]);

  char link[256], target[256];
  snprintf(link, sizeof link, "/sys/bus/pci/devices/%s/iommu_group", address);
  ssize_t len = readlink(link, target, sizeof target - 1);
  if (len < 0) die("readlink iommu_group");
  target[len] = 0;
  char group_path[300];
  snprintf(group_path, sizeof group_path, "/dev/vfio/%s", basename(target));

  int container = open("/dev/vfio/vfio", O_RDWR);
  if (container < 0) die("open /dev/vfio/vfio");
  int group = open(group_path, O_RDWR);
  if (group < 0) die("open the VFIO group");
  struct vfio_group_status status = {.argsz = sizeof status};
  if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) < 0 || !(status.flags & VFIO_GROUP_FLAGS_VIABLE)) die("VFIO group not viable");
  if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) die("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0) die("VFIO_SET_IOMMU");
  int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, address);
  if (device < 0) die("VFIO_GROUP_GET_DEVICE_FD");

  size_t bar0_size, bar2_size;
  volatile uint32_t *bar0 = map_region(device, VFIO_PCI_BAR0_REGION_INDEX, &bar0_size);
  volatile uint32_t *bar2 = map_region(device, VFIO_PCI_BAR2_REGION_INDEX, &bar2_size);
  if (offset + 8 > bar2_size) die("offset beyond BAR2");
  volatile uint32_t *word = bar2 + offset / 4;

  // MSI-X messages are bus-master writes, which vfio-pci leaves disabled.
  struct vfio_region_info config = {.argsz = sizeof config, .index = VFIO_PCI_CONFIG_REGION_INDEX};
  if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &config) < 0) die("config region");
  uint16_t command;
  if (pread(device, &command, 2, (off_t)config.offset + PCI_COMMAND) != 2) die("read PCI command");
  command |= PCI_COMMAND_MASTER;
  if (pwrite(device, &command, 2, (off_t)config.offset + PCI_COMMAND) != 2) die("write PCI command");

  int efd = eventfd(0, 0);
  if (efd < 0) die("eventfd");
  char buffer[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
  struct vfio_irq_set *irq = (struct vfio_irq_set *)buffer;
  irq->argsz = sizeof buffer;
  irq->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  irq->index = VFIO_PCI_MSIX_IRQ_INDEX;
  irq->start = 0;
  irq->count = 1;
  memcpy(irq->data, &efd, sizeof(int32_t));
  if (ioctl(device, VFIO_DEVICE_SET_IRQS, irq) < 0) die("VFIO_DEVICE_SET_IRQS");

  uint32_t ring = peer << 16;
  uint64_t count;
  if (!ping) {
    printf("{\"ready\":true}\n");
    fflush(stdout);
    uint32_t last = 0;
    for (long i = 0; i < rounds; i++) {
      // A wake-up may be stale (a doorbell from before): wait until the word really changed.
      while (__atomic_load_n(&word[0], __ATOMIC_ACQUIRE) == last) {
        if (read(efd, &count, 8) != 8) die("read eventfd");
      }
      last = __atomic_load_n(&word[0], __ATOMIC_ACQUIRE);
      __atomic_store_n(&word[1], last, __ATOMIC_RELEASE);
      bar0[REG_DOORBELL / 4] = ring;
    }
    printf("{\"kind\":\"echo\",\"rounds\":%ld}\n", rounds);
    return 0;
  }
  double *samples = calloc((size_t)rounds, sizeof(double));
  if (!samples) die("calloc");
  for (long i = 0; i < rounds; i++) {
    uint32_t seq = (uint32_t)i + 1;
    double start = now_us();
    __atomic_store_n(&word[0], seq, __ATOMIC_RELEASE);
    bar0[REG_DOORBELL / 4] = ring;
    while (__atomic_load_n(&word[1], __ATOMIC_ACQUIRE) != seq) {
      if (read(efd, &count, 8) != 8) die("read eventfd");
    }
    samples[i] = now_us() - start;
  }
  print_samples("doorbell", samples, rounds);
  return 0;
}

static void exact(int fd, char *buffer, size_t size, int sending) {
  for (size_t done = 0; done < size;) {
    ssize_t n = sending ? send(fd, buffer + done, size - done, 0) : recv(fd, buffer + done, size - done, 0);
    if (n <= 0) die(sending ? "send" : "recv (peer closed?)");
    done += (size_t)n;
  }
}

static int tcp(int argc, char **argv, int server) {
  if (argc != (server ? 5 : 6)) die("usage: floor tcp-server <port> <round trips> <bytes> | tcp-client <address> <port> <round trips> <bytes>");
  int port = atoi(argv[server ? 2 : 3]);
  long rounds = atol(argv[server ? 3 : 4]);
  size_t size = (size_t)atol(argv[server ? 4 : 5]);
  char *buffer = calloc(1, size);
  int one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  int fd;
  if (server) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 1) < 0) die("bind/listen");
    printf("{\"ready\":true}\n");
    fflush(stdout);
    fd = accept(listener, NULL, NULL);
    if (fd < 0) die("accept");
    close(listener);
  } else {
    if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) die("bad address");
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (server) {
    for (long i = 0; i < rounds; i++) {
      exact(fd, buffer, size, 0);
      exact(fd, buffer, size, 1);
    }
    printf("{\"kind\":\"tcp-echo\",\"rounds\":%ld}\n", rounds);
    return 0;
  }
  double *samples = calloc((size_t)rounds, sizeof(double));
  for (long i = 0; i < rounds; i++) {
    buffer[0] = (char)i;
    double start = now_us();
    exact(fd, buffer, size, 1);
    exact(fd, buffer, size, 0);
    samples[i] = now_us() - start;
  }
  print_samples("tcp", samples, rounds);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "doorbell") == 0) return doorbell(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "tcp-server") == 0) return tcp(argc, argv, 1);
  if (argc >= 2 && strcmp(argv[1], "tcp-client") == 0) return tcp(argc, argv, 0);
  fprintf(stderr, "usage: floor doorbell|tcp-server|tcp-client ...\n");
  return 2;
}
