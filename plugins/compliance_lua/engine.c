/* engine.c: the compliance rules engine (see engine.h): the Lua sandbox, the rule{} declaration checks,
 * the read-only device view, the helpers, and the evaluation loop with its budget and memory cap. */
#include "engine.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define HOOK_STEP       1000 /* instructions between two budget checks */
#define BYTES_PER_INSTR 16   /* allocation and C-library scanning are charged 1 instruction per 16 bytes */
#define LOAD_BUDGET_X   10   /* a file's top level may use 10 evaluation budgets */
#define PATTERN_COST    1e9  /* refuse a pattern whose worst case (len^(quantifiers+1)) is above this */
#define VIEW_MT         "bulwark.device_view"

struct rule {
	struct bw_rule_info info;
	char **actions;
	int ref; /* the check function in the registry */
};

struct bw_rules_engine {
	lua_State *L;
	size_t mem_limit, mem_used;
	bool mem_exceeded;
	long eval_budget, budget, used;
	bool charging; /* allocations and C functions count against the budget */
	bool loading;
	struct rule *rules;
	size_t nrules, cap, max_rules;
	char *load_name; /* while loading: the file's name (rule sources point at it) */
	char **names;    /* every loaded file name, owned */
	size_t nnames;
	uint64_t gen; /* bumped per evaluation: views of an earlier one refuse to work */
	json_t *cur;  /* the device under evaluation */
	int64_t now, fixed_now;
	int view_mt_ref, base_ref;
};

struct view {
	json_t *node;
	uint64_t gen;
};

static bw_rules_engine *eng(lua_State *L)
{
	bw_rules_engine *e;
	memcpy(&e, lua_getextraspace(L), sizeof e);
	return e;
}

const char *bw_rule_verdict_name(enum bw_rule_verdict v)
{
	switch (v) {
	case BW_RULE_PASS:
		return "pass";
	case BW_RULE_FAIL:
		return "fail";
	case BW_RULE_ERROR:
		return "error";
	case BW_RULE_NOT_APPLICABLE:
		return "not_applicable";
	}
	return "?";
}

/* ------------------------------------------------------------------------------------------ */
/* Memory and budget */

static void *rules_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	bw_rules_engine *e = ud;
	size_t old = ptr ? osize : 0; /* with ptr == NULL, osize is a type tag */
	if (nsize == 0) {
		free(ptr);
		e->mem_used -= old;
		return NULL;
	}
	if (nsize > old) {
		if (nsize - old > e->mem_limit - e->mem_used) {
			e->mem_exceeded = true;
			return NULL;
		}
		/* Allocation is work the count hook does not see (s = s .. s copies in one instruction). Lua
		 * assumes that shrinking never fails, so only growth is charged and refused. */
		if (e->charging) {
			e->used += (long)((nsize - old) / BYTES_PER_INSTR);
			if (e->used > 2 * e->budget)
				return NULL;
		}
	}
	void *np = realloc(ptr, nsize);
	if (!np)
		return NULL;
	e->mem_used = e->mem_used - old + nsize;
	return np;
}

