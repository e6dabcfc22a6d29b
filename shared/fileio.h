/* fileio.h - the small durable-file helpers every Tern program shares:
 * write a whole buffer, make a directory entry durable, and set or clear
 * a persistent flag file.
 *
 * Pitfall: a rename or unlink is only on stable storage once the
 * directory itself was fsynced; fsync of the file alone does not cover
 * the name (ext4, XFS). Every "atomic replace" in Tern ends with
 * fileio_sync_dir().
 */
#ifndef TERN_FILEIO_H
#define TERN_FILEIO_H

#include "buf.h"

#include <stddef.h>

/* write(2) until done, retrying EINTR; 0 or -1 with errno. */
int fileio_write_all(int fd, const void *data, size_t len);
/* fsync the directory dir; 0 or -1 with errno. */
int fileio_sync_dir(const char *dir);
/* The directory part of path, fsynced (for a file just renamed). */
int fileio_sync_parent(const char *path);
/* Create (on) or remove (off) the empty flag file path, durably: the
 * file and its directory entry are fsynced. -1 with err naming the step. */
int fileio_flag_set(const char *path, int on, struct buf *err);

#endif
