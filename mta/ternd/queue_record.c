/* queue_record.c - the queue's record codec: record header/trailer with
 * CRC32C, message payloads (envelope + content) and their decoding.
 *
 * Record: "TRCD", type, qid length, 2 zero bytes, qid[16], payload length
 * (u32), CRC32C over the first 28 header bytes and the payload, payload,
 * "TEND". The envelope is a list of typed fields (1-byte tag, base-128
 * length as Postfix's rec_put(), data) so fields can be added later;
 * unknown tags are skipped. Everything read from disk is bounds-checked.
 */
#include "queue_impl.h"

#include "crc32c.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Envelope field tags. */
enum {
	QENV_SENDER = 'S',
	QENV_RCPT = 'R', /* u8 notify, u8 state, varint orcpt length, orcpt, address */
	QENV_RET = 'r',
	QENV_ENVID = 'e',
	QENV_FLAGS = 'f', /* u8: 1 = BODY=8BITMIME, 2 = SMTPUTF8 */
	QENV_ARRIVAL = 'T',
	QENV_ARRIVAL_USEC = 't', /* i64, 0..999999; absent in older records */
	QENV_CLIENT_NAME = 'n',
	QENV_CLIENT_ADDR = 'a',
	QENV_HELO = 'h',
	QENV_PROTOCOL = 'p',
	QENV_SASL_USER = 'u',
	QENV_SIZE = 'z',
	QENV_STATE = 'q', /* u8 enum queue_msg_state */
	QENV_NEXT = 'N',  /* i64 next attempt */
	QENV_REASON = 'W',
	QENV_WARNED = 'd', /* u8 1: a delay warning was sent; absent: none */
	QENV_FILTER = 'x', /* content filter transport:destination; absent: none */
};

void qrec_put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

uint32_t qrec_get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void qrec_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t qrec_get_u64(const unsigned char *p)
{
	return (uint64_t)qrec_get_u32(p) | (uint64_t)qrec_get_u32(p + 4) << 32;
}

/* qrec_qid_ok - Postfix's mail_queue_id_ok() alphabet, bounded length */
int qrec_qid_ok(const char *qid)
{
	size_t n = 0;

	if (qid == NULL)
		return 0;
	for (; qid[n] != '\0'; n++)
		if (n >= QREC_QID_MAX || !(isalnum((unsigned char)qid[n]) || qid[n] == '_'))
			return 0;
	return n > 0;
}

static void qrec_header_fill(unsigned char *h, int type, const char *qid, size_t len)
{
	size_t qlen = strlen(qid);

	memset(h, 0, QREC_HDR_SIZE);
	memcpy(h, QREC_MAGIC, 4);
	h[4] = (unsigned char)type;
	h[5] = (unsigned char)qlen;
	memcpy(h + 8, qid, qlen);
	qrec_put_u32(h + 24, (uint32_t)len);
}

/* qrec_encode - append one complete record */
void qrec_encode(struct buf *out, int type, const char *qid, const void *payload, size_t len)
{
	unsigned char h[QREC_HDR_SIZE];
	uint32_t crc;

	qrec_header_fill(h, type, qid, len);
	crc = crc32c(crc32c(0, h, 28), payload, len);
	qrec_put_u32(h + 28, crc);
	buf_reserve(out, QREC_HDR_SIZE + len + QREC_TRAILER_SIZE);
	buf_append(out, h, QREC_HDR_SIZE);
	buf_append(out, payload, len);
	buf_append(out, QREC_END, QREC_TRAILER_SIZE);
}

static void qenv_put_varint(struct buf *b, size_t n)
{
	do {
		buf_putc(b, (int)((n & 0x7f) | (n > 0x7f ? 0x80 : 0)));
		n >>= 7;
	} while (n > 0);
}

static void qenv_put(struct buf *b, int tag, const void *data, size_t len)
{
	buf_putc(b, tag);
	qenv_put_varint(b, len);
	buf_append(b, data, len);
}

static void qenv_put_str(struct buf *b, int tag, const char *s)
{
	if (s != NULL)
		qenv_put(b, tag, s, strlen(s));
}

static void qenv_put_i64(struct buf *b, int tag, int64_t v)
{
	unsigned char p[8];

	qrec_put_u64(p, (uint64_t)v);
	qenv_put(b, tag, p, 8);
}

static void qenv_put_rcpt(struct buf *b, struct buf *tmp, const struct queue_rcpt *r)
{
	size_t olen = r->orcpt ? strlen(r->orcpt) : 0;

	buf_reset(tmp);
	buf_putc(tmp, r->notify & 0xff);
	buf_putc(tmp, (int)r->state);
	qenv_put_varint(tmp, olen);
	buf_append(tmp, r->orcpt ? r->orcpt : "", olen);
	buf_puts(tmp, r->addr);
	qenv_put(b, QENV_RCPT, tmp->data, tmp->len);
}

