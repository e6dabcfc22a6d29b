/* rules_mime.c - walk a message body the way Postfix's cleanup does for
 * body_checks, mime_header_checks and nested_header_checks.
 *
 * The body arrives in chunks of any size; it is cut into lines (CRLF or
 * LF). With MIME processing on, multipart boundaries (RFC 2046 §5.1.1) are
 * tracked on a stack: after a boundary line come the part's headers
 * (mime_header_checks), after the headers of a message/rfc822 part the
 * attached message's own headers (nested_header_checks), everything else
 * is body (body_checks). Like Postfix, only lines that start within the
 * first body_limit bytes of a segment (counted from the empty line ending
 * its headers, one byte per line end) are inspected, and a line longer
 * than line_limit is inspected in pieces. When a rule edits part of the body the whole body
 * is rebuilt in out for smfi_replacebody(); an unedited body is not.
 */
#define _GNU_SOURCE /* strcasestr */
#include "rules_milter.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { RULES_M_BODY, RULES_M_HEADERS };

#define RULES_BOUNDS_MAX 32 /* Postfix's mime_nesting_limit is 100; 32 is plenty */

void rules_mime_init(struct rules_mime *m)
{
	memset(m, 0, sizeof(*m));
	buf_init(&m->partial);
	buf_init(&m->hdr);
	buf_init(&m->hdr_raw);
	buf_init(&m->out);
}

void rules_mime_free(struct rules_mime *m)
{
	for (size_t i = 0; i < m->nbounds; i++)
		free(m->bounds[i]);
	free(m->bounds);
	free(m->ctype);
	buf_free(&m->partial);
	buf_free(&m->hdr);
	buf_free(&m->hdr_raw);
	buf_free(&m->out);
	m->bounds = NULL;
	m->nbounds = 0;
	m->ctype = NULL;
}

int rules_mime_header_name(const char *name, size_t len)
{
	return (len > 8 && strncasecmp(name, "Content-", 8) == 0) ||
	       (len == 12 && strncasecmp(name, "MIME-Version", 12) == 0);
}

/* The boundary parameter of a multipart Content-Type, or NULL; *rfc822
 * set for message/rfc822. */
static char *rules_mime_ctype(const char *ct, int *rfc822)
{
	const char *p = ct, *b;
	struct buf v = BUF_INIT;

	*rfc822 = 0;
	while (isspace((unsigned char)*p))
		p++;
	if (strncasecmp(p, "message/rfc822", 14) == 0) {
		*rfc822 = 1;
		return NULL;
	}
	if (strncasecmp(p, "multipart/", 10) != 0)
		return NULL;
	for (b = p; (b = strcasestr(b, "boundary")) != NULL; b += 8) {
		const char *q = b + 8;

		if (b > p && !(b[-1] == ';' || isspace((unsigned char)b[-1])))
			continue;
		while (isspace((unsigned char)*q))
			q++;
		if (*q++ != '=')
			continue;
		while (isspace((unsigned char)*q))
			q++;
		buf_init(&v);
		if (*q == '"') {
			for (q++; *q && *q != '"'; q++)
				buf_putc(&v, *q == '\\' && q[1] ? *++q : *q);
		} else
			for (; *q && *q != ';' && !isspace((unsigned char)*q); q++)
				buf_putc(&v, *q);
		if (v.len > 0 && v.len <= 200) /* RFC 2046: 1..70; be lenient */
			return buf_detach(&v);
		buf_free(&v);
		return NULL;
	}
	return NULL;
}

static void rules_mime_push(struct rules_mime *m, char *bound)
{
	if (bound == NULL)
		return;
	if (m->nbounds >= RULES_BOUNDS_MAX) {
		free(bound);
		return;
	}
	m->bounds = xrealloc(m->bounds, (m->nbounds + 1) * sizeof(char *));
	m->bounds[m->nbounds++] = bound;
}

