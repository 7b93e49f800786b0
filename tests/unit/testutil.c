/* tests/unit/testutil.c: small helpers shared by the unit tests. */
#include "testutil.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

char *bw_test_tmpdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char buf[512];
	snprintf(buf, sizeof buf, "%s/bw-%s-XXXXXX", base && *base ? base : "/tmp", tag);
	char *d = mkdtemp(buf);
	assert_non_null(d);
	return strdup(d);
}

char *bw_test_write(const char *dir, const char *name, const char *content)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
	chmod(path, 0644);
	return strdup(path);
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb, (void)type, (void)ftw;
	return remove(path);
}

void bw_test_rmtree(const char *dir)
{
	if (dir)
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Ports from 10000-31999, below the kernel's ephemeral range, never handed out twice by one
 * process: a port from bind(0)-and-close may be the local end of one of our own client
 * connections a moment later. */
int bw_test_free_port(void)
{
	static int next;
	if (!next)
		next = 10000 + (int)(getpid() * 97 % 22000);
	for (int i = 0; i < 22000; i++) {
		int port = next;
		next = 10000 + (next - 10000 + 1) % 22000;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fd >= 0);
		struct sockaddr_in sa = {.sin_family = AF_INET,
		                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
		                         .sin_port = htons((uint16_t)port)};
		int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
		close(fd);
		if (ok)
			return port;
	}
	fail_msg("no free loopback port in 10000-31999");
	return -1;
}