static void qenv_encode(struct buf *b, const struct queue_env *env, const struct qrec_state *st,
			size_t clen)
{
	struct buf tmp = BUF_INIT;
	unsigned char flags = (env->body_8bit ? 1 : 0) | (env->smtputf8 ? 2 : 0);

	qenv_put_str(b, QENV_SENDER, env->sender ? env->sender : "");
	for (size_t i = 0; i < env->nrcpt; i++)
		qenv_put_rcpt(b, &tmp, &env->rcpt[i]);
	qenv_put_str(b, QENV_RET, env->ret);
	qenv_put_str(b, QENV_ENVID, env->envid);
	qenv_put(b, QENV_FLAGS, &flags, 1);
	qenv_put_i64(b, QENV_ARRIVAL, (int64_t)env->arrival);
	qenv_put_i64(b, QENV_ARRIVAL_USEC, (int64_t)env->arrival_usec);
	qenv_put_str(b, QENV_CLIENT_NAME, env->client_name);
	qenv_put_str(b, QENV_CLIENT_ADDR, env->client_addr);
	qenv_put_str(b, QENV_HELO, env->helo);
	qenv_put_str(b, QENV_PROTOCOL, env->protocol);
	qenv_put_str(b, QENV_SASL_USER, env->sasl_username);
	qenv_put_str(b, QENV_FILTER, env->filter);
	qenv_put_i64(b, QENV_SIZE, (int64_t)clen);
	flags = (unsigned char)st->state;
	qenv_put(b, QENV_STATE, &flags, 1);
	qenv_put_i64(b, QENV_NEXT, (int64_t)st->next_attempt);
	qenv_put_str(b, QENV_REASON, st->reason);
	if (st->warned) {
		flags = 1;
		qenv_put(b, QENV_WARNED, &flags, 1);
	}
	buf_free(&tmp);
}

/* qrec_encode_message - payload = u32 envelope length, envelope, content */
void qrec_encode_message(struct buf *out, const char *qid, const struct queue_env *env,
			 const struct qrec_state *st, const char *content, size_t len)
{
	struct buf pl = BUF_INIT;
	unsigned char n[4];

	buf_append(&pl, "\0\0\0\0", 4);
	qenv_encode(&pl, env, st, len);
	qrec_put_u32(n, (uint32_t)(pl.len - 4));
	memcpy(pl.data, n, 4);
	buf_reserve(&pl, len);
	buf_append(&pl, content, len);
	qrec_encode(out, QREC_MESSAGE, qid, pl.data, pl.len);
	buf_free(&pl);
}

/* qrec_decode - validate one record at p (see queue_impl.h for results) */
int qrec_decode(const unsigned char *p, size_t avail, struct qrec *rec, size_t *reclen,
		struct buf *err)
{
	uint32_t len, crc;
	static const unsigned char zero[QREC_HDR_SIZE];

	if (avail < QREC_HDR_SIZE)
		return avail == 0 || memcmp(p, zero, avail) == 0
			   ? 0
			   : (buf_set(err, "short record header"), -1);
	if (memcmp(p, zero, QREC_HDR_SIZE) == 0)
		return 0; /* preallocated or never-written space: a clean end */
	if (memcmp(p, QREC_MAGIC, 4) != 0)
		return buf_set(err, "bad record magic"), -1;
	len = qrec_get_u32(p + 24);
	if (p[5] == 0 || p[5] > QREC_QID_MAX || len > QREC_PAYLOAD_MAX)
		return buf_set(err, "bad record header"), -1;
	if (avail - QREC_HDR_SIZE < (size_t)len + QREC_TRAILER_SIZE)
		return buf_printf(err, "record truncated (%u payload bytes)", len), -1;
	crc = crc32c(crc32c(0, p, 28), p + QREC_HDR_SIZE, len);
	if (crc != qrec_get_u32(p + 28))
		return buf_set(err, "record checksum mismatch"), -1;
	if (memcmp(p + QREC_HDR_SIZE + len, QREC_END, QREC_TRAILER_SIZE) != 0)
		return buf_set(err, "missing record end marker"), -1;
	rec->type = p[4];
	memcpy(rec->qid, p + 8, p[5]);
	rec->qid[p[5]] = '\0';
	if (!qrec_qid_ok(rec->qid))
		return buf_set(err, "bad queue ID in record"), -1;
	rec->payload = p + QREC_HDR_SIZE;
	rec->len = len;
	*reclen = QREC_HDR_SIZE + (size_t)len + QREC_TRAILER_SIZE;
	return 1;
}

/* Envelope field reader over [p, end). */
struct qenv_reader {
	const unsigned char *p, *end;
};

static int qenv_get_varint(struct qenv_reader *r, size_t *n)
{
	size_t v = 0;

	for (int shift = 0; shift < 35; shift += 7) {
		if (r->p >= r->end)
			return -1;
		v |= (size_t)(*r->p & 0x7f) << shift;
		if ((*r->p++ & 0x80) == 0) {
			*n = v;
			return 0;
		}
	}
	return -1;
}

static char *qenv_str(const unsigned char *p, size_t len)
{
	if (memchr(p, '\0', len) != NULL)
		return NULL;
	return xstrndup((const char *)p, len);
}

