/* genkey.c - "tern-dkim-milter genkey": make a DKIM key pair.
 *
 *   tern-dkim-milter genkey -d DOMAIN -s SELECTOR [-b BITS] [-t rsa|ed25519] [-D DIR]
 *
 * writes DIR/SELECTOR.private (PEM, mode 0600: what key_file or key_table
 * names) and DIR/SELECTOR.txt, the DNS record in zone-file form (strings
 * of at most 255 octets, RFC 1035 §3.3.14), as opendkim-genkey does. The
 * public key is RFC 6376 §3.6.1's p=: base64 of the SubjectPublicKeyInfo
 * for RSA, of the raw 32-byte key for Ed25519 (RFC 8463 §4).
 */
#include "dkim_milter.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void dkim_genkey_usage(void)
{
	fprintf(stderr, "usage: tern-dkim-milter genkey -d domain -s selector [-b bits] "
			"[-t rsa|ed25519] [-D directory]\n");
	exit(2);
}

static EVP_PKEY *dkim_genkey_make(int ed25519, int bits)
{
	EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(ed25519 ? EVP_PKEY_ED25519 : EVP_PKEY_RSA, NULL);
	EVP_PKEY *pk = NULL;

	if (kc == NULL || EVP_PKEY_keygen_init(kc) <= 0 ||
	    (!ed25519 && EVP_PKEY_CTX_set_rsa_keygen_bits(kc, bits) <= 0) ||
	    EVP_PKEY_keygen(kc, &pk) <= 0)
		pk = NULL;
	EVP_PKEY_CTX_free(kc);
	return pk;
}

/* base64 of the public key as DNS wants it. */
static int dkim_genkey_public(EVP_PKEY *pk, int ed25519, struct buf *out)
{
	unsigned char *der = NULL, raw[64];
	size_t rawlen = sizeof(raw);
	int len;
	unsigned char *b64;

	if (ed25519) {
		if (EVP_PKEY_get_raw_public_key(pk, raw, &rawlen) <= 0)
			return -1;
		der = raw;
		len = (int)rawlen;
	} else if ((len = i2d_PUBKEY(pk, &der)) <= 0)
		return -1;
	b64 = xmalloc((size_t)(4 * ((len + 2) / 3) + 1));
	EVP_EncodeBlock(b64, der, len);
	buf_set(out, (char *)b64);
	free(b64);
	if (!ed25519)
		OPENSSL_free(der);
	return 0;
}

static int dkim_genkey_write_private(const char *path, EVP_PKEY *pk)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	FILE *fp;
	int ok;

	if (fd < 0 || (fp = fdopen(fd, "w")) == NULL) {
		fprintf(stderr, "tern-dkim-milter genkey: create %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	ok = PEM_write_PrivateKey(fp, pk, NULL, NULL, 0, NULL, NULL) == 1;
	if (fclose(fp) != 0 || !ok) {
		fprintf(stderr, "tern-dkim-milter genkey: write %s failed\n", path);
		return -1;
	}
	return 0;
}

static int dkim_genkey_write_txt(const char *path, const char *selector, const char *domain,
				 int ed25519, const char *pub)
{
	FILE *fp = fopen(path, "w");
	struct buf rec = BUF_INIT;

	if (fp == NULL) {
		fprintf(stderr, "tern-dkim-milter genkey: create %s: %s\n", path, strerror(errno));
		return -1;
	}
	buf_init(&rec);
	buf_printf(&rec, "v=DKIM1; k=%s; p=%s", ed25519 ? "ed25519" : "rsa", pub);
	fprintf(fp, "%s._domainkey\tIN\tTXT\t( ", selector);
	for (size_t i = 0; i < rec.len; i += 250)
		fprintf(fp, "%s\"%.*s\"", i ? "\n\t  " : "",
			(int)(rec.len - i > 250 ? 250 : rec.len - i), rec.data + i);
	fprintf(fp, " )  ; DKIM key %s for %s\n", selector, domain);
	buf_free(&rec);
	return fclose(fp) == 0 ? 0 : -1;
}

int dkim_genkey_main(int argc, char **argv)
{
	const char *domain = NULL, *selector = NULL, *dir = ".", *type = "rsa";
	struct buf priv = BUF_INIT, txt = BUF_INIT, pub = BUF_INIT;
	int ch, bits = 2048, ed25519, rc = 1;
	EVP_PKEY *pk;

	if (strcmp(argv[0], "genkey") != 0) {
		fprintf(stderr, "tern-dkim-milter: unknown command \"%s\"\n", argv[0]);
		dkim_genkey_usage();
	}
	optind = 1;
	while ((ch = getopt(argc, argv, "b:d:D:s:t:")) != -1) {
		switch (ch) {
		case 'b':
			bits = atoi(optarg);
			break;
		case 'd':
			domain = optarg;
			break;
		case 'D':
			dir = optarg;
			break;
		case 's':
			selector = optarg;
			break;
		case 't':
			type = optarg;
			break;
		default:
			dkim_genkey_usage();
		}
	}
	ed25519 = strcmp(type, "ed25519") == 0;
	if (optind != argc || !domain || !selector || (!ed25519 && strcmp(type, "rsa")) ||
	    (!ed25519 && (bits < 1024 || bits > 16384)) || strchr(selector, '/'))
		dkim_genkey_usage();
	buf_init(&priv);
	buf_init(&txt);
	buf_init(&pub);
	buf_printf(&priv, "%s/%s.private", dir, selector);
	buf_printf(&txt, "%s/%s.txt", dir, selector);
	if ((pk = dkim_genkey_make(ed25519, bits)) == NULL ||
	    dkim_genkey_public(pk, ed25519, &pub) < 0) {
		fprintf(stderr, "tern-dkim-milter genkey: key generation failed\n");
	} else if (dkim_genkey_write_private(buf_str(&priv), pk) == 0 &&
		   dkim_genkey_write_txt(buf_str(&txt), selector, domain, ed25519, buf_str(&pub)) ==
		       0) {
		printf("%s\n%s\n", buf_str(&priv), buf_str(&txt));
		rc = 0;
	}
	EVP_PKEY_free(pk);
	buf_free(&priv);
	buf_free(&txt);
	buf_free(&pub);
	return rc;
}
