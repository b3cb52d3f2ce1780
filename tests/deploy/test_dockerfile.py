"""The image definition (no Docker daemon here: hadolint and checkov lint it, these tests
hold it to the contract)."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
STAGES = re.split(r"(?m)^FROM ", DOCKERFILE)[1:]


def instructions(stage: str, name: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", stage)
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(name + " ")]


def test_toolchain_matches_rust_toolchain_toml():
    channel = tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    assert STAGES[0].startswith(f"rust:{channel}-slim-bookworm AS chef")
    assert f"RUSTUP_TOOLCHAIN={channel}" in DOCKERFILE


def test_every_base_image_is_pinned():
    for stage in STAGES:
        image = stage.split()[0]
        if image in ("chef",):
            continue
        assert ":" in image and not image.endswith(":latest"), image


def test_build_is_locked_cached_and_selects_the_service():
    assert re.search(r"cargo chef cook --release --locked --package \"\$\{SERVICE\}\"", DOCKERFILE)
    assert re.search(r"cargo build --release --locked --package \"\$\{SERVICE\}\"", DOCKERFILE)
    assert "ARG SERVICE=api-service" in DOCKERFILE
    # The dependency layer comes before the sources are copied.
    assert DOCKERFILE.index("cargo chef cook") < DOCKERFILE.rindex("COPY . .")


def test_runtime_is_distroless_nonroot_numeric_user_with_exec_entrypoint():
    runtime = STAGES[-1]
    assert runtime.startswith("gcr.io/distroless/cc-debian12:nonroot")
    assert instructions(runtime, "USER") == ["65532:65532"]
    assert instructions(runtime, "ENTRYPOINT") == ['["/usr/local/bin/service"]']
    assert not instructions(runtime, "RUN"), "the runtime stage has no shell"


def test_oci_labels_on_the_final_image():
    labels = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", STAGES[-1]))
    assert {"title", "description", "version", "revision", "created", "source", "licenses", "vendor", "base.name"} == {
        label.removeprefix("org.opencontainers.image.") for label in labels}


def test_dockerignore_keeps_the_context_to_the_workspace():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[i for i, line in enumerate(ignore) if not line.startswith("#")][0]] == "*"
    for needed in ("!Cargo.toml", "!Cargo.lock", "!common/", "!api-service/", "!data-ingestion/", "!migrations/"):
        assert needed in ignore
    assert "**/target/" in ignore


def test_image_check_runs_every_builder_command_of_the_dockerfile():
    """scripts/image-check builds by interpreting the Dockerfile: every RUN of the stages the
    builder needs is one it runs, and the build context is what .dockerignore lets through."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts" / "image-check.d"))
    import dockerbuild  # noqa: PLC0415

    stages = {s["name"]: s for s in dockerbuild.parse(ROOT / "Dockerfile")}
    runs = [rest for name in ("chef", "planner", "builder") for kw, rest in stages[name]["instructions"] if kw == "RUN"]
    expected = [r for stage in STAGES if stage.split()[2] in ("chef", "planner", "builder") for r in instructions(stage, "RUN")]
    assert [" ".join(r.split()) for r in runs] == [" ".join(r.split()) for r in expected]
    assert any(re.fullmatch(r"cargo install cargo-chef --locked --version [0-9.]+", r) for r in runs)
    ignore = dockerbuild.DockerIgnore(ROOT / ".dockerignore")
    kept = {p for p in ("Cargo.lock", "common/src/lib.rs", "migrations/x.sql", "api-service/Cargo.toml") if not ignore.excluded(p)}
    dropped = {p for p in ("helm/x", "target/release/x", "common/target/x", "api-service/.env", "deploy/deploy.sh") if ignore.excluded(p)}
    assert len(kept) == 4 and len(dropped) == 5
