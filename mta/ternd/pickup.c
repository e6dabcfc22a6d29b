/* pickup.c - move locally submitted mail from maildrop/ into the queue
 * (pickup.h), as Postfix's pickup(8): at start, on inotify events and
 * every PICKUP_RESCAN seconds as a fallback.
 *
 * One file at a time: read and check it (maildrop is writable by every
 * local user, so its files are hostile input: no symlinks, hard links,
 * FIFOs or oversized files; the uid is the file's owner, never what the
 * file claims), prepend Postfix's pickup Received: header, queue_submit(),
 * and unlink the file only in the QUEUE_OK callback: a crash in between
 * duplicates, never loses. Bad files are moved to corrupt/ with a warning.
 */
#include "pickup.h"
#include "smtpd.h"
#include "smtpd_milter.h"
#include "addr.h"
#include "log.h"
#include "maildate.h"
#include "queue.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PICKUP_RESCAN 60	 /* seconds between fallback scans */
#define PICKUP_STALE (24 * 3600) /* sendmail temp files older than this are removed */
#define PICKUP_HEAD_MAX 65536	 /* name=value line bound (attr.h strings are 8 KiB) */

struct pickup_names {
	char **v;
	size_t n, cap, pos;
};

struct pickup {
	struct event_base *base;
	struct queue *q;
	char *dir, *corrupt_dir;
	struct buf hostname, origin, mail_name;
	size_t size_limit;
	struct smtpd_conf *bcc; /* automatic BCC settings (global; replaced on reload) */
	void (*queued)(void *arg, const char *qid);
	void *arg;
	int inotify_fd;
	struct event *ev_notify, *ev_timer, *ev_kick;
	pthread_mutex_t lock;
	int busy, rescan, stopping;
	struct pickup_names names;
	/* The message being committed. */
	struct queue_env env;
	struct buf content, path, sender_raw, msgid;
	unsigned uid;
	/* non_smtpd_milters: a verdict that came before smtpd_milter_local() returned */
	int milter_sync, milter_ready;
	enum milter_local_verdict milter_verdict;
	struct buf milter_reply;
	char qid[QUEUE_ID_SIZE];
};

static void pickup_next(struct pickup *p);
static void pickup_free(struct pickup *p);

static void pickup_names_clear(struct pickup_names *n)
{
	for (size_t i = 0; i < n->n; i++)
		free(n->v[i]);
	n->n = n->pos = 0;
}

static int pickup_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A sendmail temp file ".NAME" left by a crashed sendmail. */
static void pickup_stale_remove(struct pickup *p, int dfd, const char *name)
{
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_mtime + PICKUP_STALE < time(NULL) && unlinkat(dfd, name, 0) == 0)
		msg_warn("%s/%s: removed stale temporary file", p->dir, name);
}

