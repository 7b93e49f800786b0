/* tests/unit/testutil.h: small helpers shared by the unit tests (temp dirs, files, ports). */
#ifndef BW_TESTUTIL_H
#define BW_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the includes above first */
#include <cmocka.h>

/* A fresh directory under $TMPDIR (or /tmp), mode 0700; caller frees the string. */
char *bw_test_tmpdir(const char *tag);
/* Writes `content` to dir/name (mode 0644), returns the full path (caller frees). */
char *bw_test_write(const char *dir, const char *name, const char *content);
/* Removes a directory tree (best effort). */
void bw_test_rmtree(const char *dir);
/* A TCP port on 127.0.0.1 that was free a moment ago. */
int bw_test_free_port(void);

#endif