/* After a header block: what follows depends on its Content-Type. */
static void rules_mime_after_headers(struct rules_mime *m)
{
	int rfc822 = 0;
	char *bound = m->ctype && m->mime ? rules_mime_ctype(m->ctype, &rfc822) : NULL;

	free(m->ctype);
	m->ctype = NULL;
	rules_mime_push(m, bound);
	if (rfc822 && m->mime) {
		m->state = RULES_M_HEADERS;
		m->hdr_class = RULES_NESTED;
	} else
		m->state = RULES_M_BODY;
}

/* Postfix checks the empty line that ends a header block as a body line
 * at offset 0 of the new segment (so body offsets start at 1). A milter
 * never sees the one after the message's own headers, so that one is
 * checked here, for REJECT/DISCARD and logging; edits cannot apply. */
void rules_mime_start(struct rules_mime *m, const char *content_type)
{
	struct buf text = BUF_INIT;

	free(m->ctype);
	m->ctype = content_type ? xstrdup(content_type) : NULL;
	rules_mime_after_headers(m);
	m->seg_bytes = 1;
	buf_init(&text);
	if (m->body_limit != 1 && m->check(m->arg, RULES_BODY, "", 0, &text) == RULES_STOP)
		m->stopped = 1;
	buf_free(&text);
}

static void rules_out(struct rules_mime *m, const char *s, size_t n)
{
	if (m->keep_body)
		buf_append(&m->out, s, n);
}

/* Apply a decision about text to out: keep orig, drop, replace, prepend. */
static void rules_mime_apply(struct rules_mime *m, enum rules_edit e, const struct buf *text,
			     const char *orig, size_t olen, const char *eol)
{
	switch (e) {
	case RULES_STOP:
		m->stopped = 1;
		return;
	case RULES_DROP:
		m->edited = 1;
		return;
	case RULES_REPLACE:
		m->edited = 1;
		rules_out(m, text->data, text->len);
		rules_out(m, eol, strlen(eol));
		return;
	case RULES_PREPEND:
		m->edited = 1;
		rules_out(m, text->data, text->len);
		rules_out(m, "\r\n", 2);
		break;
	case RULES_KEEP:
		break;
	}
	rules_out(m, orig, olen);
}

/* A complete header of a part or attached message. */
static void rules_mime_header_done(struct rules_mime *m)
{
	struct buf text = BUF_INIT;
	const char *h = m->hdr.data;
	size_t nl = strcspn(h, ":");
	enum rules_class cls = m->hdr_class;
	enum rules_edit e;

	if (m->hdr.len == 0)
		return;
	buf_init(&text);
	if (rules_mime_header_name(h, nl)) {
		cls = RULES_MIME;
		if (nl == 12 && strncasecmp(h, "Content-Type", 12) == 0) {
			free(m->ctype);
			m->ctype = xstrdup(h + nl + 1);
		}
	}
	if (m->hdr.len > m->header_limit)
		buf_truncate(&m->hdr, m->header_limit);
	e = m->check(m->arg, cls, m->hdr.data, m->hdr.len, &text);
	rules_mime_apply(m, e, &text, m->hdr_raw.data, m->hdr_raw.len, "\r\n");
	buf_reset(&m->hdr);
	buf_reset(&m->hdr_raw);
	buf_free(&text);
}

/* Is line a boundary of an open multipart? Returns its depth + 1, and
 * *close for "--b--". */
static size_t rules_mime_boundary(struct rules_mime *m, const char *line, size_t len, int *close)
{
	if (!m->mime || len < 3 || line[0] != '-' || line[1] != '-')
		return 0;
	for (size_t i = m->nbounds; i > 0; i--) {
		size_t bl = strlen(m->bounds[i - 1]);

		if (len >= bl + 2 && memcmp(line + 2, m->bounds[i - 1], bl) == 0) {
			*close = len >= bl + 4 && line[bl + 2] == '-' && line[bl + 3] == '-';
			return i;
		}
	}
	return 0;
}

