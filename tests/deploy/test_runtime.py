"""The release binaries run the way the pod spec runs them: as uid/gid 65532, from a
directory they cannot write (the root filesystem is read-only in the pod; /tmp stands in for
the emptyDir), with the chart's ConfigMap environment, authentication on and the API keys file
laid out as the kubelet lays out a Secret volume (read-only, `..data` symlink swapped
atomically on update). They start, answer the probes, /metrics and the OpenAPI document
without a key, refuse a data route without a key (401), with a wrong key (401) and with the
other service's scope (403), serve it with a key made by `create-key`, apply the chart's rate
limit (429), pick up a rotated Secret without a restart, turn /ready to 503 on SIGTERM while
/health keeps answering, and exit 0 inside the grace period. The migration runs with the same
ConfigMap but without the keys volume, as the hook Job does.

Needs: the binaries (target/release, else target/debug, or MEDROBOTICS_BIN_DIR), root (to
drop to 65532 with setpriv) and the local PostgreSQL; data-ingestion also an S3 endpoint
(`moto_server` on PATH or in `.cache/*/bin`, where scripts/test installs moto). Skipped, with the reason, when one is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, one, render

UID = 65532
GRACE = 90  # terminationGracePeriodSeconds of the charts


def find_binary(name: str) -> Path | None:
    dirs = [os.environ.get("MEDROBOTICS_BIN_DIR", ""), ROOT / "target/release", ROOT / "target/debug"]
    for d in dirs:
        if d and (Path(d) / name).is_file() and os.access(Path(d) / name, os.X_OK):
            return Path(d) / name
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, path: str, key: str | None = None) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=2) as r:  # noqa: S310 (loopback only)
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()
    except OSError:
        return 0, {}, ""


def get(port: int, path: str, key: str | None = None) -> tuple[int, str]:
    status, _, body = request(port, path, key)
    return status, body


def wait_for(port: int, path: str, status: int, timeout: float, key: str | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(port, path, key)[0] == status:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def database():
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the binaries as uid 65532")
    if not shutil.which("psql"):
        pytest.skip("needs psql and the local PostgreSQL")
    name = f"deploy_runtime_{uuid.uuid4().hex[:8]}"
    base = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
    if subprocess.run([*base, f"create database {name}"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the local PostgreSQL (127.0.0.1:5432, user postgres) is not reachable")
    yield name
    subprocess.run([*base, f"drop database if exists {name} with (force)"], capture_output=True, check=False)


# The chart values of these runs: a fast reload (rotation in seconds) and a rate limit small
# enough to reach; the keys used for everything else carry their own generous rate.
CHART_VALUES = {"auth": {"reloadSeconds": 1, "rateLimit": {"perSecond": 1, "burst": 2}}}
ROUTE = {"api-service": ("/api/robots", "read", "ingest"), "data-ingestion": ("/ingest/stats", "ingest", "read")}


def pod_env(chart: str, database: str, port: int, extra: dict[str, str]) -> dict[str, str]:
    config = one(render(chart, CHART_VALUES), "ConfigMap")["data"]
    assert config["APP_AUTH__ENABLED"] == "true"
    env = {**config, "PORT": str(port), "RDS_HOST": "127.0.0.1", "RDS_PORT": "5432", "RDS_DBNAME": database,
           "RDS_USER": "postgres", "RDS_PASSWORD": "unused-with-trust-auth", "APP_DATABASE__SSL_MODE": "disable",
           "APP_SERVER__DRAIN_DELAY_SECS": "3", "APP_SERVER__SHUTDOWN_TIMEOUT_SECS": "5",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "TMPDIR": "/tmp", "PATH": "/usr/bin:/bin"}
    env.update(extra)
    return env


def run_as_pod(binary: Path, args: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen:
    # The pod's securityContext: uid/gid 65532, no supplementary groups, no new privileges.
    cmd = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--no-new-privs", str(binary), *args]
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def readonly_dir() -> str:
    d = tempfile.mkdtemp(prefix="medrobotics-ro-")
    os.chmod(d, 0o555)  # owned by root: uid 65532 cannot write here
    return d


def create_key(exe: Path, env: dict[str, str], cwd: str, name: str, scope: str, **limits: float) -> tuple[str, dict]:
    """`<service> create-key`, run like `docker run <image> create-key`: the key (printed once)
    and the entry to store (with optional per-key limits)."""
    proc = run_as_pod(exe, ["create-key", "--name", name, "--scope", scope], env, cwd)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    keys = re.findall(r"^\s*(mrk_[A-Za-z0-9_-]{43})\s*$", out, re.M)
    entries = [json.loads(m) for m in re.findall(r"^\s*(\{.*\})\s*$", out, re.M)]
    assert len(keys) == 1 and len(entries) == 1, out
    entry = entries[0]
    assert entry["name"] == name and entry["scopes"] == [scope] and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
    assert keys[0] not in json.dumps(entry), "the entry to store must not contain the key"
    entry.update(limits)
    return keys[0], entry


class SecretVolume:
    """A directory laid out like the kubelet's Secret volume: `keys.json -> ..data/keys.json`,
    `..data -> ..<version>`, files root-owned, mode 0440, group 65532 (fsGroup). An update
    writes a new version and swaps `..data` atomically, as the kubelet does."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="medrobotics-auth-"))
        os.chmod(self.dir, 0o755)
        self.version = 0
        os.symlink("..data/keys.json", self.dir / "keys.json")

    @property
    def path(self) -> str:
        return str(self.dir / "keys.json")

    def write(self, entries: list[dict]) -> None:
        self.version += 1
        version = self.dir / f"..v{self.version}"
        version.mkdir()
        os.chmod(version, 0o755)
        (version / "keys.json").write_text(json.dumps(entries))
        os.chown(version / "keys.json", 0, UID)
        os.chmod(version / "keys.json", 0o440)
        tmp = self.dir / "..data_tmp"
        os.symlink(version.name, tmp)
        os.replace(tmp, self.dir / "..data")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def check_authentication(port: int, chart: str, keys: dict[str, str], volume: SecretVolume, entries: dict[str, dict]) -> None:
    route, scope, other = ROUTE[chart]
    prefix = route.rsplit("/", 1)[0]
    # Probes, metrics and the OpenAPI document stay open.
    for path in ("/health", "/ready", "/metrics", f"{prefix}/health", f"{prefix}/openapi.json"):
        assert get(port, path)[0] == 200, path
    # No key, an unknown key: 401 with the challenge; the other service's scope: 403.
    status, headers, _ = request(port, route)
    assert status == 401 and headers.get("www-authenticate", "").startswith('Bearer realm="medrobotics"'), (status, headers)
    assert request(port, route, "mrk_" + "x" * 43)[0] == 401
    assert request(port, route, keys[other])[0] == 403
    # The key made by create-key: served, not cacheable.
    status, headers, body = request(port, route, keys["current"])
    assert status == 200, body
    assert headers.get("cache-control") == "no-store" and headers.get("x-content-type-options") == "nosniff", headers
    # The chart's rate limit (1/s, burst 2) for a key without its own: the third request at once is 429.
    statuses = [request(port, route, keys["limited"]) for _ in range(3)]
    assert [s for s, _, _ in statuses[:2]] == [200, 200], [s for s, _, _ in statuses]
    assert statuses[2][0] == 429 and int(statuses[2][1]["retry-after"]) >= 1, statuses[2][:2]
    # Rotation through the Secret volume, without a restart: add the new key, move, remove the old.
    volume.write([entries["current"], entries["next"], entries["limited"], entries[other]])
    assert wait_for(port, route, 200, 15, keys["next"]), "the new key was not accepted after the Secret update"
    assert get(port, route, keys["current"])[0] == 200, "the old key must keep working until it is removed"
    volume.write([entries["next"], entries["limited"], entries[other]])
    assert wait_for(port, route, 401, 15, keys["current"]), "the removed key was still accepted"
    assert get(port, route, keys["next"])[0] == 200


