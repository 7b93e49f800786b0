"""Groups on the admin API (issue "Policies and groups"): the default group, a tree of groups (create,
rename, move with cycle checks, delete with and without move_to), name validation, roles, audit, devices and
enrollment keys following renames and deletions, and moving a device with PATCH /api/v1/devices/{id}.

Devices are enrolled with the simulator bulwark-agent (helpers of test_agent.py)."""

import uuid

import pytest

from test_agent import agent_bin, make_env  # noqa: F401 (fixture)


def uniq(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:6])


@pytest.fixture(scope="module")
def env(module_servers, agent_bin, tmp_path_factory):
    srv = module_servers.start(plugins=[])
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("devices"))
    return srv, admin, agent


def group(admin, name, expect=200):
    return admin.call("GET", "/api/v1/groups/" + name, expect=expect).body


def create(admin, name, parent=None, expect=201, **extra):
    body = dict(extra, name=name)
    if parent is not None:
        body["parent"] = parent
    return admin.call("POST", "/api/v1/groups", json=body, expect=expect).body


def names(admin):
    return {g["name"]: g for g in admin.call("GET", "/api/v1/groups", expect=200).body["groups"]}


def test_default_group_exists(env):
    _, admin, _ = env
    d = names(admin)["default"]
    assert d["parent"] is None and d["policy_version"] == 0, d
    assert len(d["effective_version"]) == 16, d
    g = group(admin, "default")
    assert g["name"] == "default" and isinstance(g["children"], list), g


def test_tree_create_get_children(env):
    _, admin, _ = env
    a, b, c = uniq("a"), uniq("b"), uniq("c")
    ga = create(admin, a, description="top level")
    assert ga["parent"] == "default" and ga["description"] == "top level" and ga["devices"] == 0, ga
    assert ga["created_at"].endswith("Z"), ga
    create(admin, b, parent=a)
    create(admin, c, parent=b)
    assert group(admin, a)["children"] == [b]
    assert group(admin, b)["parent"] == a and group(admin, b)["children"] == [c]
    assert b in group(admin, a)["children"] and a in group(admin, "default")["children"]
    listed = names(admin)
    assert listed[c]["parent"] == b, listed[c]
    # The same name twice: 409; unknown parent: 404.
    r = admin.call("POST", "/api/v1/groups", json={"name": b})
    assert r.status == 409 and b in r.body["error"]["message"], r
    r = admin.call("POST", "/api/v1/groups", json={"name": uniq("x"), "parent": "no-such-group"})
    assert r.status == 404 and "no-such-group" in r.body["error"]["message"], r
    assert admin.call("GET", "/api/v1/groups/no-such-group").status == 404


@pytest.mark.parametrize("bad, why", [
    ("", "name"), ("a/b", "'/'"), ("tab\there", "control"), ("x" * 129, "1 to 128"),
])
def test_bad_names_refused(env, bad, why):
    _, admin, _ = env
    r = admin.call("POST", "/api/v1/groups", json={"name": bad})
    assert r.status == 400 and why in r.body["error"]["message"], r
    assert bad not in names(admin)


@pytest.mark.parametrize("body, why", [
    ({}, "name"), ({"name": 5}, "string"), ({"name": "ok-name", "color": "red"}, "color"),
    ({"name": "ok-name", "description": "d" * 1025}, "description"),
])
def test_bad_bodies_refused(env, body, why):
    _, admin, _ = env
    r = admin.call("POST", "/api/v1/groups", json=body)
    assert r.status == 400 and why in r.body["error"]["message"], r


def test_cycles_and_default_refused(env):
    _, admin, _ = env
    a, b, c = uniq("a"), uniq("b"), uniq("c")
    create(admin, a)
    create(admin, b, parent=a)
    create(admin, c, parent=b)
    for target in (a, b, c):
        r = admin.call("PATCH", "/api/v1/groups/" + a, json={"parent": target})
        assert r.status == 409 and "cycle" in r.body["error"]["message"], (target, r)
    assert group(admin, a)["parent"] == "default"
    r = admin.call("PATCH", "/api/v1/groups/default", json={"name": "renamed"})
    assert r.status == 409 and "default" in r.body["error"]["message"], r
    r = admin.call("PATCH", "/api/v1/groups/default", json={"parent": a})
    assert r.status == 409, r
    r = admin.call("DELETE", "/api/v1/groups/default")
    assert r.status == 409 and "default" in r.body["error"]["message"], r
    # A legal move: c directly under a.
    assert admin.call("PATCH", "/api/v1/groups/" + c, json={"parent": a}, expect=200).body["parent"] == a
    assert sorted(group(admin, a)["children"]) == sorted([b, c])
    r = admin.call("PATCH", "/api/v1/groups/" + c, json={})
    assert r.status == 400, r
    r = admin.call("PATCH", "/api/v1/groups/" + c, json={"name": b})
    assert r.status == 409, r


