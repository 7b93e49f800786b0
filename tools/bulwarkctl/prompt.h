/* prompt.h: reading a password from the controlling terminal without echoing it. */
#ifndef BWCTL_PROMPT_H
#define BWCTL_PROMPT_H

#include <stddef.h>

#include <bulwark/errors.h>

#define BWCTL_PASSWORD_MAX 1024 /* buffer size, terminating NUL included */

/* Writes `prompt` to /dev/tty and reads one line with echo off into `buf` (no newline). Works when
 * stdin and stdout are redirected; fails when there is no terminal. */
int bwctl_prompt_password(const char *prompt, char *buf, size_t size, bw_error *err);

#endif