def pod_binary(binary: Path) -> Path:
    # The runtime binary must be readable by the unprivileged user (copy it out of target/).
    exe = Path(tempfile.mkdtemp(prefix="medrobotics-bin-")) / binary.name
    shutil.copy2(binary, exe)
    os.chmod(exe.parent, 0o755)
    os.chmod(exe, 0o755)
    return exe


def migrate(binary: Path, chart: str, database: str, cwd: str) -> None:
    """`api-service migrate` as the hook Job runs it: the ConfigMap environment (auth on, the
    keys file path) but no keys volume, which the Job does not mount."""
    env = pod_env(chart, database, free_port(), {})
    assert not Path(env["APP_AUTH__KEYS_FILE"]).exists()
    exe = pod_binary(binary)
    try:
        proc = run_as_pod(exe, ["migrate"], env, cwd)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"migrate failed:\n{out}"
    finally:
        shutil.rmtree(exe.parent, ignore_errors=True)


class Output:
    """Drains a process's output in the background (a full pipe would stall its logging)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)
        self.thread.start()

    def text(self) -> str:
        self.thread.join(timeout=5)
        return "".join(self.lines)


def exercise(binary: Path, chart: str, database: str, extra_env: dict[str, str], migrator: Path) -> None:
    port = free_port()
    cwd = readonly_dir()
    exe = pod_binary(binary)
    volume = SecretVolume()
    proc = None
    try:
        migrate(migrator, "api-service", database, cwd)
        env = pod_env(chart, database, port, {**extra_env, "APP_AUTH__KEYS_FILE": volume.path})
        _, scope, other = ROUTE[chart]
        fast = {"rate_per_sec": 1000.0, "burst": 1000.0}
        keys, entries = {}, {}
        for name, key_scope, limits in (("current", scope, fast), ("next", scope, fast), ("limited", scope, {}), (other, other, fast)):
            keys[name], entries[name] = create_key(exe, env, cwd, f"deploy-test-{name}", key_scope, **limits)
        volume.write([entries["current"], entries["limited"], entries[other]])
        proc = run_as_pod(exe, [], env, cwd)
        output = Output(proc)
        assert wait_for(port, "/health", 200, 60), "no /health within the startup probe's 60 s"
        assert wait_for(port, "/ready", 200, 30), f"/ready never answered 200: {get(port, '/ready')}"
        status, body = get(port, "/metrics")
        assert status == 200 and "http_requests_total" in body
        prefixed = "/api/health" if chart == "api-service" else "/ingest/health"
        assert get(port, prefixed)[0] == 200
        check_authentication(port, chart, keys, volume, entries)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert wait_for(port, "/ready", 503, 2), "readiness did not turn 503 on SIGTERM"
        assert get(port, "/health")[0] == 200, "the process stopped serving during the drain delay"
        proc.wait(timeout=GRACE)
        out = output.text()
        assert proc.returncode == 0, f"exit status {proc.returncode}:\n{out[-2000:]}"
        assert time.monotonic() - started < GRACE
        assert "API key authentication on" in out, out[-2000:]
        assert not any(k in out for k in keys.values()), "a key appeared in the logs"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        volume.remove()
        shutil.rmtree(exe.parent, ignore_errors=True)
        os.chmod(cwd, 0o755)
        shutil.rmtree(cwd, ignore_errors=True)


def test_api_service_runs_like_the_pod(database):
    binary = find_binary("api-service")
    if binary is None:
        pytest.skip("api-service binary not built (cargo build --release -p api-service)")
    exercise(binary, "api-service", database, {}, binary)


def test_data_ingestion_runs_like_the_pod(database):
    binary = find_binary("data-ingestion")
    migrator = find_binary("api-service")
    if binary is None or migrator is None:
        pytest.skip("data-ingestion and api-service (which owns the schema) binaries not built (cargo build --release)")
    moto_server = shutil.which("moto_server") or next(iter(sorted(ROOT.glob(".cache/*/bin/moto_server"))), None)
    if not moto_server:
        pytest.skip("needs an S3 endpoint: moto_server on PATH or in .cache/*/bin (pip install 'moto[server]')")
    s3_port = free_port()
    moto = subprocess.Popen([str(moto_server), "-H", "127.0.0.1", "-p", str(s3_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(s3_port, "/", 200, 20)
        req = urllib.request.Request(f"http://127.0.0.1:{s3_port}/medrobotics-raw-example", method="PUT")
        urllib.request.urlopen(req, timeout=5)  # noqa: S310 (loopback only)
        exercise(binary, "data-ingestion", database, {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }, migrator)
    finally:
        moto.terminate()
        moto.wait()
