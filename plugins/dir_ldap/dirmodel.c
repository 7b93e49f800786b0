/* plugins/dir_ldap/dirmodel.c: the in-memory synced directory of dir_ldap (see dirmodel.h). */
#include "dirmodel.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

struct dl_dir *dl_dir_new(void)
{
	struct dl_dir *d = calloc(1, sizeof *d);
	if (d)
		d->refs = 1;
	return d;
}

void dl_user_clear(struct dl_user *u)
{
	free(u->dn);
	free(u->login);
	free(u->upn);
	free(u->display_name);
	free(u->mail);
	free(u->manager);
	free(u->groups);
	memset(u, 0, sizeof *u);
}

void dl_group_clear(struct dl_group *g)
{
	free(g->dn);
	free(g->name);
	for (size_t i = 0; i < g->nmembers; i++)
		free(g->members[i]);
	free(g->members);
	free(g->nested);
	free(g->device_group);
	memset(g, 0, sizeof *g);
}

void dl_dir_unref(struct dl_dir *d)
{
	if (!d || --d->refs > 0)
		return;
	for (size_t i = 0; i < d->nusers; i++)
		dl_user_clear(&d->users[i]);
	for (size_t i = 0; i < d->ngroups; i++)
		dl_group_clear(&d->groups[i]);
	free(d->users);
	free(d->groups);
	free(d);
}

static bool grow(void **v, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return true;
	size_t nc = *cap ? *cap * 2 : 64;
	void *nv = realloc(*v, nc * elem);
	if (!nv)
		return false;
	*v = nv;
	*cap = nc;
	return true;
}

bool dl_dir_add_user(struct dl_dir *d, struct dl_user *u)
{
	if (!grow((void **)&d->users, &d->users_cap, d->nusers, sizeof *d->users))
		return false;
	d->users[d->nusers++] = *u;
	memset(u, 0, sizeof *u);
	return true;
}

bool dl_dir_add_group(struct dl_dir *d, struct dl_group *g)
{
	if (!grow((void **)&d->groups, &d->groups_cap, d->ngroups, sizeof *d->groups))
		return false;
	d->groups[d->ngroups++] = *g;
	memset(g, 0, sizeof *g);
	return true;
}

static int cmp_user(const void *a, const void *b)
{
	return strcmp(((const struct dl_user *)a)->guid, ((const struct dl_user *)b)->guid);
}

static int cmp_group(const void *a, const void *b)
{
	return strcmp(((const struct dl_group *)a)->guid, ((const struct dl_group *)b)->guid);
}

char *dl_dn_key(const char *dn)
{
	size_t l = strlen(dn);
	char *k = malloc(l + 1), *o = k;
	if (!k)
		return NULL;
	for (const char *p = dn; *p; p++) {
		char ch = *p;
		if (ch == ' ' && (o == k || o[-1] == ',' || o[-1] == '+' || o[-1] == '=' || p[1] == '='))
			continue;
		*o++ = (char)tolower((unsigned char)ch);
	}
	*o = '\0';
	return k;
}

/* ---- a DN -> groups-containing-it index (open addressing on the DN key) */

struct dn_slot {
	char *key;
	size_t *groups; /* groups that have this DN as a member */
	size_t n, cap;
	long group_self; /* index of the group whose own DN this is, or -1 */
};

struct dn_index {
	struct dn_slot *slots;
	size_t cap;
};

