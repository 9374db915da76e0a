"""A throw-away OpenLDAP server (Debian's `slapd`) for the directory-login tests: its own
slapd.conf and database in a temporary folder, on a free loopback port, in the foreground
as a child process; nothing of the machine's /etc/ldap is read or changed except the stock
schema files. Without slapd, ldapadd or python-ldap the tests skip, unless
AIVC_REQUIRE_LDAP=1 (CI), where that fails."""

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SUFFIX = "dc=lab,dc=example"
PEOPLE = f"ou=people,{SUFFIX}"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "slapd-admin-secret"
SERVICE_DN = f"cn=portal,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "portal-bind-Secret-4417"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

# uid -> (password, given name, surname)
PEOPLE_IN_DIRECTORY = {
    "ada": ("ada-directory-pw", "Ada", "Lovelace"),
    "grace": ("grace-directory-pw", "Grace", "Hopper"),
    "m11007s05": ("student-directory-pw", "Mei", "Lin"),
}


def require_ldap_tools() -> None:
    missing = [tool for tool in ("slapd", "ldapadd") if not _which(tool)]
    if importlib.util.find_spec("ldap") is None or importlib.util.find_spec("django_auth_ldap") is None:
        missing.append("python-ldap/django-auth-ldap (pip install -r requirements-ldap.txt)")
    if not (SCHEMA_DIR / "inetorgperson.schema").exists():
        missing.append(f"{SCHEMA_DIR}/inetorgperson.schema (Debian's slapd package)")
    if missing:
        reason = "directory-login tests need " + ", ".join(missing)
        if os.environ.get("AIVC_REQUIRE_LDAP") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _people_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Lab\ndc: lab\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: portal\nuserPassword: {SERVICE_PASSWORD}\n",
    ]
    for uid, (password, given, surname) in PEOPLE_IN_DIRECTORY.items():
        entries.append(
            f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {given} {surname}\n"
            f"givenName: {given}\nsn: {surname}\nmail: {uid}@lab.example\nuserPassword: {password}\n"
        )
    return "\n".join(entries)


@dataclass
class Slapd:
    folder: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"

    def start(self) -> "Slapd":
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "slapd.conf"
        config.write_text(
            "\n".join(
                [
                    *(f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson")),
                    f"pidfile {self.folder / 'slapd.pid'}",
                    f"modulepath {MODULE_DIR}",
                    "moduleload back_mdb",
                    "database mdb",
                    "maxsize 10485760",
                    f'suffix "{SUFFIX}"',
                    f'rootdn "{ADMIN_DN}"',
                    f"rootpw {ADMIN_PASSWORD}",
                    f"directory {data}",
                    "access to attrs=userPassword by anonymous auth by self write by * none",
                    "access to * by users read by * none",
                    "",
                ]
            )
        )
        fresh = self.port == 0
        if fresh:
            self.port = _free_port()
        self.process = subprocess.Popen(
            [_which("slapd"), "-f", str(config), "-h", self.uri, "-d", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("slapd did not listen within 15 s")
        if fresh:
            secret = self.folder / "admin.pw"
            secret.write_text(ADMIN_PASSWORD)
            secret.chmod(0o600)
            subprocess.run(
                [_which("ldapadd"), "-x", "-H", self.uri, "-D", ADMIN_DN, "-y", str(secret)],
                input=_people_ldif().encode(),
                check=True,
                capture_output=True,
                timeout=30,
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
