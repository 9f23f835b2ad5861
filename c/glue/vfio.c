/*
 * A guest's ivshmem-doorbell device through VFIO as an ivs_device: BAR2 is the shared memory,
 * BAR0 holds IVPosition (our ID, offset 8) and Doorbell (offset 12: peer << 16 | vector), and
 * each MSI-X vector fires its own eventfd. The device must be bound to vfio-pci already and sit
 * behind an IOMMU (a vIOMMU in the guest).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ivshmem_glue.h"

#define IVPOSITION 0x08
#define DOORBELL 0x0c
#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4

static int region_info(int device, unsigned index, struct vfio_region_info *info) {
    memset(info, 0, sizeof *info);
    info->argsz = sizeof *info;
    info->index = index;
    return ioctl(device, VFIO_DEVICE_GET_REGION_INFO, info);
}

static uint32_t read_register(struct ivs_vfio *v, unsigned offset) {
    if (v->registers) return v->registers[offset / 4];
    uint32_t value = 0;
    if (pread(v->device, &value, sizeof value, (off_t)(v->bar0_offset + offset)) != (ssize_t)sizeof value) return UINT32_MAX;
    return value;
}

static int vfio_ring(void *ctx, uint32_t peer, uint32_t vector) {
    struct ivs_vfio *v = ctx;
    uint32_t value = peer << 16 | (vector & 0xffff);
    v->rings++;
    if (v->registers) {
        v->registers[DOORBELL / 4] = value;
        return IVS_OK;
    }
    return pwrite(v->device, &value, sizeof value, (off_t)(v->bar0_offset + DOORBELL)) == (ssize_t)sizeof value ? IVS_OK : IVS_ERR_SYSTEM;
}

static int group_of(const char *address) {
    char link[PATH_MAX], target[PATH_MAX];
    snprintf(link, sizeof link, "/sys/bus/pci/devices/%s/iommu_group", address);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0) return -1;
    target[n] = 0;
    const char *slash = strrchr(target, '/');
    return atoi(slash ? slash + 1 : target);
}

int ivs_vfio_open(struct ivs_vfio *v, const char *address) {
    memset(v, 0, sizeof *v);
    v->container = v->group = v->device = -1;
    for (int i = 0; i < IVS_VFIO_MAX_VECTORS; i++) v->fds[i] = -1;
    int group = group_of(address);
    if (group < 0) return IVS_ERR_SYSTEM;
    char path[64];
    snprintf(path, sizeof path, "/dev/vfio/%d", group);
    if ((v->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC)) < 0) goto fail;
    if (ioctl(v->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
        ioctl(v->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0) {
        errno = ENOTSUP;
        goto fail;
    }
    if ((v->group = open(path, O_RDWR | O_CLOEXEC)) < 0) goto fail;
    struct vfio_group_status status = {.argsz = sizeof status};
    if (ioctl(v->group, VFIO_GROUP_GET_STATUS, &status) != 0) goto fail;
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        errno = EBUSY; /* every device of the group must be bound to vfio-pci or to nothing */
        goto fail;
    }
    if (ioctl(v->group, VFIO_GROUP_SET_CONTAINER, &v->container) != 0) goto fail;
    if (ioctl(v->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) goto fail;
    if ((v->device = ioctl(v->group, VFIO_GROUP_GET_DEVICE_FD, address)) < 0) goto fail;

    /* vfio-pci leaves bus mastering off, and MSI-X messages are bus-master writes. */
    struct vfio_region_info config;
    if (region_info(v->device, VFIO_PCI_CONFIG_REGION_INDEX, &config) != 0) goto fail;
    uint16_t command;
    if (pread(v->device, &command, 2, (off_t)(config.offset + PCI_COMMAND)) != 2) goto fail;
    command |= PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
    if (pwrite(v->device, &command, 2, (off_t)(config.offset + PCI_COMMAND)) != 2) goto fail;

    struct vfio_region_info bar0, bar2;
    if (region_info(v->device, VFIO_PCI_BAR0_REGION_INDEX, &bar0) != 0 || bar0.size < 16) goto fail;
    v->bar0_offset = bar0.offset;
    v->bar0_size = bar0.size;
    if (bar0.flags & VFIO_REGION_INFO_FLAG_MMAP) {
        void *regs = mmap(NULL, bar0.size, PROT_READ | PROT_WRITE, MAP_SHARED, v->device, (off_t)bar0.offset);
        if (regs != MAP_FAILED) v->registers = regs;
    }
    if (region_info(v->device, VFIO_PCI_BAR2_REGION_INDEX, &bar2) != 0 || !(bar2.flags & VFIO_REGION_INFO_FLAG_MMAP) || !bar2.size) {
        errno = ENODEV;
        goto fail;
    }
    v->memory = mmap(NULL, bar2.size, PROT_READ | PROT_WRITE, MAP_SHARED, v->device, (off_t)bar2.offset);
    if (v->memory == MAP_FAILED) {
        v->memory = NULL;
        goto fail;
    }
    v->size = bar2.size;

    struct vfio_irq_info irq = {.argsz = sizeof irq, .index = VFIO_PCI_MSIX_IRQ_INDEX};
    if (ioctl(v->device, VFIO_DEVICE_GET_IRQ_INFO, &irq) != 0) goto fail;
    v->vectors = irq.count > IVS_VFIO_MAX_VECTORS ? IVS_VFIO_MAX_VECTORS : irq.count;
    if (v->vectors > 0) {
        size_t argsz = sizeof(struct vfio_irq_set) + sizeof(int) * v->vectors;
        struct vfio_irq_set *set = calloc(1, argsz);
        if (!set) goto fail;
        set->argsz = (uint32_t)argsz;
        set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
        set->index = VFIO_PCI_MSIX_IRQ_INDEX;
        set->start = 0;
        set->count = v->vectors;
        for (uint32_t i = 0; i < v->vectors; i++) {
            v->fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            memcpy(set->data + sizeof(int) * i, &v->fds[i], sizeof(int));
        }
        int r = ioctl(v->device, VFIO_DEVICE_SET_IRQS, set);
        free(set);
        if (r != 0) goto fail;
    }
    v->dev = (struct ivs_device){.memory = v->memory, .size = v->size, .id = read_register(v, IVPOSITION),
                                 .vectors = v->vectors, .fds = v->vectors ? v->fds : NULL,
                                 .ring = v->vectors ? vfio_ring : NULL, .ctx = v};
    return IVS_OK;
fail:;
    int saved = errno;
    ivs_vfio_close(v);
    errno = saved;
    return IVS_ERR_SYSTEM;
}

void ivs_vfio_close(struct ivs_vfio *v) {
    if (v->device >= 0 && v->vectors > 0) {
        struct vfio_irq_set off = {.argsz = sizeof off, .flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                                   .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 0};
        ioctl(v->device, VFIO_DEVICE_SET_IRQS, &off);
    }
    for (int i = 0; i < IVS_VFIO_MAX_VECTORS; i++)
        if (v->fds[i] >= 0) close(v->fds[i]);
    if (v->memory) munmap(v->memory, v->size);
    if (v->registers) munmap((void *)v->registers, v->bar0_size);
    if (v->device >= 0) close(v->device);
    if (v->group >= 0) close(v->group);
    if (v->container >= 0) close(v->container);
    memset(v, 0, sizeof *v);
    v->container = v->group = v->device = -1;
    for (int i = 0; i < IVS_VFIO_MAX_VECTORS; i++) v->fds[i] = -1;
}
