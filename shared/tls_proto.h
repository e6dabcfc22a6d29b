/* tls_proto.h - Postfix's TLS protocol lists (smtp_tls_protocols,
 * smtpd_tls_protocols and their mandatory forms): ">=TLSv1.2", or
 * "!SSLv2, !SSLv3, !TLSv1", as the lowest version OpenSSL may use
 * (OpenSSL has only a range, so excluding the lowest versions raises the
 * floor). *min holds the caller's default on entry; -1 with err naming
 * param for an unknown protocol. */
#ifndef TERN_TLS_PROTO_H
#define TERN_TLS_PROTO_H

#include "buf.h"
#include "cfg.h"

int tls_protocol_floor(const struct cfg_list *items, const char *param, int *min,
		       struct buf *err);
/* An SNI name (RFC 6066 §3): a DNS host name in A-label form -- letters,
 * digits, '-', non-empty labels of at most 63 octets, 253 in all, not an
 * IPv4 address. 1 valid, 0 not. */
int tls_sni_name_valid(const char *name);

#endif
