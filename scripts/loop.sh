#!/usr/bin/env bash
# The main job: the whole human-in-the-loop loop in simulation on embedded defaults
# (scripted demos -> initial policy -> [run with interventions over ROS -> bags -> ALOE critic
# + improvement -> hot reload] x N), with a report under runs/.
#   bash scripts/loop.sh [aloe-loop args...]      (aloe-loop --help lists them)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec aloe-loop "$@"
