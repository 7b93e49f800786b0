"""tests/integration/ldapservers.py: real directory servers for the dir_ldap tests.

- Pki: a test CA, a server certificate it signs (localhost, 127.0.0.1, ::1 and the Samba address),
  an expired server certificate from the same CA, and an unrelated "wrong" CA (python3-cryptography).
- Slapd: an OpenLDAP slapd (Debian package slapd) in a temporary directory, configured with a
  slapd.conf (mdb, memberof, refint, ppolicy), seeded with slapadd before it starts, listening on
  127.0.0.1 and ::1 with ldap:// (StartTLS) and ldaps:// on free ports; stop/kill/pause/restart.
- SambaDC: a Samba AD DC (Debian packages samba, samba-ad-dc) provisioned into a temporary
  directory and run in the foreground with only the LDAP service. Samba's LDAP ports are fixed
  (389, 636, 3268, 3269), so it binds to the dedicated loopback address SAMBA_ADDR, 127.0.0.77
  (127.0.0.1 is left alone; all of 127.0.0.0/8 is loopback on Linux) and, when free, to ::1 for
  the IPv6 test.
  Users and groups are added offline through Samba's own ldb modules before the server starts.

The fixtures at the end (slapd_pki, slapd_server, samba_dc) are module-scoped: each server is
started once per test module and stopped at the end, also when tests fail. They skip only when
the server binary is missing; scripts/deps installs them, so nothing is skipped in CI.
"""

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from bwserver import free_port, ipv6_loopback_available, tail

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = "/usr/bin/samba-tool"
# Samba's python bindings belong to Debian's interpreter, not to a virtualenv or pyenv python.
SYSTEM_PYTHON = "/usr/bin/python3"

# The loopback address the Samba DC listens on (its ports cannot be moved). 127.0.0.1 stays free
# for everything else; 127.0.0.77 is an arbitrary, rarely used address of the 127/8 loopback net.
# When its ports are taken (another run in parallel), the next of 127.0.0.78-127.0.0.97 is used;
# BULWARK_TEST_SAMBA_ADDR forces one. The test certificate names all of them.
SAMBA_ADDR = os.environ.get("BULWARK_TEST_SAMBA_ADDR", "127.0.0.77")
SAMBA_ADDRS = [SAMBA_ADDR] if "BULWARK_TEST_SAMBA_ADDR" in os.environ else ["127.0.0.%d" % i for i in range(77, 98)]

BASE_DN = "dc=corp,dc=example"
ROOT_DN = "cn=admin," + BASE_DN
ROOT_PW = "Root-Secret-1"
SVC_DN = "cn=bulwark-svc,ou=services," + BASE_DN
SVC_PW = "Svc-Secret-123"


def require_binary(path, package):
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip("%s is not installed (Debian package %s; scripts/deps installs it)" % (path, package))


def wait_port(host, port, timeout=30.0, proc=None, log=None):
    """Waits until host:port accepts TCP connections; fails early when `proc` exits."""
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with status %s before listening on %s:%d\n%s" % (
                proc.returncode, host, port, tail(log.read_text(errors="replace")) if log else ""))
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect((host, port))
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError("nothing listens on %s:%d after %.0f s" % (host, port, timeout))


