#!/usr/bin/env bash
# Idempotent set-up of the ALOE workspace: virtualenv, ROS 2 (wheels or the sourced distro),
# the wheels' CMake path fix, libosmesa6, colcon build. Quick when everything is in place.
#
#   bash scripts/setup.sh          # then: source scripts/env.sh
#
# Where a ROS 2 distribution is already sourced (ROS_DISTRO set, e.g. apt Humble/Jazzy on a
# robot) the venv sees its Python packages (--system-site-packages) and no ROS wheel is installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ALOE_VENV:-$ROOT/.venv}"
PY="${ALOE_PYTHON:-python3}"
cd "$ROOT"

log() { printf '[aloe-setup] %s\n' "$*" >&2; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# --- 1. virtualenv + Python dependencies -----------------------------------------------
if [[ -n "${ROS_DISTRO:-}" ]]; then
  MODE="distro-$ROS_DISTRO"
  REQS=(scripts/requirements.txt)
else
  MODE="wheels"
  REQS=(scripts/requirements.txt scripts/requirements-ros.txt)
fi
want="$MODE-$(hash_of "${REQS[@]}" scripts/constraints.txt)"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv $VENV ($MODE)"
  if [[ "$MODE" == wheels ]]; then "$PY" -m venv "$VENV"; else "$PY" -m venv --system-site-packages "$VENV"; fi
fi
if [[ "$(cat "$VENV/.aloe-reqs" 2>/dev/null)" != "$want" ]]; then
  log "installing Python dependencies (2-3 minutes on a fresh 2-core machine; a line per package)"
  reqargs=()
  for r in "${REQS[@]}"; do reqargs+=(-r "$r"); done
  "$VENV/bin/python" -m pip install --progress-bar off --disable-pip-version-check -c scripts/constraints.txt \
    "${reqargs[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
    | sed -un -E 's/^(Collecting [^ ]+).*/[aloe-setup]   \1/p; s/^Successfully installed (.*)/[aloe-setup]   installed: \1/p' \
    | cut -c1-160
  echo "$want" > "$VENV/.aloe-reqs"
else
  log "Python dependencies up to date ($VENV)"
fi

# --- 2. the wheels' CMake exports name the build host's Python (SETUP-NOTES item 2) --------
if [[ "$MODE" == wheels ]]; then
  py_inc="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_inc="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
  mapfile -t stale < <(grep -l '/opt/python/cp311-cp311' "$VENV"/share/*/cmake/*.cmake 2>/dev/null || true)
  if (( ${#stale[@]} )); then
    log "rewriting build-host paths in ${#stale[@]} CMake export files"
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "${stale[@]}"
  fi
fi

# --- 3. offscreen OpenGL for MuJoCo rendering --------------------------------------------
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing libosmesa6 (offscreen rendering for the simulator)"
    (apt-get install -y -qq libosmesa6 >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq libosmesa6 >/dev/null; }) \
      || log "WARNING: libosmesa6 could not be installed; sim camera rendering will fail"
  else
    log "WARNING: libOSMesa missing and not root: install libosmesa6 for the simulator's cameras"
  fi
fi

# --- 4. colcon build (skipped when no package source changed) -----------------------------
src_hash="$( (git ls-files -s aloe_msgs aloe_data aloe_policy aloe_teleop aloe_critic aloe_sim aloe_bringup launch colcon.meta 2>/dev/null \
              || find aloe_* colcon.meta -type f -printf '%p %T@\n') | sha256sum | cut -c1-16)-$MODE"
if [[ ! -f install/setup.bash || "$(cat install/.aloe-src 2>/dev/null)" != "$src_hash" ]]; then
  log "colcon build (about a minute on a fresh machine; a line per package)"
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
  if [[ "$MODE" == wheels ]]; then
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  fi
  colcon build --symlink-install --metas colcon.meta \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
    --event-handlers console_cohesion- summary- status- console_start_end+ 2>&1 | tee build.log \
    | sed -un -E 's/^(Starting|Finished|Failed|Aborted) .*/[aloe-setup]   &/p' \
    || { tail -n 40 build.log >&2; log "colcon build failed: full log in $ROOT/build.log"; exit 1; }
  echo "$src_hash" > install/.aloe-src
else
  log "workspace build up to date (install/)"
fi
log "ready: source scripts/env.sh"
