#!/usr/bin/env bash
# Per-host runner: the lt_jax trainer on this host, as one process of a (possibly multi-host) job.
#
# Run on every host (TPU VM worker, SLURM task, ...) with the trainer's flags; it cds to the
# repository, activates a virtual environment if asked and execs `python -m lt_jax.main "$@"`.
# A preempted job resumes from its latest checkpoint when the same command is run again. Exit
# status 75 (EX_TEMPFAIL): the trainer was stopped by SIGTERM / SIGINT / SIGUSR1 after writing a
# checkpoint; the job should be requeued (run again).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/run_on_host.sh --config=configs/X.py[:smoke] --workdir=DIR [--config.a.b=V ...]

Runs `python -m lt_jax.main ARGS` from the repository root on this host. Exit status 75: stopped
by a signal after checkpointing; run the same command again to resume.

Environment:
  LT_JAX_VENV          virtual environment to activate first (its bin/activate is sourced).
  LT_JAX_PYTHON        interpreter to run (default: python, else python3, after activation).
  LT_JAX_DISTRIBUTED   1/true/yes: call jax.distributed.initialize() first (multi-host);
                       0/false/no: never. Unset: on when one of the following says the job has
                       more than one process.
  JAX_NUM_PROCESSES    number of processes of the job: > 1 turns on LT_JAX_DISTRIBUTED. Set it
                       where JAX auto-detects the rest (TPU pods, SLURM, Open MPI, Kubernetes).
  SLURM_STEP_NUM_TASKS / SLURM_NTASKS, OMPI_COMM_WORLD_SIZE: > 1 turns it on as well;
  TPU_WORKER_HOSTNAMES with more than one host does too.
EOF
}

die() {
  echo "run_on_host.sh: error: $*" >&2
  echo "Run 'launch/run_on_host.sh --help' for usage." >&2
  exit 2
}

if [[ $# -eq 0 ]]; then
  usage >&2
  die "missing arguments: --config=... and --workdir=... are required"
fi
have_config=0
have_workdir=0
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --config | --config=?*) have_config=1 ;;
    --workdir | --workdir=?*) have_workdir=1 ;;
  esac
done
((have_config)) || die "missing --config=configs/X.py[:ARGS]"
((have_workdir)) || die "missing --workdir=DIR"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ -n "${LT_JAX_VENV:-}" ]]; then
  [[ -f "$LT_JAX_VENV/bin/activate" ]] || die "LT_JAX_VENV=$LT_JAX_VENV has no bin/activate"
  # shellcheck disable=SC1091
  set +u && source "$LT_JAX_VENV/bin/activate" && set -u
fi

# More than one process in the job?
multi_host() {
  local n
  for n in "${JAX_NUM_PROCESSES:-}" "${SLURM_STEP_NUM_TASKS:-${SLURM_NTASKS:-}}" \
    "${OMPI_COMM_WORLD_SIZE:-}"; do
    [[ "$n" =~ ^[0-9]+$ ]] && ((n > 1)) && return 0
  done
  [[ "${TPU_WORKER_HOSTNAMES:-}" == *,* ]]
}

# lt_jax.main reads 1/true/yes/on and 0/false/no/off (other values are an error); pass on "1" or
# nothing, so that an unset variable means "multi-host if the job has several processes".
case "${LT_JAX_DISTRIBUTED:-}" in
  1 | true | True | TRUE | yes) export LT_JAX_DISTRIBUTED=1 ;;
  0 | false | False | FALSE | no) unset LT_JAX_DISTRIBUTED ;;
  "")
    unset LT_JAX_DISTRIBUTED
    if multi_host; then export LT_JAX_DISTRIBUTED=1; fi
    ;;
  *) die "LT_JAX_DISTRIBUTED=$LT_JAX_DISTRIBUTED: expected 1 or 0" ;;
esac

python="${LT_JAX_PYTHON:-}"
if [[ -z "$python" ]]; then
  if command -v python >/dev/null 2>&1; then
    python=python
  elif command -v python3 >/dev/null 2>&1; then
    python=python3
  else
    die "no python on PATH (set LT_JAX_VENV or LT_JAX_PYTHON)"
  fi
fi

echo "run_on_host.sh: $(hostname): LT_JAX_DISTRIBUTED=${LT_JAX_DISTRIBUTED:-}" \
  "$python -m lt_jax.main $*" >&2
exec "$python" -m lt_jax.main "$@"