def port_bindable(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# Certificates


class Pki:
    """Test certificates in `directory` (PEM files, keys 0600):
    ca.pem (Bulwark Test Directory CA), server.pem/server.key (valid, signed by the CA),
    expired.pem/expired.key (signed by the CA, expired yesterday), wrong-ca.pem (another CA that
    signed nothing we serve), wrong-server.pem/.key (signed by the wrong CA)."""

    def __init__(self, directory, names=("localhost", "dc1.corp.example", "corp.example"),
                 addresses=("127.0.0.1", "::1", *SAMBA_ADDRS)):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)

        def key():
            return ec.generate_private_key(ec.SECP256R1())

        def name(cn):
            return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bulwark Tests"),
                              x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def write_key(k, fname):
            p = self.dir / fname
            p.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            os.chmod(p, 0o600)
            return p

        def write_cert(c, fname):
            p = self.dir / fname
            p.write_bytes(c.public_bytes(serialization.Encoding.PEM))
            return p

        def make_ca(cn):
            k = key()
            c = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(k.public_key())
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(days=30))
                 .not_valid_after(now + datetime.timedelta(days=365))
                 .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                 .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                                              key_cert_sign=True, crl_sign=True, encipher_only=False,
                                              decipher_only=False), critical=True)
                 .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
                 .sign(k, hashes.SHA256()))
            return k, c

        def make_server(ca_key, ca_cert, cn, not_before, not_after):
            k = key()
            san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            c = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                 .public_key(k.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(not_before).not_valid_after(not_after)
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                              key_encipherment=True, data_encipherment=False, key_agreement=True,
                                              key_cert_sign=False, crl_sign=False, encipher_only=False,
                                              decipher_only=False), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                 .add_extension(x509.SubjectAlternativeName(san), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                critical=False)
                 .sign(ca_key, hashes.SHA256()))
            return k, c

        ca_key, ca_cert = make_ca("Bulwark Test Directory CA")
        self.ca = write_cert(ca_cert, "ca.pem")
        self.ca_key = write_key(ca_key, "ca.key")
        k, c = make_server(ca_key, ca_cert, "dc1.corp.example", now - datetime.timedelta(days=1),
                           now + datetime.timedelta(days=30))
        self.server_cert, self.server_key = write_cert(c, "server.pem"), write_key(k, "server.key")
        k, c = make_server(ca_key, ca_cert, "expired.corp.example", now - datetime.timedelta(days=60),
                           now - datetime.timedelta(days=1))
        self.expired_cert, self.expired_key = write_cert(c, "expired.pem"), write_key(k, "expired.key")
        wk, wc = make_ca("Some Other CA")
        self.wrong_ca = write_cert(wc, "wrong-ca.pem")
        k, c = make_server(wk, wc, "dc1.corp.example", now - datetime.timedelta(days=1),
                           now + datetime.timedelta(days=30))
        self.wrong_server_cert, self.wrong_server_key = write_cert(c, "wrong-server.pem"), write_key(k,
                                                                                                  "wrong-server.key")


# ---------------------------------------------------------------------------------------------
# LDIF


def _ldif_value(attr, value):
    if isinstance(value, bytes):
        return "%s:: %s" % (attr, base64.b64encode(value).decode())
    s = str(value)
    safe = s and all(0x20 <= ord(ch) < 0x7f for ch in s) and s[0] not in " :<" and s[-1] != " "
    if safe:
        return "%s: %s" % (attr, s)
    return "%s:: %s" % (attr, base64.b64encode(s.encode("utf-8")).decode())


def ldif_entry(dn, attrs):
    """One LDIF entry; attrs is a list of (name, value) pairs or a dict of name -> value or list.
    Non-ASCII values are base64 encoded (UTF-8)."""
    lines = [_ldif_value("dn", dn)]
    items = attrs.items() if isinstance(attrs, dict) else attrs
    for a, v in items:
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            lines.append(_ldif_value(a, x))
    return "\n".join(lines) + "\n\n"


def ssha(password):
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


# ---------------------------------------------------------------------------------------------
# OpenLDAP slapd


