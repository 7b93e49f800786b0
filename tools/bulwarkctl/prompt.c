/* prompt.c: no-echo password prompt on /dev/tty with termios. Echo is restored on every way out,
 * including Ctrl-C and other terminating signals, so the user's terminal is never left mute. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "bwctl.h"
#include "prompt.h"

static const int caught_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define NSIGNALS (sizeof caught_signals / sizeof caught_signals[0])

static int tty_fd = -1;
static struct termios saved_termios;

/* Only async-signal-safe calls: put the terminal back, then die of the same signal. */
static void restore_and_reraise(int sig)
{
	tcsetattr(tty_fd, TCSAFLUSH, &saved_termios);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void tty_write(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len > 0) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

/* Reads one line; returns 0, or -1 with errno set (E2BIG when the line does not fit). */
static int read_line(int fd, char *buf, size_t size)
{
	size_t len = 0;
	bool too_long = false;
	char c;

	for (;;) {
		ssize_t n = read(fd, &c, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0 || c == '\n' || c == '\r')
			break;
		if (len + 1 < size)
			buf[len++] = c;
		else
			too_long = true; /* keep reading so the rest of the line is not left for the shell */
	}
	buf[len] = '\0';
	explicit_bzero(&c, sizeof c);
	if (too_long) {
		explicit_bzero(buf, size);
		errno = E2BIG;
		return -1;
	}
	return 0;
}

int bwctl_prompt_password(const char *prompt, char *buf, size_t size, bw_error *err)
{
	struct sigaction sa, old[NSIGNALS];
	struct termios quiet;
	int fd, rc = BW_OK, e;

	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return bw_error_set(err, BW_E_IO, "cannot ask for the password: no terminal (/dev/tty: %s)",
		                    strerror(errno));
	if (tcgetattr(fd, &saved_termios) != 0) {
		e = errno;
		close(fd);
		return bw_error_set(err, BW_E_IO, "cannot ask for the password: /dev/tty: %s", strerror(e));
	}
	tty_fd = fd;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = restore_and_reraise;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NSIGNALS; i++)
		sigaction(caught_signals[i], &sa, &old[i]);

	quiet = saved_termios;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
	tty_write(fd, prompt);
	if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0) {
		rc = bw_error_set(err, BW_E_IO, "cannot turn off echo on /dev/tty: %s", strerror(errno));
	} else {
		if (read_line(fd, buf, size) != 0) {
			e = errno;
			rc = e == E2BIG ? bw_error_set(err, BW_E_LIMIT, "the password is too long (at most %zu bytes)",
			                               size - 1)
			                : bw_error_set(err, BW_E_IO, "cannot read the password: %s", strerror(e));
		}
		tcsetattr(fd, TCSAFLUSH, &saved_termios);
		tty_write(fd, "\n"); /* the user's Enter was not echoed */
	}

	for (size_t i = 0; i < NSIGNALS; i++)
		sigaction(caught_signals[i], &old[i], NULL);
	tty_fd = -1;
	close(fd);
	return rc;
}
