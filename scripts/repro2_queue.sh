#!/bin/bash
# Runs the issue-16 (round 2) sweeps one after another, each resumed if its folder exists, at low priority.
# Each sweep runs from a frozen worktree (a resume must see the code that started it):
#   the paper B sweeps from /work/wt/run16 (39c7578), repro2-a-cifar10 from /work/wt/run16b (97565d5), the
#   other paper A sweeps from /work/wt/run16d (20d2ef7: --reuse, with which a seeds stage adopts its search
#   stage's seed-0 run and the ablations adopt repro2-a-cifar10's runs of the points they share, and the
#   Dir-ODIR lambda grid that grows past 1; a first start of repro2-a-tinyimagenet from run16c = ce2dff9,
#   without that fix, was stopped after 1.5 h and set aside in $RUNS/_discarded/).
# usage: setsid nohup bash scripts/repro2_queue.sh [name ...] >/dev/null 2>&1 &
#   names: run only these sweeps of the list below, in its order (default: all of them)
#   RUNS=<folder> (default /work/runs16): stores, logs and queue.log; WT=<folder> (default /work/wt): the
#   frozen worktrees run16, run16b, run16c and run16d (`git worktree add --detach $WT/run16 39c7578`, run16b at
#   97565d5, run16c at ce2dff9, run16d at 20d2ef7);
#   PY (default /work/main/.venv/bin/python). This session ran a copy of it as /work/runs16/queue.sh.
#   SIGINT to the running sweep's driver stops it cleanly and ends the queue; run the queue again to
#   continue (a finished sweep is skipped: its "done ... rc=0" line in $RUNS/queue.log).
# One sweep a line: name | worktree | calibration.py arguments (--storage, --resume added here).
set -u
RUNS=${RUNS:-/work/runs16}
WT=${WT:-/work/wt}
PY=${PY:-/work/main/.venv/bin/python}
# nice applies within a scheduler autogroup (one per session; setsid makes a new one): lower the group too
echo 19 > /proc/self/autogroup 2>/dev/null || true
SWEEPS="repro2-b-cifar10|run16|--preset repro2-b-cifar10
repro2-b-cifar10-m20|run16|--preset repro2-b-cifar10 --name repro2-b-cifar10-m20 --set label=confidence loss=log_projection noise_kind=asymmetric noise_rate=0.8 trusted_size=2000
repro2-b-cifar10-m20-controls|run16|--preset repro2-b-cifar10 --name repro2-b-cifar10-m20-controls --set label=trusted_only,onehot_trusted noise_kind=asymmetric noise_rate=0.0,0.8 trusted_size=2000
repro2-a-cifar10|run16b|--preset repro2-a-cifar10
repro2-a-tinyimagenet|run16d|--preset repro2-a-tinyimagenet --reuse self
repro2-a-alpha|run16d|--preset repro2-a-alpha --reuse self --reuse $RUNS/repro2-a-cifar10
repro2-a-beta|run16d|--preset repro2-a-beta --reuse self --reuse $RUNS/repro2-a-cifar10"
while IFS='|' read -r name wt args; do
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  if grep -q "^=== .* done $name rc=0" "$RUNS/queue.log" 2>/dev/null; then continue; fi
  cd "$WT/$wt" || exit 1
  export PYTHONPATH=$PWD OMP_NUM_THREADS=1 SIMLAB_CACHE=/work/main/.cache/simlab MPLBACKEND=Agg RAY_TMPDIR=/tmp/ray16
  mkdir -p /tmp/ray16
  resume=(); [ -d "$RUNS/$name" ] && resume=(--resume)
  echo "=== $(date -u +%FT%TZ) start $name ${resume[*]} (commit $(git rev-parse --short HEAD)) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RUNS/$name.log" >> "$RUNS/queue.log"
  # shellcheck disable=SC2086  # $args is a list of arguments
  nice -n 19 "$PY" sweeps/calibration.py $args --storage "$RUNS" "${resume[@]}" >> "$RUNS/$name.log" 2>&1 < /dev/null
  rc=$?
  echo "=== $(date -u +%FT%TZ) done $name rc=$rc load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RUNS/$name.log" >> "$RUNS/queue.log"
  [ $rc -eq 0 ] || exit $rc   # interrupted (130) or failed: stop the queue; run it again to continue
done <<< "$SWEEPS"
