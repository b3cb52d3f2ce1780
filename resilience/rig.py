#!/usr/bin/env python3
"""The resilience rig: real processes in the shape of the EKS deployment.

A private PostgreSQL cluster (initdb under .cache/resilience/, own port), a private moto
S3 server behind a TCP proxy that can be cut, 2-3 replicas of each service, and nginx as
the ALB/ingress (`/api` and `/ingest` path routing, passive failover with
`proxy_next_upstream`, and an "ALB controller" thread that polls every replica's
`/ready` and rewrites the upstream blocks + `nginx -s reload`, since open-source nginx
has no active health checks). A purpose-written client records every request and every
acknowledged telemetry record; the bucket is read back at the end of each scenario.

Run through `scripts/resilience [--quick]`; see README.md, section "Reliability".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "resilience"
RESULTS = ROOT / "resilience" / "results"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
BUCKET = "rig-raw"
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- HTTP client


@dataclass
class Resp:
    status: int  # 0: connection-level failure
    headers: dict
    body: bytes
    seconds: float

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 30.0) -> Resp:
    """One request on a fresh connection (no client keep-alive, so an nginx reload or a
    replica exit can never hit a reused idle connection: every failure is real)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Connection": "close"}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data,
                    time.monotonic() - started)
    except (OSError, http.client.HTTPException):
        return Resp(0, {}, b"", time.monotonic() - started)
    finally:
        conn.close()


def send_raw(port: int, method: str, path: str, body: bytes | None, headers: dict,
             timeout: float = 30.0) -> Resp:
    """Like `request`, but stops sending as soon as the server answers: a server that
    refuses an oversized body early (413 on Content-Length) closes the connection, and
    a client that only reads after sending everything would see a reset instead."""
    import select
    started = time.monotonic()
    head = f"{method} {path} HTTP/1.1\r\nHost: rig\r\nConnection: close\r\n"
    body = body or b""
    hdrs = {"Content-Type": "application/json", **headers} if body else dict(headers)
    if body or method == "POST":
        hdrs["Content-Length"] = str(len(body))
    head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    data = head.encode() + body
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setblocking(False)
    got = b""
    sent = 0
    try:
        deadline = started + timeout
        while time.monotonic() < deadline:
            want_write = [s] if sent < len(data) else []
            r, w, _ = select.select([s], want_write, [], 0.5)
            if r:
                try:
                    chunk = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                got += chunk
                continue
            if w:
                try:
                    sent += s.send(data[sent:sent + 65536])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    sent = len(data)  # the server stopped reading; wait for its answer
    finally:
        s.close()
    status = 0
    if got.startswith(b"HTTP/1."):
        try:
            status = int(got[9:12])
        except ValueError:
            status = 0
    head_end = got.find(b"\r\n\r\n")
    hdr = {}
    for line in got[:head_end].split(b"\r\n")[1:]:
        k, _, v = line.decode(errors="replace").partition(":")
        hdr[k.strip().lower()] = v.strip()
    return Resp(status, hdr, got[head_end + 4:] if head_end >= 0 else b"", time.monotonic() - started)


# ---------------------------------------------------------------- processes


class Postgres:
    """A private cluster: stopping it never affects anything else on the machine."""

    def __init__(self, run: Path):
        self.dir = run / "pg"
        self.port = free_port()
        self.log = run / "pg.log"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def init(self) -> None:
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.dir.parent, "postgres", "postgres")
        subprocess.run(self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.dir), "-U", "postgres",
                                         "--auth=trust", "-E", "UTF8", "--no-sync"),
                       check=True, stdout=subprocess.DEVNULL)
        self.start()

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        subprocess.run(self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-l", str(self.log),
                                         "-o", opts, "-w", "-t", "60", "start"),
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-m", mode, "-w",
                                         "stop"), check=False, stdout=subprocess.DEVNULL)


class Replica:
    def __init__(self, rig: "Rig", service: str, n: int, extra_env: dict | None = None,
                 prefix: tuple[str, ...] = ()):
        self.rig, self.service, self.n = rig, service, n
        self.port = free_port()
        self.name = f"{'api' if service == 'api-service' else 'ingest'}-{n}"
        self.log = rig.run / f"{self.name}.log"
        env = dict(os.environ)
        env.update(rig.service_env(service))
        env.update(extra_env or {})
        env["APP_SERVER__PORT"] = str(self.port)
        self.proc = subprocess.Popen([*prefix, str(rig.bin / service)], env=env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ready_seen = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            if request(self.port, "GET", "/ready", timeout=2).status == 200:
                self.ready_seen = True
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log}")

    def rss_mib(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)


class Nginx:
    """The ALB: path routing, passive failover, and upstreams rewritten by the controller."""

    def __init__(self, run: Path, idle_timeout: int):
        self.idle_timeout = idle_timeout
        self.prefix = run / "nginx"
        self.port = free_port()
        (self.prefix / "tmp").mkdir(parents=True)
        self.conf = self.prefix / "nginx.conf"
        self.upstreams = self.prefix / "upstreams.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        p = self.prefix
        self.conf.write_text(f"""
{user}
worker_processes 2;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {p}/tmp/body; proxy_temp_path {p}/tmp/proxy;
  fastcgi_temp_path {p}/tmp/fcgi; uwsgi_temp_path {p}/tmp/uwsgi; scgi_temp_path {p}/tmp/scgi;
  client_max_body_size 32m;
  include {self.upstreams};
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    # Passive failover: a replica that refuses or resets the connection before a
    # request was sent gets the request retried on the next one (what the ALB does
    # for a target that is deregistering or gone).
    proxy_next_upstream error timeout;
    # Keep-alive to the targets, as the ALB does; its idle timeout stays below the
    # replicas' header read timeout (as the ALB's 60 s is below the default 65 s).
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_next_upstream_tries 3;
    proxy_connect_timeout 2s;
    proxy_read_timeout 60s;
    proxy_send_timeout 60s;
    location /api/ {{ proxy_pass http://api; }}
    location /ingest/ {{ proxy_pass http://ingest; }}
    location / {{ return 404 '{{"error":"Not found"}}'; }}
  }}
}}
""")

    def write_upstreams(self, groups: dict[str, list[int]]) -> None:
        text = ""
        for name, ports in groups.items():
            servers = "".join(f"  server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n" for p in ports)
            text += (f"upstream {name} {{\n{servers}  keepalive 64;\n"
                     f"  keepalive_timeout {self.idle_timeout}s;\n}}\n")
        tmp = self.upstreams.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.upstreams)

    def cmd(self, *args: str) -> list[str]:
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(self.prefix), "-c", str(self.conf), *args]

    def start(self) -> None:
        subprocess.run(self.cmd(), check=True)

    def reload(self) -> None:
        subprocess.run(self.cmd("-s", "reload"), check=True)

    def stop(self) -> None:
        subprocess.run(self.cmd("-s", "stop"), check=False, stderr=subprocess.DEVNULL)


