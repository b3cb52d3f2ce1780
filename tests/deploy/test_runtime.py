"""The release binaries run the way the pod spec runs them: as uid/gid 65532, from a
directory they cannot write (the root filesystem is read-only in the pod; /tmp stands in for
the emptyDir), with the chart's ConfigMap environment; they start, answer the probes, turn
/ready to 503 on SIGTERM while /health keeps answering, and exit 0 inside the grace period.

Needs: the binaries (target/release, else target/debug, or MEDROBOTICS_BIN_DIR), root (to
drop to 65532 with setpriv) and the local PostgreSQL; data-ingestion also an S3 endpoint
(`moto_server` on PATH or in `.cache/*/bin`, where scripts/test installs moto). Skipped, with the reason, when one is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, one, render

UID = 65532
GRACE = 45  # terminationGracePeriodSeconds of the charts


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


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:  # noqa: S310 (loopback only)
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def wait_for(port: int, path: str, status: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(port, path)[0] == status:
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


def pod_env(chart: str, database: str, port: int, extra: dict[str, str]) -> dict[str, str]:
    config = one(render(chart), "ConfigMap")["data"]
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


def exercise(binary: Path, chart: str, database: str, extra_env: dict[str, str]) -> None:
    port = free_port()
    env = pod_env(chart, database, port, extra_env)
    cwd = readonly_dir()
    # The runtime binary must be readable by the unprivileged user (copy it out of target/).
    exe = Path(tempfile.mkdtemp(prefix="medrobotics-bin-")) / binary.name
    shutil.copy2(binary, exe)
    os.chmod(exe.parent, 0o755)
    os.chmod(exe, 0o755)
    if chart == "api-service":
        migrate = run_as_pod(exe, ["migrate"], env, cwd)
        out, _ = migrate.communicate(timeout=120)
        assert migrate.returncode == 0, f"migrate failed:\n{out}"
    proc = run_as_pod(exe, [], env, cwd)
    try:
        assert wait_for(port, "/health", 200, 60), "no /health within the startup probe's 60 s"
        assert wait_for(port, "/ready", 200, 30), f"/ready never answered 200: {get(port, '/ready')}"
        status, body = get(port, "/metrics")
        assert status == 200 and "http_requests_total" in body
        prefixed = "/api/health" if chart == "api-service" else "/ingest/health"
        assert get(port, prefixed)[0] == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert wait_for(port, "/ready", 503, 2), "readiness did not turn 503 on SIGTERM"
        assert get(port, "/health")[0] == 200, "the process stopped serving during the drain delay"
        out, _ = proc.communicate(timeout=GRACE)
        assert proc.returncode == 0, f"exit status {proc.returncode}:\n{out[-2000:]}"
        assert time.monotonic() - started < GRACE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(exe.parent, ignore_errors=True)
        os.chmod(cwd, 0o755)
        shutil.rmtree(cwd, ignore_errors=True)


def test_api_service_runs_like_the_pod(database):
    binary = find_binary("api-service")
    if binary is None:
        pytest.skip("api-service binary not built (cargo build --release -p api-service)")
    exercise(binary, "api-service", database, {})


def test_data_ingestion_runs_like_the_pod(database):
    binary = find_binary("data-ingestion")
    if binary is None:
        pytest.skip("data-ingestion binary not built (cargo build --release -p data-ingestion)")
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
        })
    finally:
        moto.terminate()
        moto.wait()
