#!/usr/bin/env python3
"""The benchmark suite behind `scripts/bench` (stdlib only; the chart is `chart.py`).

Runs the release (or any) binaries against a real PostgreSQL database seeded with the
demo data and an S3-protocol server, drives every route with `wrk`, runs the same SQL
with `pgbench` alternately with the service (so each ratio is measured side by side),
measures ingestion throughput and objects per 1000 records at several group windows
(and with the local-directory store as the upper bound), and the footprint: resident
memory idle and peak, startup-to-ready time, binary size. Writes `latest.json` and
`latest.md` into the output directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))

# The Flask services on the same kind of machine, 32 connections (from the issue).
PYTHON_BASELINE = {
    "robots": "44/s (p99 ~1 s)",
    "procedures": "27/s",
    "telemetry-1": "70-110/s",
    "batch-100": "45-70/s",
}

# t3.medium: 2 vCPU, 4 GiB; EKS allocatable after kube-reserved/system-reserved/eviction
# (the AMI's defaults for this size) and the per-node daemonsets (aws-node, kube-proxy,
# CoreDNS share, ebs-csi node, node-exporter, fluent-bit/CloudWatch agent).
T3_MEDIUM = {"vcpu_m": 2000, "alloc_cpu_m": 1930, "alloc_mem_mi": 3400, "max_pods": 17,
             "daemonset_cpu_m": 400, "daemonset_mem_mi": 700, "daemonset_pods": 6,
             "usd_month": 0.0416 * 730}


class SuiteError(Exception):
    """The suite itself broke (a service error counts): exit non-zero."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_request(url: str, method: str, body: bytes = b"", headers=None) -> tuple[int, bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
    try:
        conn.request(method, u.path or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Service:
    """One running binary, started with `env`, ready when GET /ready answers 200."""

    def __init__(self, name: str, binary: str, port: int, env: dict, logdir: str):
        self.name, self.binary, self.port = name, binary, port
        self.env = env
        self.logpath = os.path.join(logdir, f"{name}-{port}-{int(time.time() * 1000)}.log")
        self.proc: subprocess.Popen | None = None
        self.ready_ms: float | None = None

    def start(self, timeout: float = 30.0) -> float:
        logf = open(self.logpath, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([self.binary], env=self.env, stdout=logf,
                                     stderr=subprocess.STDOUT, cwd=os.path.dirname(self.logpath))
        logf.close()
        while True:
            if self.proc.poll() is not None:
                raise SuiteError(f"{self.name} exited with {self.proc.returncode} before ready; "
                                 f"see {self.logpath}")
            try:
                status, _ = http_get(self.port, "/ready", timeout=1.0)
                if status == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise SuiteError(f"{self.name} not ready after {timeout} s; see {self.logpath}")
            time.sleep(0.001)  # the polling interval, not a readiness stand-in
        self.ready_ms = (time.perf_counter() - t0) * 1000
        return self.ready_ms

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metrics(self) -> str:
        status, body = http_get(self.port, "/metrics", timeout=5)
        if status != 200:
            raise SuiteError(f"{self.name} /metrics answered {status}")
        return body.decode()


def metric_sum(text: str, name: str, label_filter: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and label_filter in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------- wrk

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""

WRK_THREAD_IDS = r"""
local next_id = 0
setup = function(thread)
  next_id = next_id + 1
  thread:set("thread_id", next_id)
end
"""

TELEMETRY_RECORD = (
    '{{"procedure_id":"{proc}","robot_id":"{robot}","timestamp":"2026-01-01 10:00:{sec:02d}.{ms:03d}",'
    '"sequence":{seq},"arm_positions":[{{"arm":1,"x_mm":12.5,"y_mm":-40.1,"z_mm":41.2}},'
    '{{"arm":2,"x_mm":-3.25,"y_mm":18.0,"z_mm":39.9}},{{"arm":3,"x_mm":77.1,"y_mm":5.5,"z_mm":40.4}},'
    '{{"arm":4,"x_mm":-60.0,"y_mm":-12.75,"z_mm":40.0}}],"force_feedback_n":2.31,'
    '"instrument":"needle_driver","camera":{{"zoom":1.4,"fps":60}},"system_temp_c":36.9,'
    '"network_latency_ms":5}}'
)


def telemetry_body(proc: str, robot: str, n: int, wrap_batch: bool = False) -> str:
    recs = [TELEMETRY_RECORD.format(proc=proc, robot=robot, sec=i % 60, ms=i % 1000, seq=i)
            for i in range(n)]
    if wrap_batch:
        return '{"type":"telemetry","records":[' + ",".join(recs) + "]}"
    if n == 1:
        return recs[0]
    return "[" + ",".join(recs) + "]"


def lua_str(s: str) -> str:
    return "[==[" + s + "]==]"


def lua_static_post(path: str, bodies: list[str]) -> str:
    """Round-robins over prebuilt POST requests (one per body)."""
    reqs = ",\n".join(
        f"wrk.format('POST', {lua_str(path)}, {{['Content-Type']='application/json'}}, {lua_str(b)})"
        for b in bodies)
    return (
        "local reqs\nlocal n = 0\n"
        f"init = function(args)\n  reqs = {{ {reqs} }}\n  n = (thread_id or 0)\nend\n"
        "request = function()\n  n = n + 1\n  return reqs[(n % #reqs) + 1]\nend\n"
        + WRK_THREAD_IDS + WRK_DONE)


def lua_procedure_upsert(robot_ids: list[str]) -> str:
    robots = ",".join(lua_str(r) for r in robot_ids)
    return WRK_THREAD_IDS + (
        f"local robots = {{ {robots} }}\n"
        "local n = 0\nlocal a, b, c\n"
        "init = function(args)\n"
        "  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919 + math.floor(os.clock() * 1e6))\n"
        "  a = math.random(0, 0x7fffffff)\n  b = math.random(0, 0xffff)\n  c = math.random(0, 0xfff)\n"
        "end\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  local id = string.format('%08x-%04x-4%03x-8%03x-%012x', a, b, c, (thread_id or 0) % 4096, n)\n"
        "  local robot = robots[(n % #robots) + 1]\n"
        "  local body = '{\"procedure_id\":\"' .. id .. '\",\"robot_id\":\"' .. robot .. '\",' ..\n"
        "    '\"procedure_type\":\"Cholecystectomy\",\"procedure_category\":\"General Surgery\",' ..\n"
        "    '\"start_time\":\"2026-01-01T09:00:00Z\",\"end_time\":\"2026-01-01T10:30:00Z\",' ..\n"
        "    '\"duration_minutes\":90,\"surgeon_id\":\"SURG-BENCH\",\"surgeon_name\":\"Dr. Bench\",' ..\n"
        "    '\"patient_id\":\"PAT-BENCH\",\"patient_age\":52,\"patient_gender\":\"female\",' ..\n"
        "    '\"complexity_score\":2.5,\"status\":\"completed\"}'\n"
        "  return wrk.format('POST', '/ingest/procedure', {['Content-Type']='application/json'}, body)\n"
        "end\n" + WRK_DONE)


def run_wrk(port: int, path: str, conns: int, duration: int, script: str, workdir: str) -> dict:
    spath = os.path.join(workdir, f"wrk-{abs(hash(script)) % 10**10}.lua")
    if not os.path.exists(spath):
        with open(spath, "w") as f:
            f.write(script)
    threads = 1 if conns == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
           "-s", spath, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    m = re.search(r"^BENCHJSON (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise SuiteError(f"wrk failed ({out.returncode}): {out.stdout[-400:]} {out.stderr[-400:]}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs if secs else 0.0
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    r["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return r


# ------------------------------------------------------------------------- pgbench

def run_pgbench(db_url: str, sql: str, defines: dict, conns: int, duration: int,
                workdir: str) -> dict:
    spath = os.path.join(workdir, f"pgb-{abs(hash(sql)) % 10**10}.sql")
    with open(spath, "w") as f:
        f.write(sql.rstrip().rstrip(";") + ";\n")
    cmd = ["pgbench", "-n", "-M", "prepared", "-c", str(conns), "-j", str(min(conns, 2)),
           "-T", str(duration), "-f", spath]
    for k, v in defines.items():
        cmd += ["-D", f"{k}={v}"]
    cmd.append(db_url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if out.returncode != 0 or not tps:
        raise SuiteError(f"pgbench failed ({out.returncode}): {out.stdout[-600:]} {out.stderr[-600:]}")
    return {"tps": float(tps.group(1)), "latency_avg_ms": float(lat.group(1)) if lat else None,
            "failed": int(failed.group(1)) if failed else 0}


# ------------------------------------------------------------------------ database

def psql(url: str, sql: str) -> str:
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, url],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SuiteError(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def with_dbname(url: str, name: str) -> str:
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))


# --------------------------------------------------------------------------- suite

class Suite:
    def __init__(self, args):
        self.a = args
        self.smoke = args.smoke
        self.dur = 1 if self.smoke else args.duration
        self.rounds = 1 if self.smoke else args.rounds
        self.conns = [1, 32]
        self.work = tempfile.mkdtemp(prefix="run-", dir=args.workdir)
        self.services: list[Service] = []
        self.s3_proc: subprocess.Popen | None = None
        self.db_name = f"bench_{os.getpid()}_{int(time.time())}"
        self.results: dict = {"errors": []}
        self.failures: list[str] = []

    # ---- setup
    def bin(self, name: str) -> str:
        return os.path.join(self.a.bin_dir, name)

    def base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("APP_", "AWS_", "RDS_", "DATABASE_URL", "S3_RAW_BUCKET", "RUST_LOG"))}
        env.update({
            "APP_SERVER__HOST": "127.0.0.1",
            "APP_SERVER__DRAIN_DELAY_SECS": "0",
            "APP_LOG__FORMAT": "json",
            "APP_AUTH__ENABLED": "false",
            "AWS_EC2_METADATA_DISABLED": "true",
        })
        return env

    def setup_db(self) -> None:
        admin = self.a.admin_db_url
        psql(admin, f'CREATE DATABASE "{self.db_name}"')
        self.db_url = with_dbname(admin, self.db_name)
        env = self.base_env()
        env["APP_DATABASE__URL"] = self.db_url
        t0 = time.perf_counter()
        out = subprocess.run([self.bin("api-service"), "seed"], env=env, capture_output=True,
                             text=True, check=False)
        if out.returncode != 0:
            raise SuiteError(f"seed failed: {out.stdout[-800:]} {out.stderr[-800:]}")
        log(f"database {self.db_name} seeded in {time.perf_counter() - t0:.1f} s")
        psql(self.db_url, "VACUUM ANALYZE")
        q = lambda s: psql(self.db_url, s)  # noqa: E731
        self.ids = {
            "robot": q("SELECT robot_id FROM surgical_procedures GROUP BY robot_id "
                       "ORDER BY COUNT(*) DESC, robot_id LIMIT 1"),
            "procedure": q("SELECT p.procedure_id FROM surgical_procedures p JOIN procedure_outcomes o "
                           "USING (procedure_id) ORDER BY p.start_time DESC LIMIT 1"),
            "robots": q("SELECT robot_id FROM surgical_robots ORDER BY robot_id LIMIT 10").split(),
        }
        self.results["dataset"] = {
            k: int(q(f"SELECT COUNT(*) FROM {t}")) for k, t in
            [("robots", "surgical_robots"), ("procedures", "surgical_procedures"),
             ("outcomes", "procedure_outcomes"), ("maintenance_logs", "robot_maintenance_logs")]}

    def drop_db(self) -> None:
        # DROP DATABASE waits for a checkpoint (tens of seconds on a busy machine): let it
        # finish in the background instead of holding the run
        subprocess.Popen(["psql", "-X", "-q", "-c", f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)',
                          self.a.admin_db_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)

    def setup_s3(self) -> None:
        self.s3 = None
        self.bucket = "bench-raw"
        if self.a.s3_endpoint:
            self.s3 = {"endpoint": self.a.s3_endpoint.rstrip("/"), "kind": "external (TEST_S3_ENDPOINT)"}
            status, body = http_request(f"{self.s3['endpoint']}/{self.bucket}", "PUT")
            if status not in (200, 409) and b"BucketAlready" not in body:
                raise SuiteError(f"creating bucket on {self.a.s3_endpoint}: {status} {body[:200]!r}")
        elif self.a.s3s_fs and os.path.exists(self.a.s3s_fs):
            root = os.path.join(self.work, "s3root")
            os.makedirs(os.path.join(root, self.bucket))
            port = free_port()
            logf = open(os.path.join(self.work, "s3s-fs.log"), "wb")
            self.s3_proc = subprocess.Popen(
                [self.a.s3s_fs, "--host", "127.0.0.1", "--port", str(port),
                 "--access-key", "bench", "--secret-key", "benchsecret", root],
                stdout=logf, stderr=subprocess.STDOUT)
            logf.close()
            deadline = time.time() + 20
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.time() > deadline or self.s3_proc.poll() is not None:
                        raise SuiteError("s3s-fs did not start")
                    time.sleep(0.005)
            self.s3 = {"endpoint": f"http://127.0.0.1:{port}", "kind": "s3s-fs 0.14.1"}
        elif not self.smoke:
            raise SuiteError("no S3 server: set TEST_S3_ENDPOINT or install s3s-fs (scripts/bench does)")
        self.results["s3"] = self.s3["kind"] if self.s3 else "none (local-directory store only)"

    def store_env(self, store: str) -> dict:
        if store == "s3":
            return {"APP_STORAGE__BUCKET": self.bucket, "APP_STORAGE__ENDPOINT": self.s3["endpoint"],
                    "APP_STORAGE__REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "benchsecret", "AWS_REGION": "us-east-1"}
        d = os.path.join(self.work, f"local-store-{time.time_ns()}")
        os.makedirs(d)
        return {"APP_STORAGE__LOCAL_DIR": d}

    def start(self, name: str, extra: dict | None = None) -> Service:
        env = self.base_env()
        env["APP_DATABASE__URL"] = self.db_url
        env.update(extra or {})
        port = free_port()
        env["APP_SERVER__PORT"] = str(port)
        svc = Service(name, self.bin(name), port, env, self.work)
        svc.start()
        self.services.append(svc)
        return svc

    def stop(self, svc: Service) -> None:
        svc.stop()
        if svc in self.services:
            self.services.remove(svc)

    def startup_times(self, name: str, extra: dict, n: int) -> list[float]:
        times = []
        for _ in range(n):
            svc = self.start(name, extra)
            times.append(round(svc.ready_ms, 1))
            self.stop(svc)
        return times

    def check(self, what: str, r: dict) -> None:
        if r.get("errors") or r.get("non_2xx") or r.get("failed"):
            msg = (f"{what}: errors={r.get('errors', 0)} non_2xx={r.get('non_2xx', 0)} "
                   f"failed={r.get('failed', 0)}")
            log("ERROR " + msg)
            self.failures.append(msg)

    # ---- read routes
    def read_routes(self) -> list[dict]:
        ids = self.ids
        since = (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                 - dt.timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
        return [
            {"name": "health", "path": "/api/health", "sql": None},
            {"name": "robots", "path": "/api/robots",
             "sql": "SELECT * FROM surgical_robots WHERE 1=1 ORDER BY facility_name, robot_serial_number"},
            {"name": "robot", "path": f"/api/robots/{ids['robot']}",
             "sql": "SELECT r.*, (SELECT COUNT(*) FROM surgical_procedures p WHERE p.robot_id = r.robot_id) "
                    "AS procedure_count FROM surgical_robots r WHERE r.robot_id = :id",
             "defines": {"id": ids["robot"]}},
            {"name": "procedures", "path": "/api/procedures?limit=100",
             "sql": "SELECT * FROM surgical_procedures WHERE 1=1 AND status = :status "
                    "ORDER BY start_time DESC, procedure_id DESC LIMIT :lim OFFSET :off",
             "defines": {"status": "completed", "lim": 100, "off": 0}},
            {"name": "procedure", "path": f"/api/procedures/{ids['procedure']}",
             "sql": "SELECT p.*, r.robot_model, r.facility_name FROM surgical_procedures p "
                    "JOIN surgical_robots r ON p.robot_id = r.robot_id WHERE p.procedure_id = :id;\n"
                    "SELECT * FROM procedure_outcomes WHERE procedure_id = :id",
             "defines": {"id": ids["procedure"]}},
            {"name": "outcomes", "path": "/api/outcomes",
             "sql": "SELECT o.*, p.procedure_type, p.start_time FROM procedure_outcomes o "
                    "JOIN surgical_procedures p ON o.procedure_id = p.procedure_id WHERE 1=1 "
                    "ORDER BY p.start_time DESC, o.outcome_id DESC LIMIT :lim OFFSET :off",
             "defines": {"lim": 100, "off": 0}},
            {"name": "robot-utilization", "path": "/api/analytics/robot-utilization",
             "sql": "SELECT * FROM vw_robot_utilization ORDER BY procedure_count DESC, robot_serial_number"},
            {"name": "outcomes-summary", "path": "/api/analytics/outcomes-summary",
             "sql": "SELECT success_status, COUNT(*) AS count, AVG(blood_loss_ml) AS avg_blood_loss, "
                    "AVG(hospital_stay_days) AS avg_stay_days, AVG(patient_satisfaction_score) "
                    "AS avg_satisfaction FROM procedure_outcomes GROUP BY success_status ORDER BY success_status"},
            {"name": "procedures-by-category", "path": "/api/analytics/procedures-by-category",
             "sql": "SELECT procedure_category, COUNT(*) AS count, AVG(duration_minutes) AS avg_duration, "
                    "AVG(complexity_score) AS avg_complexity FROM surgical_procedures "
                    "WHERE start_time >= :since GROUP BY procedure_category ORDER BY count DESC, procedure_category",
             "defines": {"since": since}},
        ]

    def bench_reads(self) -> None:
        api = self.start("api-service")
        self.results["api_idle_rss_kib"] = self.idle_rss(api)
        get_script = WRK_DONE
        rows = []
        cpu0 = proc_cpu_seconds(api.pid)
        for route in self.read_routes():
            status, body = http_get(api.port, route["path"], timeout=10)
            if status != 200:
                raise SuiteError(f"GET {route['path']} answered {status}: {body[:200]!r}")
            for c in self.conns:
                if not self.smoke:  # warm-up: connections, prepared statements, caches
                    run_wrk(api.port, route["path"], c, 1, get_script, self.work)
                svc_runs, pg_runs, cpu_per_req = [], [], []
                for _ in range(self.rounds):
                    c0 = proc_cpu_seconds(api.pid)
                    r = run_wrk(api.port, route["path"], c, self.dur, get_script, self.work)
                    cpu_per_req.append((proc_cpu_seconds(api.pid) - c0) / max(r["requests"], 1))
                    self.check(f"GET {route['path']} c={c}", r)
                    svc_runs.append(r)
                    if route["sql"]:
                        defines = {k: v for k, v in (route.get("defines") or {}).items()}
                        p = run_pgbench(self.db_url, route["sql"], defines, c, self.dur, self.work)
                        self.check(f"pgbench {route['name']} c={c}", p)
                        pg_runs.append(p)
                row = self.summarise(route, c, svc_runs, pg_runs)
                row["service_cpu_ms_per_req"] = round(statistics.median(cpu_per_req) * 1000, 3)
                rows.append(row)
                ratio = f" = {row['ratio'] * 100:.0f}% of pgbench {row['pgbench_tps']:.0f}/s" \
                    if row.get("ratio") is not None else ""
                log(f"GET {route['path']} c={c}: {row['rps']:.0f}/s p99 {row['p99_ms']:.2f} ms{ratio}")
        self.results["api_cpu_s_total"] = round(proc_cpu_seconds(api.pid) - cpu0, 2)
        st = proc_status(api.pid)
        self.results["api_peak_rss_kib"] = st["VmHWM"]
        self.results["api_rss_after_load_kib"] = st["VmRSS"]
        self.results["reads"] = rows
        self.stop(api)

    def summarise(self, route: dict, c: int, svc_runs: list[dict], pg_runs: list[dict]) -> dict:
        med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
        row = {
            "route": route["name"], "path": route["path"].split("?")[0] if "{" not in route["path"]
            else route["path"], "conns": c,
            "rps": med([r["rps"] for r in svc_runs]),
            "rps_rounds": [round(r["rps"], 1) for r in svc_runs],
            "p50_ms": med([r["p50_us"] / 1000 for r in svc_runs]),
            "p99_ms": med([r["p99_us"] / 1000 for r in svc_runs]),
            "max_ms": max(r["max_us"] / 1000 for r in svc_runs),
            "errors": sum(r["errors"] for r in svc_runs),
            "non_2xx": sum(r["non_2xx"] for r in svc_runs),
            "requests": sum(r["requests"] for r in svc_runs),
            "query": route["path"],
        }
        if pg_runs:
            row["pgbench_tps"] = med([p["tps"] for p in pg_runs])
            row["pgbench_rounds"] = [round(p["tps"], 1) for p in pg_runs]
            row["pgbench_latency_avg_ms"] = med([p["latency_avg_ms"] for p in pg_runs])
            row["ratio"] = row["rps"] / row["pgbench_tps"] if row["pgbench_tps"] else None
        return row

    # ---- ingestion
    def ingest_workloads(self) -> list[dict]:
        procs = [str(uuid.UUID(int=(0xB0 << 120) + i, version=4)) for i in range(self.a.procedures)]
        robot = self.ids["robots"][0]
        return [
            {"name": "telemetry-1", "path": "/ingest/telemetry", "records": 1,
             "script": lua_static_post("/ingest/telemetry",
                                       [telemetry_body(p, robot, 1) for p in procs])},
            {"name": "telemetry-100", "path": "/ingest/telemetry", "records": 100,
             "script": lua_static_post("/ingest/telemetry",
                                       [telemetry_body(p, robot, 100) for p in procs])},
            {"name": "batch-100", "path": "/ingest/batch", "records": 100,
             "script": lua_static_post("/ingest/batch",
                                       [telemetry_body(p, robot, 100, wrap_batch=True) for p in procs[:1]])},
            {"name": "procedure", "path": "/ingest/procedure", "records": 1, "db": True,
             "script": lua_procedure_upsert(self.ids["robots"])},
        ]

    @staticmethod
    def drained_metrics(svc: Service) -> str:
        """/metrics once every pending group is written (polls the gauge)."""
        deadline = time.time() + 15
        while True:
            m = svc.metrics()
            if metric_sum(m, "ingest_pending_bytes") == 0:
                return m
            if time.time() > deadline:
                raise SuiteError(f"{svc.name}: groups still pending 15 s after the load")
            time.sleep(0.005)

    def run_ingest(self, svc: Service, w: dict, c: int) -> dict:
        m0 = self.drained_metrics(svc)
        c0 = proc_cpu_seconds(svc.pid)
        r = run_wrk(svc.port, w["path"], c, self.dur, w["script"], self.work)
        cpu = proc_cpu_seconds(svc.pid) - c0
        m1 = self.drained_metrics(svc)
        objects = metric_sum(m1, "ingest_objects_written_total") - metric_sum(m0, "ingest_objects_written_total")
        recs = (metric_sum(m1, "ingest_records_total", 'outcome="accepted"')
                - metric_sum(m0, "ingest_records_total", 'outcome="accepted"'))
        secs = r["duration_us"] / 1e6
        row = {
            "workload": w["name"], "conns": c, "rps": r["rps"],
            "records_per_s": (r["requests"] - r["non_2xx"]) * w["records"] / secs,
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "max_ms": r["max_us"] / 1000,
            "errors": r["errors"], "non_2xx": r["non_2xx"], "requests": r["requests"],
            "records_accepted_metric": recs,
            "objects": objects if not w.get("db") else None,
            "objects_per_1000_records": (objects * 1000 / recs) if recs and not w.get("db") else None,
            "service_cpu_ms_per_req": round(cpu * 1000 / max(r["requests"], 1), 3),
            "service_cores": round(cpu / secs, 2),
        }
        self.check(f"POST {w['path']} ({w['name']}) c={c}", r)
        return row

    def bench_ingest(self) -> None:
        stores = ["s3"] if self.s3 else ["local"]
        main_store = stores[0]
        ing = self.start("data-ingestion", self.store_env(main_store))
        self.results["ingest_idle_rss_kib"] = self.idle_rss(ing)
        self.results["ingest_store"] = main_store
        rows = []
        for w in self.ingest_workloads():
            for c in self.conns:
                if not self.smoke:
                    run_wrk(ing.port, w["path"], c, 1, w["script"], self.work)  # warm-up
                row = self.run_ingest(ing, w, c)
                rows.append(row)
                opk = row["objects_per_1000_records"]
                log(f"POST {w['name']} c={c}: {row['rps']:.0f} req/s, {row['records_per_s']:.0f} records/s, "
                    f"p99 {row['p99_ms']:.1f} ms" + (f", {opk:.2f} objects/1000 records" if opk is not None else ""))
        st = proc_status(ing.pid)
        peak = st["VmHWM"]
        self.results["ingest"] = rows
        self.stop(ing)

        # group windows, with the S3 server and with the local-directory store
        sweep = []
        tele100 = [w for w in self.ingest_workloads() if w["name"] == "telemetry-100"][0]
        windows = [50] if self.smoke else self.a.windows
        for store in (["s3", "local"] if self.s3 else ["local"]):
            for win in windows:
                extra = self.store_env(store)
                extra["APP_INGEST__GROUP_WINDOW_MS"] = str(win)
                svc = self.start("data-ingestion", extra)
                if not self.smoke:
                    run_wrk(svc.port, tele100["path"], 32, 1, tele100["script"], self.work)
                row = self.run_ingest(svc, tele100, 32)
                row.update({"store": store, "window_ms": win})
                sweep.append(row)
                peak = max(peak, proc_status(svc.pid)["VmHWM"])
                log(f"window {win} ms, {store}: {row['records_per_s']:.0f} records/s, "
                    f"{row['objects_per_1000_records']:.2f} objects/1000 records, p99 {row['p99_ms']:.1f} ms")
                self.stop(svc)
        self.results["windows"] = sweep
        self.results["ingest_peak_rss_kib"] = peak

    def idle_rss(self, svc: Service) -> int:
        # a few requests to touch the pools, then resident memory once it settles
        for _ in range(3):
            http_get(svc.port, "/ready")
        time.sleep(0.5)  # measurement settle time, readiness was already polled
        st = proc_status(svc.pid)
        self.results.setdefault("idle_rss_split_kib", {})[svc.name] = {
            "anonymous": st.get("RssAnon"), "file_backed": st.get("RssFile")}
        return st["VmRSS"]

    def footprint(self) -> None:
        n = 3 if self.smoke else 7
        s3env = self.store_env("s3" if self.s3 else "local")
        self.results["startup_ms"] = {
            "api-service": self.startup_times("api-service", {}, n),
            "data-ingestion": self.startup_times("data-ingestion", s3env, n),
        }
        if not self.smoke:
            # the same without TLS to PostgreSQL: sqlx does not set TCP_NODELAY, and its TLS
            # handshake pays Nagle + delayed-ACK stalls (see the README)
            notls = {"APP_DATABASE__SSL_MODE": "disable"}
            self.results["startup_ms_without_db_tls"] = {
                "api-service": self.startup_times("api-service", notls, n),
                "data-ingestion": self.startup_times("data-ingestion", {**s3env, **notls}, n),
            }
        self.results["binary_bytes"] = {
            b: os.path.getsize(self.bin(b)) for b in ("api-service", "data-ingestion")}

    def run(self) -> int:
        t0 = time.time()
        meta = {
            "started_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mode": "smoke" if self.smoke else "full",
            "duration_s": self.dur, "rounds": self.rounds,
            "host": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                     "loadavg_start": loadavg()},
            "tools": {t: subprocess.run([t, "--version"] if t != "wrk" else [t, "-v"],
                                        capture_output=True, text=True).stdout.splitlines()[:1]
                      for t in ("wrk", "pgbench")},
            "bin_dir": self.a.bin_dir, "build": self.a.build_label,
            "ingest_procedures": self.a.procedures,
        }
        self.results["meta"] = meta
        try:
            self.setup_db()
            self.setup_s3()
            self.footprint()
            self.bench_reads()
            self.bench_ingest()
        finally:
            for svc in list(self.services):
                self.stop(svc)
            if self.s3_proc:
                self.s3_proc.terminate()
                self.s3_proc.wait()
            self.drop_db()
            if not self.a.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        meta["elapsed_s"] = round(time.time() - t0, 1)
        meta["loadavg_end"] = loadavg()
        self.results["errors"] = self.failures
        self.results["targets"] = evaluate_targets(self.results)
        os.makedirs(self.a.out, exist_ok=True)
        with open(os.path.join(self.a.out, "latest.json"), "w") as f:
            json.dump(self.results, f, indent=1, default=float)
        with open(os.path.join(self.a.out, "latest.md"), "w") as f:
            f.write(render_markdown(self.results))
        log(f"wrote {self.a.out}/latest.json and latest.md in {meta['elapsed_s']} s")
        if self.failures:
            log(f"{len(self.failures)} run(s) had errors: " + "; ".join(self.failures))
            return 1
        return 0


# ------------------------------------------------------------------- targets, report

def evaluate_targets(r: dict) -> list[dict]:
    out = []
    reads32 = [x for x in r.get("reads", []) if x["conns"] == 32 and x.get("ratio") is not None]
    if reads32:
        worst = min(reads32, key=lambda x: x["ratio"])
        out.append({"target": "read routes >= 50% of pgbench at 32 connections",
                    "measured": f"lowest {worst['ratio'] * 100:.0f}% ({worst['route']})",
                    "met": worst["ratio"] >= 0.5})
        p99 = max(reads32, key=lambda x: x["p99_ms"])
        out.append({"target": "read routes p99 < 25 ms at 32 connections",
                    "measured": f"highest {p99['p99_ms']:.1f} ms ({p99['route']})",
                    "met": p99["p99_ms"] < 25})
    win = [x for x in r.get("windows", []) if x["store"] == ("s3" if r.get("ingest_store") == "s3" else "local")]
    ing = [x for x in r.get("ingest", []) if x["workload"] == "telemetry-100" and x["conns"] == 32]
    if ing:
        x = ing[0]
        best = max(win, key=lambda w: w["records_per_s"]) if win else x
        out.append({"target": ">= 100,000 acknowledged records/s, 100-record requests, 32 connections",
                    "measured": f"{x['records_per_s']:.0f}/s at the default 50 ms window; best "
                                f"{best['records_per_s']:.0f}/s (window {best.get('window_ms', 50)} ms, {best.get('store', 's3')})",
                    "met": max(x["records_per_s"], best["records_per_s"]) >= 100_000})
        out.append({"target": "<= 1 object per 500 records (2 per 1000) at 32 connections",
                    "measured": f"{x['objects_per_1000_records']:.2f} objects/1000 records at 50 ms",
                    "met": x["objects_per_1000_records"] is not None and x["objects_per_1000_records"] <= 2})
    for svc, key in (("api-service", "api"), ("data-ingestion", "ingest")):
        idle, peak = r.get(f"{key}_idle_rss_kib"), r.get(f"{key}_peak_rss_kib")
        if idle is not None:
            out.append({"target": f"{svc}: < 20 MiB resident idle", "measured": f"{idle / 1024:.1f} MiB",
                        "met": idle < 20 * 1024})
        if peak is not None:
            out.append({"target": f"{svc}: < 100 MiB resident at peak", "measured": f"{peak / 1024:.1f} MiB",
                        "met": peak < 100 * 1024})
    for svc, times in (r.get("startup_ms") or {}).items():
        med = statistics.median(times)
        out.append({"target": f"{svc}: ready < 100 ms after start", "measured": f"median {med:.0f} ms "
                    f"(max {max(times):.0f})", "met": med < 100})
    return out


def fmt(v, nd=0):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def sizing(r: dict) -> dict:
    """Pod requests/limits from the measured footprint, and what fits on a t3.medium."""
    mib = lambda k: (r.get(k) or 0) / 1024  # noqa: E731
    up16 = lambda x: int(-(-x // 16) * 16)  # noqa: E731
    def pod(peak_mib: float, cpu_m: int, burst_mib: float = 0) -> dict:
        mem_req = max(64, up16(peak_mib * 1.5))   # 1.5x the measured peak
        return {"cpu_request_m": cpu_m, "cpu_limit_m": 1000, "mem_request_mi": mem_req,
                "mem_limit_mi": max(mem_req * 2, up16(peak_mib + burst_mib))}
    api = pod(mib("api_peak_rss_kib"), 100)
    # data-ingestion may hold MAX_PENDING_BYTES (64 MiB) of records plus the objects being
    # serialised from them on top of what the benchmark saw
    ing = pod(mib("ingest_peak_rss_kib"), 100, burst_mib=2 * 64)
    t = T3_MEDIUM
    free_cpu = t["alloc_cpu_m"] - t["daemonset_cpu_m"]
    free_mem = t["alloc_mem_mi"] - t["daemonset_mem_mi"]
    free_pods = t["max_pods"] - t["daemonset_pods"]
    def per_node(p):
        return min(free_cpu // p["cpu_request_m"], free_mem // p["mem_request_mi"], free_pods)
    # the deployment's minimum: 3 api + 2 ingestion replicas; maximum 15 + 10 (the HPAs)
    pair = {"api": api, "ingest": ing}
    def nodes(n_api, n_ing):
        cpu = n_api * api["cpu_request_m"] + n_ing * ing["cpu_request_m"]
        mem = n_api * api["mem_request_mi"] + n_ing * ing["mem_request_mi"]
        pods = n_api + n_ing
        return max(-(-cpu // free_cpu), -(-mem // free_mem), -(-pods // free_pods), 1)
    return {"api-service": api, "data-ingestion": ing,
            "replicas_per_t3_medium": {"api-service": per_node(api), "data-ingestion": per_node(ing)},
            "nodes_min": nodes(3, 2), "nodes_max": nodes(15, 10), "pair": pair}


def render_markdown(r: dict) -> str:
    m = r["meta"]
    L = []
    L.append(f"# Benchmark results ({m['mode']})\n")
    L.append(f"Run {m['started_utc']}, {m['elapsed_s']} s, {m['host']['cpus']} cores "
             f"(load average {m['host']['loadavg_start']:.2f} at start, {m['loadavg_end']:.2f} at end), "
             f"build `{m['build']}`, PostgreSQL database seeded with the demo data "
             f"({r['dataset']['robots']} robots, {r['dataset']['procedures']} procedures, "
             f"{r['dataset']['outcomes']} outcomes), S3: {r['s3']}. Each figure is the median of "
             f"{m['rounds']} round(s) of {m['duration_s']} s; `wrk` and `pgbench` alternate round by round "
             f"on the same cores as PostgreSQL, the S3 server and the service.\n")
    L.append("## Read routes (api-service)\n")
    L.append("| route | conns | req/s | p50 ms | p99 ms | max ms | errors | pgbench tps (same SQL) | service / pgbench | service CPU ms/req |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in r.get("reads", []):
        ratio = f"**{x['ratio'] * 100:.0f}%**" if x.get("ratio") is not None else "-"
        L.append(f"| `{x['query']}` | {x['conns']} | {fmt(x['rps'])} | {fmt(x['p50_ms'], 2)} | "
                 f"{fmt(x['p99_ms'], 2)} | {fmt(x['max_ms'], 1)} | {x['errors'] + x['non_2xx']} | "
                 f"{fmt(x.get('pgbench_tps'))} | {ratio} | {fmt(x['service_cpu_ms_per_req'], 3)} |")
    L.append("\n## Ingestion (data-ingestion, default 50 ms group window, "
             f"{r.get('ingest_store')} store, telemetry spread over {m['ingest_procedures']} procedures)\n")
    L.append("| workload | conns | req/s | records/s | p50 ms | p99 ms | max ms | errors | objects / 1000 records | service cores |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in r.get("ingest", []):
        L.append(f"| {x['workload']} | {x['conns']} | {fmt(x['rps'])} | {fmt(x['records_per_s'])} | "
                 f"{fmt(x['p50_ms'], 1)} | {fmt(x['p99_ms'], 1)} | {fmt(x['max_ms'], 1)} | "
                 f"{x['errors'] + x['non_2xx']} | {fmt(x['objects_per_1000_records'], 2)} | {fmt(x['service_cores'], 2)} |")
    L.append("\n## Group window: 100-record telemetry requests, 32 connections\n")
    L.append("| store | window ms | records/s | objects / 1000 records | p50 ms | p99 ms | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for x in r.get("windows", []):
        store = r["s3"] if x["store"] == "s3" else "local directory (upper bound)"
        L.append(f"| {store} | {x['window_ms']} | {fmt(x['records_per_s'])} | "
                 f"{fmt(x['objects_per_1000_records'], 2)} | {fmt(x['p50_ms'], 1)} | {fmt(x['p99_ms'], 1)} | "
                 f"{x['errors'] + x['non_2xx']} |")
    L.append("\n## Footprint\n")
    L.append("| service | binary | ready after start, median (max) | same, no TLS to PostgreSQL | "
             "RSS idle (anonymous + file-backed) | RSS peak under load |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for svc, key in (("api-service", "api"), ("data-ingestion", "ingest")):
        times = r.get("startup_ms", {}).get(svc, [0])
        notls = (r.get("startup_ms_without_db_tls") or {}).get(svc)
        notls_s = f"{statistics.median(notls):.0f} ms ({max(notls):.0f})" if notls else "-"
        split = (r.get("idle_rss_split_kib") or {}).get(svc) or {}
        split_s = (f" ({split['anonymous'] / 1024:.1f} + {split['file_backed'] / 1024:.1f})"
                   if split.get("anonymous") is not None else "")
        L.append(f"| {svc} | {r['binary_bytes'][svc] / 2**20:.1f} MiB | {statistics.median(times):.0f} ms "
                 f"({max(times):.0f}) | {notls_s} | {(r.get(f'{key}_idle_rss_kib') or 0) / 1024:.1f} MiB"
                 f"{split_s} | {(r.get(f'{key}_peak_rss_kib') or 0) / 1024:.1f} MiB |")
    s = sizing(r)
    L.append("\n## Sizing (from the figures above)\n")
    L.append("| service | CPU request / limit | memory request / limit | replicas per t3.medium (by requests) |")
    L.append("|---|---:|---:|---:|")
    for svc in ("api-service", "data-ingestion"):
        p = s[svc]
        L.append(f"| {svc} | {p['cpu_request_m']}m / {p['cpu_limit_m']}m | {p['mem_request_mi']}Mi / "
                 f"{p['mem_limit_mi']}Mi | {s['replicas_per_t3_medium'][svc]} |")
    L.append(f"\nThe HPA range (3-15 api-service + 2-10 data-ingestion replicas) fits on "
             f"{s['nodes_min']}-{s['nodes_max']} t3.medium node(s) by requests (after the per-node daemonsets); "
             "see the README for the cost table.\n")
    L.append("## Targets\n")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for t in r.get("targets", []):
        L.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    if r.get("errors"):
        L.append("\n## Errors\n")
        L.extend(f"- {e}" for e in r["errors"])
    L.append("\nFlask baseline (same kind of machine, 32 connections): `GET /api/robots` ~44/s (p99 ~1 s), "
             "`GET /api/procedures?limit=100` ~27/s, one telemetry post ~70-110/s, a batch of 100 ~45-70/s.\n")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--build-label", default="release")
    ap.add_argument("--admin-db-url", required=True)
    ap.add_argument("--s3-endpoint", default="")
    ap.add_argument("--s3s-fs", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--procedures", type=int, default=4,
                    help="distinct procedure ids the telemetry load spreads over")
    ap.add_argument("--windows", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 50, 200])
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--report-only", help="re-render latest.md from this JSON")
    a = ap.parse_args()
    if a.report_only:
        with open(a.report_only) as f:
            r = json.load(f)
        r["targets"] = evaluate_targets(r)
        print(render_markdown(r), end="")
        return 0
    os.makedirs(a.workdir, exist_ok=True)
    try:
        return Suite(a).run()
    except SuiteError as e:
        log(f"FAILED: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