class Controller(threading.Thread):
    """The ALB's health checks, emulated: polls every replica's /ready every 250 ms and
    puts exactly the ready ones in the upstream block (all of a group when none is
    ready: the ALB "fails open" then too). One failed check removes a target, one good
    check adds it (the ALB needs 2..10 of each: it is slower than this, not faster)."""

    def __init__(self, rig: "Rig"):
        super().__init__(daemon=True)
        self.rig = rig
        self.stop_ev = threading.Event()
        self.current: dict[str, list[int]] = {}
        self.reloads = 0
        self.lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(8)

    def snapshot(self) -> dict[str, list[int]]:
        replicas = [r for r in list(self.rig.replicas) if r.alive()]
        checks = {r: self.pool.submit(lambda r=r: request(r.port, "GET", "/ready", timeout=1).status)
                  for r in replicas}
        groups = {}
        for svc, name in (("api-service", "api"), ("data-ingestion", "ingest")):
            members = [r for r in replicas if r.service == svc]
            ready = sorted(r.port for r in members if checks[r].result() == 200)
            groups[name] = ready or sorted(r.port for r in members) or [1]
        return groups

    def sync(self) -> None:
        with self.lock:
            groups = self.snapshot()
            if groups != self.current:
                self.rig.nginx.write_upstreams(groups)
                self.rig.nginx.reload()
                self.reloads += 1
                self.current = groups

    def run(self) -> None:
        while not self.stop_ev.wait(0.25):
            try:
                self.sync()
            except Exception as e:  # keep polling; a failed reload is retried
                log(f"controller: {e}")

    def wait_member(self, port: int, present: bool, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(port in ports for ports in self.current.values()) == present:
                time.sleep(0.3)  # let the reloaded workers take over
                return
            time.sleep(0.05)
        raise RuntimeError(f"controller: port {port} never {'added' if present else 'removed'}")


# ---------------------------------------------------------------- load client


@dataclass
class Stats:
    requests: int = 0  # every attempt
    first_failures: int = 0  # requests whose first attempt failed (retried if allowed)
    final_failures: int = 0  # requests that never succeeded
    statuses: dict = field(default_factory=dict)
    acked: dict = field(default_factory=dict)  # record id -> s3 key
    unacked: set = field(default_factory=set)
    latencies: list = field(default_factory=list)  # (status, seconds, finished at)
    bad: list = field(default_factory=list)  # unexpected answers, for the report
    procedures: set = field(default_factory=set)


class Load:
    """Robots and dashboards. Every request is recorded; telemetry carries an
    Idempotency-Key and unique record ids; with `retry`, a failed telemetry request is
    retried with its key (Retry-After honoured) until `retry_for` seconds have passed."""

    OK = {200, 201}

    def __init__(self, rig: "Rig", tag: str, threads: int = 6, retry: bool = False,
                 retry_for: float = 60.0, mix: str = "mixed", pause: float = 0.01,
                 allowed: set | None = None):
        self.rig, self.tag, self.retry, self.retry_for = rig, tag, retry, retry_for
        self.mix, self.pause = mix, pause
        self.allowed = allowed if allowed is not None else set()  # non-failures besides 2xx
        self.stats = Stats()
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(threads)]
        self.procedures = [str(uuid.uuid4()) for _ in range(4)]
        self.stats.procedures.update(self.procedures)
        self.robot = str(uuid.uuid4())

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self.stop_ev.set()
        for t in self.threads:
            t.join()

    def note(self, r: Resp, what: str) -> bool:
        ok = r.status in self.OK or r.status in self.allowed
        with self.lock:
            self.stats.requests += 1
            self.stats.statuses[r.status] = self.stats.statuses.get(r.status, 0) + 1
            self.stats.latencies.append((r.status, r.seconds, time.monotonic()))
            if r.status == 503 and "retry-after" not in r.headers:
                self.stats.bad.append(f"{what}: 503 without Retry-After")
            if r.status >= 500 and r.status not in (502, 503, 504):
                self.stats.bad.append(f"{what}: {r.status} {r.body[:200]!r}")
        return ok

    def worker(self, i: int) -> None:
        rnd = random.Random(i)
        seq = 0
        port = self.rig.nginx.port
        while not self.stop_ev.is_set():
            seq += 1
            roll = rnd.random()
            if self.mix == "mixed" and roll < 0.4:
                path = rnd.choice(["/api/robots", "/api/procedures?limit=20",
                                   "/api/analytics/procedures-by-category?days=90",
                                   f"/api/robots/{self.rig.robot_ids[seq % len(self.rig.robot_ids)]}"])
                r = request(port, "GET", path)
                if not self.note(r, f"GET {path}"):
                    with self.lock:
                        self.stats.first_failures += 1
                        self.stats.final_failures += 1
            else:
                self.telemetry(rnd, i, seq, port)
            if self.pause:
                time.sleep(self.pause)

    def telemetry(self, rnd: random.Random, i: int, seq: int, port: int) -> None:
        proc = rnd.choice(self.procedures)
        n = rnd.randint(1, 20)
        ids = [f"{self.tag}-{i}-{seq}-{k}" for k in range(n)]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = json.dumps([{"procedure_id": proc, "robot_id": self.robot, "timestamp": now,
                            "rid": rid, "force_n": rnd.random() * 10} for rid in ids]).encode()
        key = f"{self.tag}-{i}-{seq}"
        started = time.monotonic()
        first = True
        while True:
            r = request(port, "POST", "/ingest/telemetry", body, {"Idempotency-Key": key})
            ok = self.note(r, "POST /ingest/telemetry")
            if r.status == 201:
                s3_key = (r.json() or {}).get("s3_key")
                with self.lock:
                    for rid in ids:
                        self.stats.acked[rid] = s3_key
                return
            if first and not ok:
                with self.lock:
                    self.stats.first_failures += 1
            first = False
            if not self.retry or time.monotonic() - started > self.retry_for or r.status in (400, 413, 422):
                with self.lock:
                    if not ok:
                        self.stats.final_failures += 1
                    self.stats.unacked.update(ids)
                return
            try:
                wait = min(float(r.headers.get("retry-after", "0.2")), 2.0)
            except ValueError:
                wait = 0.5
            time.sleep(max(wait, 0.1))