/* List the maildrop in name (= submission time) order. */
static void pickup_scan(struct pickup *p)
{
	DIR *d = opendir(p->dir);
	struct dirent *de;
	struct pickup_names *n = &p->names;

	pickup_names_clear(n);
	if (d == NULL) {
		msg_warn("open directory %s: %s", p->dir, strerror(errno));
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.') {
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				pickup_stale_remove(p, dirfd(d), de->d_name);
			continue;
		}
		if (n->n == n->cap) {
			n->cap = n->cap ? n->cap * 2 : 32;
			n->v = xrealloc(n->v, n->cap * sizeof(*n->v));
		}
		n->v[n->n++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (n->n > 1)
		qsort(n->v, n->n, sizeof(*n->v), pickup_name_cmp);
}

static void pickup_corrupt(struct pickup *p, const char *name, const char *why)
{
	struct buf from = BUF_INIT, to = BUF_INIT;

	buf_printf(&from, "%s/%s", p->dir, name);
	buf_printf(&to, "%s/%s", p->corrupt_dir, name);
	if (mkdir(p->corrupt_dir, 0700) < 0 && errno != EEXIST)
		msg_warn("create directory %s: %s", p->corrupt_dir, strerror(errno));
	if (rename(from.data, to.data) == 0)
		msg_warn("%s: %s -- moved to %s", from.data, why, to.data);
	else if (unlink(from.data) == 0)
		msg_warn("%s: %s -- removed (cannot move it: %s)", from.data, why, strerror(errno));
	else
		msg_warn("%s: %s -- cannot move or remove it: %s", from.data, why, strerror(errno));
	buf_free(&from);
	buf_free(&to);
}

/* Read the file, refusing what a local user must not be able to feed
 * us. 1 ok, 0 gone (picked up already), -1 bad content (why set: set
 * aside), -2 a system error (why set: the file stays for the next scan —
 * sendmail already told the user it was accepted, so EMFILE or EIO here
 * must never cost the message). */
static int pickup_file_read(struct pickup *p, const char *path, struct buf *data, unsigned *uid,
			    struct buf *why)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	char chunk[65536];
	ssize_t n;
	int rc = -1;

	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0) {
		buf_printf(why, "open: %s", strerror(errno));
		return errno == ELOOP ? -1 : -2; /* ELOOP: a symlink (O_NOFOLLOW) */
	}
	if (fstat(fd, &st) < 0) {
		buf_printf(why, "fstat: %s", strerror(errno));
		rc = -2;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
		buf_puts(why, "not a regular file with one link");
		goto out;
	}
	if (p->size_limit && (size_t)st.st_size > p->size_limit + PICKUP_HEAD_MAX * 4) {
		buf_puts(why, "message file too big");
		goto out;
	}
	*uid = (unsigned)st.st_uid;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		buf_append(data, chunk, (size_t)n);
		if (data->len > (size_t)st.st_size) { /* still being written to */
			buf_puts(why, "file changed while read");
			goto out;
		}
	}
	if (n < 0) {
		buf_printf(why, "read: %s", strerror(errno));
		rc = -2;
	} else {
		rc = 1;
	}
out:
	close(fd);
	return rc;
}

/* Qualify an address with $myorigin (Postfix: append_at_myorigin). */
static int pickup_addr(struct pickup *p, const char *raw, struct buf *out)
{
	struct addr a;
	struct buf err = BUF_INIT;
	int rc = -1;

	addr_init(&a);
	buf_reset(out);
	if (*raw == 0) {
		rc = 0; /* the null sender */
	} else if (addr_parse_mailbox(&a, raw, ADDR_PARSE_SMTPUTF8, &err) == ADDR_OK) {
		addr_qualify(&a, p->origin.data);
		addr_format_plain(&a, out);
		rc = 0;
	}
	addr_free(&a);
	buf_free(&err);
	return rc;
}

/* One "name=value" envelope line into the envelope. */
static int pickup_env_line(struct pickup *p, const char *line, int *have_sender, struct buf *why)
{
	const char *eq = strchr(line, '=');
	struct buf addr = BUF_INIT;
	int rc = 0;

	if (eq == NULL) {
		buf_puts(why, "malformed envelope line");
		return -1;
	}
	if (strncmp(line, "sender=", 7) == 0 && !*have_sender) {
		buf_set(&p->sender_raw, eq + 1);
		if ((rc = pickup_addr(p, eq + 1, &addr)) == 0) {
			free(p->env.sender);
			p->env.sender = buf_detach(&addr);
			*have_sender = 1;
		}
	} else if (strncmp(line, "rcpt=", 5) == 0) {
		if ((rc = pickup_addr(p, eq + 1, &addr)) == 0)
			queue_env_add_rcpt(&p->env, addr.data, NULL, 0);
	} else if (strncmp(line, "uid=", 4) && strncmp(line, "fullname=", 9)) {
		rc = -1; /* uid is taken from the file owner; fullname is informational */
	}
	if (rc < 0 && why->len == 0)
		buf_printf(why, "bad envelope line \"%.100s\"", line);
	buf_free(&addr);
	return rc;
}

/* Parse "MAGIC\n" + name=value lines + "\n" + content; *body set to
 * the content's offset. 0 ok, -1 (why set). */
