/* smtpd_milter_int.h - what the smtpd_milter*.c modules share: the
 * protocol constants (Sendmail's SMFIC/SMFIR/SMFIF/SMFIP values, facts
 * from the milter protocol, written out here), the config, and the
 * message model the content events and the edits work on.
 */
#ifndef TERN_SMTPD_MILTER_INT_H
#define TERN_SMTPD_MILTER_INT_H

#include "smtpd_int.h"
#include "smtpd_milter.h"

#include <stdint.h>

/* Commands to the milter */
#define SMFIC_ABORT 'A'
#define SMFIC_BODY 'B'
#define SMFIC_CONNECT 'C'
#define SMFIC_MACRO 'D'
#define SMFIC_BODYEOB 'E'
#define SMFIC_HELO 'H'
#define SMFIC_HEADER 'L'
#define SMFIC_MAIL 'M'
#define SMFIC_EOH 'N'
#define SMFIC_OPTNEG 'O'
#define SMFIC_QUIT 'Q'
#define SMFIC_RCPT 'R'
#define SMFIC_DATA 'T'
#define SMFIC_UNKNOWN 'U'

/* Replies */
#define SMFIR_ADDRCPT '+'
#define SMFIR_DELRCPT '-'
#define SMFIR_ADDRCPT_PAR '2'
#define SMFIR_SHUTDOWN '4'
#define SMFIR_ACCEPT 'a'
#define SMFIR_REPLBODY 'b'
#define SMFIR_CONTINUE 'c'
#define SMFIR_DISCARD 'd'
#define SMFIR_CHGFROM 'e'
#define SMFIR_ADDHEADER 'h'
#define SMFIR_INSHEADER 'i'
#define SMFIR_CHGHEADER 'm'
#define SMFIR_PROGRESS 'p'
#define SMFIR_QUARANTINE 'q'
#define SMFIR_REJECT 'r'
#define SMFIR_SKIP 's'
#define SMFIR_TEMPFAIL 't'
#define SMFIR_REPLYCODE 'y'

/* Actions (what a milter may edit) */
#define SMFIF_ADDHDRS 0x001
#define SMFIF_CHGBODY 0x002
#define SMFIF_ADDRCPT 0x004
#define SMFIF_DELRCPT 0x008
#define SMFIF_CHGHDRS 0x010
#define SMFIF_QUARANTINE 0x020
#define SMFIF_CHGFROM 0x040
#define SMFIF_ADDRCPT_PAR 0x080
#define SMFIF_SETSYMLIST 0x100
#define SMFIF_ALL 0x1ff

/* Protocol bits: events not wanted, replies not sent, capabilities */
#define SMFIP_NOCONNECT 0x00000001
#define SMFIP_NOHELO 0x00000002
#define SMFIP_NOMAIL 0x00000004
#define SMFIP_NORCPT 0x00000008
#define SMFIP_NOBODY 0x00000010
#define SMFIP_NOHDRS 0x00000020
#define SMFIP_NOEOH 0x00000040
#define SMFIP_NR_HDR 0x00000080
#define SMFIP_NOUNKNOWN 0x00000100
#define SMFIP_NODATA 0x00000200
#define SMFIP_SKIP 0x00000400
#define SMFIP_RCPT_REJ 0x00000800
#define SMFIP_NR_CONN 0x00001000
#define SMFIP_NR_HELO 0x00002000
#define SMFIP_NR_MAIL 0x00004000
#define SMFIP_NR_RCPT 0x00008000
#define SMFIP_NR_DATA 0x00010000
#define SMFIP_NR_UNKN 0x00020000
#define SMFIP_NR_EOH 0x00040000
#define SMFIP_NR_BODY 0x00080000
#define SMFIP_HDR_LEADSPC 0x00100000
/* What each protocol version knows (Postfix milter8.c masks). */
#define SMFIP_V2 0x0000007f
#define SMFIP_V3 (SMFIP_V2 | SMFIP_NOUNKNOWN)
#define SMFIP_V4 (SMFIP_V3 | SMFIP_NODATA)
#define SMFIP_V6 0x001fffff

