"""Online backup (GET /api/v1/db/backup and `bulwarkctl db backup`) while the server is busy."""

import os
import sqlite3
import stat
import threading
import time



def check_backup(path, must_have_notes=()):
    with open(path, "rb") as f:
        assert f.read(16) == b"SQLite format 3\x00", "not an SQLite file"
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = [r[0] for r in db.execute("SELECT name FROM admins")]
        assert "admin" in names
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"admins", "tokens", "audit_log", "plugin_records"} <= tables, tables
        if must_have_notes:
            keys = {r[0] for r in db.execute(
                "SELECT key FROM plugin_records WHERE plugin = 'example_hello' AND collection = 'notes'")}
            missing = set(must_have_notes) - keys
            assert not missing, "notes stored before the backup started are missing: %s" % sorted(missing)[:5]
    finally:
        db.close()


class Traffic(threading.Thread):
    """Writes notes (and logs in now and then) until stopped; remembers what was confirmed."""

    def __init__(self, server, token):
        super().__init__(daemon=True)
        self.server, self.token = server, token
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.confirmed = []
        self.errors = []
        self.logins = 0

    def run(self):
        i = 0
        while not self.stop_event.is_set():
            try:
                key = "bk-%05d" % i
                r = self.server.api("POST", "/api/v1/plugins/example_hello/notes", json={"key": key, "text": "x" * 200},
                                    token=self.token)
                if r.status != 201:
                    self.errors.append(("note", r))
                else:
                    with self.lock:
                        self.confirmed.append(key)
                if i % 15 == 0:
                    r = self.server.api("POST", "/api/v1/session",
                                        json={"user": "admin", "password": self.server.password})
                    if r.status != 201:
                        self.errors.append(("login", r))
                    self.logins += 1
                if i % 5 == 0:
                    r = self.server.api("GET", "/api/v1/plugins/example_hello/notes", token=self.token)
                    if r.status != 200:
                        self.errors.append(("list", r))
            except Exception as e:  # noqa: BLE001 - reported below
                self.errors.append(("exception", repr(e)))
            i += 1

    def snapshot(self):
        with self.lock:
            return list(self.confirmed)


def test_backup_while_serving(server, admin_token, tmp_path):
    traffic = Traffic(server, admin_token)
    traffic.start()
    try:
        deadline = time.monotonic() + 30
        while len(traffic.snapshot()) < 5 and time.monotonic() < deadline and not traffic.errors:
            time.sleep(0.02)
        for n in range(4):
            before = traffic.snapshot()
            r = server.api("GET", "/api/v1/db/backup", token=admin_token, timeout=60)
            assert r.status == 200, r
            assert r.headers["Content-Type"] == "application/vnd.sqlite3"
            assert int(r.headers.get("Content-Length", len(r.raw))) == len(r.raw)
            path = tmp_path / ("backup-%d.db" % n)
            path.write_bytes(r.raw)
            check_backup(path, before)
    finally:
        traffic.stop_event.set()
        traffic.join(60)
    assert not traffic.errors, traffic.errors[:5]
    assert len(traffic.confirmed) >= 5 and traffic.logins > 0
    print("notes written during the backups:", len(traffic.confirmed), "logins:", traffic.logins)
    # No temporary backup files are left in var/.
    leftovers = [p.name for p in server.var.iterdir() if p.name.startswith("backup-")]
    assert not leftovers, leftovers
    entries = server.api("GET", "/api/v1/audit?limit=1000", token=admin_token).body["entries"]
    assert sum(1 for e in entries if e["action"] == "db.backup" and e["outcome"] == "success") >= 4


def test_backup_needs_auth(server):
    r = server.api("GET", "/api/v1/db/backup")
    assert r.status == 401


def test_ctl_db_backup(server, admin_token, tmp_path):
    out = tmp_path / "ctl-backup.db"
    cp = server.ctl("db", "backup", str(out), env={"BULWARK_TOKEN": admin_token})
    assert cp.returncode == 0, cp.stderr
    st = os.stat(out)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    check_backup(out)


def test_ctl_db_backup_unwritable_target(server, admin_token, tmp_path):
    cp = server.ctl("db", "backup", str(tmp_path / "no" / "such" / "dir" / "b.db"), env={"BULWARK_TOKEN": admin_token})
    assert cp.returncode == 1, (cp.returncode, cp.stderr)
    assert cp.stderr.strip()


def test_ctl_db_backup_without_login(server, tmp_path):
    cp = server.ctl("db", "backup", str(tmp_path / "b.db"))
    assert cp.returncode == 4, (cp.returncode, cp.stderr)
    assert not (tmp_path / "b.db").exists()
