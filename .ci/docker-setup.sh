#!/usr/bin/env bash
# Make a Docker engine and the sandbox base image available, on a fresh Debian machine or a warm one.
#
#   bash .ci/docker-setup.sh            # engine + alphora/sandbox:base (also python:3.11-slim, :minimal)
#   IMAGES="base datascience" bash .ci/docker-setup.sh
#
# Idempotent: installs Debian's docker.io and mmdebstrap only when missing, starts dockerd only when
# no engine answers (log: $DOCKERD_LOG), and builds images only when they are missing or their
# recipe changed (the builder reuses up-to-date images; the Debian root filesystem is built once per
# machine and kept as alphora/sandbox-rootfs:bookworm). No image registry is needed.
# The host's CA bundle is trusted inside the images, so pip works behind a TLS-intercepting proxy.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
IMAGES="${IMAGES:-base}"
VENV="${DOCKER_SETUP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/alphora-sandbox/docker-builder-venv}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

log() { echo "[docker-setup] $*" >&2; }

# 1. packages --------------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. the engine ------------------------------------------------------------------------------------
engine_up() { docker info >/dev/null 2>&1; }

start_dockerd() {  # $@: extra dockerd flags
  log "starting dockerd $* (log: $DOCKERD_LOG)"
  $SUDO mkdir -p "$(dirname "$DOCKERD_LOG")"
  # setsid + nohup: the daemon outlives this script and the CI step that ran it
  $SUDO sh -c "setsid nohup dockerd $* >>'$DOCKERD_LOG' 2>&1 </dev/null &"
  for _ in $(seq 1 60); do
    if engine_up; then return 0; fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then break; fi
    sleep 1
  done
  return 1
}

if engine_up; then
  log "engine already answers"
else
  if pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd runs but does not answer yet; waiting"
    for _ in $(seq 1 30); do engine_up && break; sleep 1; done
  fi
  if ! engine_up; then
    # overlay2 works on ext4/xfs hosts (cgroup v1 or v2); fall back when the kernel refuses it
    # (e.g. the data root is itself on overlayfs): fuse-overlayfs if present, else vfs (slow, works).
    if ! start_dockerd; then
      log "dockerd did not come up with the default storage driver; last log lines:"
      tail -n 15 "$DOCKERD_LOG" >&2 || true
      if [ -f /var/run/docker.pid ]; then $SUDO kill "$(cat /var/run/docker.pid)" 2>/dev/null || true; fi
      sleep 2
      if command -v fuse-overlayfs >/dev/null 2>&1 && start_dockerd --storage-driver=fuse-overlayfs; then :
      elif start_dockerd --storage-driver=vfs; then :
      else
        log "dockerd failed to start; see $DOCKERD_LOG"
        tail -n 40 "$DOCKERD_LOG" >&2 || true
        exit 1
      fi
    fi
  fi
fi
log "engine: $(docker info --format '{{.ServerVersion}} storage={{.Driver}} cgroup={{.CgroupVersion}}' 2>/dev/null)"

# 3. images ----------------------------------------------------------------------------------------
# The builder is the plugin's own CLI; it runs from a small venv with the two packages (editable).
# (outside the checkout, reused across runs; reinstalled when it points at another checkout)
here="$(pwd -P)"
if [ ! -x "$VENV/bin/python" ] || [ "$("$VENV/bin/python" -c "import alphora.sandbox_docker as m; print(m.__file__)" 2>/dev/null)" != "$here/packages/alphora-sandbox-docker/src/alphora/sandbox_docker/__init__.py" ]; then
  log "preparing $VENV for the image builder"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -e packages/alphora-sandbox-core -e packages/alphora-sandbox-docker
fi
CA_ARGS=()
for bundle in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
  if [ -n "$bundle" ] && [ -f "$bundle" ]; then CA_ARGS=(--ca-cert "$bundle"); break; fi
done
# shellcheck disable=SC2086
"$VENV/bin/python" -m alphora.sandbox_docker build $IMAGES "${CA_ARGS[@]}"
docker image inspect alphora/sandbox:base python:3.11-slim --format '{{index .RepoTags 0}} {{.Id}}' >&2