static int rules_panic(lua_State *L)
{
	/* Only reachable through a bug: every call that can raise runs under lua_pcall. */
	fprintf(stderr, "bulwark: unprotected error in the rules sandbox: %s\n",
	        lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
	abort();
}

static int budget_error(lua_State *L, lua_Debug *ar)
{
	bw_rules_engine *e = eng(L);
	lua_Debug here;
	e->charging = false;
	if (!ar && lua_getstack(L, 1, &here))
		ar = &here;
	if (ar && lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
		lua_pushfstring(L, "%s:%d: ", ar->short_src, ar->currentline);
	else
		lua_pushliteral(L, "");
	lua_pushfstring(L, "%sinstruction budget of %d exceeded (an endless loop?)", lua_tostring(L, -1),
	                (int)(e->budget > INT32_MAX ? INT32_MAX : e->budget));
	return lua_error(L);
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	bw_rules_engine *e = eng(L);
	e->used += HOOK_STEP;
	if (e->used > e->budget)
		budget_error(L, ar);
}

/* Charges `units` to the budget; raises when it is spent. Called by the C library wrappers. */
static void charge(lua_State *L, double units)
{
	bw_rules_engine *e = eng(L);
	if (!e->charging)
		return;
	if (units > (double)(e->budget - e->used) + 1) {
		e->used = e->budget + 1;
		budget_error(L, NULL);
	}
	e->used += (long)units;
}

static void start_budget(bw_rules_engine *e, long budget)
{
	e->budget = budget;
	e->used = 0;
	e->charging = true;
	/* Setting the hook again also restarts its instruction count. */
	lua_sethook(e->L, count_hook, LUA_MASKCOUNT, budget < HOOK_STEP ? (int)budget : HOOK_STEP);
}

static void stop_budget(bw_rules_engine *e)
{
	e->charging = false;
	lua_sethook(e->L, NULL, 0, 0);
}

/* Message handler: every error leaves as "file:line: message" when a Lua line is known. */
static int rules_msgh(lua_State *L)
{
	eng(L)->charging = false; /* building the message must not fail on the budget */
	if (!lua_isstring(L, 1) || lua_type(L, 1) == LUA_TNUMBER) {
		if (lua_type(L, 1) == LUA_TNUMBER)
			lua_pushfstring(L, "error raised with a number (%s)", lua_tostring(L, 1));
		else
			lua_pushfstring(L, "error raised with a %s value instead of a message", luaL_typename(L, 1));
		lua_replace(L, 1);
	}
	lua_settop(L, 1);
	const char *msg = lua_tostring(L, 1);
	lua_Debug ar;
	for (int level = 1; lua_getstack(L, level, &ar); level++) {
		if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
			continue;
		size_t n = strlen(ar.short_src);
		if (strncmp(msg, ar.short_src, n) == 0 && msg[n] == ':')
			return 1;
		lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
		return 1;
	}
	return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* C library wrappers: C functions run without the count hook, so each is charged for the data it walks,
 * and the ones that can take unbounded time on little input are bounded. */

enum wrap_kind { W_STR, W_PATTERN, W_REP, W_TABLE, W_RANGE, W_SORT };

static double str_args_len(lua_State *L)
{
	double total = 0;
	for (int i = 1, n = lua_gettop(L); i <= n; i++)
		if (lua_type(L, i) == LUA_TSTRING)
			total += (double)lua_rawlen(L, i);
	return total;
}

/* Lua patterns backtrack: "(.-)(.-)(.-)x" on a long subject is polynomial with a large exponent and runs
 * entirely in C. The worst case is about len^(quantifiers+1); refuse the combination when it is huge. */
static void check_pattern(lua_State *L, int is_find)
{
	size_t len, plen;
	if (lua_type(L, 1) != LUA_TSTRING || lua_type(L, 2) != LUA_TSTRING)
		return;
	if (is_find && lua_toboolean(L, 4))
		return; /* plain find */
	lua_tolstring(L, 1, &len);
	const char *p = lua_tolstring(L, 2, &plen);
	int q = 0;
	for (size_t i = 0; i < plen; i++) {
		if (p[i] == '%') {
			i++;
			continue;
		}
		if (i > 0 && (p[i] == '*' || p[i] == '+' || p[i] == '-' || p[i] == '?'))
			q++;
	}
	if (len > 1 && pow((double)len, q + 1) > PATTERN_COST)
		luaL_error(L, "pattern '%s' is too complex for a subject of %d bytes", p, (int)len);
}

static int l_wrapped(lua_State *L)
{
	int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
	double cost = 1;
	switch (kind) {
	case W_STR:
		cost += str_args_len(L) / BYTES_PER_INSTR;
		break;
	case W_PATTERN:
		check_pattern(L, lua_toboolean(L, lua_upvalueindex(3)));
		cost += str_args_len(L) / BYTES_PER_INSTR;
		break;
	case W_REP: {
		size_t l, lsep = 0;
		luaL_checklstring(L, 1, &l);
		lua_Integer n = luaL_checkinteger(L, 2);
		if (lua_type(L, 3) == LUA_TSTRING)
			lua_tolstring(L, 3, &lsep);
		if (n <= 0 || l + lsep == 0) {
			lua_pushliteral(L, "");
			return 1;
		}
		bw_rules_engine *e = eng(L);
		if ((double)(l + lsep) * (double)n > (double)e->mem_limit)
			return luaL_error(L, "string.rep: the result would exceed the memory limit");
		cost += (double)(l + lsep) * (double)n / BYTES_PER_INSTR;
		break;
	}
	case W_TABLE:
		if (lua_type(L, 1) == LUA_TTABLE)
			cost += (double)lua_rawlen(L, 1);
		break;
	case W_RANGE: {
		/* table.unpack(t, i, j), table.concat(t, sep, i, j), table.move(a1, f, e, t): the range walked. */
		int fi = lua_tointeger(L, lua_upvalueindex(3)) ? 2 : 3;
		if (lua_type(L, fi) == LUA_TNUMBER && lua_type(L, fi + 1) == LUA_TNUMBER)
			cost += fabs(lua_tonumber(L, fi + 1) - lua_tonumber(L, fi));
		else if (lua_type(L, 1) == LUA_TTABLE)
			cost += (double)lua_rawlen(L, 1);
		break;
	}
	case W_SORT:
		if (lua_type(L, 1) == LUA_TTABLE) {
			double n = (double)lua_rawlen(L, 1);
			cost += n * log2(n + 2);
		}
		break;
	}
	charge(L, cost);
	int n = lua_gettop(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, n, LUA_MULTRET);
	return lua_gettop(L);
}

/* Replaces lib[name] (the table on top of the stack) by a charged wrapper. */
static void wrap(lua_State *L, const char *name, int kind, int flag)
{
	lua_getfield(L, -1, name);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return;
	}
	lua_pushinteger(L, kind);
	lua_pushinteger(L, flag);
	lua_pushcclosure(L, l_wrapped, 3);
	lua_setfield(L, -2, name);
}

static int l_readonly_newindex(lua_State *L)
{
	return luaL_error(L, "'%s' is read-only", luaL_tolstring(L, 2, NULL));
}

/* Pushes an empty proxy reading through to the table at `idx`, refusing writes. */
static void push_readonly(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_newtable(L);
	lua_createtable(L, 0, 3);
	lua_pushvalue(L, idx);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, l_readonly_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, -2);
}

/* ------------------------------------------------------------------------------------------ */
/* The device view: a userdata over a JSON node, valid during one evaluation only */

static void push_json(lua_State *L, bw_rules_engine *e, json_t *v);

static void push_view(lua_State *L, bw_rules_engine *e, json_t *node)
{
	struct view *u = lua_newuserdatauv(L, sizeof *u, 0);
	u->node = node;
	u->gen = e->gen;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->view_mt_ref);
	lua_setmetatable(L, -2);
}

static void push_json(lua_State *L, bw_rules_engine *e, json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		lua_pushlstring(L, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		lua_pushinteger(L, (lua_Integer)json_integer_value(v));
		break;
	case JSON_REAL:
		lua_pushnumber(L, json_real_value(v));
		break;
	case JSON_TRUE:
		lua_pushboolean(L, 1);
		break;
	case JSON_FALSE:
		lua_pushboolean(L, 0);
		break;
	case JSON_OBJECT:
	case JSON_ARRAY:
		push_view(L, e, v);
		break;
	default:
		lua_pushnil(L);
	}
}