static int pickup_parse(struct pickup *p, const struct buf *data, size_t *body, struct buf *why)
{
	const char *s = data->data, *end = data->data + data->len, *nl;
	size_t mlen = strlen(PICKUP_MAGIC);
	int have_sender = 0;
	struct buf line = BUF_INIT;
	int rc = -1;

	if (data->len <= mlen || memcmp(s, PICKUP_MAGIC "\n", mlen + 1) != 0) {
		buf_puts(why, "not a maildrop file");
		return -1;
	}
	for (s += mlen + 1; s < end && *s != '\n'; s = nl + 1) {
		if ((nl = memchr(s, '\n', (size_t)(end - s))) == NULL || nl - s > PICKUP_HEAD_MAX ||
		    memchr(s, 0, (size_t)(nl - s)) != NULL) {
			buf_puts(why, "malformed envelope");
			goto out;
		}
		buf_reset(&line);
		buf_append(&line, s, (size_t)(nl - s));
		if (pickup_env_line(p, line.data, &have_sender, why) < 0)
			goto out;
	}
	if (s >= end || !have_sender || p->env.nrcpt == 0) {
		buf_puts(why, s >= end ? "no message content" : "no sender or no recipients");
		goto out;
	}
	*body = (size_t)(s + 1 - data->data);
	rc = 0;
out:
	buf_free(&line);
	return rc;
}

/* The Message-Id: header's value for the "message-id=" log line. */
static void pickup_msgid(const char *c, size_t len, struct buf *out)
{
	const char *end = c + len, *nl;

	buf_reset(out);
	for (const char *s = c; s < end && *s != '\n'; s = nl + 1) {
		if ((nl = memchr(s, '\n', (size_t)(end - s))) == NULL)
			nl = end;
		if ((size_t)(nl - s) > 11 && strncasecmp(s, "Message-Id:", 11) == 0) {
			buf_append(out, s + 11, (size_t)(nl - s - 11));
			buf_trim(out);
			return;
		}
	}
}

/* Envelope and content for queue_submit() from the file's bytes. */
static void pickup_build(struct pickup *p, const struct buf *data, size_t body)
{
	const char *c = data->data + body;
	size_t len = data->len - body;

	struct timeval tv;
	gettimeofday(&tv, NULL);
	p->env.arrival = tv.tv_sec;
	p->env.arrival_usec = (long)tv.tv_usec;
	p->env.client_name = xstrdup("localhost");
	p->env.client_addr = xstrdup("127.0.0.1");
	p->env.helo = xstrdup("");
	p->env.protocol = xstrdup("local");
	for (size_t i = 0; i < len && !p->env.body_8bit; i++)
		p->env.body_8bit = (unsigned char)c[i] >= 0x80;
	for (size_t i = 0; i < p->env.nrcpt; i++)
		for (const char *a = p->env.rcpt[i].addr; *a; a++)
			p->env.smtputf8 |= (unsigned char)*a >= 0x80;
	buf_reset(&p->content);
	buf_printf(&p->content, "Received: by %s (%s, from userid %u)\n\tid %s; ", p->hostname.data,
		   p->mail_name.data, p->uid, p->qid);
	mail_date(p->env.arrival, &p->content);
	buf_putc(&p->content, '\n');
	buf_append(&p->content, c, len);
	p->env.size = p->content.len;
	pickup_msgid(c, len, &p->msgid);
}

/* A file is dealt with (called locked; unlocks): the next one, or the
 * end of a pickup_stop() that waited for it. */
static void pickup_file_done(struct pickup *p)
{
	p->busy = 0;
	if (p->stopping) {
		pthread_mutex_unlock(&p->lock);
		pickup_free(p);
		return;
	}
	pickup_next(p);
	pthread_mutex_unlock(&p->lock);
}

