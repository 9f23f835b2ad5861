/*
 * Device glue for the ivshmem C library: small examples of handing ivs_device a mapping, a
 * doorbell and interrupt fds. A plain file (a /dev/shm file, or the file behind QEMU's
 * memory-backend-file) has memory only; a guest's VFIO device has memory, doorbells and one
 * eventfd per MSI-X vector.
 */
#ifndef IVSHMEM_GLUE_H
#define IVSHMEM_GLUE_H

#include <stdint.h>
#include "ivshmem.h"

struct ivs_file {
    struct ivs_device dev;
    void *memory;
    uint64_t size;
};

/* Maps `path` (size 0: the file's size; with `create`, a new file of `size` bytes, mode 0600). */
int ivs_file_open(struct ivs_file *f, const char *path, uint64_t size, int create);
void ivs_file_close(struct ivs_file *f);

#define IVS_VFIO_MAX_VECTORS 64

struct ivs_vfio {
    struct ivs_device dev;
    int container, group, device;
    void *memory;          /* BAR2 */
    uint64_t size;
    volatile uint32_t *registers; /* BAR0 when mappable, else NULL (pread/pwrite at bar0_offset) */
    uint64_t bar0_offset, bar0_size;
    int fds[IVS_VFIO_MAX_VECTORS];
    uint32_t vectors;
    unsigned long rings;   /* doorbell writes so far */
};

/*
 * Opens the ivshmem device at PCI `address` (e.g. "0000:00:03.0"), which must already be bound
 * to vfio-pci, through VFIO (type 1 v2 IOMMU): BAR2 mapped, BAR0 for IVPosition and Doorbell,
 * one eventfd per MSI-X vector, bus mastering on. errno tells what failed.
 */
int ivs_vfio_open(struct ivs_vfio *v, const char *address);
void ivs_vfio_close(struct ivs_vfio *v);

#endif