class SlapdData:
    """The directory the slapd tests use (dc=corp,dc=example, rfc2307bis-like: inetOrgPerson users,
    groupOfNames groups with member). Names and passwords are attributes so tests can refer to them."""

    USERS = {
        # uid: (display name, given name, surname, password, mail)
        "alice": ("Alice Müller-Lüdenscheidt", "Alice", "Müller-Lüdenscheidt", "Alice-Password-1",
                  "alice@corp.example"),
        "bob": ("Bob Ørsted 山田", "Bob", "Ørsted", "Bob-Password-22", "bob@corp.example"),
        "carol": ("Carol Łukasiewicz", "Carol", "Łukasiewicz", "Carol-Password-3", "carol@corp.example"),
        "dave": ("Dávid Kovács", "Dávid", "Kovács", "Dave-Password-44", "dave@corp.example"),
        "erin": ("Erin Ó Séaghdha", "Erin", "Ó Séaghdha", "Erin-Password-5", "erin@corp.example"),
    }
    LOCKED = "carol"  # pwdAccountLockedTime 000001010000Z: locked by an administrator
    # cn: members (uids or "group:<cn>")
    GROUPS = {
        "bulwark-admins": ["erin", "group:it-staff"],  # dave is an administrator through it-staff
        "it-staff": ["dave"],
        "auditors": ["bob"],  # -> readonly
        "sales": ["alice", "bob"],  # -> device group "Sales Phones"
        "everyone": None,  # all users incl. the bulk ones
    }

    def __init__(self, bulk_users=300):
        self.bulk_users = bulk_users

    @staticmethod
    def user_dn(uid):
        return "uid=%s,ou=people,%s" % (uid, BASE_DN)

    @staticmethod
    def group_dn(cn):
        return "cn=%s,ou=groups,%s" % (cn, BASE_DN)

    def bulk_uids(self):
        return ["user%04d" % i for i in range(self.bulk_users)]

    def all_uids(self):
        return list(self.USERS) + self.bulk_uids()

    def member_dns(self, cn):
        members = self.GROUPS[cn]
        if members is None:
            return [self.user_dn(u) for u in self.all_uids()]
        return [self.group_dn(m[6:]) if m.startswith("group:") else self.user_dn(m) for m in members]

    def ldif(self):
        out = [ldif_entry(BASE_DN, [("objectClass", ["top", "dcObject", "organization"]), ("dc", "corp"),
                                    ("o", "Corp Example")])]
        for ou in ("people", "groups", "services", "policies"):
            out.append(ldif_entry("ou=%s,%s" % (ou, BASE_DN), [("objectClass", "organizationalUnit"), ("ou", ou)]))
        out.append(ldif_entry("cn=default,ou=policies," + BASE_DN, [
            ("objectClass", ["top", "device", "pwdPolicy"]), ("cn", "default"), ("pwdAttribute", "userPassword"),
            ("pwdLockout", "TRUE"), ("pwdMaxFailure", "0")]))
        out.append(ldif_entry(SVC_DN, [("objectClass", ["top", "person"]), ("cn", "bulwark-svc"),
                                       ("sn", "Service"), ("userPassword", ssha(SVC_PW))]))
        member_of = {}
        for cn in self.GROUPS:
            for m in self.member_dns(cn):
                member_of.setdefault(m, []).append(self.group_dn(cn))
        for uid, (disp, given, sn, pw, mail) in self.USERS.items():
            attrs = [("objectClass", ["top", "person", "organizationalPerson", "inetOrgPerson"]), ("uid", uid),
                     ("cn", disp), ("givenName", given), ("sn", sn), ("displayName", disp), ("mail", mail),
                     ("userPassword", ssha(pw))]
            if uid != "erin":
                attrs.append(("manager", self.user_dn("erin")))
            if uid == self.LOCKED:
                attrs.append(("pwdAccountLockedTime", "000001010000Z"))
            attrs.append(("memberOf", member_of.get(self.user_dn(uid), [])))
            out.append(ldif_entry(self.user_dn(uid), attrs))
        for uid in self.bulk_uids():
            n = uid[4:]
            out.append(ldif_entry(self.user_dn(uid), [
                ("objectClass", ["top", "person", "organizationalPerson", "inetOrgPerson"]), ("uid", uid),
                ("cn", "Bulk User %s" % n), ("sn", "User %s" % n), ("displayName", "Bulk Üser %s" % n),
                ("mail", "%s@corp.example" % uid), ("memberOf", member_of.get(self.user_dn(uid), []))]))
        for cn in self.GROUPS:
            attrs = [("objectClass", ["top", "groupOfNames"]), ("cn", cn), ("member", self.member_dns(cn))]
            mo = member_of.get(self.group_dn(cn))
            if mo:
                attrs.append(("memberOf", mo))
            out.append(ldif_entry(self.group_dn(cn), attrs))
        return "".join(out)


SLAPD_CONF = """\
# written by tests/integration/ldapservers.py
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload refint
moduleload ppolicy
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
TLSProtocolMin 3.3
# Like Active Directory's MaxPageSize: a search without the paged results control gets at most 100
# entries (then sizeLimitExceeded), so a sync of the 300+ users only works with paging. The rootdn
# (the harness's own ldapsearch) is not limited.
sizelimit size.soft=100 size.hard=100 size.pr=1000 size.prtotal=unlimited
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by anonymous auth
database mdb
maxsize 268435456
suffix "{base}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {dir}/db
index objectClass eq
index uid,mail,cn eq
index member,memberOf eq
index entryUUID eq
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
overlay refint
refint_attributes member
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{base}"
ppolicy_use_lockout
"""