static struct view *check_view(lua_State *L, int idx)
{
	bw_rules_engine *e = eng(L);
	/* luaL_testudata without its registry lookup by name: the metatable is compared by reference. */
	struct view *u = lua_touserdata(L, idx);
	if (!u || !lua_getmetatable(L, idx))
		return NULL;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->view_mt_ref);
	bool is_view = lua_rawequal(L, -1, -2);
	lua_pop(L, 2);
	if (!is_view)
		return NULL;
	if (u->gen != e->gen)
		luaL_error(L, "a device view was used after its evaluation ended");
	return u;
}

/* The view's own metamethods are only ever called with a view as argument 1 (Lua dispatches them from the
 * view's metatable, which rules cannot reach: no getmetatable, no debug), so they skip the type check. */
static struct view *self_view(lua_State *L)
{
	struct view *u = lua_touserdata(L, 1);
	if (u->gen != eng(L)->gen)
		luaL_error(L, "a device view was used after its evaluation ended");
	return u;
}

static int l_view_index(lua_State *L)
{
	struct view *u = self_view(L);
	json_t *v = NULL;
	if (json_is_object(u->node)) {
		size_t len;
		if (lua_type(L, 2) == LUA_TSTRING) {
			const char *k = lua_tolstring(L, 2, &len);
			v = json_object_getn(u->node, k, len);
		}
	} else if (lua_isinteger(L, 2)) {
		lua_Integer i = lua_tointeger(L, 2);
		if (i >= 1 && (size_t)i <= json_array_size(u->node))
			v = json_array_get(u->node, (size_t)(i - 1));
	}
	if (v)
		push_json(L, eng(L), v);
	else
		lua_pushnil(L);
	return 1;
}

static int l_view_newindex(lua_State *L)
{
	self_view(L);
	return luaL_error(L, "the device view is read-only (cannot set '%s')", luaL_tolstring(L, 2, NULL));
}

static int l_view_len(lua_State *L)
{
	struct view *u = self_view(L);
	lua_pushinteger(L, json_is_array(u->node) ? (lua_Integer)json_array_size(u->node) : 0);
	return 1;
}

static int l_view_tostring(lua_State *L)
{
	struct view *u = luaL_checkudata(L, 1, VIEW_MT);
	lua_pushstring(L, json_is_array(u->node) ? "device view (list)" : "device view");
	return 1;
}

/* The iterator of pairs(view): (view, key) -> next key, value. */
static int l_view_next(lua_State *L)
{
	/* Rules can call the iterator pairs() returned with anything: check the argument. */
	struct view *u = check_view(L, 1);
	if (!u)
		return luaL_error(L, "bad argument #1 to the pairs iterator (device view expected)");
	charge(L, 1);
	if (json_is_array(u->node)) {
		lua_Integer i = lua_isnil(L, 2) ? 1 : luaL_checkinteger(L, 2) + 1;
		if (i < 1 || (size_t)i > json_array_size(u->node))
			return 0;
		lua_pushinteger(L, i);
		push_json(L, eng(L), json_array_get(u->node, (size_t)(i - 1)));
		return 2;
	}
	void *it;
	if (lua_isnil(L, 2)) {
		it = json_object_iter(u->node);
	} else {
		it = json_object_iter_at(u->node, luaL_checkstring(L, 2));
		if (it)
			it = json_object_iter_next(u->node, it);
	}
	if (!it)
		return 0;
	lua_pushstring(L, json_object_iter_key(it));
	push_json(L, eng(L), json_object_iter_value(it));
	return 2;
}