def test_rename_follows_devices_and_keys(env):
    _, admin, agent = env
    g = uniq("team")
    create(admin, g)
    key = admin.key(group=g)
    dev = agent.enroll(key=key["key"])
    assert admin.device(dev.id)["group"] == g
    assert group(admin, g)["devices"] == 1
    new = uniq("renamed")
    assert admin.call("PATCH", "/api/v1/groups/" + g, json={"name": new, "description": "x"},
                      expect=200).body["name"] == new
    assert admin.call("GET", "/api/v1/groups/" + g).status == 404
    assert admin.device(dev.id)["group"] == new
    assert admin.key_state(key["id"])["group"] == new
    assert group(admin, new)["devices"] == 1
    listed = admin.call("GET", "/api/v1/devices?group=" + new, expect=200).body["devices"]
    assert [d["id"] for d in listed] == [dev.id]


def test_delete_needs_move_to_when_not_empty(env):
    _, admin, agent = env
    top, sub, empty = uniq("top"), uniq("sub"), uniq("empty")
    create(admin, top)
    create(admin, sub, parent=top)
    create(admin, empty)
    key = admin.key(group=top)
    dev = agent.enroll(key=key["key"])
    r = admin.call("DELETE", "/api/v1/groups/" + top)
    assert r.status == 409 and "1 devices and 1 subgroups" in r.body["error"]["message"], r
    r = admin.call("DELETE", "/api/v1/groups/%s?move_to=%s" % (top, sub))
    assert r.status == 409 and "subgroups" in r.body["error"]["message"], r  # into its own subtree
    r = admin.call("DELETE", "/api/v1/groups/%s?move_to=no-such" % top)
    assert r.status == 404, r
    admin.call("DELETE", "/api/v1/groups/" + empty, expect=204)
    assert admin.call("GET", "/api/v1/groups/" + empty).status == 404
    admin.call("DELETE", "/api/v1/groups/%s?move_to=default" % top, expect=204)
    assert admin.call("GET", "/api/v1/groups/" + top).status == 404
    assert group(admin, sub)["parent"] == "default"
    assert admin.device(dev.id)["group"] == "default"
    assert admin.key_state(key["id"])["group"] == "default"


def test_move_device(env):
    _, admin, agent = env
    g = uniq("dest")
    create(admin, g)
    dev = agent.enroll()
    r = admin.call("PATCH", "/api/v1/devices/" + dev.id, json={"group": g}, expect=200).body
    assert r["id"] == dev.id and r["group"] == g and len(r["policy_version"]) == 16, r
    assert admin.device(dev.id)["group"] == g
    assert group(admin, g)["devices"] == 1
    for body, status in [({"group": "no-such"}, 404), ({}, 400), ({"group": 1}, 400), ({"group": g, "x": 1}, 400)]:
        r = admin.call("PATCH", "/api/v1/devices/" + dev.id, json=body)
        assert r.status == status, (body, r)
    r = admin.call("PATCH", "/api/v1/devices/%s" % uuid.uuid4(), json={"group": g})
    assert r.status == 404, r
    r = admin.call("PATCH", "/api/v1/devices/not-a-uuid", json={"group": g})
    assert r.status == 400, r


def test_readonly_cannot_change_groups(env):
    srv, admin, _ = env
    name = uniq("ro")
    srv.add_admin(admin.token, name, "readonly-password-1", role="readonly")
    tok = srv.login(name, "readonly-password-1")
    assert srv.api("GET", "/api/v1/groups", token=tok).status == 200
    assert srv.api("POST", "/api/v1/groups", json={"name": uniq("x")}, token=tok).status == 403
    assert srv.api("PATCH", "/api/v1/groups/default", json={"description": "x"}, token=tok).status == 403
    assert srv.api("DELETE", "/api/v1/groups/default", token=tok).status == 403
    assert srv.api("GET", "/api/v1/groups").status == 401


def test_changes_are_audited(env):
    _, admin, _ = env
    g = uniq("audited")
    create(admin, g)
    admin.call("PATCH", "/api/v1/groups/" + g, json={"description": "d"}, expect=200)
    admin.call("DELETE", "/api/v1/groups/" + g, expect=204)
    admin.call("DELETE", "/api/v1/groups/default")
    entries = admin.call("GET", "/api/v1/audit?limit=50", expect=200).body["entries"]
    mine = [(e["action"], e["outcome"]) for e in entries if e.get("target") == g]
    for want in [("group.create", "success"), ("group.update", "success"), ("group.delete", "success")]:
        assert want in mine, (want, mine)
    assert any(e["action"] == "group.delete" and e["outcome"] == "failure" and e["target"] == "default"
               for e in entries), entries


def test_a_key_for_a_new_group_creates_it(env):
    """An enrollment key may name a group that does not exist yet: it is created under default, so a
    device enrolled with the key is in a real group (with that group's policy), never in a phantom one."""
    _, admin, _ = env
    name = uniq("field")
    assert name not in names(admin)
    admin.call("POST", "/api/v1/enrollment/keys", json={"group": name}, expect=201)
    g = group(admin, name)
    assert g["parent"] == "default" and g["description"] == "named by an enrollment key", g
    # A bad name is refused before anything is created.
    admin.call("POST", "/api/v1/enrollment/keys", json={"group": "a/b"}, expect=400)
