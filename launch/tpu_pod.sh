#!/usr/bin/env bash
# Runs lt_jax on a Cloud TPU VM (single host or pod slice): create or reuse the VM, copy this
# checkout, install (only when pyproject.toml changed), and start launch/run_on_host.sh on every
# worker (--worker=all) detached from the ssh session (nohup setsid, log in ~/lt_jax_logs on each
# worker), then follow worker 0's log until the run ends. A dropped ssh connection (or Ctrl-C)
# stops only the following: the run goes on; --attach follows it again.
#
# Re-running the same command resumes the run from its latest checkpoint in the gs:// workdir; a
# preempted (spot) VM is deleted and created again first. Exit status 75: the trainer was stopped
# by SIGTERM after checkpointing (e.g. a maintenance event): run the same command again.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh [OPTIONS] [--] --config=configs/X.py[:ARGS] --workdir=gs://BUCKET/DIR \
         [--config.a.b=V ...]

Options (each also read from the environment variable in brackets):
  --name=NAME        TPU VM name [TPU_NAME] (required)
  --zone=ZONE        zone, e.g. us-central2-b [TPU_ZONE] (required)
  --type=TYPE        accelerator type [TPU_TYPE] (default v4-8)
  --version=VERSION  TPU VM software version [TPU_VERSION] (default tpu-ubuntu2204-base)
  --bucket=BUCKET    GCS bucket [BUCKET]: a --workdir that is not gs://... becomes
                     gs://BUCKET/WORKDIR. All workers of a pod must share the workdir.
  --project=PROJECT  GCP project [TPU_PROJECT] (default: gcloud's configured project)
  --spot             create the VM as a spot VM (cheaper, preemptible)
  --skip-setup       do not copy the code or install (the VM has them from an earlier run;
                     ignored when the VM is created)
  --detach           start the run and return (follow it later with --attach)
  --attach           only follow the log of this workdir's run (started earlier) to its end
  --distributed / --no-distributed
                     force jax.distributed.initialize() on or off (default: on when TYPE has
                     more than one host, i.e. its number is above 8)
  --dry-run          print the commands instead of running them (needs no gcloud)
  -h, --help         this text

Everything else (or everything after --) goes to python -m lt_jax.main on each worker.
Example:
  launch/tpu_pod.sh --name=lt-pod --zone=us-central2-b --type=v4-32 --bucket=my-bucket \
    --config=configs/mfm_cifar.py --workdir=runs/mfm_c10
EOF
}

die() {
  echo "tpu_pod.sh: error: $*" >&2
  echo "Run 'launch/tpu_pod.sh --help' for usage." >&2
  exit 2
}

name="${TPU_NAME:-}"
zone="${TPU_ZONE:-}"
type="${TPU_TYPE:-v4-8}"
version="${TPU_VERSION:-tpu-ubuntu2204-base}"
bucket="${BUCKET:-}"
project="${TPU_PROJECT:-}"
spot=0
skip_setup=0
detach=0
attach=0
distributed=auto
dry_run=0
trainer_args=()

need_value() {  # option, remaining argument count
  [[ "$2" -ge 2 ]] || die "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --type=*) type="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --bucket=*) bucket="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --name | --zone | --type | --version | --bucket | --project)
      need_value "$1" $#
      declare "${1#--}=$2"
      shift
      ;;
    --spot) spot=1 ;;
    --skip-setup) skip_setup=1 ;;
    --detach) detach=1 ;;
    --attach) attach=1 ;;
    --distributed) distributed=1 ;;
    --no-distributed) distributed=0 ;;
    --dry-run | --dry_run) dry_run=1 ;;
    --) shift; trainer_args+=("$@"); break ;;
    *) trainer_args+=("$1") ;;
  esac
  shift
done

[[ -n "$name" ]] || die "missing TPU VM name: --name=NAME or TPU_NAME"
[[ -n "$zone" ]] || die "missing zone: --zone=ZONE or TPU_ZONE"
[[ "$type" =~ ^[a-z0-9]+-([0-9]+)$ ]] ||
  die "accelerator type '$type' is not like v4-8 or v5litepod-16"
size="${BASH_REMATCH[1]}"
multi_host=0
((size > 8)) && multi_host=1
[[ "$distributed" == auto ]] && distributed=$multi_host