static int l_view_pairs(lua_State *L)
{
	self_view(L);
	lua_pushcfunction(L, l_view_next);
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	return 3;
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers */

static bool parse_version(const char *s, long *comp, int *ncomp)
{
	while (*s == ' ')
		s++;
	if (*s == 'v' || *s == 'V')
		s++;
	if (*s < '0' || *s > '9')
		return false;
	int n = 0;
	for (;;) {
		long v = 0;
		int digits = 0;
		while (*s >= '0' && *s <= '9') {
			if (++digits > 9)
				return false; /* not a version component, and would overflow */
			v = v * 10 + (*s++ - '0');
		}
		if (n < 16)
			comp[n++] = v;
		if (s[0] == '.' && s[1] >= '0' && s[1] <= '9')
			s++;
		else
			break;
	}
	*ncomp = n;
	return true;
}

int bw_rules_version_cmp(const char *a, const char *b, int *out)
{
	long ca[16], cb[16];
	int na, nb;
	if (!a || !b || !parse_version(a, ca, &na) || !parse_version(b, cb, &nb))
		return BW_E_INVALID;
	int n = na > nb ? na : nb;
	*out = 0;
	for (int i = 0; i < n; i++) {
		long x = i < na ? ca[i] : 0, y = i < nb ? cb[i] : 0;
		if (x != y) {
			*out = x < y ? -1 : 1;
			break;
		}
	}
	return BW_OK;
}

static const char *version_arg(lua_State *L, int idx, const char *fname)
{
	int t = lua_type(L, idx);
	if (t != LUA_TSTRING && t != LUA_TNUMBER)
		luaL_error(L, "%s: argument %d must be a version string, not %s", fname, idx, luaL_typename(L, idx));
	return lua_tostring(L, idx);
}

static int version_compare(lua_State *L, const char *fname)
{
	const char *a = version_arg(L, 1, fname), *b = version_arg(L, 2, fname);
	int c;
	if (bw_rules_version_cmp(a, b, &c) != BW_OK) {
		long tmp[16];
		int n;
		return luaL_error(L, "%s: '%s' is not a version (expected digits like \"12.1.3\")", fname,
		                  parse_version(a, tmp, &n) ? b : a);
	}
	return c;
}

static int l_version_cmp(lua_State *L)
{
	lua_pushinteger(L, version_compare(L, "version_cmp"));
	return 1;
}
static int l_version_ge(lua_State *L)
{
	lua_pushboolean(L, version_compare(L, "version_ge") >= 0);
	return 1;
}
static int l_version_gt(lua_State *L)
{
	lua_pushboolean(L, version_compare(L, "version_gt") > 0);
	return 1;
}
static int l_version_le(lua_State *L)
{
	lua_pushboolean(L, version_compare(L, "version_le") <= 0);
	return 1;
}
static int l_version_lt(lua_State *L)
{
	lua_pushboolean(L, version_compare(L, "version_lt") < 0);
	return 1;
}
static int l_version_eq(lua_State *L)
{
	lua_pushboolean(L, version_compare(L, "version_eq") == 0);
	return 1;
}

/* Device helpers take the device view as an optional first argument; without it they use the device under
 * evaluation. Sets *arg to the index of the first real argument. */
static json_t *device_arg(lua_State *L, int *arg, const char *fname)
{
	bw_rules_engine *e = eng(L);
	struct view *u = check_view(L, 1);
	if (u) {
		*arg = 2;
		if (!json_is_object(u->node))
			luaL_error(L, "%s: argument 1 must be the device, not a list", fname);
		return u->node;
	}
	*arg = 1;
	if (!e->cur)
		luaL_error(L, "%s: no device is being evaluated", fname);
	return e->cur;
}

static json_t *find_app(lua_State *L, json_t *dev, const char *id)
{
	json_t *apps = json_object_get(dev, "apps"), *app;
	size_t i;
	charge(L, (double)json_array_size(apps));
	json_array_foreach(apps, i, app)
	{
		const char *aid = json_string_value(json_object_get(app, "id"));
		if (aid && strcmp(aid, id) == 0)
			return app;
	}
	return NULL;
}

static int l_has_app(lua_State *L)
{
	int a;
	json_t *dev = device_arg(L, &a, "has_app");
	lua_pushboolean(L, find_app(L, dev, luaL_checkstring(L, a)) != NULL);
	return 1;
}

static int l_app_version(lua_State *L)
{
	int a;
	json_t *dev = device_arg(L, &a, "app_version");
	json_t *v = json_object_get(find_app(L, dev, luaL_checkstring(L, a)), "version");
	if (json_is_string(v))
		lua_pushstring(L, json_string_value(v));
	else
		lua_pushnil(L);
	return 1;
}

static int l_count_findings(lua_State *L)
{
	bw_rules_engine *e = eng(L);
	int a;
	json_t *dev = device_arg(L, &a, "count_findings");
	const char *type = luaL_optstring(L, a, "*");
	lua_Number days = luaL_optnumber(L, a + 1, -1);
	json_t *findings = json_object_get(dev, "findings"), *f;
	size_t i;
	lua_Integer n = 0;
	double since = days >= 0 ? (double)e->now - days * 86400.0 : -INFINITY;
	charge(L, (double)json_array_size(findings));
	json_array_foreach(findings, i, f)
	{
		const char *t = json_string_value(json_object_get(f, "type"));
		if (!t || (strcmp(type, "*") != 0 && strcmp(t, type) != 0))
			continue;
		json_t *at = json_object_get(f, "at");
		if (days >= 0 && (!json_is_number(at) || json_number_value(at) < since))
			continue;
		n++;
	}
	lua_pushinteger(L, n);
	return 1;
}

static int l_in_group(lua_State *L)
{
	int a;
	json_t *dev = device_arg(L, &a, "in_group");
	const char *name = luaL_checkstring(L, a);
	const char *g = json_string_value(json_object_get(dev, "group"));
	bool in = g && strcmp(g, name) == 0;
	json_t *groups = json_object_get(dev, "groups"), *x;
	size_t i;
	json_array_foreach(groups, i, x)
	{
		if (in)
			break;
		in = json_is_string(x) && strcmp(json_string_value(x), name) == 0;
	}
	lua_pushboolean(L, in);
	return 1;
}

static bool platform_is(lua_State *L, const char *fname, const char *want, int *a)
{
	json_t *dev = device_arg(L, a, fname);
	const char *p = json_string_value(json_object_get(dev, "platform"));
	return p && strcmp(p, want) == 0;
}

static int l_platform_is(lua_State *L)
{
	int a;
	json_t *dev = device_arg(L, &a, "platform_is");
	const char *p = json_string_value(json_object_get(dev, "platform"));
	lua_pushboolean(L, p && strcmp(p, luaL_checkstring(L, a)) == 0);
	return 1;
}
static int l_is_android(lua_State *L)
{
	int a;
	lua_pushboolean(L, platform_is(L, "is_android", "android", &a));
	return 1;
}
static int l_is_ios(lua_State *L)
{
	int a;
	lua_pushboolean(L, platform_is(L, "is_ios", "ios", &a));
	return 1;
}

static int l_days_since(lua_State *L)
{
	if (lua_type(L, 1) != LUA_TNUMBER)
		return luaL_error(L, "days_since: argument 1 must be a Unix time (number), not %s",
		                  luaL_typename(L, 1));
	lua_pushnumber(L, ((double)eng(L)->now - lua_tonumber(L, 1)) / 86400.0);
	return 1;
}

static int l_noop(lua_State *L)
{
	(void)L;
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* rule { ... } */

static bool valid_id(const char *s, size_t len)
{
	if (len < 1 || len > 64)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

static bool valid_action(const char *s)
{
	if (strcmp(s, "notify") == 0 || strcmp(s, "mark_noncompliant") == 0 || strcmp(s, "block_mail") == 0)
		return true;
	if (strncmp(s, "command:", 8) != 0)
		return false;
	size_t n = strlen(s + 8);
	if (n < 1 || n > 32)
		return false;
	for (const char *p = s + 8; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || *p == '_'))
			return false;
	return true;
}

static void free_rule(lua_State *L, struct rule *r)
{
	free((char *)r->info.id);
	free((char *)r->info.title);
	free((char *)r->info.description);
	free((char *)r->info.severity);
	for (size_t i = 0; i < r->info.nactions; i++)
		free(r->actions[i]);
	free(r->actions);
	if (L && r->ref != LUA_NOREF)
		luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
	memset(r, 0, sizeof *r);
}

static char *dup_or_raise(lua_State *L, const char *s)
{
	char *d = strdup(s);
	if (!d)
		luaL_error(L, "out of memory");
	return d;
}

/* Raises "rule <id>: <what>" at the caller's line. */
#define RULE_ERR(...) luaL_error(L, __VA_ARGS__)

static int l_rule(lua_State *L)
{
	bw_rules_engine *e = eng(L);
	if (!e->loading)
		return luaL_error(L, "rule{} can only be called when a rule file is loaded");
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	/* Unknown fields are refused: they are typos ("platform", "action") that would be silently ignored. */
	static const char *const known[] = {"id",        "title", "description", "severity",
	                                    "platforms", "check", "actions",     NULL};
	lua_pushnil(L);
	while (lua_next(L, 1)) {
		bool ok = false;
		if (lua_type(L, -2) == LUA_TSTRING)
			for (const char *const *k = known; *k && !ok; k++)
				ok = strcmp(*k, lua_tostring(L, -2)) == 0;
		if (!ok)
			return RULE_ERR("rule: unknown field '%s' (fields: id, title, description, severity, "
			                "platforms, check, actions)",
			                luaL_tolstring(L, -2, NULL));
		lua_pop(L, 1);
	}
	size_t len;
	lua_getfield(L, 1, "id"); /* 2 */
	const char *id = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &len) : NULL;
	if (!id)
		return RULE_ERR("rule: 'id' must be a string");
	if (!valid_id(id, len))
		return RULE_ERR("rule: id '%s' is not valid (1 to 64 of a-z, 0-9 and '-')", id);
	for (size_t i = 0; i < e->nrules; i++)
		if (strcmp(e->rules[i].info.id, id) == 0)
			return RULE_ERR("rule %s: the id is already used (%s:%d)", id, e->rules[i].info.source,
			                e->rules[i].info.line);
	if (e->nrules >= e->max_rules)
		return RULE_ERR("rule %s: too many rules (at most %zu)", id, e->max_rules);
	lua_getfield(L, 1, "title"); /* 3 */
	if (lua_type(L, 3) != LUA_TSTRING || lua_rawlen(L, 3) == 0 || lua_rawlen(L, 3) > 200)
		return RULE_ERR("rule %s: 'title' must be a string of 1 to 200 bytes", id);
	lua_getfield(L, 1, "description");
	if (!lua_isnil(L, -1) && (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) > 2000))
		return RULE_ERR("rule %s: 'description' must be a string of at most 2000 bytes", id);
	const char *desc = lua_isnil(L, -1) ? "" : lua_tostring(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, 1, "severity"); /* 4 */
	const char *sev = lua_type(L, 4) == LUA_TSTRING ? lua_tostring(L, 4) : "";
	if (strcmp(sev, "low") != 0 && strcmp(sev, "medium") != 0 && strcmp(sev, "high") != 0 &&
	    strcmp(sev, "critical") != 0)
		return RULE_ERR("rule %s: 'severity' must be one of low, medium, high, critical", id);
	lua_getfield(L, 1, "check"); /* 5 */
	if (lua_type(L, 5) != LUA_TFUNCTION)
		return RULE_ERR("rule %s: 'check' must be a function(d) returning true (compliant) or false", id);
	unsigned platforms = 0;
	lua_getfield(L, 1, "platforms"); /* 6 */
	if (!lua_isnil(L, 6)) {
		if (lua_type(L, 6) != LUA_TTABLE || lua_rawlen(L, 6) == 0)
			return RULE_ERR("rule %s: 'platforms' must be a non-empty list of \"android\", \"ios\"", id);
		for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, 6); i++) {
			lua_rawgeti(L, 6, i);
			const char *p = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
			if (strcmp(p, "android") == 0)
				platforms |= BW_RULE_ANDROID;
			else if (strcmp(p, "ios") == 0)
				platforms |= BW_RULE_IOS;
			else
				return RULE_ERR("rule %s: unknown platform '%s' (android, ios)", id,
				                luaL_tolstring(L, -1, NULL));
			lua_pop(L, 1);
		}
	}
	lua_getfield(L, 1, "actions"); /* 7 */
	size_t nactions = 0;
	if (!lua_isnil(L, 7)) {
		if (lua_type(L, 7) != LUA_TTABLE || lua_rawlen(L, 7) > 16)
			return RULE_ERR("rule %s: 'actions' must be a list of at most 16 actions", id);
		nactions = lua_rawlen(L, 7);
		for (size_t i = 1; i <= nactions; i++) {
			lua_rawgeti(L, 7, (lua_Integer)i);
			if (lua_type(L, -1) != LUA_TSTRING || !valid_action(lua_tostring(L, -1)))
				return RULE_ERR("rule %s: unknown action '%s' (notify, mark_noncompliant, block_mail, "
				                "command:<type>)",
				                id, luaL_tolstring(L, -1, NULL));
			lua_pop(L, 1);
		}
	}
	lua_Debug ar;
	int line = 0;
	if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "l", &ar))
		line = ar.currentline;

	if (e->nrules == e->cap) {
		size_t ncap = e->cap ? 2 * e->cap : 16;
		struct rule *nr = realloc(e->rules, ncap * sizeof *nr);
		if (!nr)
			return luaL_error(L, "out of memory");
		e->rules = nr;
		e->cap = ncap;
	}
	/* Fill a rule in place (count bumped last) so that a raise part-way leaves nothing half-owned: the
	 * strings are freed by the rollback through the `pending` slot. */
	struct rule *r = &e->rules[e->nrules];
	memset(r, 0, sizeof *r);
	r->ref = LUA_NOREF;
	e->nrules++;
	r->info.source = e->load_name;
	r->info.line = line;
	r->info.platforms = platforms;
	r->info.id = dup_or_raise(L, id);
	r->info.title = dup_or_raise(L, lua_tostring(L, 3));
	r->info.description = dup_or_raise(L, desc);
	r->info.severity = dup_or_raise(L, sev);
	if (nactions) {
		r->actions = calloc(nactions, sizeof *r->actions);
		if (!r->actions)
			return luaL_error(L, "out of memory");
		for (size_t i = 0; i < nactions; i++) {
			lua_rawgeti(L, 7, (lua_Integer)(i + 1));
			r->actions[i] = dup_or_raise(L, lua_tostring(L, -1));
			r->info.nactions = i + 1;
			lua_pop(L, 1);
		}
	}
	r->info.actions = (const char *const *)r->actions;
	lua_pushvalue(L, 5);
	r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Building the sandbox */

