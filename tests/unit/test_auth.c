/* tests/unit/test_auth.c: failed-login accounting (host/api/auth.c): per-account and
 * per-address limits, fixed windows, the wait value, and what a success clears. Times are
 * chosen by the test (now_ms), so nothing here sleeps. */
#include "testutil.h"

#include "auth.h"

#include <stdio.h>
#include <stdlib.h>

static const struct bw_auth_limits limits = {.per_account = 3, .per_address = 5, .window_ms = 60000};

static void test_per_account_limit(void **state)
{
	(void)state;
	bw_auth *a = bw_auth_new();
	assert_non_null(a);
	assert_int_equal(bw_auth_blocked(a, &limits, "alice", "10.0.0.1", 1000), 0);
	bw_auth_failure(a, &limits, "alice", "10.0.0.1", 1000);
	bw_auth_failure(a, &limits, "alice", "10.0.0.2", 2000);
	/* Two failures: still allowed, from anywhere. */
	assert_int_equal(bw_auth_blocked(a, &limits, "alice", "10.0.0.1", 2500), 0);
	bw_auth_failure(a, &limits, "alice", "10.0.0.3", 3000);
	/* The third failure blocks the account until its window (started at 1000) ends, whatever
	 * the address; the wait counts down to the end of the window. */
	assert_int_equal(bw_auth_blocked(a, &limits, "alice", "10.0.0.1", 3000), 58000);
	assert_int_equal(bw_auth_blocked(a, &limits, "alice", "192.168.1.1", 4000), 57000);
	assert_int_equal(bw_auth_blocked(a, &limits, "alice", "10.0.0.9", 60999), 1);
	/* Other accounts from the same addresses are not affected. */
	assert_int_equal(bw_auth_blocked(a, &limits, "bob", "10.0.0.1", 4000), 0);
	/* Further failures while blocked do not extend the fixed window. */
	bw_auth_failure(a, &limits, "alice", "10.0.0.4", 30000);
	assert_int_equal(bw_auth_blocked(a, &limits, "alice", "10.0.0.1", 30000), 31000);
	bw_auth_free(a);
}

static void test_window_expiry(void **state)
{
	(void)state;
	bw_auth *a = bw_auth_new();
	for (int i = 0; i < 3; i++)
		bw_auth_failure(a, &limits, "carol", "10.1.0.1", 5000 + i);
	assert_true(bw_auth_blocked(a, &limits, "carol", "10.1.0.1", 64999) > 0);
	/* At window start + window the block is over and the count starts again. */
	assert_int_equal(bw_auth_blocked(a, &limits, "carol", "10.1.0.1", 65000), 0);
	bw_auth_failure(a, &limits, "carol", "10.1.0.1", 65000);
	bw_auth_failure(a, &limits, "carol", "10.1.0.1", 66000);
	assert_int_equal(bw_auth_blocked(a, &limits, "carol", "10.1.0.1", 66000), 0);
	bw_auth_failure(a, &limits, "carol", "10.1.0.1", 67000);
	assert_int_equal(bw_auth_blocked(a, &limits, "carol", "10.1.0.1", 67000), 65000 + 60000 - 67000);
	/* Failures spread wider than a window never block: each window counts on its own. */
	bw_auth *b = bw_auth_new();
	for (int i = 0; i < 10; i++) {
		bw_auth_failure(b, &limits, "dave", "10.2.0.1", (int64_t)i * 30000);
		if (i % 2 == 1)
			assert_int_equal(bw_auth_blocked(b, &limits, "dave", "10.2.0.1", (int64_t)i * 30000), 0);
	}
	bw_auth_free(b);
	bw_auth_free(a);
}

static void test_per_address_limit(void **state)
{
	(void)state;
	bw_auth *a = bw_auth_new();
	char name[32];
	/* Five failures for five different accounts from one address. */
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof name, "user%d", i);
		assert_int_equal(bw_auth_blocked(a, &limits, name, "203.0.113.7", 10000 + i), 0);
		bw_auth_failure(a, &limits, name, "203.0.113.7", 10000 + i);
	}
	/* The address is now blocked for every account, even ones never tried. */
	assert_int_equal(bw_auth_blocked(a, &limits, "fresh", "203.0.113.7", 20000), 50000);
	assert_int_equal(bw_auth_blocked(a, &limits, "user0", "203.0.113.7", 20000), 50000);
	/* The accounts themselves (one failure each) are fine from elsewhere. */
	assert_int_equal(bw_auth_blocked(a, &limits, "user0", "203.0.113.8", 20000), 0);
	assert_int_equal(bw_auth_blocked(a, &limits, "fresh", "2001:db8::1", 20000), 0);
	assert_int_equal(bw_auth_blocked(a, &limits, "fresh", "203.0.113.7", 70000), 0);
	bw_auth_free(a);
}