static void pickup_commit_done(void *arg, enum queue_status status, const char *qid)
{
	struct pickup *p = arg;

	pthread_mutex_lock(&p->lock);
	if (status == QUEUE_OK) {
		if (unlink(p->path.data) < 0 && errno != ENOENT)
			msg_warn("remove %s: %s", p->path.data, strerror(errno));
		const char *prev = log_swap_service("pickup");
		msg_qid(qid, "uid=%u from=<%s>", p->uid, p->sender_raw.data);
		log_thread_service("cleanup");
		msg_qid(qid, "message-id=%s", p->msgid.len ? p->msgid.data : "<>");
		log_thread_service(prev);
		if (p->queued && !p->stopping)
			p->queued(p->arg, qid);
	} else {
		/* Keep the file: the next scan tries again. */
		msg_warn("%s: cannot queue %s: %s", qid, p->path.data, queue_strerror(status));
		p->names.pos = p->names.n;
	}
	queue_env_free(&p->env);
	queue_env_init(&p->env);
	pickup_file_done(p);
}

/* Into the queue (with the automatic BCC, content_filter, or the error
 * transport for bounce): 1 submitted (wait for the callback), 0 not. */
static int pickup_submit(struct pickup *p, const char *bounce)
{
	/* Automatic BCC, as for SMTP mail (Postfix: cleanup, all mail); a
	 * map that fails leaves the file for the next scan. */
	if (p->bcc != NULL)
		smtpd_filter_set(p->bcc, NULL, &p->env); /* content_filter */
	if (p->bcc != NULL && smtpd_bcc_auto(p->bcc, &p->env, p->qid) < 0) {
		msg_warn("%s: automatic BCC lookup failed -- will try again", p->path.data);
		return 0;
	}
	if (bounce != NULL) { /* returned to the sender by the error transport */
		free(p->env.filter);
		p->env.filter = xstrdup(bounce);
	}
	p->env.size = p->content.len; /* after the milters' edits */
	p->busy = 1;
	queue_submit(p->q, p->qid, &p->env, p->content.data, p->content.len, p->base,
		     pickup_commit_done, p);
	return 1;
}

/* "550-5.7.1 one\r\n550 5.7.1 two" -> "5.7.1 one two": the reason the
 * error transport bounces with (its DSN code first, as error(8) takes it). */
static void pickup_reply_text(const char *reply, struct buf *out)
{
	for (int first = 1; *reply; first = 0) {
		size_t n = strcspn(reply, "\r\n"), skip = 0;
		if (n >= 4 && isdigit((unsigned char)reply[0]) && (reply[3] == ' ' || reply[3] == '-'))
			skip = 4;
		if (!first) { /* the DSN code again: once is enough */
			size_t d = strspn(reply + skip, "0123456789.");
			if (d > 0 && d < n - skip && reply[skip + d] == ' ')
				skip += d + 1;
			buf_putc(out, ' ');
		}
		buf_append(out, reply + skip, n > skip ? n - skip : 0);
		reply += n;
		reply += strspn(reply, "\r\n");
	}
}

/* What non_smtpd_milters decided: 1 submitted, 0 done with the file. */
static int pickup_verdict(struct pickup *p, enum milter_local_verdict v, const char *reply)
{
	struct buf filter = BUF_INIT;
	int rc = 0;

	switch (v) {
	case MILTER_LOCAL_ACCEPT:
		return pickup_submit(p, NULL);
	case MILTER_LOCAL_BOUNCE:
		/* Postfix bounces local mail a milter rejects (the sender is
		 * told); error:5.7.1 text, the reply's lines joined */
		buf_puts(&filter, "error:");
		pickup_reply_text(reply, &filter);
		rc = pickup_submit(p, buf_str(&filter));
		buf_free(&filter);
		return rc;
	case MILTER_LOCAL_DISCARD: /* logged as milter-discard */
		if (unlink(p->path.data) < 0 && errno != ENOENT)
			msg_warn("remove %s: %s", p->path.data, strerror(errno));
		break;
	case MILTER_LOCAL_RETRY:
		msg_warn("%s: %s: non_smtpd_milters: %s -- will try again", p->qid, p->path.data,
			 reply);
		break;
	}
	queue_env_free(&p->env);
	queue_env_init(&p->env);
	return 0;
}