class Slapd:
    """One slapd in `directory`: ldap://127.0.0.1:ldap_port (StartTLS), ldaps://127.0.0.1:ldaps_port and
    the same ports on [::1] when IPv6 loopback works. cert: "valid" | "expired" | "wrong" (signed
    by the wrong CA)."""

    def __init__(self, directory, pki, data=None, cert="valid"):
        require_binary(SLAPD, "slapd")
        require_binary(SLAPADD, "slapd")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.data = data or SlapdData()
        self.ipv6 = ipv6_loopback_available()
        self.ldap_port = free_port(also_v6=self.ipv6)
        self.ldaps_port = free_port(also_v6=self.ipv6)
        cert_file, key_file = {"valid": (pki.server_cert, pki.server_key),
                               "expired": (pki.expired_cert, pki.expired_key),
                               "wrong": (pki.wrong_server_cert, pki.wrong_server_key)}[cert]
        self.conf = self.dir / "slapd.conf"
        self.conf.write_text(SLAPD_CONF.format(dir=self.dir, ca=pki.ca, cert=cert_file, key=key_file, base=BASE_DN,
                                               rootdn=ROOT_DN, rootpw=ROOT_PW))
        self.log_path = self.dir / "slapd.log"
        self.proc = None
        (self.dir / "db").mkdir(exist_ok=True)
        ldif = self.dir / "seed.ldif"
        ldif.write_text(self.data.ldif(), encoding="utf-8")
        cp = subprocess.run([SLAPADD, "-q", "-f", str(self.conf), "-l", str(ldif)], capture_output=True, text=True)
        if cp.returncode != 0:
            raise RuntimeError("slapadd failed (%d):\n%s" % (cp.returncode, cp.stderr))

    # ---- addresses

    def url(self, kind="ldaps", host="127.0.0.1"):
        port = self.ldaps_port if kind == "ldaps" else self.ldap_port
        h = "[%s]" % host if ":" in host else host
        return "%s://%s:%d" % (kind, h, port)

    def listen_urls(self):
        hosts = ["127.0.0.1"] + (["::1"] if self.ipv6 else [])
        return " ".join(self.url(k, h) + "/" for h in hosts for k in ("ldap", "ldaps"))

    # ---- process

    def start(self, timeout=30):
        assert not self.running(), "slapd already runs"
        self._log = open(self.log_path, "ab")
        # -d 0: stay in the foreground (the test owns the process) without debug output.
        self.proc = subprocess.Popen([SLAPD, "-d", "0", "-f", str(self.conf), "-h", self.listen_urls()],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     start_new_session=True)
        for host in ["127.0.0.1"] + (["::1"] if self.ipv6 else []):
            for port in (self.ldap_port, self.ldaps_port):
                wait_port(host, port, timeout, self.proc, self.log_path)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        self.proc = None

    def kill(self):
        """SIGKILL: connections are reset, nothing is shut down cleanly."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        self.proc = None

    def pause(self):
        """SIGSTOP: the server keeps its sockets but answers nothing until resume()."""
        if self.running():
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        if self.running():
            self.proc.send_signal(signal.SIGCONT)

    def restart(self):
        self.stop()
        return self.start()

    # ---- client tools (ldap-utils) as the rootdn over ldap:// on 127.0.0.1

    def _tool(self, tool, args, input_text=None, check=True):
        env = dict(os.environ, LDAPTLS_CACERT=str(self.pki.ca), LDAPTLS_REQCERT="demand")
        cp = subprocess.run([tool, "-x", "-H", self.url("ldap"), "-D", ROOT_DN, "-w", ROOT_PW] + list(args),
                            input=input_text, capture_output=True, text=True, env=env, timeout=60)
        if check and cp.returncode != 0:
            raise RuntimeError("%s %s failed (%d): %s" % (tool, " ".join(args), cp.returncode, cp.stderr))
        return cp

    def search(self, base=BASE_DN, filt="(objectClass=*)", attrs=(), scope="sub"):
        return self._tool("ldapsearch", ["-LLL", "-o", "ldif-wrap=no", "-b", base, "-s", scope, filt] +
                          list(attrs)).stdout

    def modify(self, ldif_text):
        """ldapmodify with changetype records (add/modify/delete)."""
        return self._tool("ldapmodify", [], input_text=ldif_text)

    def add(self, ldif_text):
        return self._tool("ldapadd", [], input_text=ldif_text)

    def replace(self, dn, attr, value):
        return self.modify("dn: %s\nchangetype: modify\nreplace: %s\n%s\n" % (dn, attr, _ldif_value(attr, value)))


# ---------------------------------------------------------------------------------------------
# Samba AD DC

SAMBA_REALM = "CORP.EXAMPLE"
SAMBA_DOMAIN = "CORP"
SAMBA_BASE = "DC=corp,DC=example"
SAMBA_ADMIN_PW = "Adm1n-Secret-Pass!"


class SambaData:
    """What the Samba tests expect: bulk users (paging), one group with more members than AD's
    MaxValRange (1500; range retrieval), nested groups, a disabled account."""

    BULK_USERS = 1600  # > 1,000 for paging; all of them are in BIG_GROUP (> 1,500 members)
    BIG_GROUP = "all-staff"
    USERS = {
        # sAMAccountName: (display name, given, surname, password)
        "alice": ("Alice Müller-Lüdenscheidt", "Alice", "Müller-Lüdenscheidt", "Alice-Passw0rd-1"),
        "bob": ("Bob Ørsted 山田", "Bob", "Ørsted", "Bob-Passw0rd-22"),
        "dave": ("Dávid Kovács", "Dávid", "Kovács", "Dave-Passw0rd-44"),
        "mallory": ("Mallory Disabled", "Mallory", "Disabled", "Mallory-Passw0rd-5"),
    }
    DISABLED = "mallory"
    GROUPS = {
        "Bulwark Admins": ["group:IT Staff"],  # dave is an administrator only through nesting
        "IT Staff": ["dave"],
        "Auditors": ["bob"],
        "Sales": ["alice", "bob"],
    }

    @staticmethod
    def user_dn(sam):
        return "CN=%s,CN=Users,%s" % (sam, SAMBA_BASE)

    @staticmethod
    def group_dn(cn):
        return "CN=%s,CN=Users,%s" % (cn, SAMBA_BASE)

    def bulk_names(self):
        return ["bulk%04d" % i for i in range(self.BULK_USERS)]


# Runs under Debian's python3 with Samba's bindings, against the offline sam.ldb: provisioning
# leaves a consistent database, and adding through SamDB runs Samba's own modules (objectGUID,
# objectSid, memberOf backlinks, replication metadata) exactly as an LDAP add would, but without
# a network round trip per entry.
_SAMBA_SEED = r'''
import json, sys
from samba.samdb import SamDB
from samba.auth import system_session
from samba.param import LoadParm
import ldb

spec = json.load(open(sys.argv[2], encoding="utf-8"))
lp = LoadParm()
lp.load(sys.argv[1])
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
base = spec["base"]
db.transaction_start()
try:
    for u in spec["users"]:
        dn = "CN=%s,CN=Users,%s" % (u["sam"], base)
        msg = {"dn": dn, "objectClass": "user", "sAMAccountName": u["sam"],
               "userPrincipalName": u["sam"] + "@corp.example", "displayName": u["display"],
               "givenName": u["given"], "sn": u["sn"], "mail": u["sam"] + "@corp.example",
               "userAccountControl": str(u["uac"])}
        if u.get("password"):
            msg["unicodePwd"] = ('"%s"' % u["password"]).encode("utf-16-le")
        db.add(msg)
    for g in spec["groups"]:
        dn = "CN=%s,CN=Users,%s" % (g["cn"], base)
        db.add({"dn": dn, "objectClass": "group", "sAMAccountName": g["cn"], "groupType": "-2147483646"})
    for g in spec["groups"]:
        dn = "CN=%s,CN=Users,%s" % (g["cn"], base)
        m = ldb.Message(ldb.Dn(db, dn))
        m["member"] = ldb.MessageElement(g["members"], ldb.FLAG_MOD_ADD, "member")
        db.modify(m)
    db.transaction_commit()
except Exception:
    db.transaction_cancel()
    raise
print("seeded %d users, %d groups" % (len(spec["users"]), len(spec["groups"])))
'''


class SambaDC:
    """A Samba AD DC in `directory`: realm CORP.EXAMPLE, NetBIOS domain CORP, LDAP/LDAPS on
    SAMBA_ADDR (and ::1 when port 389/636 is free there), TLS with the Pki's server certificate."""

    def __init__(self, directory, pki, data=None, ipv6=None):
        require_binary(SAMBA, "samba-ad-dc")
        require_binary(SAMBA_TOOL, "samba-common-bin")
        require_binary(SYSTEM_PYTHON, "python3")
        self.dir = Path(directory)
        self.pki = pki
        self.data = data or SambaData()
        free = [a for a in SAMBA_ADDRS if all(port_bindable(a, p) for p in (389, 636))]
        if not free:
            raise RuntimeError("ports 389/636 are taken on %s (a system slapd or Samba listening on all "
                               "addresses?); stop it or set BULWARK_TEST_SAMBA_ADDR to a free 127.x.y.z address"
                               % ", ".join(SAMBA_ADDRS[:1] + SAMBA_ADDRS[-1:]))
        self.addr = free[0]
        if ipv6 is None:
            ipv6 = ipv6_loopback_available() and all(port_bindable("::1", p) for p in (389, 636))
        self.ipv6 = ipv6
        self.proc = None
        self.log_path = self.dir / "samba.log"
        self.timings = {}

    @property
    def smb_conf(self):
        return self.dir / "etc" / "smb.conf"

    def url(self, kind="ldaps", host=None):
        host = host or self.addr
        h = "[%s]" % host if ":" in host else host
        return "%s://%s:%d" % (kind, h, 636 if kind == "ldaps" else 389)

    def provision(self):
        t0 = time.monotonic()
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        tls_dir = self.dir / "tls"
        tls_dir.mkdir()
        # Samba insists on a 0600 key file it owns.
        for src, dst in ((self.pki.server_cert, "cert.pem"), (self.pki.server_key, "key.pem"),
                         (self.pki.ca, "ca.pem")):
            shutil.copy(src, tls_dir / dst)
        os.chmod(tls_dir / "key.pem", 0o600)
        # "address/prefix": Samba takes the address as given; a bare address must be configured on
        # an interface, and only 127.0.0.1 is (the rest of 127/8 is routed to lo without that).
        interfaces = self.addr + "/8" + (" ::1" if self.ipv6 else "")
        opts = {
            "interfaces": interfaces,
            "bind interfaces only": "yes",
            "server services": "ldap",  # no DNS, SMB, kdc, rpc: only what the tests use
            "dcerpc endpoint servers": "",
            "tls enabled": "yes",
            "tls keyfile": str(tls_dir / "key.pem"),
            "tls certfile": str(tls_dir / "cert.pem"),
            "tls cafile": str(tls_dir / "ca.pem"),
            "tls priority": "NORMAL:-VERS-TLS1.0:-VERS-TLS1.1",
            "log level": "1",
            "log file": str(self.dir / "samba.log"),
            "ldap server require strong auth": "yes",
        }
        cmd = [SAMBA_TOOL, "domain", "provision", "--targetdir=%s" % self.dir, "--realm=" + SAMBA_REALM,
               "--domain=" + SAMBA_DOMAIN, "--adminpass=" + SAMBA_ADMIN_PW, "--server-role=dc",
               "--dns-backend=NONE", "--use-rfc2307", "--host-name=dc1", "--host-ip=" + self.addr]
        cmd += ["--option=%s = %s" % kv for kv in opts.items()]
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=self._env())
        if cp.returncode != 0:
            raise RuntimeError("samba-tool domain provision failed (%d):\n%s\n%s" % (
                cp.returncode, tail(cp.stdout), tail(cp.stderr)))
        self.timings["provision"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.seed()
        self.timings["seed"] = time.monotonic() - t0
        return self

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        return env

    def seed(self):
        import json
        d = self.data
        users = []
        for sam, (disp, given, sn, pw) in d.USERS.items():
            users.append({"sam": sam, "display": disp, "given": given, "sn": sn, "password": pw,
                          # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD, + ACCOUNTDISABLE for the disabled one
                          "uac": 0x10200 | (0x2 if sam == d.DISABLED else 0)})
        for sam in d.bulk_names():
            users.append({"sam": sam, "display": "Bulk Üser %s" % sam[4:], "given": "Bulk", "sn": sam[4:],
                          "uac": 0x10200 | 0x20})  # PASSWD_NOTREQD: no password for bulk users
        groups = []
        for cn, members in d.GROUPS.items():
            groups.append({"cn": cn, "members": [d.group_dn(m[6:]) if m.startswith("group:") else d.user_dn(m)
                                                 for m in members]})
        groups.append({"cn": d.BIG_GROUP, "members": [d.user_dn(s) for s in d.bulk_names()]})
        spec = self.dir / "seed.json"
        spec.write_text(json.dumps({"base": SAMBA_BASE, "users": users, "groups": groups}), encoding="utf-8")
        script = self.dir / "seed.py"
        script.write_text(_SAMBA_SEED)
        cp = subprocess.run([SYSTEM_PYTHON, str(script), str(self.smb_conf), str(spec)], capture_output=True,
                            text=True, timeout=300, env=self._env())
        if cp.returncode != 0:
            raise RuntimeError("seeding the Samba database failed (%d):\n%s\n%s" % (
                cp.returncode, tail(cp.stdout), tail(cp.stderr)))

    def start(self, timeout=60):
        t0 = time.monotonic()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([SAMBA, "-i", "-M", "single", "-s", str(self.smb_conf)],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     start_new_session=True, env=self._env())
        hosts = [self.addr] + (["::1"] if self.ipv6 else [])
        for h in hosts:
            for p in (389, 636):
                wait_port(h, p, timeout, self.proc, self.log_path)
        self.timings["start"] = time.monotonic() - t0
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # -i runs samba as the leader of its own session: signal the whole group.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        self.proc = None

    def ldapsearch(self, base=SAMBA_BASE, filt="(objectClass=*)", attrs=(), scope="sub", user=None,
                   password=None, extra=()):
        env = dict(os.environ, LDAPTLS_CACERT=str(self.pki.ca), LDAPTLS_REQCERT="demand")
        cmd = ["ldapsearch", "-x", "-H", self.url("ldaps"), "-D", user or "Administrator@corp.example", "-w",
               password or SAMBA_ADMIN_PW, "-LLL", "-o", "ldif-wrap=no", "-b", base, "-s", scope] + list(extra) + [
                   filt] + list(attrs)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    def modify(self, ldif_text):
        """ldapmodify over LDAPS as Administrator (changetype records)."""
        env = dict(os.environ, LDAPTLS_CACERT=str(self.pki.ca), LDAPTLS_REQCERT="demand")
        cp = subprocess.run(["ldapmodify", "-x", "-H", self.url("ldaps"), "-D", "Administrator@corp.example", "-w",
                             SAMBA_ADMIN_PW], input=ldif_text, capture_output=True, text=True, env=env, timeout=120)
        if cp.returncode != 0:
            raise RuntimeError("ldapmodify failed (%d): %s" % (cp.returncode, cp.stderr))
        return cp

    def replace(self, dn, attr, value):
        return self.modify("dn: %s\nchangetype: modify\nreplace: %s\n%s\n" % (dn, attr, _ldif_value(attr, value)))


# ---------------------------------------------------------------------------------------------
# Fixtures (module scope; import them into a test module: from ldapservers import slapd_server, ...)


@pytest.fixture(scope="module")
def dir_pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("dir-pki"))


