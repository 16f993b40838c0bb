/* The watch on a Uffd backend's page-fault handler (snapshot/uffd_watch.c), started by the
 * handshake (snapshot/uffd.c) once the handler holds the uffd. */
#ifndef EMBER_SNAPSHOT_UFFD_H
#define EMBER_SNAPSHOT_UFFD_H

#include <stddef.h>

struct vm;

/* snap_uffd_watch_start(vm, err, errlen): the ember_uffd thread watches vm->uffd_pidfd (-1:
 * the process is not watched) and vm->uffd; if the handler exits or hangs, it logs why, stops
 * the VM (VM_STOP_ERROR, vm->uffd_failed set) and lets the waiting faults go. Returns 0 or
 * -errno (err says why). snap_uffd_watch_stop(vm): ends the thread and waits for it; nothing
 * if none runs. */
int snap_uffd_watch_start(struct vm *vm, char *err, size_t errlen);
void snap_uffd_watch_stop(struct vm *vm);

#endif
