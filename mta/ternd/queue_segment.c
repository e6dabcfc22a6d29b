/* queue_segment.c - segment files: creation, the recovery scan that
 * rebuilds the index, abandonment after a write error, and removal.
 *
 * Segments are seg/<16 hex digits>, numbered in write order. Recovery
 * replays them oldest first; a record that fails its checks ends that
 * segment's scan (logged with segment and offset) and no write ever
 * follows it, because a read-write open always starts a new segment.
 * Removal is oldest-first only: a journal record in segment N may refer
 * to a message in an older segment, so N can go only after those did.
 */
#include "queue_impl.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"

static void qseg_path(const struct queue *q, uint64_t seq, struct buf *path)
{
	buf_reset(path);
	buf_printf(path, "%s/%016" PRIX64, q->segdir, seq);
}

static void qseg_header_fill(unsigned char *h, uint64_t seq)
{
	memset(h, 0, QSEG_HDR_SIZE);
	memcpy(h, QSEG_MAGIC, 8);
	qrec_put_u32(h + 8, QSEG_VERSION);
	qrec_put_u64(h + 16, seq);
	qrec_put_u32(h + 28, crc32c(0, h, 28));
}

static int qseg_header_ok(const unsigned char *h, size_t len, uint64_t seq)
{
	return len >= QSEG_HDR_SIZE && memcmp(h, QSEG_MAGIC, 8) == 0 &&
	       qrec_get_u32(h + 8) == QSEG_VERSION && qrec_get_u64(h + 16) == seq &&
	       qrec_get_u32(h + 28) == crc32c(0, h, 28);
}

static struct qseg *qseg_add(struct queue *q, uint64_t seq, int fd)
{
	struct qseg *s = xcalloc(1, sizeof(*s)), **pp = &q->segs;

	s->seq = seq;
	s->fd = fd;
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = s;
	q->stats.segments++;
	return s;
}