@pytest.fixture(scope="module")
def slapd_server(dir_pki, tmp_path_factory):
    """A running, seeded slapd for the module (SlapdData with 300 bulk users)."""
    require_binary(SLAPD, "slapd")
    srv = Slapd(tmp_path_factory.mktemp("slapd"), dir_pki).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def samba_dc(dir_pki, tmp_path_factory):
    """A provisioned, seeded, running Samba AD DC for the module."""
    require_binary(SAMBA, "samba-ad-dc")
    dc = SambaDC(tmp_path_factory.mktemp("samba"), dir_pki)
    try:
        dc.provision().start()
        # Shown with -rA / -s; setup time matters on 2 shared cores.
        print("Samba DC on %s%s: %s" % (dc.addr, " and ::1" if dc.ipv6 else "", ", ".join(
            "%s %.1f s" % kv for kv in dc.timings.items())))
        yield dc
    finally:
        dc.stop()


# ---------------------------------------------------------------------------------------------
# The plugin's admin routes (design: /api/v1/plugins/dir_ldap/...)

PLUGIN = "dir_ldap"


class DirApi:
    """Calls the dir_ldap admin routes of one bulwarkd with an administrator token."""

    def __init__(self, srv, token=None):
        self.srv = srv
        self.token = token or srv.login()

    def call(self, method, route, json=None, expect=None, timeout=60):
        r = self.srv.api(method, "/api/v1/plugins/%s/%s" % (PLUGIN, route), json=json, token=self.token,
                         timeout=timeout)
        if expect is not None:
            assert r.status == expect, (method, route, r)
        return r

    def test(self):
        """POST test -> the report (200 whether or not the directory was reachable)."""
        r = self.call("POST", "test", json={})
        assert r.status == 200 and isinstance(r.body, dict), r
        return r.body

    def sync_state(self):
        return self.call("GET", "sync", expect=200).body

    def start_sync(self, full=True):
        r = self.call("POST", "sync", json={"full": full})
        assert r.status == 202 and r.body.get("state") == "running" and r.body.get("sync_id"), r
        return r.body["sync_id"]

    def wait_sync(self, timeout=120, poll=0.05):
        deadline = time.monotonic() + timeout
        while True:
            st = self.sync_state()
            if st["state"] != "running":
                return st
            if time.monotonic() > deadline:
                pytest.fail("sync still running after %d s: %r\nlog tail:\n%s" % (
                    timeout, st, tail(self.srv.log_text())))
            time.sleep(poll)

    def sync(self, full=True, timeout=120):
        """Runs one sync to its end and checks that it succeeded -> the whole GET sync answer."""
        sync_id = self.start_sync(full)
        st = self.wait_sync(timeout)
        assert st["state"] == "idle", "sync failed: %r\nlog tail:\n%s" % (st, tail(self.srv.log_text()))
        assert st["last"]["id"] == sync_id, st
        assert st["last"]["mode"] == ("full" if full else "incremental"), st
        assert not st["last"].get("error"), st
        return st

    def _pages(self, route, key, limit=200, q=None):
        out, after = [], None
        for _ in range(10000):
            qs = "limit=%d" % limit
            if after:
                qs += "&after=" + urllib.parse.quote(after, safe="")
            if q:
                qs += "&q=" + urllib.parse.quote(q, safe="")
            body = self.call("GET", "%s?%s" % (route, qs), expect=200).body
            page = body[key]
            assert len(page) <= limit, (route, limit, len(page))
            out.extend(page)
            after = body.get("next_after")
            if not after or not page:
                return out
        raise AssertionError("%s: pagination does not end" % route)

    def users(self, q=None, limit=200):
        return self._pages("users", "users", limit=limit, q=q)

    def groups(self, limit=200):
        return self._pages("groups", "groups", limit=limit)


def directory_login(srv, user, password):
    """POST /api/v1/session with directory credentials -> Response."""
    return srv.api("POST", "/api/v1/session", json={"user": user, "password": password})


def audit_entries(srv, token, limit=200):
    r = srv.api("GET", "/api/v1/audit?limit=%d" % limit, token=token)
    assert r.status == 200, r
    return r.body["entries"]


def make_csr(cn="device"):
    """A PKCS#10 request (PEM text) for a new P-256 key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    k = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(k, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def directory_enroll(srv, user, password, **device):
    dev = {"platform": "android", "os_version": "14", "model": "Pixel 8", "manufacturer": "Google"}
    dev.update(device)
    return srv.agent_api("POST", "/agent/v1/enroll", json={"method": "directory", "user": user, "password": password,
                                                             "csr": make_csr(), "device": dev})