# Trainer arguments: require --config and --workdir, put the workdir on GCS.
have_config=0
workdir=""
for ((i = 0; i < ${#trainer_args[@]}; i++)); do
  case "${trainer_args[i]}" in
    --config=?*) have_config=1 ;;
    --workdir=*) workdir="${trainer_args[i]#--workdir=}"; workdir_index=$i ;;
    --config | --workdir) die "write ${trainer_args[i]}=VALUE (with '=')" ;;
  esac
done
((have_config || attach)) || die "missing trainer argument --config=configs/X.py[:ARGS]"
[[ -n "$workdir" ]] ||
  die "missing trainer argument --workdir=gs://BUCKET/DIR (or --workdir=DIR with --bucket)"
bucket="${bucket#gs://}"
bucket="${bucket%/}"
if [[ "$workdir" != gs://* ]]; then
  if [[ -n "$bucket" ]]; then
    workdir="gs://$bucket/${workdir#./}"
    workdir="${workdir%/}"
    trainer_args[workdir_index]="--workdir=$workdir"
  elif ((multi_host)); then
    die "a $type pod has several workers: the workdir must be gs://... (or give --bucket)"
  else
    echo "tpu_pod.sh: warning: workdir '$workdir' is on the VM's disk; it is lost with the VM" >&2
  fi
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gcloud_opts=(--zone="$zone")
[[ -n "$project" ]] && gcloud_opts+=(--project="$project")
tpu=(gcloud compute tpus tpu-vm)
remote_dir=lt_jax            # under the remote home directory
remote_venv=lt_jax_venv
tarball_name=lt_jax_code.tar.gz

quote() {  # one argument, quoted for a POSIX shell only where needed
  if [[ "$1" =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {  # arguments, quoted and separated by spaces
  local arg sep=""
  for arg in "$@"; do
    printf '%s' "$sep"
    quote "$arg"
    sep=" "
  done
}

show() {  # prints a command: to stdout with --dry-run, else to stderr as a log line
  if ((dry_run)); then
    echo "+ $(quote_all "$@")"
  else
    echo "+ $(quote_all "$@")" >&2
  fi
}

run() {
  show "$@"
  ((dry_run)) || "$@"
}

if ((!dry_run)); then
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud not found (install the Google Cloud SDK, or use --dry-run)"
fi

# The run's files on each worker: its log and, once it ends, its exit status.
run_id="run-$(printf '%s' "$workdir" | cksum | cut -d' ' -f1)"
log="\$HOME/lt_jax_logs/$run_id.log"
rc_file="\$HOME/lt_jax_logs/$run_id.rc"
pid_file="\$HOME/lt_jax_logs/$run_id.pid"
follow="tail -n +1 -F $log & t=\$!; while [[ ! -f $rc_file ]]; do sleep 5; done; sleep 1"
follow+="; kill \$t; exit \$(cat $rc_file)"
follow_cmd=("${tpu[@]}" ssh "$name" "${gcloud_opts[@]}" --worker=0 --command="bash -c $(quote "$follow")")

follow_run() {  # worker 0's log to the end of the run; the run's exit status
  local rc=0
  run "${follow_cmd[@]}" || rc=$?
  if ((rc == 75)); then
    echo "tpu_pod.sh: preempted: the trainer checkpointed and stopped (exit status 75);" \
      "run this command again to resume" >&2
  fi
  return "$rc"
}

if ((attach)); then
  follow_run
  exit $?
fi

# 1. The TPU VM: reuse, recreate when preempted, or create.
create=("${tpu[@]}" create "$name" "${gcloud_opts[@]}" --accelerator-type="$type"
  --version="$version")
((spot)) && create+=(--spot)
if ((dry_run)); then
  echo "# create the TPU VM unless it exists (recreate it when PREEMPTED / TERMINATED):"
  show "${tpu[@]}" describe "$name" "${gcloud_opts[@]}" --format='value(state)'
  show "${create[@]}"
else
  state="$("${tpu[@]}" describe "$name" "${gcloud_opts[@]}" --format='value(state)' \
    2>/dev/null || true)"
  case "$state" in
    "") run "${create[@]}"; skip_setup=0 ;;
    PREEMPTED | TERMINATED)
      echo "tpu_pod.sh: $name is $state: deleting and creating it again" >&2
      run "${tpu[@]}" delete "$name" "${gcloud_opts[@]}" --quiet
      run "${create[@]}"
      skip_setup=0
      ;;
    *) echo "tpu_pod.sh: reusing TPU VM $name ($state)" >&2 ;;
  esac
fi

# 2. Code and installation on every worker.
if ((!skip_setup)); then
  tarball="${TMPDIR:-/tmp}/${tarball_name%.tar.gz}.$$.tar.gz"
  ((dry_run)) || trap 'rm -f "$tarball"' EXIT
  run tar -czf "$tarball" -C "$repo" --exclude=.git --exclude=venv --exclude=.venv \
    --exclude=workdirs --exclude=runs --exclude=__pycache__ --exclude='*.egg-info' \
    --exclude=.pytest_cache --exclude=.data --exclude=.whl --exclude=.gl --exclude=build \
    --exclude=dist --exclude=.sweeps --exclude='*.zip' --exclude='*.npz' --exclude='*.npy' .
  run "${tpu[@]}" scp "$tarball" "$name:$tarball_name" "${gcloud_opts[@]}" --worker=all
  # Python >= 3.11: the system one when it is new enough, else one that uv installs.
  setup="set -euo pipefail; dir=\$HOME/$remote_dir; venv=\$HOME/$remote_venv"
  # A run still going on this worker keeps its code: nothing is replaced under it.
  setup+="; for f in \$HOME/lt_jax_logs/*.pid; do [[ -f \$f ]] && kill -0 \$(cat \$f) 2>/dev/null"
  setup+=" && { echo \"\$(hostname): a run is going (\$f): code and venv left as they are\" >&2"
  setup+="; exit 0; }; done"
  setup+="; rm -rf \"\$dir\"; mkdir -p \"\$dir\"; tar -xzf \"\$HOME/$tarball_name\" -C \"\$dir\""
  setup+="; if [[ ! -x \$venv/bin/python ]]; then"
  setup+=" python3 -c \"import sys; sys.exit(sys.version_info < (3, 11))\""
  setup+=" && python3 -m venv \"\$venv\""
  setup+=" || { rm -rf \"\$venv\"; python3 -m pip install --user -q uv"
  setup+="; \$HOME/.local/bin/uv venv --seed --python 3.12 \"\$venv\"; }; fi"
  # Install only when pyproject.toml changed (the editable install sees new code at once).
  setup+="; stamp=\$(sha1sum \"\$dir/pyproject.toml\" | cut -c1-40)"
  setup+="; if [[ \"\$(cat \"\$venv/.lt_jax_installed\" 2>/dev/null)\" != \"\$stamp\" ]]; then"
  setup+=" \"\$venv/bin/python\" -m pip install -q --upgrade pip"
  setup+=" && \"\$venv/bin/python\" -m pip install -q -e \"\$dir[gcs]\" \"jax[tpu]\""
  setup+=" && echo \"\$stamp\" > \"\$venv/.lt_jax_installed\"; fi"
  run "${tpu[@]}" ssh "$name" "${gcloud_opts[@]}" --worker=all --command="bash -c $(quote "$setup")"
fi

# 3. The run, on all workers at once, detached from this ssh session.
env_vars="LT_JAX_VENV=\$HOME/$remote_venv"
((distributed)) && env_vars+=" LT_JAX_DISTRIBUTED=1" || env_vars+=" LT_JAX_DISTRIBUTED=0"
trainer="cd \$HOME/$remote_dir && $env_vars launch/run_on_host.sh $(quote_all "${trainer_args[@]}")"
trainer+="; echo \$? > $rc_file"
# Started once: a re-run of the same command while the run goes only follows it again.
start="mkdir -p \$HOME/lt_jax_logs; if [[ -f $pid_file ]] && kill -0 \$(cat $pid_file) 2>/dev/null"
start+="; then echo \"\$(hostname): already running, not started again\" >&2; else rm -f $rc_file"
start+=" && { nohup setsid bash -c $(quote "$trainer") >> $log 2>&1 < /dev/null & echo \$! > $pid_file; }"
start+="; fi"
((dry_run)) && echo "# start the run detached on every worker (nohup setsid; it survives this ssh):"
run "${tpu[@]}" ssh "$name" "${gcloud_opts[@]}" --worker=all --command="$start"
((dry_run)) || echo "tpu_pod.sh: started on every worker of $name (log ~/lt_jax_logs/$run_id.log" \
  "there); follow it again with: $0 --attach --name=$name --zone=$zone --workdir=$workdir" >&2
((detach)) && exit 0
((dry_run)) && echo "# follow worker 0's log to the end (Ctrl-C or a dropped ssh stops only this):"
follow_run