static void rules_mime_body_line(struct rules_mime *m, const char *line, size_t len,
				 const char *eol)
{
	struct buf text = BUF_INIT;
	size_t off = 0;

	buf_init(&text);
	/* Pieces of at most line_limit bytes, each inspected alone when it
	 * starts within body_limit bytes of the segment; like Postfix's
	 * record offsets, each piece counts its length plus one. */
	do {
		size_t n = len - off > m->line_limit ? m->line_limit : len - off;
		int last = off + n >= len;
		char *piece = xstrndup(line + off, n);
		enum rules_edit e = RULES_KEEP;

		if (m->body_limit == 0 || m->seg_bytes < m->body_limit)
			e = m->check(m->arg, RULES_BODY, piece, n, &text);
		m->seg_bytes += n + 1;
		rules_mime_apply(m, e, &text, piece, n, last ? eol : "");
		if (last && e != RULES_DROP && e != RULES_REPLACE && e != RULES_STOP)
			rules_out(m, eol, strlen(eol));
		free(piece);
		buf_reset(&text);
		off += n;
	} while (off < len && !m->stopped);
	buf_free(&text);
}

/* One line without its terminator; eol is what ended it ("" at the end). */
static void rules_mime_line(struct rules_mime *m, const char *line, size_t len, const char *eol)
{
	size_t depth;
	int close = 0;

	if (m->state == RULES_M_HEADERS) {
		if ((*line == ' ' || *line == '\t') && m->hdr.len) {
			buf_putc(&m->hdr, '\n');
			buf_append(&m->hdr, line, len);
			buf_append(&m->hdr_raw, line, len);
			buf_puts(&m->hdr_raw, eol);
			return;
		}
		rules_mime_header_done(m);
		if (m->stopped)
			return;
		if (len == 0) {
			/* A new segment; the empty line is its first body line. */
			rules_mime_after_headers(m);
			m->seg_bytes = 0;
			rules_mime_body_line(m, line, len, eol);
			return;
		}
		if (memchr(line, ':', len) && !rules_mime_boundary(m, line, len, &close)) {
			buf_append(&m->hdr, line, len);
			buf_append(&m->hdr_raw, line, len);
			buf_puts(&m->hdr_raw, eol);
			return;
		}
		rules_mime_after_headers(m); /* not a header: the body starts */
	}
	if ((depth = rules_mime_boundary(m, line, len, &close)) > 0) {
		/* Inner multiparts end where an outer boundary appears. */
		while (m->nbounds > depth)
			free(m->bounds[--m->nbounds]);
		if (close) {
			free(m->bounds[--m->nbounds]);
			m->state = RULES_M_BODY;
		} else {
			m->state = RULES_M_HEADERS;
			m->hdr_class = RULES_MIME;
		}
		rules_mime_body_line(m, line, len, eol);
		return;
	}
	rules_mime_body_line(m, line, len, eol);
}

void rules_mime_body(struct rules_mime *m, const unsigned char *data, size_t len)
{
	const char *p = (const char *)data, *end = p + len, *nl;

	while (p < end && !m->stopped) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL) {
			buf_append(&m->partial, p, (size_t)(end - p));
			return;
		}
		buf_append(&m->partial, p, (size_t)(nl - p));
		p = nl + 1;
		if (m->partial.len && m->partial.data[m->partial.len - 1] == '\r') {
			buf_truncate(&m->partial, m->partial.len - 1);
			rules_mime_line(m, m->partial.data, m->partial.len, "\r\n");
		} else
			rules_mime_line(m, m->partial.data, m->partial.len, "\n");
		buf_reset(&m->partial);
	}
}

void rules_mime_end(struct rules_mime *m)
{
	if (!m->stopped && m->partial.len)
		rules_mime_line(m, m->partial.data, m->partial.len, "");
	buf_reset(&m->partial);
	if (!m->stopped && m->state == RULES_M_HEADERS)
		rules_mime_header_done(m);
}
