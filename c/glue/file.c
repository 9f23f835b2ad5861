/* A plain shared-memory file as an ivs_device: memory, no doorbells, no interrupts (poll). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ivshmem_glue.h"

int ivs_file_open(struct ivs_file *f, const char *path, uint64_t size, int create) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0) return IVS_ERR_SYSTEM;
    struct stat st;
    if (fstat(fd, &st) != 0) goto fail;
    if (create && (uint64_t)st.st_size < size) {
        if (ftruncate(fd, (off_t)size) != 0) goto fail;
        st.st_size = (off_t)size;
    }
    if (size == 0) size = (uint64_t)st.st_size;
    if (size == 0 || size > (uint64_t)st.st_size) {
        errno = EINVAL;
        goto fail;
    }
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (memory == MAP_FAILED) goto fail;
    close(fd); /* the mapping keeps the file */
    f->memory = memory;
    f->size = size;
    f->dev = (struct ivs_device){.memory = memory, .size = size, .id = IVS_NO_DOORBELL};
    return IVS_OK;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return IVS_ERR_SYSTEM;
}

void ivs_file_close(struct ivs_file *f) {
    if (f->memory) munmap(f->memory, f->size);
    f->memory = NULL;
}
