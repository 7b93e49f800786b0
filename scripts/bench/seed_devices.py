#!/usr/bin/env python3
"""scripts/bench/seed_devices.py: bulk-inserts N enrolled devices into a STOPPED bulwarkd's database
(var/bulwark.db), for the device benchmarks (enroll_scale.sh, idle_memory.sh).

    seed_devices.py DB COUNT

The rows match the v3 schema of host/services/store_sqlite.c (table devices) and the values
host/services/store_devices.c writes at enrollment: active, enrolled by key, Android or iOS,
plausible model/IMEI/MAC, os_version_key in the store's zero-padded form, last_seen = now (so
that the out-of-sync sweep has nothing to flag). The ids are random UUIDs inserted in sorted
order, 50,000 per transaction, which keeps the seeding itself fast; later enrollments insert
random ids into the full tree as in production. These devices have no certificate or key
anywhere: they exist for the registry, the database and memory, not for check-ins.

Refuses to touch a database that is not a Bulwark database of schema version >= 3, or that a
running server has open (it must be stopped: the server loads its registry at start).
"""

import os
import random
import sqlite3
import sys
import time
import uuid

CHUNK = 50000
MODELS = [("android", "Pixel 8", "Google", "14"), ("android", "SM-S911B", "samsung", "14"),
          ("android", "Pixel 7a", "Google", "13"), ("ios", "iPhone15,4", "Apple", "17.4"),
          ("ios", "iPhone14,7", "Apple", "16.7.2")]


def die(msg):
    print("seed_devices: " + msg, file=sys.stderr)
    sys.exit(1)


def os_version_key(v):
    """The store's sortable form of a dotted version (numeric parts zero-padded to 10 digits,
    trailing zero parts dropped); enough for the plain versions used here."""
    parts = [int(p) for p in v.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return ".".join("%010d" % p for p in parts)


def luhn_imei(rng):
    digits = [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(digits):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def main():
    if len(sys.argv) != 3:
        print("usage: seed_devices.py DB COUNT", file=sys.stderr)
        sys.exit(2)
    path, count = sys.argv[1], int(sys.argv[2])
    if count < 0 or count > 10_000_000:
        die("COUNT must be 0..10000000")
    if not os.path.isfile(path):
        die("%s: no such database (start bulwarkd once to create it)" % path)
    # A running server would not see these rows (its registry is loaded at start). SQLite
    # removes the -wal file when the last connection closes cleanly, so its presence means a
    # server has the database open (or did not stop cleanly).
    if os.path.exists(path + "-wal"):
        die("%s-wal exists: stop bulwarkd first (cleanly, with SIGTERM)" % path)
    db = sqlite3.connect(path, isolation_level=None)
    if db.execute("PRAGMA user_version").fetchone()[0] < 3:
        die("%s: schema version below 3 (no devices table)" % path)
    cols = {r[1] for r in db.execute("PRAGMA table_info(devices)")}
    want = {"id", "platform", "status", "group_name", "owner", "cert_serial", "cert_not_after", "enrolled_at",
            "last_seen", "status_changed_at", "enroll_method", "os_version", "os_version_key", "model",
            "manufacturer", "serial", "imei", "wifi_mac", "phone_number", "agent_version"}
    if not want <= cols:
        die("%s: table devices lacks columns %s" % (path, ", ".join(sorted(want - cols))))
    db.execute("PRAGMA synchronous = OFF")  # a benchmark fixture: a crash just means seeding again
    db.execute("PRAGMA cache_size = -262144")

    rng = random.Random()  # seeded from the OS: seeding twice never repeats an id
    now = int(time.time())
    not_after = now + 365 * 86400
    ids = sorted(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count))
    sql = ("INSERT INTO devices (id, platform, status, group_name, owner, cert_serial, cert_not_after,"
           " enrolled_at, last_seen, status_changed_at, enroll_method, os_version, os_version_key, model,"
           " manufacturer, serial, imei, meid, wifi_mac, phone_number, agent_version, push_provider, push_token)"
           " VALUES (?, ?, 'active', '', '', ?, ?, ?, ?, ?, 'key', ?, ?, ?, ?, ?, ?, NULL, ?, ?, '1.0.0', NULL, NULL)")
    keys = {m[3]: os_version_key(m[3]) for m in MODELS}
    t0 = time.monotonic()
    for start in range(0, count, CHUNK):
        rows = []
        for i in range(start, min(count, start + CHUNK)):
            platform, model, maker, osv = MODELS[i % len(MODELS)]
            enrolled = now - rng.randrange(365 * 86400)
            rows.append((ids[i], platform, "%032x" % rng.getrandbits(128), not_after, enrolled, now, enrolled, osv,
                         keys[osv], model, maker, "R5CT%08X" % rng.getrandbits(32),
                         luhn_imei(rng) if platform == "android" else None,
                         "02:%02x:%02x:%02x:%02x:%02x" % tuple(rng.getrandbits(8) for _ in range(5)),
                         "+1555%07d" % rng.randrange(10_000_000)))
        db.execute("BEGIN")
        db.executemany(sql, rows)
        db.execute("COMMIT")
    # What the server's PRAGMA optimize would have gathered on a database that grew this large.
    db.execute("PRAGMA analysis_limit = 1000")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = db.execute("SELECT count(*) FROM devices").fetchone()[0]
    db.close()
    print("seeded %d devices in %.1f s (%d in the database)" % (count, time.monotonic() - t0, total))


if __name__ == "__main__":
    main()