/* qseg_create - a new, durable, empty segment becomes the active one */
int qseg_create(struct queue *q, struct buf *err)
{
	struct buf path = BUF_INIT;
	unsigned char h[QSEG_HDR_SIZE];
	struct iovec iov = {h, sizeof(h)};
	uint64_t seq = q->next_seq++;
	int fd, rc = -1;

	qseg_path(q, seq, &path);
	if ((fd = open(path.data, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		int saved = errno;
		buf_printf(err, "create %s: %s", path.data, strerror(saved));
		errno = saved;
		goto out;
	}
	qseg_header_fill(h, seq);
	errno = 0;
	/* The header and the directory entry are durable before any record
	 * in this segment is acknowledged (a new file's name needs the
	 * directory fsync; fdatasync alone does not cover it). */
	if (q->io.pwritev(fd, &iov, 1, 0) != (ssize_t)sizeof(h) || q->io.fdatasync(fd) < 0 ||
	    fsync(q->segdir_fd) < 0) {
		int saved = errno ? errno : EIO;
		buf_printf(err, "initialise %s: %s", path.data, strerror(saved));
		close(fd);
		unlink(path.data);
		errno = saved; /* the caller tells ENOSPC from EIO */
		goto out;
	}
	pthread_mutex_lock(&q->lock);
	q->active = qseg_add(q, seq, fd);
	q->active->size = QSEG_HDR_SIZE;
	pthread_mutex_unlock(&q->lock);
	rc = 0;
out:
	buf_free(&path);
	return rc;
}

/* qseg_abandon - after a failed write or fsync: this file is never
 * written or fsynced again (Linux may have dropped the dirty pages and
 * cleared the error, so a second fsync could falsely succeed). Trimming
 * the failed bytes is best effort; the scan stops at them anyway. */
void qseg_abandon(struct queue *q, struct qseg *s, off_t good_end)
{
	struct buf path = BUF_INIT;

	qseg_path(q, s->seq, &path);
	if (ftruncate(s->fd, good_end) < 0)
		msg_warn("queue segment %s: cannot trim to %lld bytes: %s", path.data,
			 (long long)good_end, strerror(errno));
	msg_warn("queue segment %s abandoned after a write error; continuing in a new segment",
		 path.data);
	pthread_mutex_lock(&q->lock);
	s->size = good_end;
	if (q->active == s)
		q->active = NULL;
	pthread_mutex_unlock(&q->lock);
	buf_free(&path);
}

static void qseg_free(struct qseg *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

void qseg_unref(struct queue *q, struct qseg *s)
{
	if (--s->refs == 0 && s->removed)
		qseg_free(s);
}

/* qseg_reclaim - unlink leading segments without live messages (q->lock held) */
void qseg_reclaim(struct queue *q)
{
	struct buf path = BUF_INIT;
	struct qseg *s;

	while ((s = q->segs) != NULL && s != q->active && s->live_msgs == 0) {
		qseg_path(q, s->seq, &path);
		if (unlink(path.data) < 0 && errno != ENOENT) {
			msg_warn("queue segment %s: unlink: %s", path.data, strerror(errno));
			break;
		}
		q->segs = s->next;
		q->stats.segments--;
		s->removed = 1;
		if (s->refs == 0)
			qseg_free(s);
	}
	buf_free(&path);
}

void qseg_close_all(struct queue *q)
{
	struct qseg *s, *next;

	for (s = q->segs; s != NULL; s = next) {
		next = s->next;
		qseg_free(s);
	}
	q->segs = q->active = NULL;
}

/* qseg_replay_message - an M record: (re)insert its message */
static void qseg_replay_message(struct queue *q, struct qseg *s, off_t off, size_t reclen,
				const struct qrec *rec, struct buf *err)
{
	struct queue_env env;
	struct qrec_state st;
	struct buf reason = BUF_INIT;
	const unsigned char *content;
	size_t clen;
	struct qmsg *m;

	queue_env_init(&env);
	if (qrec_decode_message(rec, &env, &st, &reason, &content, &clen, err) < 0) {
		msg_warn("queue segment %016" PRIX64 ": %s: %s at offset %lld; message skipped",
			 s->seq, rec->qid, err->data, (long long)off);
	} else {
		m = qmsg_from_env(rec->qid, &env, &st);
		m->seg = s, m->off = off, m->reclen = (uint32_t)reclen;
		qidx_insert(q, m);
		if (m->npending == 0)
			qidx_remove(q, m);
	}
	queue_env_free(&env);
	buf_free(&reason);
}

static void qseg_replay_journal(struct queue *q, const struct qrec *rec, struct buf *reason)
{
	struct qmsg *m = qidx_find(q, rec->qid);
	uint32_t idx = 0;
	int rst = 0;
	time_t until = 0;

	/* No message: it finished, or its copy comes later (compaction). */
	if (m == NULL || qidx_decode_journal(rec, &idx, &rst, &until, reason) < 0)
		return;
	if (qidx_apply(q, m, rec->type, idx, rst, until, reason->len ? reason->data : NULL))
		qidx_remove(q, m);
}

/* qseg_replay - apply every good record of one mapped segment */
static void qseg_replay(struct queue *q, struct qseg *s, const unsigned char *map, size_t len,
			int quiet_tail)
{
	struct buf err = BUF_INIT, reason = BUF_INIT;
	struct qrec rec;
	size_t off = QSEG_HDR_SIZE, reclen;
	int rc;

	while ((rc = qrec_decode(map + off, len - off, &rec, &reclen, &err)) == 1) {
		if (rec.type == QREC_MESSAGE)
			qseg_replay_message(q, s, (off_t)off, reclen, &rec, &err);
		else
			qseg_replay_journal(q, &rec, &reason);
		off += reclen;
	}
	if (rc < 0 && !quiet_tail)
		msg_warn("queue segment %s/%016" PRIX64 ": %s at offset %zu; ignoring the rest of "
			 "this segment",
			 q->segdir, s->seq, err.data, off);
	s->size = (off_t)off;
	buf_free(&err);
	buf_free(&reason);
}

/* qseg_scan - open and replay one segment file */
static void qseg_scan(struct queue *q, uint64_t seq, int last)
{
	struct buf path = BUF_INIT;
	struct stat sb;
	unsigned char *map = MAP_FAILED;
	struct qseg *s;
	int fd;

	qseg_path(q, seq, &path);
	if ((fd = open(path.data, O_RDONLY | O_CLOEXEC)) < 0) {
		if (errno != ENOENT) /* ENOENT: removed by a running ternd meanwhile */
			msg_warn("queue segment %s: open: %s", path.data, strerror(errno));
		goto out;
	}
	s = qseg_add(q, seq, fd);
	if (fstat(fd, &sb) < 0 || sb.st_size < QSEG_HDR_SIZE ||
	    (map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
		if (!(q->opts.rdonly && last)) /* a writer may be creating it right now */
			msg_warn("queue segment %s: empty or unreadable; ignored", path.data);
		goto out;
	}
	if (!qseg_header_ok(map, (size_t)sb.st_size, seq)) {
		msg_warn("queue segment %s: bad segment header; ignored", path.data);
		goto out;
	}
	/* A running ternd may be appending to the newest segment: a partial
	 * record at its end is normal for a read-only opener. */
	qseg_replay(q, s, map, (size_t)sb.st_size, q->opts.rdonly && last);
out:
	if (map != MAP_FAILED)
		munmap(map, (size_t)sb.st_size);
	buf_free(&path);
}

static int qseg_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* qseg_list - the segment numbers in seg/, sorted */
static int qseg_list(struct queue *q, uint64_t **seqs, size_t *n, struct buf *err)
{
	DIR *d = opendir(q->segdir);
	struct dirent *de;
	size_t cap = 0;
	char *end;
	uint64_t v;

	*seqs = NULL, *n = 0;
	if (d == NULL) {
		if (errno == ENOENT && q->opts.rdonly)
			return 0; /* no queue yet: an empty one */
		buf_printf(err, "open %s: %s", q->segdir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strlen(de->d_name) != 16)
			continue;
		v = strtoull(de->d_name, &end, 16);
		if (*end != '\0')
			continue;
		if (*n == cap)
			*seqs = xrealloc(*seqs, (cap = cap ? 2 * cap : 16) * sizeof(**seqs));
		(*seqs)[(*n)++] = v;
	}
	closedir(d);
	if (*n > 1)
		qsort(*seqs, *n, sizeof(**seqs), qseg_cmp);
	return 0;
}

/* qseg_scan_all - rebuild the index from every segment (at open) */
int qseg_scan_all(struct queue *q, struct buf *err)
{
	uint64_t *seqs;
	size_t n;

	if (qseg_list(q, &seqs, &n, err) < 0)
		return -1;
	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < n; i++)
		qseg_scan(q, seqs[i], i + 1 == n);
	q->next_seq = n > 0 ? seqs[n - 1] + 1 : 1;
	pthread_mutex_unlock(&q->lock);
	free(seqs);
	return 0;
}