static size_t hash_str(const char *s)
{
	size_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* The slot of `key` (stolen when a new slot takes it), or NULL when out of memory. */
static struct dn_slot *idx_slot(struct dn_index *ix, char *key)
{
	size_t i = hash_str(key) & (ix->cap - 1);
	while (ix->slots[i].key) {
		if (strcmp(ix->slots[i].key, key) == 0) {
			free(key);
			return &ix->slots[i];
		}
		i = (i + 1) & (ix->cap - 1);
	}
	ix->slots[i].key = key;
	ix->slots[i].group_self = -1;
	return &ix->slots[i];
}

static const struct dn_slot *idx_find(const struct dn_index *ix, const char *dn)
{
	char *key = dl_dn_key(dn);
	if (!key)
		return NULL;
	size_t i = hash_str(key) & (ix->cap - 1);
	const struct dn_slot *found = NULL;
	while (ix->slots[i].key) {
		if (strcmp(ix->slots[i].key, key) == 0) {
			found = &ix->slots[i];
			break;
		}
		i = (i + 1) & (ix->cap - 1);
	}
	free(key);
	return found;
}

static void idx_free(struct dn_index *ix)
{
	for (size_t i = 0; i < ix->cap; i++) {
		free(ix->slots[i].key);
		free(ix->slots[i].groups);
	}
	free(ix->slots);
}

static bool idx_build(struct dn_index *ix, const struct dl_dir *d)
{
	size_t n = d->ngroups;
	for (size_t i = 0; i < d->ngroups; i++)
		n += d->groups[i].nmembers;
	ix->cap = 64;
	while (ix->cap < n * 2)
		ix->cap *= 2;
	if (!(ix->slots = calloc(ix->cap, sizeof *ix->slots)))
		return false;
	for (size_t g = 0; g < d->ngroups; g++) {
		char *key = d->groups[g].dn ? dl_dn_key(d->groups[g].dn) : NULL;
		if (d->groups[g].dn && !key)
			return false;
		if (key)
			idx_slot(ix, key)->group_self = (long)g;
		for (size_t m = 0; m < d->groups[g].nmembers; m++) {
			struct dn_slot *s;
			if (!(key = dl_dn_key(d->groups[g].members[m])) || !(s = idx_slot(ix, key)))
				return false;
			if (s->n && s->groups[s->n - 1] == g)
				continue;
			if (!grow((void **)&s->groups, &s->cap, s->n, sizeof *s->groups))
				return false;
			s->groups[s->n++] = g;
		}
	}
	return true;
}

/* Every group containing `dn`, directly or through nested groups (visited guards against cycles). */
static bool closure(const struct dn_index *ix, const struct dl_dir *d, const char *dn, unsigned char *visited,
                    size_t **out, size_t *nout)
{
	size_t cap = 0, *stack = NULL, sn = 0, scap = 0;
	*out = NULL;
	*nout = 0;
	const struct dn_slot *s = idx_find(ix, dn);
	bool ok = true;
	for (size_t i = 0; s && i < s->n && ok; i++)
		if (!visited[s->groups[i]]) {
			visited[s->groups[i]] = 1;
			if ((ok = grow((void **)&stack, &scap, sn, sizeof *stack)))
				stack[sn++] = s->groups[i];
		}
	while (ok && sn) {
		size_t g = stack[--sn];
		if (!(ok = grow((void **)out, &cap, *nout, sizeof **out)))
			break;
		(*out)[(*nout)++] = g;
		const struct dn_slot *p = d->groups[g].dn ? idx_find(ix, d->groups[g].dn) : NULL;
		for (size_t i = 0; p && i < p->n && ok; i++)
			if (!visited[p->groups[i]]) {
				visited[p->groups[i]] = 1;
				if ((ok = grow((void **)&stack, &scap, sn, sizeof *stack)))
					stack[sn++] = p->groups[i];
			}
	}
	for (size_t i = 0; i < *nout; i++)
		visited[(*out)[i]] = 0;
	for (size_t i = 0; i < sn; i++)
		visited[stack[i]] = 0;
	free(stack);
	if (!ok) {
		free(*out);
		*out = NULL;
		*nout = 0;
	}
	return ok;
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

bool dl_dir_finish(struct dl_dir *d)
{
	if (d->nusers)
		qsort(d->users, d->nusers, sizeof *d->users, cmp_user);
	if (d->ngroups)
		qsort(d->groups, d->ngroups, sizeof *d->groups, cmp_group);
	size_t o = 0;
	for (size_t i = 0; i < d->nusers; i++) {
		if (o && strcmp(d->users[o - 1].guid, d->users[i].guid) == 0)
			dl_user_clear(&d->users[i]);
		else
			d->users[o++] = d->users[i];
	}
	d->nusers = o;
	o = 0;
	for (size_t i = 0; i < d->ngroups; i++) {
		if (o && strcmp(d->groups[o - 1].guid, d->groups[i].guid) == 0)
			dl_group_clear(&d->groups[i]);
		else
			d->groups[o++] = d->groups[i];
	}
	d->ngroups = o;

	struct dn_index ix = {0};
	unsigned char *visited = calloc(d->ngroups ? d->ngroups : 1, 1);
	bool ok = visited && idx_build(&ix, d);
	for (size_t i = 0; ok && i < d->nusers; i++) {
		struct dl_user *u = &d->users[i];
		free(u->groups);
		u->groups = NULL;
		u->ngroups = 0;
		if (u->dn && (ok = closure(&ix, d, u->dn, visited, &u->groups, &u->ngroups)) && u->ngroups)
			qsort(u->groups, u->ngroups, sizeof *u->groups, cmp_size);
	}
	for (size_t g = 0; ok && g < d->ngroups; g++) {
		struct dl_group *gr = &d->groups[g];
		free(gr->nested);
		gr->nested = NULL;
		gr->nnested = 0;
		size_t cap = 0;
		for (size_t m = 0; ok && m < gr->nmembers; m++) {
			const struct dn_slot *s = idx_find(&ix, gr->members[m]);
			if (s && s->group_self >= 0 && (size_t)s->group_self != g) {
				if ((ok = grow((void **)&gr->nested, &cap, gr->nnested, sizeof *gr->nested)))
					gr->nested[gr->nnested++] = (size_t)s->group_self;
			}
		}
	}
	idx_free(&ix);
	free(visited);
	return ok;
}

const struct dl_user *dl_dir_user(const struct dl_dir *d, const char *guid)
{
	struct dl_user key;
	memset(&key, 0, sizeof key);
	snprintf(key.guid, sizeof key.guid, "%s", guid);
	return d->nusers ? bsearch(&key, d->users, d->nusers, sizeof key, cmp_user) : NULL;
}

const struct dl_group *dl_dir_group(const struct dl_dir *d, const char *guid)
{
	struct dl_group key;
	memset(&key, 0, sizeof key);
	snprintf(key.guid, sizeof key.guid, "%s", guid);
	return d->ngroups ? bsearch(&key, d->groups, d->ngroups, sizeof key, cmp_group) : NULL;
}

size_t dl_dir_users_after(const struct dl_dir *d, const char *after)
{
	size_t lo = 0, hi = d->nusers;
	if (!after || !*after)
		return 0;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(d->users[mid].guid, after) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

size_t dl_dir_groups_after(const struct dl_dir *d, const char *after)
{
	size_t lo = 0, hi = d->ngroups;
	if (!after || !*after)
		return 0;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(d->groups[mid].guid, after) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	return !src || (*dst = strdup(src)) != NULL;
}

bool dl_user_copy(struct dl_user *dst, const struct dl_user *src)
{
	memset(dst, 0, sizeof *dst);
	memcpy(dst->guid, src->guid, sizeof dst->guid);
	dst->disabled = src->disabled;
	dst->locked = src->locked;
	if (!dup_opt(&dst->dn, src->dn) || !dup_opt(&dst->login, src->login) || !dup_opt(&dst->upn, src->upn) ||
	    !dup_opt(&dst->display_name, src->display_name) || !dup_opt(&dst->mail, src->mail) ||
	    !dup_opt(&dst->manager, src->manager)) {
		dl_user_clear(dst);
		return false;
	}
	return true;
}

bool dl_group_copy(struct dl_group *dst, const struct dl_group *src)
{
	memset(dst, 0, sizeof *dst);
	memcpy(dst->guid, src->guid, sizeof dst->guid);
	dst->truncated = src->truncated;
	if (!dup_opt(&dst->dn, src->dn) || !dup_opt(&dst->name, src->name) ||
	    !dup_opt(&dst->device_group, src->device_group) ||
	    (src->nmembers && !(dst->members = calloc(src->nmembers, sizeof *dst->members)))) {
		dl_group_clear(dst);
		return false;
	}
	for (size_t i = 0; i < src->nmembers; i++) {
		if (!(dst->members[i] = strdup(src->members[i]))) {
			dl_group_clear(dst);
			return false;
		}
		dst->nmembers++;
	}
	return true;
}

static bool str_differs(const char *a, const char *b)
{
	if (!a || !b)
		return a != b;
	return strcmp(a, b) != 0;
}

bool dl_user_differs(const struct dl_user *a, const struct dl_user *b)
{
	return str_differs(a->dn, b->dn) || str_differs(a->login, b->login) || str_differs(a->upn, b->upn) ||
	       str_differs(a->display_name, b->display_name) || str_differs(a->mail, b->mail) ||
	       str_differs(a->manager, b->manager) || a->disabled != b->disabled || a->locked != b->locked;
}

bool dl_group_differs(const struct dl_group *a, const struct dl_group *b)
{
	if (str_differs(a->dn, b->dn) || str_differs(a->name, b->name) || a->nmembers != b->nmembers ||
	    a->truncated != b->truncated)
		return true;
	for (size_t i = 0; i < a->nmembers; i++)
		if (strcmp(a->members[i], b->members[i]) != 0)
			return true;
	return false;
}

static json_t *jstr(const char *s)
{
	/* Values arrive as UTF-8 from the directory; an invalid sequence would be refused by jansson, so it is
	 * shown as null rather than as a garbled string. */
	json_t *v = s ? json_string(s) : NULL;
	return v ? v : json_null();
}

json_t *dl_user_to_record(const struct dl_user *u)
{
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:b}", "dn", jstr(u->dn), "login", jstr(u->login), "upn",
	                 jstr(u->upn), "display_name", jstr(u->display_name), "mail", jstr(u->mail), "manager",
	                 jstr(u->manager), "disabled", u->disabled, "locked", u->locked);
}

static bool get_opt(json_t *rec, const char *key, char **out)
{
	json_t *v = json_object_get(rec, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_string(v))
		return false;
	return (*out = strdup(json_string_value(v))) != NULL;
}

bool dl_user_from_record(const char *guid, json_t *rec, struct dl_user *u)
{
	memset(u, 0, sizeof *u);
	if (!guid || strlen(guid) != 36 || !json_is_object(rec))
		return false;
	memcpy(u->guid, guid, 37);
	u->disabled = json_is_true(json_object_get(rec, "disabled"));
	u->locked = json_is_true(json_object_get(rec, "locked"));
	if (!get_opt(rec, "dn", &u->dn) || !get_opt(rec, "login", &u->login) || !get_opt(rec, "upn", &u->upn) ||
	    !get_opt(rec, "display_name", &u->display_name) || !get_opt(rec, "mail", &u->mail) ||
	    !get_opt(rec, "manager", &u->manager)) {
		dl_user_clear(u);
		return false;
	}
	return true;
}

/* A group record stays below the record store's 1 MiB value limit: members beyond ~900 KB of DNs are
 * left out and the record says so. */
#define RECORD_MEMBERS_BYTES (900 * 1024)

json_t *dl_group_to_record(const struct dl_group *g)
{
	json_t *m = json_array();
	size_t bytes = 0;
	bool cut = g->truncated;
	for (size_t i = 0; m && i < g->nmembers; i++) {
		bytes += strlen(g->members[i]) + 4;
		if (bytes > RECORD_MEMBERS_BYTES) {
			cut = true;
			break;
		}
		json_t *s = json_string(g->members[i]);
		if (s)
			json_array_append_new(m, s);
	}
	if (!m)
		return NULL;
	return json_pack("{s:o, s:o, s:o, s:b, s:o}", "dn", jstr(g->dn), "name", jstr(g->name), "members", m,
	                 "truncated", cut, "device_group", jstr(g->device_group));
}

bool dl_group_from_record(const char *guid, json_t *rec, struct dl_group *g)
{
	memset(g, 0, sizeof *g);
	json_t *m = json_object_get(rec, "members");
	if (!guid || strlen(guid) != 36 || !json_is_object(rec) || (m && !json_is_array(m)))
		return false;
	memcpy(g->guid, guid, 37);
	g->truncated = json_is_true(json_object_get(rec, "truncated"));
	size_t n = json_array_size(m);
	if (!get_opt(rec, "dn", &g->dn) || !get_opt(rec, "name", &g->name) ||
	    !get_opt(rec, "device_group", &g->device_group) || (n && !(g->members = calloc(n, sizeof *g->members)))) {
		dl_group_clear(g);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(m, i));
		if (!s)
			continue;
		if (!(g->members[g->nmembers] = strdup(s))) {
			dl_group_clear(g);
			return false;
		}
		g->nmembers++;
	}
	return true;
}

