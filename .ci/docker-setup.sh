#!/usr/bin/env bash
# Make a Docker engine, the sandbox base image and a foreign python:3.11-slim available, on a fresh
# Debian machine or a warm one.
#
#   bash .ci/docker-setup.sh            # engine + alphora/sandbox:base (also :minimal) + the foreign stand-in
#   IMAGES="base datascience" bash .ci/docker-setup.sh
#   FOREIGN_TAGS="" bash .ci/docker-setup.sh   # build the stand-in, but give it no upstream tag
#   RUNSC=0 bash .ci/docker-setup.sh            # do not install/register gVisor's runsc
#
# gVisor: installs Debian's runsc and registers it with dockerd as the runtime "runsc" in
# /etc/docker/daemon.json "runtimes" (merged into what the file holds), with --network=none among its
# runtime arguments: on hosts like CI's, runsc's own network stack refuses to start ("cannot run with
# network enabled in root network namespace"), so the sandbox refuses network under it (docs/docker.md).
# A second runtime "runsc-egress" adds --host-uds=open, so an egress policy's proxy socket, bound into
# the container, can be reached under gVisor (docs/egress.md).
# A running dockerd reloads "runtimes" on SIGHUP; it is never restarted for this.
#
# Idempotent: installs Debian's docker.io and mmdebstrap only when missing, starts dockerd only when
# no engine answers (log: $DOCKERD_LOG), and builds images only when they are missing or their
# recipe changed (the builder reuses up-to-date images; the Debian root filesystem is built once per
# machine and kept as alphora/sandbox-rootfs:bookworm). No image registry is needed.
# The host's CA bundle is trusted inside our images, so pip works behind a TLS-intercepting proxy.
#
# The foreign stand-in: users run the sandbox on images this project did not build (the spec's
# default is the upstream python:3.11-slim). Without a registry, CI makes one the way a user would
# have one: a plain Debian bookworm root filesystem (python3 3.11, pip, venv) with nothing of ours
# (no sandbox user, no /workspace, no extra CA), Debian's EXTERNALLY-MANAGED marker removed as
# upstream has none, `docker import`ed as $FOREIGN_IMAGE. It then holds each tag of $FOREIGN_TAGS
# that is absent or that an old alphora builder took (our recipe label); a real foreign image under
# that tag is never touched. The stand-in is built once per machine (`docker rmi` it to rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
IMAGES="${IMAGES:-base}"
FOREIGN_IMAGE="${FOREIGN_IMAGE:-alphora/test-foreign:py311}"
FOREIGN_TAGS="${FOREIGN_TAGS-python:3.11-slim python:3.11}"
RECIPE_LABEL="org.alphora.sandbox.recipe"
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
RUNSC="${RUNSC:-1}"
if [ "$RUNSC" = 1 ]; then command -v runsc >/dev/null 2>&1 || missing+=(runsc); fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. the engine ------------------------------------------------------------------------------------
# gVisor's runsc as the runtime "runsc": merged into daemon.json before dockerd starts (it reads the
# file), or followed by SIGHUP when it runs (it reloads "runtimes"); prints "changed" when it wrote
register_runsc() {
  $SUDO python3 - "$(command -v runsc)" <<'PY'
import json, os, sys
path = "/etc/docker/daemon.json"
conf = {}
if os.path.exists(path):
    with open(path) as fh:
        text = fh.read().strip()
    conf = json.loads(text) if text else {}
# "runsc-egress": the same runtime, also allowed to connect to host unix sockets bound into the
# container (--host-uds=open), which an egress policy needs: its proxy is reached through one
wants = {
    "runsc": {"path": sys.argv[1], "runtimeArgs": ["--network=none"]},
    "runsc-egress": {"path": sys.argv[1], "runtimeArgs": ["--network=none", "--host-uds=open"]},
}
runtimes = conf.get("runtimes", {})
if any(runtimes.get(name) != want for name, want in wants.items()):
    conf.setdefault("runtimes", {}).update(wants)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(conf, fh, indent=2)
        fh.write("\n")
    os.replace(path + ".tmp", path)
    print("changed")
PY
}
if [ "$RUNSC" = 1 ]; then runsc_changed="$(register_runsc)"; else runsc_changed=""; fi

# start dockerd when no engine answers
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
if [ "$RUNSC" = 1 ]; then
  has_runsc() { docker info --format '{{json .Runtimes}}' | grep -q '"runsc-egress"'; }
  if [ -n "$runsc_changed" ] || ! has_runsc; then
    log "registering runsc with the running dockerd (SIGHUP: it reloads \"runtimes\", nothing restarts)"
    $SUDO kill -HUP "$(cat /var/run/docker.pid)"
    for _ in $(seq 1 10); do has_runsc && break; sleep 1; done
  fi
  has_runsc || { log "runsc is not registered with dockerd; see $DOCKERD_LOG"; exit 1; }
  log "runtimes: $(docker info --format '{{json .Runtimes}}')"
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
# --source debian: our base never starts FROM the foreign stand-in below (a warm machine has it under
# python:3.11-slim), so CI builds the same image on a cold and a warm machine
# shellcheck disable=SC2086
"$VENV/bin/python" -m alphora.sandbox_docker build $IMAGES --source debian "${CA_ARGS[@]}"

# 4. the foreign stand-in for the upstream python:3.11-slim ------------------------------------------
build_foreign() {
  local mirror=() aptopts=() key value
  for src in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -f "$src" ] && grep -qw bookworm "$src"; then mirror=("$src"); break; fi
  done
  for key in Acquire::http::Proxy Acquire::https::Proxy; do
    value="$(apt-config shell V "$key" 2>/dev/null | sed -n "s/^V='\(.*\)'\$/\1/p")"
    if [ -n "$value" ]; then aptopts+=("--aptopt=$key \"$value\""); fi
  done
  log "building the foreign stand-in $FOREIGN_IMAGE (mmdebstrap bookworm: python3 python3-pip python3-venv)"
  # shellcheck disable=SC2016
  mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,python3-venv \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --aptopt='Acquire::Check-Valid-Until "false"' "${aptopts[@]}" \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --format=tar bookworm - "${mirror[@]}" \
  | docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'ENV LANG=C.UTF-8' \
      -c 'CMD ["python3"]' -m "plain Debian bookworm with python3 (stand-in for python:3.11-slim)" \
      - "$FOREIGN_IMAGE" >/dev/null
}

if ! docker image inspect "$FOREIGN_IMAGE" >/dev/null 2>&1; then build_foreign; fi
for tag in $FOREIGN_TAGS; do
  if labels="$(docker image inspect "$tag" --format '{{json .Config.Labels}}' 2>/dev/null)"; then
    if ! grep -q "\"$RECIPE_LABEL\"" <<<"$labels"; then
      log "keeping $tag: a foreign image ($(docker image inspect "$tag" --format '{{.Id}}'))"
      continue
    fi
    log "$tag is an image an old alphora builder tagged; giving the tag to the foreign stand-in"
  fi
  docker tag "$FOREIGN_IMAGE" "$tag"
done
for tag in alphora/sandbox:base "$FOREIGN_IMAGE" $FOREIGN_TAGS; do
  log "$tag $(docker image inspect "$tag" --format '{{.Id}}')"
done