static int l_env_newindex(lua_State *L)
{
	bw_rules_engine *e = eng(L);
	if (!e->loading)
		return luaL_error(L, "cannot assign the global '%s' while a rule runs (use a local variable)",
		                  luaL_tolstring(L, 2, NULL));
	if (lua_type(L, 2) != LUA_TSTRING)
		return luaL_error(L, "global names must be strings");
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 3);
	lua_rawset(L, lua_upvalueindex(1));
	return 0;
}

/* Runs under lua_pcall: opens the libraries, wraps them, builds the read-only base table. */
static int l_setup(lua_State *L)
{
	bw_rules_engine *e = eng(L);
	static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
	                                {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
	                                {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
	for (const luaL_Reg *l = libs; l->name; l++) {
		luaL_requiref(L, l->name, l->func, 1);
		lua_pop(L, 1);
	}
	/* The string functions are also reached as methods ("s:rep(9)") through the string metatable, whose
	 * __index is this same table: wrapping in place covers both ways. */
	lua_getglobal(L, LUA_STRLIBNAME);
	static const char *const str_plain[] = {"byte",     "char",    "format", "len",    "lower", "pack",
	                                        "packsize", "reverse", "sub",    "unpack", "upper", NULL};
	for (const char *const *n = str_plain; *n; n++)
		wrap(L, *n, W_STR, 0);
	wrap(L, "find", W_PATTERN, 1);
	wrap(L, "match", W_PATTERN, 0);
	wrap(L, "gmatch", W_PATTERN, 0);
	wrap(L, "gsub", W_PATTERN, 0);
	wrap(L, "rep", W_REP, 0);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	lua_pushliteral(L, "");
	lua_getmetatable(L, -1);
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 2);
	lua_getglobal(L, LUA_TABLIBNAME);
	wrap(L, "insert", W_TABLE, 0);
	wrap(L, "remove", W_TABLE, 0);
	wrap(L, "unpack", W_RANGE, 1);
	wrap(L, "concat", W_RANGE, 0);
	wrap(L, "move", W_RANGE, 1);
	wrap(L, "sort", W_SORT, 0);
	lua_pop(L, 1);
	lua_getglobal(L, LUA_UTF8LIBNAME);
	static const char *const utf8_fns[] = {"char", "codepoint", "codes", "len", "offset", NULL};
	for (const char *const *n = utf8_fns; *n; n++)
		wrap(L, *n, W_STR, 0);
	lua_pop(L, 1);

	/* The base: what a rule can name. Copied from the globals table, never the globals table itself. */
	lua_newtable(L);
	int base = lua_gettop(L);
	static const char *const keep[] = {"assert",   "error", "ipairs", "next",     "pairs",    "select", "tonumber",
	                                   "tostring", "type",  "rawlen", "rawequal", "_VERSION", NULL};
	for (const char *const *k = keep; *k; k++) {
		lua_getglobal(L, *k);
		lua_setfield(L, base, *k);
	}
	static const char *const libnames[] = {LUA_STRLIBNAME, LUA_TABLIBNAME, LUA_MATHLIBNAME, LUA_UTF8LIBNAME, NULL};
	for (const char *const *k = libnames; *k; k++) {
		lua_getglobal(L, *k);
		push_readonly(L, -1);
		lua_setfield(L, base, *k);
		lua_pop(L, 1);
	}
	/* math.random would make verdicts non-reproducible; math.randomseed changes shared state. */
	lua_getglobal(L, LUA_MATHLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "randomseed");
	lua_pop(L, 1);
	static const luaL_Reg helpers[] = {{"version_cmp", l_version_cmp},
	                                   {"version_ge", l_version_ge},
	                                   {"version_gt", l_version_gt},
	                                   {"version_le", l_version_le},
	                                   {"version_lt", l_version_lt},
	                                   {"version_eq", l_version_eq},
	                                   {"days_since", l_days_since},
	                                   {"has_app", l_has_app},
	                                   {"app_version", l_app_version},
	                                   {"count_findings", l_count_findings},
	                                   {"in_group", l_in_group},
	                                   {"platform_is", l_platform_is},
	                                   {"is_android", l_is_android},
	                                   {"is_ios", l_is_ios},
	                                   {"print", l_noop},
	                                   {"rule", l_rule},
	                                   {NULL, NULL}};
	luaL_setfuncs(L, helpers, 0);
	lua_pushvalue(L, base);
	e->base_ref = luaL_ref(L, LUA_REGISTRYINDEX);

	/* The globals table keeps the unwrapped library functions: make it unreachable from rules by never
	 * handing it out (no _G, no load, no getmetatable). */
	luaL_newmetatable(L, VIEW_MT);
	static const luaL_Reg view_mm[] = {{"__index", l_view_index},       {"__newindex", l_view_newindex},
	                                   {"__len", l_view_len},           {"__pairs", l_view_pairs},
	                                   {"__tostring", l_view_tostring}, {NULL, NULL}};
	luaL_setfuncs(L, view_mm, 0);
	lua_pushliteral(L, "read-only device view");
	lua_setfield(L, -2, "__metatable");
	e->view_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

bw_rules_engine *bw_rules_engine_new(const struct bw_rules_limits *lim, bw_error *err)
{
	bw_rules_engine *e = calloc(1, sizeof *e);
	if (!e) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	e->mem_limit = lim && lim->memory_bytes ? lim->memory_bytes : BW_RULES_DEFAULT_MEMORY;
	e->eval_budget = lim && lim->instructions > 0 ? lim->instructions : BW_RULES_DEFAULT_INSTRUCTIONS;
	e->max_rules = lim && lim->max_rules ? lim->max_rules : BW_RULES_DEFAULT_MAX_RULES;
	e->L = lua_newstate(rules_alloc, e);
	if (!e->L) {
		free(e);
		bw_error_set(err, BW_E_NOMEM, "out of memory creating the Lua state");
		return NULL;
	}
	memcpy(lua_getextraspace(e->L), &e, sizeof e);
	lua_atpanic(e->L, rules_panic);
	lua_pushcfunction(e->L, l_setup);
	if (lua_pcall(e->L, 0, 0, 0) != LUA_OK) {
		bw_error_set(err, BW_E_NOMEM, "cannot build the rules sandbox (memory limit %zu bytes too low?): %s",
		             e->mem_limit, lua_tostring(e->L, -1) ? lua_tostring(e->L, -1) : "?");
		bw_rules_engine_free(e);
		return NULL;
	}
	/* Generational collection suits the many short-lived views and strings of an evaluation. */
	lua_gc(e->L, LUA_GCGEN, 0, 0);
	return e;
}

void bw_rules_engine_free(bw_rules_engine *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->nrules; i++)
		free_rule(NULL, &e->rules[i]);
	free(e->rules);
	if (e->L)
		lua_close(e->L);
	for (size_t i = 0; i < e->nnames; i++)
		free(e->names[i]);
	free(e->names);
	free(e);
}

/* ------------------------------------------------------------------------------------------ */
/* Loading */

/* Runs under lua_pcall with the loaded chunk at 1: gives it its own environment and runs it. */
static int l_run_chunk(lua_State *L)
{
	bw_rules_engine *e = eng(L);
	/* env stays empty so that every assignment reaches __newindex (frozen after loading); values holds what
	 * the file's top level assigned; reads fall through env -> values -> base. */
	lua_newtable(L); /* env 2 */
	lua_newtable(L); /* values 3 */
	lua_createtable(L, 0, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->base_ref);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, 3);
	lua_createtable(L, 0, 3);
	lua_pushvalue(L, 3);
	lua_setfield(L, -2, "__index");
	lua_pushvalue(L, 3);
	lua_pushcclosure(L, l_env_newindex, 1);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, 2);
	lua_pushvalue(L, 2);
	if (!lua_setupvalue(L, 1, 1))
		lua_pop(L, 1);
	lua_settop(L, 1);
	start_budget(e, e->eval_budget * LOAD_BUDGET_X);
	lua_call(L, 0, 0);
	stop_budget(e);
	return 0;
}

