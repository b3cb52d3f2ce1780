"""Runs one tool for scripts/validate and turns its output into a RESULT line.

  checkov-summary RESULTS_JSON CHECKOV_YAML   counts per framework; every inline skip must be
                                              listed in the config file's comment block
  promtool-check RULE_FILE...                 promtool check rules, counting rules
  promtool-test DIR                           promtool test rules on DIR/*.test.yaml, counting tests
  pytest TEST_DIR                             pytest, counting tests
  amtool-check VALUES RULES OUT               Alertmanager's own check of alertmanager.config in
                                              the kube-prometheus-stack VALUES, then its routing
                                              of every alert in RULES: critical ones must reach
                                              a PagerDuty receiver
  suppressions FILE...                        print every configured suppression and its reason
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml


def result(passed: int, failed: int, skipped: int = 0) -> int:
    print(f"RESULT passed={passed} failed={failed} skipped={skipped}")
    return 1 if failed else 0


def listed_inline_skips(config: Path) -> set[tuple[str, str]]:
    """(check id, resource name or file) pairs from the '#   CKV_... path resource' comments."""
    out = set()
    for line in config.read_text().splitlines():
        m = re.match(r"^#\s+(CKV2?_[A-Z0-9_]+)\s+(\S+)(?:\s+(\S+))?\s*$", line)
        if m:
            out.add((m.group(1), m.group(3) or Path(m.group(2)).name))
    return out


def checkov_summary(results_json: str, config: str) -> int:
    text = Path(results_json).read_text()
    data = json.loads(text) if text.strip() else []
    reports = data if isinstance(data, list) else [data]
    listed = listed_inline_skips(Path(config))
    passed = failed = skipped = 0
    frameworks = []
    for report in reports:
        summary = report.get("summary", {})
        frameworks.append(f"{report.get('check_type')}: {summary.get('passed', 0)} passed, "
                          f"{summary.get('failed', 0)} failed, {summary.get('skipped', 0)} skipped")
        passed += summary.get("passed", 0)
        failed += summary.get("failed", 0) + summary.get("parsing_errors", 0)
        results = report.get("results", {})
        for check in results.get("failed_checks", []):
            print(f"FAIL {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
        for check in results.get("skipped_checks", []):
            skipped += 1
            comment = (check.get("check_result") or {}).get("suppress_comment", "")
            resource = check["resource"].split(".")[-1] if "::" in check["resource"] else Path(check["file_path"]).name
            key = (check["check_id"], resource)
            if key not in listed:
                failed += 1
                print(f"FAIL inline skip {key} is not listed in {config}")
            if len(comment.strip()) < 20:
                failed += 1
                print(f"FAIL inline skip {key} has no reason")
            else:
                print(f"skip {check['check_id']} {check['resource']}: {comment}")
    ran = {r.get("check_type") for r in reports}
    for framework in ("kubernetes", "dockerfile", "cloudformation"):
        if framework not in ran:
            failed += 1
            print(f"FAIL checkov did not scan any {framework} file")
    for line in frameworks:
        print(line)
    return result(passed, failed, skipped)


def promtool_check(files: list[str]) -> int:
    proc = subprocess.run(["promtool", "check", "rules", *files], capture_output=True, text=True, check=False)
    print(proc.stdout + proc.stderr)
    rules = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", proc.stdout + proc.stderr))
    return result(rules, 0 if proc.returncode == 0 else max(1, len(files)))


def promtool_test(directory: str) -> int:
    tests = sorted(Path(directory).glob("*.test.yaml"))
    count = sum(len(yaml.safe_load(t.read_text()).get("tests", [])) for t in tests)
    proc = subprocess.run(["promtool", "test", "rules", *[t.name for t in tests]], cwd=directory,
                          capture_output=True, text=True, check=False)
    print(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        failures = max(1, (proc.stdout + proc.stderr).count("FAILED"))
        return result(count - failures, failures)
    return result(count, 0)


def run_pytest(test_dir: str) -> int:
    # Plugin autoload off: cloudcoil registers a pytest plugin that needs packages we do not install.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test_dir],
                          capture_output=True, text=True, check=False, env=env)
    out = proc.stdout + proc.stderr
    print(out)
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error", "errors")}
    last = [line for line in out.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?)", line)]
    if last:
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last[-1]):
            counts[word] += int(n)
    failed = counts["failed"] + counts["error"] + counts["errors"]
    if proc.returncode not in (0,) and failed == 0:
        failed = 1
    return result(counts["passed"], failed, counts["skipped"])


def suppressions(files: list[str]) -> int:
    for name in files:
        path = Path(name)
        if not path.exists():
            continue
        text = path.read_text()
        if name.endswith(".checkov.yaml"):
            config = yaml.safe_load(text) or {}
            reasons = {}
            current = None
            for line in text.splitlines():
                m = re.match(r"^#\s+(CKV2?_[A-Z0-9_]+)\s+(\"[^\"]*\"|\S.*?):?\s*(.*)$", line)
                if m and m.group(1) in (config.get("skip-check") or []):
                    current = m.group(1)
                    reasons[current] = line.split(":", 1)[-1].strip() if ":" in line else ""
                elif current and re.match(r"^#\s{5,}\S", line):
                    reasons[current] += " " + line.lstrip("# ").strip()
                else:
                    current = None
            for check in config.get("skip-check") or []:
                print(f"{name}: {check}: {reasons.get(check, '(reason missing)')[:150]}")
            for check_id, resource in sorted(listed_inline_skips(path)):
                print(f"{name}: {check_id} on {resource} (inline, reason next to the resource)")
        elif name.endswith(".hadolint.yaml"):
            ignored = (yaml.safe_load(text) or {}).get("ignored") or []
            print(f"{name}: {len(ignored)} rules ignored" + (f": {', '.join(ignored)}" if ignored else ""))
        elif name.endswith(".yamllint.yaml"):
            disabled = [k for k, v in ((yaml.safe_load(text) or {}).get("rules") or {}).items() if v == "disable"]
            print(f"{name}: rules disabled: {', '.join(disabled) or 'none'}")
    return 0


def amtool_check(values_file: str, rules_file: str, out: str) -> int:
    config = (yaml.safe_load(Path(values_file).read_text()).get("alertmanager") or {}).get("config")
    if not config:
        print(f"FAIL {values_file}: no alertmanager.config, so alerts reach no receiver")
        return result(0, 1)
    Path(out).write_text(yaml.safe_dump(config))
    passed = failed = 0
    proc = subprocess.run(["amtool", "check-config", out], capture_output=True, text=True, check=False)
    print(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return result(0, 1)
    passed += 1
    receivers = {r["name"]: r for r in config["receivers"]}
    rules = yaml.safe_load(Path(rules_file).read_text())
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            labels = [f"alertname={rule['alert']}"] + [f"{k}={v}" for k, v in rule.get("labels", {}).items()]
            proc = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={out}", *labels],
                                  capture_output=True, text=True, check=False)
            names = proc.stdout.strip().split(",")
            pages = all(receivers.get(n, {}).get("pagerduty_configs") for n in names)
            notifies = all(any(k.endswith("_configs") for k in receivers.get(n, {})) for n in names)
            ok = proc.returncode == 0 and notifies and (pages or rule.get("labels", {}).get("severity") != "critical")
            print(f"{'ok  ' if ok else 'FAIL'} {rule['alert']} ({rule.get('labels', {}).get('severity')}) -> {proc.stdout.strip()}")
            passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)
    return result(passed, failed)


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "checkov-summary":
        return checkov_summary(*args)
    if command == "promtool-check":
        return promtool_check(args)
    if command == "promtool-test":
        return promtool_test(args[0])
    if command == "pytest":
        return run_pytest(args[0])
    if command == "amtool-check":
        return amtool_check(*args)
    if command == "suppressions":
        return suppressions(args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