static void test_wait_is_the_longer_of_both(void **state)
{
	(void)state;
	bw_auth *a = bw_auth_new();
	/* The address window starts at 0 and fills up at 4000; the account window starts at 2000. */
	bw_auth_failure(a, &limits, "x1", "198.51.100.1", 0);
	bw_auth_failure(a, &limits, "x2", "198.51.100.1", 1000);
	for (int i = 0; i < 3; i++)
		bw_auth_failure(a, &limits, "erin", "198.51.100.1", 2000 + i * 1000);
	/* account: 2000 + 60000 - 5000 = 57000; address: 0 + 60000 - 5000 = 55000 */
	assert_int_equal(bw_auth_blocked(a, &limits, "erin", "198.51.100.1", 5000), 57000);
	assert_int_equal(bw_auth_blocked(a, &limits, "other", "198.51.100.1", 5000), 55000);
	assert_int_equal(bw_auth_blocked(a, &limits, "erin", "198.51.100.2", 5000), 57000);
	bw_auth_free(a);
}

static void test_success_resets_account_only(void **state)
{
	(void)state;
	bw_auth *a = bw_auth_new();
	for (int i = 0; i < 3; i++)
		bw_auth_failure(a, &limits, "frank", "192.0.2.1", 1000 + i);
	bw_auth_failure(a, &limits, "mallory", "192.0.2.1", 1010);
	bw_auth_failure(a, &limits, "mallory", "192.0.2.1", 1011);
	assert_true(bw_auth_blocked(a, &limits, "frank", "192.0.2.9", 2000) > 0);
	bw_auth_success(a, "frank");
	/* The account is clear again from another address... */
	assert_int_equal(bw_auth_blocked(a, &limits, "frank", "192.0.2.9", 2000), 0);
	/* ...but the address that made five failures stays blocked. */
	assert_int_equal(bw_auth_blocked(a, &limits, "frank", "192.0.2.1", 2000), 59000);
	/* After the reset, the account needs three new failures to be blocked again. */
	bw_auth_failure(a, &limits, "frank", "192.0.2.9", 3000);
	bw_auth_failure(a, &limits, "frank", "192.0.2.9", 3001);
	assert_int_equal(bw_auth_blocked(a, &limits, "frank", "192.0.2.9", 3002), 0);
	bw_auth_failure(a, &limits, "frank", "192.0.2.9", 3002);
	assert_true(bw_auth_blocked(a, &limits, "frank", "192.0.2.9", 3003) > 0);
	/* A success for an account never seen is harmless. */
	bw_auth_success(a, "nobody");
	bw_auth_free(a);
}

static void test_many_distinct_keys_stay_bounded(void **state)
{
	(void)state;
	/* A flood of distinct names and addresses must not grow memory without bound; once the
	 * window has passed the old entries make room again, and accounting still works. */
	bw_auth *a = bw_auth_new();
	char name[32], addr[32];
	for (int i = 0; i < 60000; i++) {
		snprintf(name, sizeof name, "n%d", i);
		snprintf(addr, sizeof addr, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		bw_auth_failure(a, &limits, name, addr, 1000);
	}
	for (int i = 0; i < 3; i++)
		bw_auth_failure(a, &limits, "late", "172.16.0.1", 100000 + i);
	assert_true(bw_auth_blocked(a, &limits, "late", "172.16.0.2", 100003) > 0);
	bw_auth_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_per_account_limit),           cmocka_unit_test(test_window_expiry),
	    cmocka_unit_test(test_per_address_limit),           cmocka_unit_test(test_wait_is_the_longer_of_both),
	    cmocka_unit_test(test_success_resets_account_only), cmocka_unit_test(test_many_distinct_keys_stay_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