#define MILTER_CHUNK 65535	    /* largest packet data libmilter takes */
#define MILTER_MAX_REPLY (1u << 22) /* a longer reply is garbage, not a body */

/* Macro stages: SMFIM_* numbers as in SETSYMLIST, then UNKNOWN (ours). */
enum milter_stage {
	MILTER_ST_CONNECT = 0,
	MILTER_ST_HELO = 1,
	MILTER_ST_MAIL = 2,
	MILTER_ST_RCPT = 3,
	MILTER_ST_DATA = 4,
	MILTER_ST_EOM = 5,
	MILTER_ST_EOH = 6,
	MILTER_ST_UNKNOWN = 7,
	MILTER_NSTAGES
};

struct milter_spec {
	char *endpoint; /* inet:host:port, unix:/path */
	enum milter_action def_action;
	long long connect_ms, command_ms, content_ms;
	int version;	 /* highest protocol version offered */
	int nohdr_reply; /* "no_header_reply" in milter_protocol */
};

struct smtpd_milter_conf {
	struct milter_spec *v;
	size_t n;
	char *macros[MILTER_NSTAGES]; /* milter_*_macros */
	char *daemon_name, *mail_v;   /* {daemon_name}, v */
	char **defaults;	      /* milter_macro_defaults: "name=value" */
	size_t ndefaults;
	struct route_conf *route; /* {mail,rcpt}_{mailer,host}: the delivery route */
	/* smtpd_milter_maps: client address -> milter list or DISABLE */
	struct table **maps;
	size_t nmaps;
	struct milter_spec def; /* the milter_* defaults, for lists from the maps */
};

/* The milters for a client under smtpd_milter_maps: 0 with v and n set (a
 * list of its own, free with milter_specs_free; n 0 = DISABLE), 1 no
 * match (mc->v applies), -1 lookup or syntax error (err set). */
int milter_maps_lookup(const struct smtpd_milter_conf *mc, const char *addr,
		       struct milter_spec **v, size_t *n, struct buf *err);
void milter_specs_free(struct milter_spec *v, size_t n);

int milter_action_parse(const char *text, enum milter_action *out);

/* ---- the message model (smtpd_milter_msg.c) */
struct milter_hdr {
	char *name;
	char *value; /* after the colon, as written: leading space kept,
		      * folded lines joined by '\n' */
	int hidden;  /* our own Received: (milters never see it) */
};

struct milter_msg {
	struct milter_hdr *h;
	size_t nh, cap;
	struct buf body; /* '\n' line ends, as the queue stores it */
};

void milter_msg_parse(struct milter_msg *m, const char *text, size_t len, size_t hidden);
void milter_msg_format(const struct milter_msg *m, struct buf *out);
void milter_msg_free(struct milter_msg *m);
/* Edits, Postfix semantics: add appends; insert at idx counts every
 * header (ours too), 0 = top; change is 1-based among the visible
 * headers of that name (0 = 1), empty value deletes, past the end adds. */
void milter_msg_add(struct milter_msg *m, const char *name, const char *value);
void milter_msg_insert(struct milter_msg *m, uint32_t idx, const char *name, const char *value);
void milter_msg_change(struct milter_msg *m, uint32_t idx, const char *name, const char *value);
/* The body with CRLF line ends, as milters get it. */
void milter_msg_body_crlf(const struct milter_msg *m, struct buf *out);
/* Replace the body with milter text (CRLF line ends). */
void milter_msg_set_body(struct milter_msg *m, const char *crlf, size_t len);

/* ---- envelope edits (smtpd_milter_edit.c): ADDRCPT(_PAR), DELRCPT,
 * CHGFROM on s->env; args is the ESMTP parameter string or NULL. Bad
 * addresses and parameters are logged and ignored, as Postfix. */
int milter_edit_envelope(struct smtpd_session *s, const char *milter, int code, const char *addr,
			 const char *args);

#endif