int bw_rules_load_string(bw_rules_engine *e, const char *name, const char *text, size_t len, bw_error *err)
{
	if (!e || !name || !text)
		return bw_error_set(err, BW_E_INVALID, "rules: missing engine, name or text");
	if (len > BW_RULES_MAX_FILE)
		return bw_error_set(err, BW_E_LIMIT, "%s: the rule file is larger than %d bytes", name,
		                    BW_RULES_MAX_FILE);
	if (len >= 1 && text[0] == LUA_SIGNATURE[0])
		return bw_error_set(err, BW_E_INVALID, "%s: binary (precompiled) Lua chunks are not accepted", name);
	char **nn = realloc(e->names, (e->nnames + 1) * sizeof *nn);
	if (!nn)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	e->names = nn;
	char *kept = strdup(name);
	char *chunk = malloc(strlen(name) + 2);
	if (!kept || !chunk) {
		free(kept);
		free(chunk);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	e->names[e->nnames++] = kept;
	chunk[0] = '=';
	strcpy(chunk + 1, name);

	lua_State *L = e->L;
	int top = lua_gettop(L);
	size_t first = e->nrules;
	int rc = BW_OK;
	e->load_name = kept;
	e->mem_exceeded = false;
	lua_pushcfunction(L, rules_msgh);
	int st = luaL_loadbufferx(L, text, len, chunk, "t");
	free(chunk);
	if (st != LUA_OK) {
		rc = bw_error_set(err, BW_E_INVALID, "%s",
		                  st == LUA_ERRMEM ? "out of memory compiling the rules" : lua_tostring(L, -1));
	} else {
		lua_pushcfunction(L, l_run_chunk);
		lua_insert(L, -2);
		e->loading = true;
		st = lua_pcall(L, 1, 0, top + 1);
		e->loading = false;
		stop_budget(e);
		if (st != LUA_OK)
			rc = bw_error_set(err, BW_E_INVALID, "%s",
			                  st == LUA_ERRMEM || !lua_isstring(L, -1)
			                      ? (e->mem_exceeded ? "the rule file exceeded the memory limit"
			                                         : "out of memory or instruction budget exceeded")
			                      : lua_tostring(L, -1));
		else if (e->nrules == first)
			rc = bw_error_set(err, BW_E_INVALID, "%s: the file declares no rule (use rule { ... })", name);
	}
	if (rc != BW_OK) {
		while (e->nrules > first)
			free_rule(L, &e->rules[--e->nrules]);
	}
	lua_settop(L, top);
	e->load_name = NULL;
	return rc;
}

int bw_rules_load_file(bw_rules_engine *e, const char *path, bw_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return bw_error_set(err, BW_E_IO, "%s: cannot open the rule file: %s", path, strerror(errno));
	char *buf = malloc(BW_RULES_MAX_FILE + 1);
	if (!buf) {
		fclose(f);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	size_t n = fread(buf, 1, BW_RULES_MAX_FILE + 1, f);
	int bad = ferror(f);
	fclose(f);
	int rc;
	if (bad)
		rc = bw_error_set(err, BW_E_IO, "%s: cannot read the rule file", path);
	else if (n > BW_RULES_MAX_FILE)
		rc =
		    bw_error_set(err, BW_E_LIMIT, "%s: the rule file is larger than %d bytes", path, BW_RULES_MAX_FILE);
	else
		rc = bw_rules_load_string(e, path, buf, n, err);
	free(buf);
	return rc;
}

size_t bw_rules_count(const bw_rules_engine *e)
{
	return e ? e->nrules : 0;
}

const struct bw_rule_info *bw_rules_info(const bw_rules_engine *e, size_t i)
{
	return e && i < e->nrules ? &e->rules[i].info : NULL;
}

void bw_rules_set_now(bw_rules_engine *e, int64_t now)
{
	e->fixed_now = now;
}

size_t bw_rules_memory(const bw_rules_engine *e)
{
	return e->mem_used;
}

/* ------------------------------------------------------------------------------------------ */
/* Evaluation */

struct eval_ctx {
	json_t *device;
	struct bw_rule_result *res;
	size_t n;
	unsigned platform; /* BW_RULE_* of the device, 0 when unknown */
};

static void set_msg(struct bw_rule_result *r, const char *msg)
{
	snprintf(r->message, sizeof r->message, "%s", msg ? msg : "");
}

/* Runs under lua_pcall (so that building the view may fail cleanly); each rule runs under its own. */
static int l_eval_all(lua_State *L)
{
	bw_rules_engine *e = eng(L);
	struct eval_ctx *c = lua_touserdata(L, 1);
	lua_settop(L, 0);
	lua_pushcfunction(L, rules_msgh); /* 1 */
	push_view(L, e, c->device);       /* 2 */
	for (size_t i = 0; i < c->n; i++) {
		struct rule *r = &e->rules[i];
		struct bw_rule_result *res = &c->res[i];
		if (r->info.platforms && !(r->info.platforms & c->platform)) {
			res->verdict = BW_RULE_NOT_APPLICABLE;
			continue;
		}
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
		lua_pushvalue(L, 2);
		e->mem_exceeded = false;
		start_budget(e, e->eval_budget);
		int st = lua_pcall(L, 1, 2, 1);
		bool over = e->used > e->budget;
		stop_budget(e);
		if (st == LUA_OK) {
			if (lua_type(L, -2) == LUA_TBOOLEAN) {
				res->verdict = lua_toboolean(L, -2) ? BW_RULE_PASS : BW_RULE_FAIL;
				if (res->verdict == BW_RULE_FAIL && lua_type(L, -1) == LUA_TSTRING)
					set_msg(res, lua_tostring(L, -1));
			} else {
				res->verdict = BW_RULE_ERROR;
				snprintf(res->message, sizeof res->message,
				         "%s:%d: rule %s: check returned %s instead of a boolean", r->info.source,
				         r->info.line, r->info.id, luaL_typename(L, -2));
			}
		} else {
			res->verdict = BW_RULE_ERROR;
			if (st == LUA_ERRMEM || !lua_isstring(L, -1)) {
				if (over)
					snprintf(res->message, sizeof res->message,
					         "rule %s: instruction budget of %ld exceeded (allocating too much)",
					         r->info.id, e->eval_budget);
				else
					snprintf(res->message, sizeof res->message,
					         "rule %s: not enough memory (the rules' limit is %zu KiB)", r->info.id,
					         e->mem_limit / 1024);
				/* Give the memory back now rather than let the next rule run into it. */
				lua_settop(L, 2);
				lua_gc(L, LUA_GCCOLLECT);
				continue;
			}
			set_msg(res, lua_tostring(L, -1));
		}
		lua_settop(L, 2);
	}
	return 0;
}

int bw_rules_evaluate(bw_rules_engine *e, json_t *device, struct bw_rule_result *results, size_t n)
{
	if (!e || !json_is_object(device))
		return BW_E_INVALID;
	if (n > e->nrules)
		n = e->nrules;
	struct eval_ctx c = {.device = device, .res = results, .n = n, .platform = 0};
	const char *p = json_string_value(json_object_get(device, "platform"));
	if (p && strcmp(p, "android") == 0)
		c.platform = BW_RULE_ANDROID;
	else if (p && strcmp(p, "ios") == 0)
		c.platform = BW_RULE_IOS;
	for (size_t i = 0; i < n; i++) {
		results[i].rule = &e->rules[i].info;
		results[i].verdict = BW_RULE_ERROR;
		results[i].message[0] = '\0';
	}
	e->gen++;
	e->cur = device;
	e->now = e->fixed_now ? e->fixed_now : (int64_t)time(NULL);
	lua_State *L = e->L;
	int top = lua_gettop(L);
	lua_pushcfunction(L, l_eval_all);
	lua_pushlightuserdata(L, &c);
	int st = lua_pcall(L, 1, 0, 0);
	if (st != LUA_OK) {
		/* Only building the view can fail here (out of memory): the rules after it did not run. */
		stop_budget(e);
		for (size_t i = 0; i < n; i++)
			if (results[i].verdict == BW_RULE_ERROR && !results[i].message[0])
				snprintf(results[i].message, sizeof results[i].message,
				         "not evaluated: out of memory building the device view");
	}
	lua_settop(L, top);
	e->cur = NULL;
	e->gen++; /* views kept by a rule stop working now */
	return BW_OK;
}