json_t *dl_user_to_api(const struct dl_dir *d, const struct dl_user *u)
{
	json_t *groups = json_array();
	for (size_t i = 0; groups && i < u->ngroups; i++)
		if (u->groups[i] < d->ngroups)
			json_array_append_new(groups, jstr(d->groups[u->groups[i]].name));
	return json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:b, s:o*}", "guid", u->guid, "login",
	                 jstr(u->login), "upn", jstr(u->upn), "display_name", jstr(u->display_name), "mail",
	                 jstr(u->mail), "manager", jstr(u->manager), "dn", jstr(u->dn), "disabled", u->disabled,
	                 "locked", u->locked, "groups", groups);
}

json_t *dl_group_to_api(const struct dl_dir *d, const struct dl_group *g)
{
	json_t *nested = json_array();
	for (size_t i = 0; nested && i < g->nnested; i++)
		if (g->nested[i] < d->ngroups)
			json_array_append_new(nested, jstr(d->groups[g->nested[i]].name));
	return json_pack("{s:s, s:o, s:o, s:I, s:b, s:o*, s:o}", "guid", g->guid, "name", jstr(g->name), "dn",
	                 jstr(g->dn), "members", (json_int_t)g->nmembers, "truncated", g->truncated, "nested_groups",
	                 nested, "device_group", jstr(g->device_group));
}