static int64_t qenv_i64(const unsigned char *p, size_t len)
{
	return len == 8 ? (int64_t)qrec_get_u64(p) : 0;
}

static int qenv_decode_rcpt(struct queue_env *env, const unsigned char *p, size_t len)
{
	struct qenv_reader r = {p + 2, p + len};
	size_t olen;
	char *orcpt = NULL, *addr;
	int ok = -1;

	if (len < 3 || qenv_get_varint(&r, &olen) < 0 || olen > (size_t)(r.end - r.p))
		return -1;
	if (olen > 0 && (orcpt = qenv_str(r.p, olen)) == NULL)
		return -1;
	r.p += olen;
	if ((addr = qenv_str(r.p, (size_t)(r.end - r.p))) != NULL && p[1] <= QUEUE_RCPT_BOUNCED) {
		queue_env_add_rcpt(env, addr, orcpt, p[0]);
		env->rcpt[env->nrcpt - 1].state = (enum queue_rcpt_state)p[1];
		ok = 0;
	}
	free(addr);
	free(orcpt);
	return ok;
}

/* qenv_decode_str - the string fields, by tag; 1 if tag is not one */
static int qenv_decode_str(struct queue_env *env, struct buf *reason, int tag,
			   const unsigned char *p, size_t len)
{
	char **dst = NULL, *s;

	switch (tag) {
	case QENV_SENDER:
		dst = &env->sender;
		break;
	case QENV_RET:
		dst = &env->ret;
		break;
	case QENV_ENVID:
		dst = &env->envid;
		break;
	case QENV_CLIENT_NAME:
		dst = &env->client_name;
		break;
	case QENV_CLIENT_ADDR:
		dst = &env->client_addr;
		break;
	case QENV_HELO:
		dst = &env->helo;
		break;
	case QENV_PROTOCOL:
		dst = &env->protocol;
		break;
	case QENV_SASL_USER:
		dst = &env->sasl_username;
		break;
	case QENV_FILTER:
		dst = &env->filter;
		break;
	case QENV_REASON:
		break;
	default:
		return 1;
	}
	if ((s = qenv_str(p, len)) == NULL)
		return -1;
	if (dst == NULL) {
		buf_set(reason, s);
		free(s);
	} else {
		free(*dst);
		*dst = s;
	}
	return 0;
}

static int qenv_decode_field(struct queue_env *env, struct qrec_state *st, struct buf *reason,
			     int tag, const unsigned char *p, size_t len)
{
	int rc = qenv_decode_str(env, reason, tag, p, len);

	if (rc <= 0)
		return rc;
	switch (tag) {
	case QENV_RCPT:
		return qenv_decode_rcpt(env, p, len);
	case QENV_FLAGS:
		env->body_8bit = len > 0 && (p[0] & 1);
		env->smtputf8 = len > 0 && (p[0] & 2);
		break;
	case QENV_ARRIVAL:
		env->arrival = (time_t)qenv_i64(p, len);
		break;
	case QENV_ARRIVAL_USEC: {
		int64_t us = qenv_i64(p, len);
		env->arrival_usec = us >= 0 && us < 1000000 ? (long)us : 0;
		break;
	}
	case QENV_SIZE:
		env->size = (size_t)qenv_i64(p, len);
		break;
	case QENV_NEXT:
		st->next_attempt = (time_t)qenv_i64(p, len);
		break;
	case QENV_STATE:
		if (len != 1 || p[0] > QUEUE_STATE_HOLD)
			return -1;
		st->state = (enum queue_msg_state)p[0];
		break;
	case QENV_WARNED:
		st->warned = len == 1 && p[0] == 1;
		break;
	default:
		break; /* a field from a newer version: skip it */
	}
	return 0;
}

/* qrec_decode_message - envelope into env (initialised by the caller) */
int qrec_decode_message(const struct qrec *rec, struct queue_env *env, struct qrec_state *st,
			struct buf *reason, const unsigned char **content, size_t *clen,
			struct buf *err)
{
	struct qenv_reader r;
	uint32_t elen;
	size_t flen;
	int tag;

	st->state = QUEUE_STATE_ACTIVE, st->next_attempt = 0, st->reason = NULL, st->warned = 0;
	buf_reset(reason);
	if (rec->type != QREC_MESSAGE || rec->len < 4 ||
	    (elen = qrec_get_u32(rec->payload)) > rec->len - 4)
		return buf_set(err, "bad message record"), -1;
	r.p = rec->payload + 4, r.end = r.p + elen;
	while (r.p < r.end) {
		tag = *r.p++;
		if (qenv_get_varint(&r, &flen) < 0 || flen > (size_t)(r.end - r.p) ||
		    qenv_decode_field(env, st, reason, tag, r.p, flen) < 0)
			return buf_printf(err, "bad envelope field '%c'", tag), -1;
		r.p += flen;
	}
	if (env->sender == NULL || env->nrcpt == 0)
		return buf_set(err, "envelope without sender or recipients"), -1;
	*content = rec->payload + 4 + elen;
	*clen = rec->len - 4 - elen;
	if (reason->len > 0)
		st->reason = buf_str(reason);
	return 0;
}