static void pickup_milter_done(void *arg, enum milter_local_verdict v, const char *reply)
{
	struct pickup *p = arg;

	if (p->milter_sync) { /* within pickup_file(): it carries on */
		p->milter_ready = 1;
		p->milter_verdict = v;
		buf_set(&p->milter_reply, reply);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (pickup_verdict(p, v, reply)) { /* pickup_commit_done() goes on */
		pthread_mutex_unlock(&p->lock);
		return;
	}
	pickup_file_done(p);
}

/* Take one file: 1 submitted (wait for the callback), 0 skipped. */
static int pickup_file(struct pickup *p, const char *name)
{
	struct buf data = BUF_INIT, why = BUF_INIT;
	size_t body = 0;
	int rc;

	buf_reset(&p->path);
	buf_printf(&p->path, "%s/%s", p->dir, name);
	queue_env_free(&p->env);
	queue_env_init(&p->env);
	rc = pickup_file_read(p, p->path.data, &data, &p->uid, &why);
	if (rc > 0 && pickup_parse(p, &data, &body, &why) < 0)
		rc = -1;
	if (rc == -2)
		msg_warn("%s: %s -- will try again", p->path.data, why.data);
	else if (rc < 0)
		pickup_corrupt(p, name, why.data);
	if (rc > 0) {
		queue_id_new(p->q, p->qid);
		pickup_build(p, &data, body);
		/* non_smtpd_milters first: they see the recipients as given */
		p->milter_sync = 1;
		p->milter_ready = 0;
		if (p->bcc != NULL &&
		    smtpd_milter_local(p->base, p->bcc, p->qid, &p->env, &p->content,
				       pickup_milter_done, p)) {
			p->milter_sync = 0;
			if (p->milter_ready) /* answered without waiting */
				rc = pickup_verdict(p, p->milter_verdict, buf_str(&p->milter_reply));
			else
				p->busy = 1; /* pickup_milter_done() goes on */
		} else {
			p->milter_sync = 0;
			rc = pickup_submit(p, NULL);
		}
	}
	buf_free(&data);
	buf_free(&why);
	return rc > 0;
}

static void pickup_next(struct pickup *p)
{
	while (p->names.pos < p->names.n)
		if (pickup_file(p, p->names.v[p->names.pos++]))
			return;
	if (p->rescan) {
		p->rescan = 0;
		pickup_scan(p);
		if (p->names.n > 0)
			pickup_next(p);
	}
}

/* Every trigger ends here: scan unless a commit is in flight. */
static void pickup_kick(evutil_socket_t fd, short what, void *arg)
{
	struct pickup *p = arg;

	pthread_mutex_lock(&p->lock);
	if (p->busy) {
		p->rescan = 1;
	} else if (!p->stopping) {
		pickup_scan(p);
		pickup_next(p);
	}
	pthread_mutex_unlock(&p->lock);
}

static void pickup_inotify(evutil_socket_t fd, short what, void *arg)
{
	char ev[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	while (read(fd, ev, sizeof(ev)) > 0)
		; /* drain: which file changed does not matter, the scan sees all */
	pickup_kick(fd, what, arg);
}

static int pickup_config(struct pickup *p, struct cfg *cfg, struct buf *err)
{
	long long limit;

	if (cfg_get_str(cfg, NULL, "myhostname", &p->hostname, err) < 0 ||
	    cfg_get_str(cfg, NULL, "myorigin", &p->origin, err) < 0 ||
	    cfg_get_str(cfg, NULL, "mail_name", &p->mail_name, err) < 0 ||
	    cfg_get_size(cfg, NULL, "message_size_limit", &limit, err) < 0 ||
	    (p->bcc = smtpd_conf_new(cfg, NULL, err)) == NULL)
		return -1;
	p->size_limit = (size_t)limit;
	return 0;
}

int pickup_reload(struct pickup *p, struct cfg *cfg, struct buf *err)
{
	struct smtpd_conf *c = smtpd_conf_new(cfg, NULL, err), *old;

	if (c == NULL)
		return -1;
	pthread_mutex_lock(&p->lock);
	old = p->bcc;
	p->bcc = c;
	pthread_mutex_unlock(&p->lock);
	smtpd_conf_unref(old);
	return 0;
}

/* maildrop is mode 1733 (Postfix's is 730 with a setgid postdrop; Tern
 * has no setgid helper): anyone may create, only we may list or remove. */
static int pickup_dir_setup(struct pickup *p, struct buf *err)
{
	struct buf parent = BUF_INIT;
	char *slash;

	if (mkdir(p->dir, 01733) < 0 && errno != EEXIST) {
		buf_printf(err, "create directory %s: %s", p->dir, strerror(errno));
		return -1;
	}
	if (chmod(p->dir, 01733) < 0)
		msg_warn("chmod %s: %s", p->dir, strerror(errno));
	buf_set(&parent, p->dir);
	if ((slash = strrchr(parent.data, '/')) != NULL)
		buf_truncate(&parent, (size_t)(slash - parent.data));
	else
		buf_set(&parent, ".");
	buf_puts(&parent, "/corrupt");
	p->corrupt_dir = buf_detach(&parent);
	return 0;
}

static int pickup_events(struct pickup *p, struct buf *err)
{
	struct timeval rescan = {PICKUP_RESCAN, 0}, now = {0, 0};

	p->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (p->inotify_fd < 0 ||
	    inotify_add_watch(p->inotify_fd, p->dir, IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
		msg_warn("inotify on %s: %s (scanning every %d s)", p->dir, strerror(errno),
			 PICKUP_RESCAN);
	} else {
		p->ev_notify =
		    event_new(p->base, p->inotify_fd, EV_READ | EV_PERSIST, pickup_inotify, p);
	}
	p->ev_timer = event_new(p->base, -1, EV_PERSIST, pickup_kick, p);
	p->ev_kick = event_new(p->base, -1, 0, pickup_kick, p);
	if (p->ev_timer == NULL || p->ev_kick == NULL ||
	    (p->ev_notify && event_add(p->ev_notify, NULL) < 0) ||
	    event_add(p->ev_timer, &rescan) < 0 || event_add(p->ev_kick, &now) < 0) {
		buf_puts(err, "pickup: cannot set up events");
		return -1;
	}
	return 0;
}

struct pickup *pickup_start(struct event_base *base, struct queue *q, struct cfg *cfg,
			    const char *maildrop_dir, void (*queued)(void *arg, const char *qid),
			    void *arg, struct buf *err)
{
	struct pickup *p = xcalloc(1, sizeof(*p));
	pthread_mutexattr_t ma;

	p->base = base;
	p->q = q;
	p->dir = xstrdup(maildrop_dir);
	p->queued = queued;
	p->arg = arg;
	p->inotify_fd = -1;

	/* Recursive: queue_submit() may call back before it returns. */
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&p->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	queue_env_init(&p->env);
	if (pickup_config(p, cfg, err) < 0 || pickup_dir_setup(p, err) < 0 ||
	    pickup_events(p, err) < 0) {
		pickup_stop(p);
		return NULL;
	}
	return p;
}

static void pickup_free(struct pickup *p)
{
	pickup_names_clear(&p->names);
	free(p->names.v);
	queue_env_free(&p->env);
	buf_free(&p->content);
	buf_free(&p->path);
	buf_free(&p->sender_raw);
	buf_free(&p->msgid);
	buf_free(&p->milter_reply);
	buf_free(&p->hostname);
	buf_free(&p->origin);
	buf_free(&p->mail_name);
	free(p->dir);
	free(p->corrupt_dir);
	smtpd_conf_unref(p->bcc);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* Events go first (event_free waits for a running callback when called
 * from another thread); the lock waits for a running commit callback; a
 * commit still in flight frees p in its callback, so the queue never
 * calls back into freed memory. */
void pickup_stop(struct pickup *p)
{
	int busy;

	if (p == NULL)
		return;
	if (p->ev_notify)
		event_free(p->ev_notify);
	if (p->ev_timer)
		event_free(p->ev_timer);
	if (p->ev_kick)
		event_free(p->ev_kick);
	p->ev_notify = p->ev_timer = p->ev_kick = NULL;
	if (p->inotify_fd >= 0)
		close(p->inotify_fd);
	p->inotify_fd = -1;
	pthread_mutex_lock(&p->lock);
	busy = p->busy;
	p->stopping = 1;
	pthread_mutex_unlock(&p->lock);
	if (!busy)
		pickup_free(p);
}