# ---------------------------------------------------------------- the rig


class Rig:
    def __init__(self, args):
        self.quick = args.quick
        self.bin = Path(args.bin_dir)
        self.run = CACHE / "run"
        if self.run.exists():
            shutil.rmtree(self.run)
        self.run.mkdir(parents=True)
        self.replicas: list[Replica] = []
        self.counter = 0
        self.results: list[dict] = []
        self.robot_ids: list[str] = []
        self.venv = Path(args.venv)

    # -- environment of a replica
    def service_env(self, service: str) -> dict:
        env = {
            "APP_SERVER__HOST": "127.0.0.1",
            "APP_SERVER__DRAIN_DELAY_SECS": "3",
            "APP_SERVER__SHUTDOWN_TIMEOUT_SECS": "20",
            "APP_SERVER__REQUEST_TIMEOUT_SECS": "10",
            "APP_SERVER__MAX_CONCURRENT_REQUESTS": "64",
            # Full mode keeps the production default (65 s, above the ALB's idle
            # timeout); quick mode shortens it to fit the CI budget.
            **({"APP_SERVER__HEADER_READ_TIMEOUT_SECS": "5"} if self.quick else {}),
            "APP_DATABASE__URL": self.pg.url,
            "APP_DATABASE__MIGRATE_ON_START": "false",
            "APP_DATABASE__MAX_CONNECTIONS": "8",
            "APP_AUTH__ENABLED": "false",
            "APP_LOG__FORMAT": "json",
            "APP_LOG__LEVEL": "warn",
            "RUST_LOG": "warn",
        }
        if service == "data-ingestion":
            env.update({
                "APP_STORAGE__BUCKET": BUCKET,
                "APP_STORAGE__ENDPOINT": f"http://127.0.0.1:{self.s3_proxy_port}",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "APP_STORAGE__CONNECT_TIMEOUT_MS": "1000",
                "APP_STORAGE__OPERATION_TIMEOUT_MS": "3000",
            })
        return env

    def start(self) -> None:
        log("starting a private PostgreSQL cluster")
        self.pg = Postgres(self.run)
        self.pg.init()
        env = dict(os.environ, DATABASE_URL=self.pg.url, APP_AUTH__ENABLED="false", APP_LOG__LEVEL="warn")
        log("migrations and demo data (api-service seed)")
        subprocess.run([str(self.bin / "api-service"), "seed"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        out = subprocess.run([str(PG_BIN / "psql"), self.pg.url, "-Atc",
                              "SELECT robot_id FROM surgical_robots ORDER BY 1 LIMIT 10"],
                             capture_output=True, text=True, check=True).stdout
        self.robot_ids = out.split()
        log("starting moto (S3) behind a cuttable TCP proxy")
        self.moto_port = free_port()
        self.moto = subprocess.Popen([str(self.venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p",
                                      str(self.moto_port)], stdout=open(self.run / "moto.log", "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.s3_proxy_port = free_port()
        self.proxy = subprocess.Popen([sys.executable, str(ROOT / "resilience" / "tcpproxy.py"),
                                       str(self.s3_proxy_port), "127.0.0.1", str(self.moto_port)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True)
        assert self.proxy.stdout is not None and self.proxy.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while request(self.moto_port, "GET", "/", timeout=2).status == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("moto did not start")
            time.sleep(0.2)
        import boto3  # from the venv (moto depends on it)
        self.s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.moto_port}",
                               aws_access_key_id="test", aws_secret_access_key="test",
                               region_name="us-east-1")
        self.s3.create_bucket(Bucket=BUCKET)
        n = 2 if self.quick else 3
        log(f"starting {n} replicas of each service")
        for svc in ("api-service", "data-ingestion"):
            for _ in range(n):
                self.add_replica(svc, wait=False)
        for r in self.replicas:
            r.wait_ready()
        self.nginx = Nginx(self.run, idle_timeout=4 if self.quick else 60)
        self.controller = Controller(self)
        self.nginx.write_upstreams(self.controller.snapshot())
        self.nginx.start()
        self.controller.sync()
        self.controller.start()
        r = request(self.nginx.port, "GET", "/api/robots")
        if r.status != 200:
            raise RuntimeError(f"nginx -> api-service: {r.status}")
        log(f"rig up: nginx :{self.nginx.port}, replicas "
            + ", ".join(f"{r.name}:{r.port}" for r in self.replicas))

    def add_replica(self, service: str, wait: bool = True) -> Replica:
        self.counter += 1
        r = Replica(self, service, self.counter)
        self.replicas.append(r)
        if wait:
            r.wait_ready()
        return r

    def of(self, service: str) -> list[Replica]:
        return [r for r in self.replicas if r.service == service and r.alive()]

    def shutdown(self) -> None:
        for part in ("controller",):
            if hasattr(self, part):
                self.controller.stop_ev.set()
        for r in self.replicas:
            r.signal(signal.SIGKILL)
        if hasattr(self, "nginx"):
            self.nginx.stop()
        for p in ("proxy", "moto"):
            if hasattr(self, p):
                getattr(self, p).kill()
        if hasattr(self, "pg"):
            self.pg.stop("immediate")

    # -- bucket
    def stored(self, procedures: set[str]) -> dict[str, int]:
        """record id -> how many times it is in the bucket (read back from moto directly)."""
        counts: dict[str, int] = {}
        self.where: dict[str, list[str]] = {}
        for proc in procedures:
            token = None
            while True:
                kw = {"Bucket": BUCKET, "Prefix": f"telemetry/{proc}/"}
                if token:
                    kw["ContinuationToken"] = token
                page = self.s3.list_objects_v2(**kw)
                for obj in page.get("Contents", []):
                    body = json.loads(self.s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
                    for rec in body if isinstance(body, list) else [body]:
                        counts[rec["rid"]] = counts.get(rec["rid"], 0) + 1
                        self.where.setdefault(rec["rid"], []).append(obj["Key"])
                if not page.get("IsTruncated"):
                    break
                token = page["NextContinuationToken"]
        return counts

    def verify(self, stats: Stats) -> tuple[int, int]:
        """(lost, duplicated) among acknowledged records."""
        counts = self.stored(stats.procedures)
        lost = sum(1 for rid in stats.acked if counts.get(rid, 0) == 0)
        dup = sum(1 for rid, c in counts.items() if c > 1)
        for rid in [r for r, c in counts.items() if c > 1][:5]:
            stats.bad.append(f"duplicated {rid}: in {self.where[rid]}, acknowledged as {stats.acked.get(rid)}")
        return lost, dup

    def record(self, name: str, stats: Stats | None, ok: bool, checks: list[str], *,
               requests: int | None = None, failures: str | None = None, acked: int | None = None,
               lost: int | None = None, recovery: str = "-", extra: dict | None = None) -> None:
        row = {
            "scenario": name,
            "requests": requests if requests is not None else (stats.requests if stats else 0),
            "failures": failures if failures is not None else (str(stats.final_failures) if stats else "0"),
            "acknowledged": acked if acked is not None else (len(stats.acked) if stats else 0),
            "lost": lost if lost is not None else 0,
            "recovery": recovery,
            "passed": ok,
            "checks": checks,
            "figures": extra or {},
        }
        if stats:
            row["figures"]["statuses"] = {str(k): v for k, v in sorted(stats.statuses.items())}
            if stats.bad:
                row["figures"]["unexpected"] = stats.bad[:10]
        self.results.append(row)
        log(f"{'PASS' if ok else 'FAIL'} {name}: " + "; ".join(checks))


def check(checks: list[str], cond: bool, text: str) -> bool:
    checks.append(("ok: " if cond else "FAILED: ") + text)
    return cond


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


# ---------------------------------------------------------------- scenarios


def rolling_restart(rig: Rig) -> None:
    """maxSurge 1, maxUnavailable 0: new replica, ready, SIGTERM an old one, repeat."""
    checks: list[str] = []
    exits = []
    started = time.monotonic()
    with Load(rig, "roll", threads=6) as load:
        time.sleep(2)
        for svc in ("api-service", "data-ingestion"):
            for old in list(rig.of(svc)):
                new = rig.add_replica(svc)
                rig.controller.wait_member(new.port, True)
                old.signal(signal.SIGTERM)
                try:
                    exits.append(old.proc.wait(timeout=40))
                except subprocess.TimeoutExpired:
                    exits.append(None)
                    old.signal(signal.SIGKILL)
                rig.controller.wait_member(old.port, False)
                log(f"rolled {old.name} -> {new.name}")
        time.sleep(2)
    took = time.monotonic() - started
    s = load.stats
    lost, dup = rig.verify(s)
    ok = check(checks, s.final_failures == 0 and s.first_failures == 0,
               f"{s.first_failures} failed requests of {s.requests}")
    ok &= check(checks, lost == 0 and dup == 0, f"{lost} acknowledged records lost, {dup} duplicated")
    ok &= check(checks, all(e == 0 for e in exits), f"old replicas exited with {exits}")
    ok &= check(checks, not s.bad, f"{len(s.bad)} unexpected answers")
    rig.record("1. rolling restart (maxSurge 1, maxUnavailable 0)", s, ok, checks, lost=lost,
               recovery=f"rollout {took:.0f} s", extra={"replaced": len(exits)})


def crash(rig: Rig) -> None:
    """SIGKILL an ingestion replica mid-load; clients retry with their Idempotency-Key."""
    checks: list[str] = []
    dur = 8 if rig.quick else 20
    with Load(rig, "crash", threads=6, retry=True, retry_for=60, mix="telemetry", pause=0.0) as load:
        time.sleep(dur / 2)
        victim = rig.of("data-ingestion")[0]
        in_flight_before = load.stats.requests
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        log(f"SIGKILL {victim.name} after {in_flight_before} requests")
        victim.proc.wait()
        rig.add_replica("data-ingestion")  # the Deployment replaces the pod
        time.sleep(dur / 2)
        load.stop_ev.set()
        for t in load.threads:
            t.join()
        drained = time.monotonic() - killed_at
    s = load.stats
    lost, dup = rig.verify(s)
    ok = check(checks, s.final_failures == 0, f"{s.final_failures} requests never acknowledged "
                                               f"({s.first_failures} first attempts failed and were retried)")
    ok &= check(checks, lost == 0 and dup == 0, f"{lost} acknowledged records lost, {dup} duplicated")
    ok &= check(checks, not s.bad, f"{len(s.bad)} unexpected answers")
    rig.record("2. crash (SIGKILL an ingestion replica)", s, ok, checks, lost=lost,
               failures=f"{s.first_failures} retried, {s.final_failures} final",
               recovery=f"{drained:.1f} s to all acked")


class Prober(threading.Thread):
    """Polls /health and /ready of every live replica directly (kubelet probes)."""

    def __init__(self, rig: Rig):
        super().__init__(daemon=True)
        self.rig = rig
        self.stop_ev = threading.Event()
        self.samples: list[tuple[float, str, str, int]] = []  # (t, replica, probe, status)

    def run(self) -> None:
        while not self.stop_ev.wait(0.25):
            for r in self.rig.replicas:
                if r.alive():
                    for probe in ("/health", "/ready"):
                        st = request(r.port, "GET", probe, timeout=2).status
                        self.samples.append((time.monotonic(), r.name, probe, st))

    def first(self, probe: str, pred, after: float) -> dict[str, float]:
        out = {}
        for t, name, p, st in self.samples:
            if p == probe and t >= after and name not in out and pred(st):
                out[name] = t - after
        return out


def db_outage(rig: Rig) -> None:
    checks: list[str] = []
    dur = 5 if rig.quick else 30
    pids = {r.name: r.proc.pid for r in rig.replicas if r.alive()}
    prober = Prober(rig)
    prober.start()
    allowed = {503, 409}  # 409: a retry while its first attempt's claim is being cleaned up
    with Load(rig, "db", threads=4, retry=True, retry_for=dur + 60, allowed=allowed, pause=0.05) as load:
        time.sleep(2)
        rig.pg.stop("fast")
        down_at = time.monotonic()
        log(f"PostgreSQL stopped for {dur} s")
        n_before = len(load.stats.latencies)
        time.sleep(dur)
        during = load.stats.latencies[n_before:]
        rig.pg.start()
        up_at = time.monotonic()
        log("PostgreSQL back")
        # Recovery: every replica ready again and a read answered 200 through the ALB.
        recovered = None
        while time.monotonic() - up_at < 60:
            if all(request(r.port, "GET", "/ready", timeout=2).status == 200 for r in rig.replicas if r.alive()) \
                    and request(rig.nginx.port, "GET", "/api/procedures?limit=1").status == 200:
                recovered = time.monotonic() - up_at
                break
            time.sleep(0.1)
        time.sleep(2)
    prober.stop_ev.set()
    prober.join()
    s = load.stats
    lost, dup = rig.verify(s)
    alive = [r for r in rig.replicas if r.alive()]
    health = [st for _, _, p, st in prober.samples if p == "/health"]
    unready = prober.first("/ready", lambda st: st == 503, down_at)
    ok = check(checks, all(st == 200 for st in health), f"liveness 200 in {health.count(200)}/{len(health)} probes")
    ok &= check(checks, len(unready) == len(alive) and max(unready.values(), default=99) <= 10,
                f"readiness 503 on {len(unready)}/{len(alive)} replicas, "
                f"within {max(unready.values(), default=0):.1f} s")
    statuses_during = sorted({st for st, _, _ in during})
    # Requests sent after the outage began wait for the pool once (acquire timeout,
    # 3 s); one caught mid-way, after its first query, may wait once more.
    after = [sec for st, sec, end in during if st == 503 and end - sec > down_at + 0.5]
    straddling = [sec for st, sec, end in during if st == 503 and end - sec <= down_at + 0.5]
    ok &= check(checks, all(st in (200, 201, 409, 503) for st, _, _ in during),
                f"answers during the outage: {statuses_during}")
    ok &= check(checks, max(after, default=0) <= 3.0 + 1.5,
                f"{len(after)} requests sent during the outage: 503 within {max(after, default=0):.2f} s "
                "(bound: acquire timeout 3 s + 1.5 s)")
    ok &= check(checks, max(straddling, default=0) <= 2 * 3.0 + 1.5,
                f"{len(straddling)} requests caught mid-way: 503 within {max(straddling, default=0):.2f} s "
                "(bound: twice the acquire timeout + 1.5 s)")
    ok &= check(checks, not s.bad, f"{len(s.bad)} unexpected answers (5xx other than 503, 503 without Retry-After)")
    ok &= check(checks, recovered is not None,
                f"recovered {'never' if recovered is None else f'{recovered:.1f} s'} after the database returned")
    ok &= check(checks, all(pids.get(r.name) == r.proc.pid for r in alive) and len(alive) == len(pids),
                "no process restarted")
    ok &= check(checks, s.final_failures == 0 and lost == 0 and dup == 0,
                f"{s.final_failures} telemetry requests never acked, {lost} lost, {dup} duplicated")
    rig.record(f"3. database outage ({dur} s, PostgreSQL stopped)", s, ok, checks, lost=lost,
               failures=f"{s.statuses.get(503, 0)} x 503, {s.final_failures} final",
               recovery=f"{recovered:.1f} s" if recovered is not None else "never")


def store_outage(rig: Rig) -> None:
    checks: list[str] = []
    dur = 5 if rig.quick else 30
    with Load(rig, "s3", threads=6, retry=True, retry_for=dur + 60, mix="telemetry", allowed={503, 409},
              pause=0.02) as load:
        time.sleep(2)
        rig.proxy.send_signal(signal.SIGUSR1)
        log(f"object store cut for {dur} s")
        n_before = len(load.stats.latencies)
        time.sleep(dur)
        during = load.stats.latencies[n_before:]
        rig.proxy.send_signal(signal.SIGUSR2)
        up_at = time.monotonic()
        n_after = len(load.stats.latencies)
        recovered = None
        while time.monotonic() - up_at < 60:
            if any(st == 201 for st, _, _ in load.stats.latencies[n_after:]):
                recovered = time.monotonic() - up_at
                break
            time.sleep(0.05)
        time.sleep(2)
    s = load.stats
    lost, dup = rig.verify(s)
    st_during = sorted({st for st, _, _ in during})
    ok = check(checks, all(st in (201, 409, 503) for st, _, _ in during), f"answers during the outage: {st_during}")
    ok &= check(checks, s.statuses.get(503, 0) > 0, f"{s.statuses.get(503, 0)} x 503 with Retry-After")
    ok &= check(checks, not s.bad, f"{len(s.bad)} unexpected answers")
    ok &= check(checks, s.final_failures == 0, f"{s.final_failures} requests never acknowledged after retries")
    ok &= check(checks, lost == 0 and dup == 0, f"{lost} acknowledged records lost, {dup} duplicated")
    ok &= check(checks, recovered is not None, "writes resumed by themselves")
    rig.record(f"4. object-store outage ({dur} s, connections cut)", s, ok, checks, lost=lost,
               failures=f"{s.statuses.get(503, 0)} x 503, {s.final_failures} final",
               recovery=f"{recovered:.1f} s" if recovered is not None else "never")


WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%d":%d', k, v)) end
  local e = summary.errors
  io.write(string.format('WRK {"statuses":{%s},"errors":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50":%f,"p99":%f,"max":%f}\n',
    table.concat(parts, ","), e.connect + e.read + e.write + e.timeout, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1e6, latency:percentile(99) / 1e6, latency.max / 1e6))
end
"""


def overload(rig: Rig) -> None:
    checks: list[str] = []
    dur = 10 if rig.quick else 30
    conns = 256 if rig.quick else 512
    script = rig.run / "overload.lua"
    script.write_text(WRK_LUA)
    pids = {r.name: r.proc.pid for r in rig.replicas if r.alive()}
    api = rig.of("api-service")
    rss_before = max(r.rss_mib() for r in api)
    peak = [rss_before]
    probe: list[tuple[int, float]] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            peak.append(max(r.rss_mib() for r in api))
            probe.append(((r := request(rig.nginx.port, "GET", "/api/robots", timeout=30)).status, r.seconds))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{dur}s", "--timeout", "30s", "-s", str(script),
                          f"http://127.0.0.1:{rig.nginx.port}/api/procedures?status=&limit=1000"],
                         capture_output=True, text=True)
    stop.set()
    t.join()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk: {out.stdout}\n{out.stderr}")
    w = json.loads(line[4:])
    statuses = {int(k): v for k, v in w["statuses"].items()}
    total = sum(statuses.values())
    # Afterwards: every replica ready, reads answered, nothing restarted.
    after_at = time.monotonic()
    fine = None
    while time.monotonic() - after_at < 30:
        if all(request(r.port, "GET", "/ready", timeout=2).status == 200 for r in rig.of("api-service")) and \
                request(rig.nginx.port, "GET", "/api/procedures?limit=5").status == 200:
            fine = time.monotonic() - after_at
            break
        time.sleep(0.1)
    accepted = [sec for st, sec in probe if st == 200]
    shed = [sec for st, sec in probe if st == 503]
    ok = check(checks, statuses.get(503, 0) > 0, f"{statuses.get(503, 0)} of {total} shed with 503 "
                                                 f"({total / dur:.0f} req/s offered by {conns} connections)")
    ok &= check(checks, set(statuses) <= {200, 503} and w["errors"] == 0,
                f"statuses {sorted(statuses)}; socket errors: {w['connect']} connect, {w['read']} read, "
                f"{w['write']} write, {w['timeout']} timeout")
    ok &= check(checks, all(st in (200, 503) for st, _ in probe),
                f"probe answers {sorted({st for st, _ in probe})}")
    ok &= check(checks, pct(accepted, 0.99) <= 8.0,
                f"accepted reads p50 {pct(accepted, 0.5):.2f} s, p99 {pct(accepted, 0.99):.2f} s "
                "(bound: acquire 3 s + statement 5 s)")
    ok &= check(checks, max(peak) <= 512, f"RSS per api replica {rss_before:.0f} -> peak {max(peak):.0f} MiB "
                                         "(bound: 512 MiB pod limit)")
    ok &= check(checks, fine is not None,
                f"ready and answering {'never' if fine is None else f'{fine:.1f} s'} after the load stopped")
    ok &= check(checks, all(pids.get(r.name) == r.proc.pid for r in rig.replicas if r.alive()),
                "no process restarted")
    rig.record("5. overload (wrk past capacity)", None, ok, checks, requests=total,
               failures=f"{statuses.get(503, 0)} shed (503), {total - statuses.get(200, 0) - statuses.get(503, 0)} other",
               acked=0, recovery=f"{fine:.1f} s" if fine is not None else "never",
               extra={"wrk": w, "shed_p50_s": pct(shed, 0.5), "accepted_p99_s": pct(accepted, 0.99),
                      "rss_peak_mib": max(peak)})


def schemathesis(rig: Rig, replica: Replica, doc: str, examples: int) -> tuple[int, tuple, str]:
    """(test cases, (failing, errors, exit code), summary line) for one service's document."""
    report = rig.run / f"st-{replica.name}.json"
    cmd = [str(rig.venv / "bin" / "schemathesis"), "run", f"http://127.0.0.1:{replica.port}{doc}",
           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                       "response_headers_conformance,response_schema_conformance",
           "--max-examples", str(examples), "--seed", "20261128", "--workers", "1",
           "--request-timeout", "15", "--phases", "examples,coverage,fuzzing",
           "--suppress-health-check", "all", "--no-color",
           "--report", "json", "--report-json-path", str(report)]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="", NO_COLOR="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=rig.run)
    (rig.run / f"st-{replica.name}.log").write_text(out.stdout + out.stderr)
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return 0, (1, 0, out.returncode), "no report: " + out.stdout[-300:]
    cases = data.get("test_cases", {})
    warnings = sorted(k for k, v in data.get("warnings", {}).items() if v)
    summary = (f"{cases.get('generated', 0)} test cases, {cases.get('with_failures', 0)} failing, "
               f"{len(data.get('errors', []))} errors, {data.get('operations', {}).get('tested', 0)} operations"
               + (f", warnings: {', '.join(warnings)}" if warnings else ""))
    failing = cases.get("with_failures", 0) + len(data.get("failures", []))
    errors = len(data.get("errors", []))
    return cases.get("generated", 0), (failing, errors, out.returncode), summary


def hostile(rig: Rig) -> None:
    checks: list[str] = []
    examples = 40 if rig.quick else 400
    api, ingest = rig.of("api-service")[0], rig.of("data-ingestion")[0]
    total_requests = 0
    ok = True
    for rep, doc in ((api, "/api/openapi.json"), (ingest, "/ingest/openapi.json")):
        n, (failing, errors, rc), summary = schemathesis(rig, rep, doc, examples)
        if failing == 0 and errors > 0:  # a runtime error of the tool itself: once more
            log(f"schemathesis {doc}: tool error ({summary}); running it again")
            n, (failing, errors, rc), summary = schemathesis(rig, rep, doc, examples)
        total_requests += n
        ok &= check(checks, failing == 0 and errors == 0 and n > 0, f"schemathesis {doc}: exit {rc}; {summary}")
    # Raw abuse, straight at one replica of each service.
    cases = []
    big = b"[" + b",".join([b'{"a":1}'] * 1_300_000) + b"]"  # ~9 MiB > 8 MiB
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), 9)
    deep = b"[" * 100_000 + b"]" * 100_000
    rec = b'{"procedure_id":"5f0c0c6e-54e4-4f3b-9c1b-3a2d8e1e7a10","robot_id":"5f0c0c6e-54e4-4f3b-9c1b-3a2d8e1e7a10",' \
          b'"timestamp":"2026-01-01T00:00:00Z","x":'
    nested70 = rec + b"[" * 70 + b"1" + b"]" * 70 + b"}"
    cases += [
        ("oversized body (9 MiB)", ingest, "POST", "/ingest/telemetry", big, {}, {413}),
        ("gzip bomb (64 MiB of spaces)", ingest, "POST", "/ingest/telemetry", bomb, {"Content-Encoding": "gzip"}, {413}),
        ("JSON nested 100 000 deep", ingest, "POST", "/ingest/telemetry", deep, {}, {400}),
        ("record nested 70 deep", ingest, "POST", "/ingest/telemetry", nested70, {}, {400}),
        ("batch nested 70 deep", ingest, "POST", "/ingest/batch",
         b'{"type":"telemetry","records":[' + nested70 + b"]}", {}, {400}),
        ("invalid UTF-8", ingest, "POST", "/ingest/telemetry", b'{"a":"\xff\xfe"}', {}, {400}),
        ("invalid UTF-8 procedure", ingest, "POST", "/ingest/procedure", b'{"procedure_id":"\xc3\x28"}', {}, {400}),
        ("unknown encoding", ingest, "POST", "/ingest/telemetry", b"{}", {"Content-Encoding": "br"}, {415}),
        ("JSON sent as text/plain", ingest, "POST", "/ingest/telemetry", rec + b"1}",
         {"Content-Type": "text/plain"}, {415}),
        ("NUL in a query parameter", api, "GET", "/api/robots?status=%00", None, {}, {400}),
        ("NUL in a path id", api, "GET", "/api/robots/%00", None, {}, {400, 404}),
        ("invalid UTF-8 in a query", api, "GET", "/api/procedures?category=%ff%fe", None, {}, {200}),
        ("huge header (1 MiB)", api, "GET", "/api/robots", None, {"X-Junk": "a" * (1 << 20)}, {400, 431}),
        ("oversized GET body (1 MiB)", api, "GET", "/api/robots", b"x" * (1 << 20), {}, {200, 413}),
    ]
    for name, rep, method, path, body, headers, expect in cases:
        r = send_raw(rep.port, method, path, body, headers, timeout=30)
        total_requests += 1
        ok &= check(checks, r.status in expect, f"{name}: {r.status} (expected {sorted(expect)})")
    ok &= slow_clients(rig, ingest, checks)
    total_requests += 1
    alive = all(r.alive() for r in (api, ingest))
    ok &= check(checks, alive and request(api.port, "GET", "/ready").status == 200
                and request(ingest.port, "GET", "/ready").status == 200, "both replicas alive and ready afterwards")
    rig.record("6. hostile input (schemathesis + abuse)", None, ok, checks, requests=total_requests,
               failures=str(sum(1 for c in checks if c.startswith("FAILED"))), acked=0)


def slow_clients(rig: Rig, rep: Replica, checks: list[str]) -> bool:
    """Slow clients hold connections: half send headers a byte a second, half send a
    body a byte a second. Meanwhile normal requests to the same replica must stay fast;
    every slow connection must end in a clean 4xx/408/503 or be closed by the server."""
    # Slow bodies end at the request timeout (10 s in the rig), slow heads at the
    # header read timeout (5 s quick, the 65 s production default in full mode).
    hold = 14 if rig.quick else 75
    socks: list[socket.socket] = []
    n = 100
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", rep.port), timeout=5)
        if i % 2 == 0:
            s.sendall(b"POST /ingest/telemetry HTTP/1.1\r\nHost: x\r\n")
        else:
            s.sendall(b"POST /ingest/telemetry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n[")
        s.setblocking(False)
        socks.append(s)
    normal: list[Resp] = []
    ended: dict[int, bytes] = {}
    start = time.monotonic()
    while time.monotonic() - start < hold:
        for i, s in enumerate(socks):
            if i in ended:
                continue
            try:
                data = s.recv(4096)
                ended[i] = data or b"<closed>"
                continue
            except BlockingIOError:
                pass
            except OSError:
                ended[i] = b"<reset>"
                continue
            try:
                s.send(b"X" if i % 2 == 0 else b" ")
            except OSError:
                ended[i] = b"<reset>"
        normal.append(request(rep.port, "GET", "/ingest/stats", timeout=10))
        time.sleep(0.5)
    for s in socks:
        s.close()
    statuses = {}
    for data in ended.values():
        k = data.split(b"\r\n", 1)[0].decode(errors="replace")[:40]
        statuses[k] = statuses.get(k, 0) + 1
    clean = all(d.startswith(b"<") or d[9:12] in (b"400", b"408", b"413", b"431", b"503") for d in ended.values())
    lat = [r.seconds for r in normal]
    ok = check(checks, all(r.status == 200 for r in normal) and max(lat) < 2.0,
               f"{len(normal)} normal requests during {n} slow clients: all 200, slowest {max(lat):.2f} s")
    ok &= check(checks, clean and len(ended) == n,
                f"slow clients ended by the server within {hold} s: {len(ended)}/{n} ({statuses})")
    return ok


def skew(rig: Rig) -> None:
    """Exactly-once across replicas when one looks dead: two ingestion replicas on one
    database and bucket, group window 3 s. (a) Clock skew: the second runs under
    libfaketime 8 s ahead; each body goes with its Idempotency-Key to the first, then
    0.7 s later to the second, and both retry until answered. (b) A stalled owner: the
    first is SIGSTOPped (a frozen VM or pause) holding a claim past the 5 s heartbeat
    limit, the second takes the key over and writes, then the first resumes and must
    be fenced, not write again. Every record must be stored exactly once, and both
    replicas must answer with the same object."""
    checks: list[str] = []
    faketime = shutil.which("faketime")
    if not faketime:
        rig.record("8. clock skew and stalls (Idempotency-Key across replicas)", None, False,
                   ["FAILED: faketime is not installed (scripts/resilience installs it)"])
        return
    window = {"APP_INGEST__GROUP_WINDOW_MS": "3000"}
    rig.counter += 2
    a = Replica(rig, "data-ingestion", rig.counter - 1, window)
    b = Replica(rig, "data-ingestion", rig.counter, window, (faketime, "-m", "-f", "+8s"))
    try:
        for r in (a, b):
            r.wait_ready()
        _skew_rounds(rig, a, b, checks)
    finally:
        for r in (a, b):
            r.signal(signal.SIGCONT)
            r.signal(signal.SIGKILL)


def _skew_rounds(rig: Rig, a: Replica, b: Replica, checks: list[str]) -> None:
    procedure = str(uuid.uuid4())
    stats = Stats(procedures={procedure})
    answers: dict[str, dict[str, str]] = {}  # key -> replica name -> s3_key
    lock = threading.Lock()
    robot = str(uuid.uuid4())

    def body_of(key: str) -> bytes:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return json.dumps([{"procedure_id": procedure, "robot_id": robot, "timestamp": now,
                            "rid": f"{key}-{k}"} for k in range(3)]).encode()

    def send(rep: Replica, key: str, body: bytes, delay: float = 0.0) -> None:
        time.sleep(delay)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            r = request(rep.port, "POST", "/ingest/telemetry", body, {"Idempotency-Key": key}, timeout=15)
            with lock:
                stats.requests += 1
                stats.statuses[r.status] = stats.statuses.get(r.status, 0) + 1
                if r.status == 503 and "retry-after" not in r.headers:
                    stats.bad.append(f"{rep.name}: 503 without Retry-After")
            if r.status == 201:
                with lock:
                    answers.setdefault(key, {})[rep.name] = (r.json() or {}).get("s3_key")
                    for k in range(3):
                        stats.acked[f"{key}-{k}"] = answers[key][rep.name]
                return
            if r.status not in (409, 503, 0):
                with lock:
                    stats.bad.append(f"{rep.name} {key}: {r.status} {r.body[:200]!r}")
                    stats.final_failures += 1
                return
            time.sleep(min(float(r.headers.get("retry-after", "0.5") or 0.5), 2.0))
        with lock:
            stats.final_failures += 1

    rounds = 4 if rig.quick else 12
    keys = [f"skew-{uuid.uuid4().hex[:8]}-{n}" for n in range(rounds)]
    threads = []
    for n, key in enumerate(keys):
        body = body_of(key)
        threads += [threading.Thread(target=send, args=(a, key, body, n * 0.1)),
                    threading.Thread(target=send, args=(b, key, body, n * 0.1 + 0.7))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    skew_keys = len(answers)

    # (b) the stalled owner: A claims, freezes past the heartbeat limit, B takes over.
    stalled = f"stall-{uuid.uuid4().hex[:8]}"
    body = body_of(stalled)
    first = threading.Thread(target=send, args=(a, stalled, body))
    first.start()
    time.sleep(0.5)  # A has claimed the key and holds the records in its 3 s window
    a.signal(signal.SIGSTOP)
    time.sleep(6.5)  # past the 5 s heartbeat limit: B may take the key over
    second = threading.Thread(target=send, args=(b, stalled, body))
    second.start()
    time.sleep(1.0)
    a.signal(signal.SIGCONT)
    first.join()
    second.join()
    keys.append(stalled)

    lost, dup = rig.verify(stats)
    differing = [k for k in keys if len(set(answers.get(k, {}).values())) > 1]
    unanswered = [k for k in keys if len(answers.get(k, {})) < 2]
    fenced = metric_value(a.port, "ingest_idempotency_fenced_total")
    ok = check(checks, dup == 0, f"{dup} records stored twice (must be 0)")
    ok &= check(checks, lost == 0, f"{lost} acknowledged records lost")
    ok &= check(checks, not differing, f"{len(differing)} keys answered with two different objects")
    ok &= check(checks, not unanswered and stats.final_failures == 0,
                f"{len(unanswered)} keys not acknowledged by both replicas after retries")
    ok &= check(checks, not stats.bad, f"{len(stats.bad)} unexpected answers")
    checks.append(f"info: {skew_keys} keys sent to both replicas with one clock 8 s ahead; the stalled owner "
                  f"was fenced {fenced:.0f} time(s) (ingest_idempotency_fenced_total)")
    rig.record("8. clock skew (+8 s) and a stalled owner, same Idempotency-Key on 2 replicas", stats, ok, checks,
               lost=lost, failures=f"{dup} stored twice, {stats.final_failures} final",
               extra={"duplicated": dup, "fenced": fenced})


def metric_value(port: int, sample: str) -> float:
    """One sample of a replica's /metrics (0 when absent)."""
    text = request(port, "GET", "/metrics", timeout=5).body.decode(errors="replace")
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


# ---------------------------------------------------------------- main


SCENARIOS = {"rolling": rolling_restart, "crash": crash, "db": db_outage, "store": store_outage,
             "overload": overload, "hostile": hostile}
SCENARIOS["skew"] = skew


def table(results: list[dict]) -> str:
    lines = ["| scenario | requests | failures | acknowledged | lost | recovery time | result |",
             "|---|---:|---|---:|---:|---|---|"]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['requests']} | {r['failures']} | {r['acknowledged']} | "
                     f"{r['lost']} | {r['recovery']} | {'pass' if r['passed'] else 'FAIL'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(SCENARIOS))
    ap.add_argument("--results", default="", help="default: resilience/results (full), "
                    ".cache/resilience/results (quick)")
    args = ap.parse_args()
    rig = Rig(args)
    started = time.monotonic()
    try:
        rig.start()
        for name, fn in SCENARIOS.items():
            if args.only and name not in args.only.split(","):
                continue
            log(f"scenario {name}")
            try:
                fn(rig)
            except Exception as e:  # a broken scenario is a failed one, the others still run
                log(f"scenario {name} crashed: {e!r}")
                rig.record(name, None, False, [f"FAILED: rig error {e!r}"])
    finally:
        rig.shutdown()
    took = time.monotonic() - started
    mode = "quick" if args.quick else "full"
    md = (f"Resilience rig, {mode} mode, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"binaries `{args.bin_dir}`, {took:.0f} s\n\n" + table(rig.results) + "\n\n")
    for r in rig.results:
        md += f"### {r['scenario']}\n\n" + "".join(f"- {c}\n" for c in r["checks"]) + "\n"
    out = Path(args.results or (CACHE / "results" if args.quick else RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    name = "latest"
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps({"mode": mode, "seconds": round(took), "results": rig.results},
                                                 indent=2, default=str) + "\n")
    print()
    print(table(rig.results))
    print(f"\n{mode} mode took {took:.0f} s; details: {out / (name + '.md')}")
    return 0 if rig.results and all(r["passed"] for r in rig.results) else 1


if __name__ == "__main__":
    sys.exit(main())
