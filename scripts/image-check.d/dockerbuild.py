"""Run the Dockerfile's builder stages on the host, as written (scripts/image-check).

Reads the Dockerfile, follows FROM/ARG/ENV/WORKDIR/COPY/RUN of every stage up to the one
named by --target, and runs each RUN line with `bash -c` in a directory standing for the
stage's WORKDIR. The build context is the repository filtered by .dockerignore. Two
mappings stand in for the container's file system, and are printed: the stage WORKDIR
(/app) becomes .cache/image-check/stages/<stage>, and absolute output paths outside it
(/out) become .cache/image-check/out/<SERVICE>. `cargo install` puts its binary under
.cache/image-check/tools (CARGO_INSTALL_ROOT), which is on PATH for the later stages.

Stages that a later stage builds FROM keep their state (a chef stage is installed once);
the builder stage of each SERVICE starts from a fresh directory except its target/, which is
kept between services (Docker would rebuild everything; the result is the same binaries).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path


def logical_lines(text: str) -> list[str]:
    out, cur = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        out.append((cur + line).strip())
        cur = ""
    if cur:
        out.append(cur.strip())
    return out


def parse(dockerfile: Path) -> list[dict]:
    """Stages in order: {name, base, instructions: [(KEYWORD, rest)]}."""
    stages: list[dict] = []
    for line in logical_lines(dockerfile.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", rest.strip(), re.I)
            if not m:
                sys.exit(f"image-check: cannot read FROM {rest!r}")
            stages.append({"name": m.group(2) or str(len(stages)), "base": m.group(1), "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, rest.strip()))
    return stages


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def parse_env(rest: str) -> dict[str, str]:
    out = {}
    for word in shlex.split(rest):
        name, sep, value = word.partition("=")
        if not sep:
            sys.exit(f"image-check: ENV form {rest!r} not supported (use NAME=value)")
        out[name] = value
    return out


class DockerIgnore:
    def __init__(self, path: Path):
        self.rules = []
        if path.exists():
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                negate = line.startswith("!")
                pattern = line.lstrip("!").strip("/")
                self.rules.append((negate, pattern.split("/")))

    @staticmethod
    def _match(parts: list[str], pattern: list[str]) -> bool:
        """True when the path or one of its parents matches (Go filepath.Match plus **)."""
        if not pattern:
            return True
        if pattern[0] == "**":
            return any(DockerIgnore._match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and DockerIgnore._match(parts[1:], pattern[1:])

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        out = False
        for negate, pattern in self.rules:
            if self._match(parts, pattern):
                out = not negate
        return out


def copy_context(src: Path, dst: Path) -> int:
    ignore = DockerIgnore(src / ".dockerignore")
    count = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = Path(dirpath).relative_to(src)
        # Prune a directory that is excluded unless a "!" rule may re-include something in it.
        kept = []
        for d in dirnames:
            rel = (rel_dir / d).as_posix()
            if d in (".git", ".cache") or (ignore.excluded(rel) and not any(
                    neg and (pat[0] == "**" or fnmatch.fnmatchcase(rel.split("/")[0], pat[0]))
                    for neg, pat in ignore.rules)):
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if ignore.excluded(rel):
                continue
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(dirpath) / name, target)
            count += 1
    return count


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dockerfile", required=True, type=Path)
    ap.add_argument("--context", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--target", default="builder")
    ap.add_argument("--build-arg", action="append", default=[])
    args = ap.parse_args()

    stages = parse(args.dockerfile)
    by_name = {s["name"]: s for s in stages}
    if args.target not in by_name:
        sys.exit(f"image-check: no stage {args.target!r} in {args.dockerfile}")
    build_args = dict(a.split("=", 1) for a in args.build_arg)
    work = args.work.resolve()
    tools = work / "tools"
    chain = []
    stage = by_name[args.target]
    while True:
        chain.insert(0, stage)
        if stage["base"] not in by_name:
            break
        stage = by_name[stage["base"]]
    print(f"image-check: stages {' -> '.join(s['name'] for s in chain)} (base image {chain[0]['base']})", flush=True)

    # Stages the target's chain COPYs from (the planner), other than the chain itself.
    needed_from = {}
    for s in chain:
        for kw, rest in s["instructions"]:
            m = re.search(r"--from=(\S+)", rest) if kw == "COPY" else None
            if m and m.group(1) not in {c["name"] for c in chain}:
                needed_from[m.group(1)] = True

    env: dict[str, str] = {}
    workdirs: dict[str, Path] = {}
    service = build_args.get("SERVICE", "")
    out_dir = work / "out" / (service or "default")

    def run_stage(s: dict, env: dict[str, str], cwd: Path | None, fresh: bool) -> tuple[dict, Path | None]:
        env = dict(env)
        stage_dir = work / "stages" / s["name"]
        if fresh and stage_dir.exists():
            for child in stage_dir.iterdir():
                if child.name != "target":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        if cwd is not None:
            # FROM <stage>: this stage starts with a copy of the parent's WORKDIR.
            stage_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(cwd, stage_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("target"))
            cwd = stage_dir
        for kw, rest in s["instructions"]:
            if kw == "ARG":
                name, _, default = rest.partition("=")
                env[name] = build_args.get(name, default)
            elif kw == "ENV":
                env.update({k: expand(v, env) for k, v in parse_env(rest).items()})
            elif kw == "WORKDIR":
                cwd = stage_dir
                cwd.mkdir(parents=True, exist_ok=True)
                env["_WORKDIR"] = rest
                print(f"image-check: [{s['name']}] WORKDIR {rest} -> {cwd}", flush=True)
            elif kw == "COPY":
                words = shlex.split(rest)
                opts = [w for w in words if w.startswith("--")]
                paths = [w for w in words if not w.startswith("--")]
                src_stage = next((o.split("=", 1)[1] for o in opts if o.startswith("--from=")), None)
                *srcs, dst = paths
                assert cwd is not None, "COPY before WORKDIR"
                if src_stage is None and srcs == ["."] and dst in (".", "./"):
                    n = copy_context(args.context, cwd)
                    print(f"image-check: [{s['name']}] COPY . . ({n} files after .dockerignore)", flush=True)
                elif src_stage in workdirs:
                    for src in srcs:
                        rel = Path(src).relative_to(env_workdir[src_stage]) if src.startswith("/") else Path(src)
                        shutil.copy2(workdirs[src_stage] / rel, cwd / dst)
                        print(f"image-check: [{s['name']}] COPY --from={src_stage} {src} {dst}", flush=True)
                else:
                    sys.exit(f"image-check: COPY {rest!r} not supported")
            elif kw == "RUN":
                assert cwd is not None, "RUN before WORKDIR"
                command = rest
                if out_dir and "/out/" in command:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    command = command.replace(" /out/", f" {out_dir}/")
                run_env = {**os.environ, **{k: v for k, v in env.items() if not k.startswith("_")}}
                run_env["PATH"] = f"{tools / 'bin'}:{run_env['PATH']}"
                if re.search(r"\bcargo install\b", command):
                    run_env["CARGO_INSTALL_ROOT"] = str(tools)
                    run_env["CARGO_TARGET_DIR"] = str(work / "install-target")
                print(f"image-check: [{s['name']}] RUN {rest}", flush=True)
                t0 = time.monotonic()
                subprocess.run(["bash", "-euc", command], cwd=cwd, env=run_env, check=True)
                print(f"image-check: [{s['name']}] done in {time.monotonic() - t0:.0f} s", flush=True)
            elif kw in ("LABEL", "EXPOSE", "USER", "ENTRYPOINT", "CMD"):
                pass
            else:
                sys.exit(f"image-check: instruction {kw} not supported in a build stage")
        return env, cwd

    env_workdir: dict[str, str] = {}
    # Stages other stages COPY from run first (the planner), each from its own base chain.
    for name in [n for n in needed_from if n in by_name]:
        sub_chain = []
        st = by_name[name]
        while True:
            sub_chain.insert(0, st)
            if st["base"] not in by_name:
                break
            st = by_name[st["base"]]
        e, c = {}, None
        for st in sub_chain:
            e, c = run_stage(st, e, c, fresh=st["name"] == name)
        workdirs[name] = c
        env_workdir[name] = e.get("_WORKDIR", "/")
    cwd = None
    for st in chain:
        env, cwd = run_stage(st, env, cwd, fresh=st["name"] == args.target)
    print(f"image-check: output {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
