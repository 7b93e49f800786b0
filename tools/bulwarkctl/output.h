/* output.h: how bulwarkctl shows results: aligned tables, key/value blocks, pretty JSON, times
 * in local time, and scrubbing of server text before it reaches the terminal. */
#ifndef BWCTL_OUTPUT_H
#define BWCTL_OUTPUT_H

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

struct bwctl_table;

/* A table of `ncols` columns with the given headers; cells are copied. */
struct bwctl_table *bwctl_table_new(int ncols, const char *const *headers);
/* Adds one row; takes ownership of the `ncols` malloc'd strings in `cells`. */
void bwctl_table_add_owned(struct bwctl_table *t, char **cells);
/* Prints the table with columns padded to the widest cell and two spaces between columns. */
void bwctl_table_print(const struct bwctl_table *t, FILE *out);
void bwctl_table_free(struct bwctl_table *t);

/* Text for a table cell from obj[key] (malloc'd, sanitized): strings as they are, numbers,
 * booleans as yes/no, arrays comma-joined, null or missing as `if_null`. */
char *bwctl_cell(const json_t *obj, const char *key, const char *if_null);
/* Like bwctl_cell, for an RFC 3339 time shown in local time ("2024-05-01 14:03"). */
char *bwctl_cell_time(const json_t *obj, const char *key, const char *if_null);

/* Prints `value` as indented JSON with sorted keys and a final newline. */
void bwctl_print_json(const json_t *value);

/* Parses an RFC 3339 time ("2024-05-01T12:03:04Z", fractions and offsets allowed). */
bool bwctl_parse_rfc3339(const char *s, time_t *out);
/* Formats an RFC 3339 time in local time, with the zone name when `with_zone`; falls back to the
 * input when it does not parse. */
void bwctl_format_time(const char *rfc3339, bool with_zone, char *buf, size_t size);
/* "3d 4h 5m", "2h 0m", "42s". */
void bwctl_format_duration(long long seconds, char *buf, size_t size);

/* Replaces control characters (terminal escapes included) with '?', in place. */
void bwctl_sanitize(char *s);

#endif
