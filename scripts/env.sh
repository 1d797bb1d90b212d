# Source me (bash): the ALOE workspace environment set up by scripts/setup.sh.
_aloe_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_aloe_venv="${ALOE_VENV:-$_aloe_root/.venv}"
# shellcheck disable=SC1091
source "$_aloe_venv/bin/activate"
if [[ -z "${ROS_DISTRO:-}" ]]; then
  export AMENT_PREFIX_PATH="$_aloe_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
# colcon's setup scripts reference unset variables; relax nounset while sourcing.
_aloe_u=$-; set +u
# shellcheck disable=SC1091
source "$_aloe_root/install/setup.bash" 2>/dev/null
[[ $_aloe_u == *u* ]] && set -u
export MUJOCO_GL="${MUJOCO_GL:-osmesa}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}"
# ALOE_PORTABLE_NUMERICS=1: torch's AVX2 kernels on any x86 CPU that has them. With it an AVX-512 machine made an AVX2
# machine's initial policies bit for bit (and so a study's shared starts), though not their later iterations
# (BENCHMARKS part 24). The names are bench/offline_loop.py's NUMERICS_ENV; they act only if set before Python starts.
if [[ "${ALOE_PORTABLE_NUMERICS:-0}" == 1 ]]; then
  export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # nothing may download weights at run time
export ALOE_ROOT="$_aloe_root"
# The command-line tools (aloe-train, aloe-evaluate, aloe-loop) on PATH; nodes stay under lib/<pkg>
# (`ros2 run <pkg> <node>` where the ros2 CLI exists).
for _aloe_pkg in aloe_critic aloe_bringup aloe_policy; do
  case ":$PATH:" in *":$_aloe_root/install/$_aloe_pkg/lib/$_aloe_pkg:"*) ;;
    *) export PATH="$_aloe_root/install/$_aloe_pkg/lib/$_aloe_pkg:$PATH" ;; esac
done
unset _aloe_pkg
unset _aloe_root _aloe_venv _aloe_u
