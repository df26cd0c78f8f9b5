#!/bin/bash
# Regenerates every table of the second reproduction round (issue 16, RESULTS.md) from the sweeps'
# MLflow stores, read-only: it never starts, stops or resumes a sweep and writes nothing under the stores.
#
# usage (from the repository root):  bash scripts/repro2_tables.sh
#   RUNS=/work/runs16     where the sweeps run (<RUNS>/<preset>/mlflow.db, sweep_spec.json; <RUNS>/<preset>.log)
#   PY=/work/main/.venv/bin/python
#   BOOTSTRAP=1000        per-run bootstrap resamples of the test set (0 to skip)
#
# For each round-2 preset whose store exists:
#   python scripts/report.py --tracking-uri sqlite:///<RUNS>/<preset>/mlflow.db --experiment <preset>
#       --out results/round2/<preset> ...
#   (two-stage paper A sweeps: --stage seeds, and their beta search separately into .../search;
#   paper B: --select val_accuracy --group-by noise_kind,noise_rate --best-epoch; the ablations: --group-by
#   alpha / beta), and copies <RUNS>/<preset>/sweep_spec.json to results/round2/<preset>/sweep_spec.json
#   (and a two-stage sweep's seeds/sweep_spec.json and stages.json, as seeds_sweep_spec.json, stages.json).
# A sweep whose store is gone (machines are not kept) but whose tables are committed (report.csv) keeps
# them, and its row in status.md. A sweep with no store or no finished trial yet gets a placeholder
# report.md (so RESULTS.md's splices resolve); report.py exits 1 for it. Then: results/round2/status.md
# (trials finished per store, wall time summed over the "=== ... start/done" intervals of
# <RUNS>/<preset>.log), the claims tables (claims/paper_{a,b}.yaml -> results/claims/) and
# results/round2/cannot_tell.md (the seeds that would decide each "cannot tell" test) and
# `scripts/report.py --refresh RESULTS.md`. Safe to run while the sweeps run (it reads finished runs only).
set -u
cd "$(dirname "$0")/.."
RUNS=${RUNS:-/work/runs16}
PY=${PY:-/work/main/.venv/bin/python}
BOOTSTRAP=${BOOTSTRAP:-1000}
export PYTHONPATH=$PWD OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg
PRESETS="repro2-b-cifar10 repro2-b-cifar10-m20 repro2-b-cifar10-m20-controls repro2-a-cifar10 repro2-a-alpha repro2-a-beta repro2-a-tinyimagenet"
# Two sweeps are not presets but repro2-b-cifar10 narrowed with --set, at M = 2,000 (20 %), 3 seeds:
# -m20, LP at asymmetric 0.8 (claim B3-M20), and -m20-controls, its two controls at the same M (CE + clean
# trusted at asymmetric 0.8, trusted only; claim B3-M20-control). scripts/repro2_queue.sh runs them with
# these arguments (one sweep a line: name|arguments).
EXTRA_ARGS="repro2-b-cifar10-m20|--preset repro2-b-cifar10 --name repro2-b-cifar10-m20 --set label=confidence loss=log_projection noise_kind=asymmetric noise_rate=0.8 trusted_size=2000
repro2-b-cifar10-m20-controls|--preset repro2-b-cifar10 --name repro2-b-cifar10-m20-controls --set label=trusted_only,onehot_trusted noise_kind=asymmetric noise_rate=0.0,0.8 trusted_size=2000"

report() {  # preset out args...
  local preset=$1 out=$2; shift 2
  "$PY" scripts/report.py --tracking-uri "sqlite:///$RUNS/$preset/mlflow.db" --experiment "$preset" \
    --out "$out" --interval "$@" > "$out.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then echo "  $out: written"; else echo "  $out: skipped (rc $rc: $(tail -1 "$out.log"))"; fi
  rm -f "$out.log"
  # report.py failed (no finished trial yet): the folder's tables are not this store's (a store set
  # aside and begun again leaves the old ones): a placeholder, and no stale CSVs
  if [ $rc -ne 0 ] || [ ! -f "$out/report.md" ] || grep -q ': no results yet$' "$out/report.md"; then
    rm -f "$out/report.csv" "$out/comparisons.csv"
    placeholder "$out" "$preset" "no finished trials in the store yet"
  fi
}

placeholder() {  # out preset state: a report.md that RESULTS.md can splice before the sweep has results
  printf '## %s: no results yet\n\n| state |\n|---|\n| %s |\n\nRe-run scripts/repro2_tables.sh once the sweep has finished trials.\n' \
    "$2" "$3" > "$1/report.md"
}

LOST=""  # finished sweeps whose store is gone: committed tables kept (status.md keeps their rows too)
for preset in $PRESETS; do
  store=$RUNS/$preset/mlflow.db
  out=results/round2/$preset
  mkdir -p "$out"
  if [ ! -f "$store" ] && [ -f "$out/report.csv" ]; then
    # finished earlier and committed, its store since lost (a machine is not kept): the committed tables
    # stand (the claims read their report.csv) and status.md keeps the sweep's row
    echo "$preset: no store ($store); keeping the committed tables in $out"
    LOST="$LOST $preset"
    continue
  fi
  if [ ! -f "$store" ]; then
    echo "$preset: no store yet ($store)"
    placeholder "$out" "$preset" "queued: no store yet"
    case $preset in repro2-a-cifar10 | repro2-a-tinyimagenet)
      mkdir -p "$out/search"; placeholder "$out/search" "$preset" "queued: no store yet" ;;
    esac
    continue
  fi
  echo "$preset:"
  cp "$RUNS/$preset/sweep_spec.json" "$out/sweep_spec.json"
  # a two-stage sweep's seeds stage (its own spec) and the configurations the search chose (stages.json)
  [ -f "$RUNS/$preset/seeds/sweep_spec.json" ] && cp "$RUNS/$preset/seeds/sweep_spec.json" "$out/seeds_sweep_spec.json"
  [ -f "$RUNS/$preset/stages.json" ] && cp "$RUNS/$preset/stages.json" "$out/stages.json"
  case $preset in
    repro2-b-cifar10)
      report "$preset" "$out" --select val_accuracy --group-by noise_kind,noise_rate --show-params '' \
        --best-epoch --bootstrap "$BOOTSTRAP" ;;
    repro2-b-cifar10-m20 | repro2-b-cifar10-m20-controls)
      report "$preset" "$out" --select val_accuracy --group-by noise_kind,noise_rate,trusted_size \
        --show-params '' --best-epoch --bootstrap "$BOOTSTRAP" ;;
    repro2-a-cifar10 | repro2-a-tinyimagenet)
      mkdir -p "$out/search"
      report "$preset" "$out/search" --stage search --show-params beta --no-diagrams
      report "$preset" "$out" --stage seeds --show-params beta --bootstrap "$BOOTSTRAP" ;;
    repro2-a-alpha)
      report "$preset" "$out" --group-by alpha --show-params '' --bootstrap "$BOOTSTRAP" ;;
    repro2-a-beta)
      report "$preset" "$out" --group-by beta --show-params '' --bootstrap "$BOOTSTRAP" ;;
  esac
done

# The status of every sweep: finished trials (per stage) in its store, planned trials (its preset), wall
# time so far (the sum of its log's start -> done intervals; an open interval counts up to now).
RUNS=$RUNS PRESETS=$PRESETS LOST=$LOST EXTRA_ARGS=$EXTRA_ARGS "$PY" - <<'EOF' || exit 1
import datetime as dt, json, os, re, sqlite3, subprocess, sys
from pathlib import Path

runs, presets = Path(os.environ["RUNS"]), os.environ["PRESETS"].split()
now = dt.datetime.now(dt.timezone.utc)
stamp = re.compile(r"^=== (\S+) (start|done) (\S+)")

def planned(preset):
    """("text", total) from the preset's dry run (creates nothing): its grid, plus for a two-stage sweep
    each method's chosen configuration on the seeds."""
    extra = dict(line.split("|", 1) for line in os.environ["EXTRA_ARGS"].splitlines() if line)
    args = extra[preset].split() if preset in extra else ["--preset", preset]
    text = subprocess.run([sys.executable, "sweeps/calibration.py", *args, "--dry-run",
                           "--storage", "/tmp/repro2-dry"], capture_output=True, text=True).stdout
    spec = json.loads(text[: text.index("\n}\n") + 2])
    search = int(re.search(r"grid search: (\d+) trials", text).group(1))
    seeds = spec.get("seeds") or 0
    if not seeds:
        return f"{search}", search
    labels = [x for x in spec["space"]["label"]["choice"] if x != "similarity"]
    methods = len(labels) + len(spec["space"].get("similarity", {}).get("choice", []))
    return f"{search} search + {methods} methods x {seeds} seeds = {search + methods * seeds}", search + methods * seeds

def finished(preset):
    db = runs / preset / "mlflow.db"
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        "select coalesce(s.value, '-'), count(*) from runs r"
        " join tags t on t.run_uuid = r.run_uuid and t.key = 'simlab.role' and t.value = 'trial'"
        " left join tags s on s.run_uuid = r.run_uuid and s.key = 'simlab.stage'"
        " left join tags i on i.run_uuid = r.run_uuid and i.key = 'simlab.interrupted'"
        " where r.status = 'FINISHED' and r.lifecycle_stage = 'active' and i.value is null group by 1"
    ).fetchall()
    reused = con.execute(  # adopted a finished run instead of training (--reuse, sweeps/reuse.py)
        "select count(*) from runs r"
        " join tags t on t.run_uuid = r.run_uuid and t.key = 'simlab.role' and t.value = 'trial'"
        " join tags u on u.run_uuid = r.run_uuid and u.key = 'simlab.reused_from'"
        " where r.status = 'FINISHED' and r.lifecycle_stage = 'active'"
    ).fetchone()[0]
    con.close()
    return dict(rows), reused

def wall(preset):
    """(seconds, state, sessions) from the log: each "=== T start" opens an interval, closed by the next
    "=== T done" line, else by the driver's own "sweep <name>: ... trials in N s" (a session started by
    hand has no done line), else by the last MLflow log or Tune status time before the next start (a
    session killed outright: the end of a machine session SIGKILLs it); an interval
    still open at the end of the log is the running session (counted up to now)."""
    log = runs / f"{preset}.log"
    if not log.exists():
        return 0.0, "queued", 0
    intervals, cur, state = [], None, "queued"
    for line in log.read_text(errors="replace").splitlines():
        m = stamp.match(line)
        if m:
            t = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
            if m.group(2) == "start":
                if cur:
                    intervals.append(cur)
                cur = {"start": t, "end": None, "last": t}
            elif cur:
                cur["end"] = t
                intervals.append(cur)
                cur = None
                rc = re.search(r"rc=(\d+)", line)
                state = "done" if rc and rc.group(1) == "0" else f"stopped (rc {rc.group(1) if rc else '?'})"
            continue
        if cur is None:
            continue
        s = re.match(rf"^sweep {re.escape(preset)}: .* trials in (\d+) s", line)
        if s:
            cur["end"] = cur["start"] + dt.timedelta(seconds=int(s.group(1)))
            state = "stopped"
        ts = re.match(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) ", line)
        if ts:
            cur["last"] = dt.datetime.strptime(ts.group(1), "%Y/%m/%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
        # Tune's status table, every 30 s, in local time: what bounds a session killed without a trace
        tune = re.match(r"^Current time: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.", line)
        if tune:
            cur["last"] = max(cur["last"], dt.datetime.strptime(tune.group(1), "%Y-%m-%d %H:%M:%S").astimezone())
    if cur:
        intervals.append(cur)
    total = 0.0
    for i, iv in enumerate(intervals):
        if iv["end"] is None and i == len(intervals) - 1:
            total += (now - iv["start"]).total_seconds()
            state = "running"
        else:
            total += ((iv["end"] or iv["last"]) - iv["start"]).total_seconds()
    return total, state, len(intervals)

out = ["| preset | state | finished trials | planned trials | wall time so far | sessions |", "|---|---|---|---|---|---|"]
# a sweep whose store is gone ($LOST, from the loop above) keeps its row from the committed status.md
status = Path("results/round2/status.md")
kept = {m.group(1): line for line in (status.read_text().splitlines() if status.exists() else [])
        if (m := re.match(r"^\| `([^`]+)` \| done", line))}
lost = []
for preset in presets:
    if preset in os.environ["LOST"].split() and preset in kept:
        out.append(kept[preset])
        lost.append(preset)
        continue
    fin, reused = finished(preset) or (None, 0)
    text, total = planned(preset)
    seconds, state, starts = wall(preset)
    count = "-" if fin is None else sum(fin.values())
    parts = [f"{k} {v}" for k, v in sorted(fin.items())] if fin and (len(fin) > 1 or "seeds" in fin) else []
    parts += [f"{reused} reused"] if reused else []
    if parts:
        count = f"{count} ({', '.join(parts)})"
    hours = f"{seconds / 3600:.2f} h" if seconds else "-"
    out.append(f"| `{preset}` | {state} | {count} | {text} | {hours} | {starts} |")
out += ["", f"Finished, not interrupted trial runs in each store (`{runs}/<preset>/mlflow.db`; *reused*: adopted "
        "a finished run of the same configuration instead of training, `--reuse`, docs/sweeps.md); planned from the "
        "preset (a two-stage sweep: its search grid, then each method's choice on the seeds); wall time: the "
        f"sum of the start -> done intervals in `{runs}/<preset>.log` (an open one counts up to the time of "
        f"this table). As of {now:%Y-%m-%d %H:%M} UTC."]
if lost:
    out += ["", f"Kept from the previous status.md, their stores gone with the machine they ran on: "
            f"{', '.join(f'`{p}`' for p in lost)} (finished; the committed `results/round2/<preset>/` tables "
            "are their record, and the claims read their `report.csv`)."]
Path("results/round2").mkdir(parents=True, exist_ok=True)
Path("results/round2/status.md").write_text("\n".join(out) + "\n")
print("\n".join(out))
EOF

for paper in a b; do
  "$PY" scripts/report.py --claims "claims/paper_$paper.yaml" --out results/claims > /dev/null || exit 1
  echo "results/claims/claims_paper_$paper.md: $(grep -m1 '^Verdicts' "results/claims/claims_paper_$paper.md")"
done

# What would decide each "cannot tell": per test, the seeds per side at which the observed difference
# would be detected (80 % power, Welch, at alpha / m: Holm's threshold for the smallest of the file's m
# tests with data), taking the observed seed stds as the true ones (simlab.stats, docs/statistics.md).
"$PY" - <<'EOF' || exit 1
import csv, math
from pathlib import Path
from simlab.stats import Summary, min_detectable_difference, min_detectable_difference_paired

out = ["What would decide each claim that reads *cannot tell* (generated by `scripts/repro2_tables.sh` from",
       "`results/claims/claims_paper_*.csv`; docs/statistics.md explains the figures):", ""]
for paper in ("b", "a"):
    rows = list(csv.DictReader(open(f"results/claims/claims_paper_{paper}.csv")))
    m = sum(1 for r in rows if r["p"] not in ("", "nan")) or 1
    by_claim = {}
    for r in rows:
        if r["claim_verdict"] == "cannot tell":
            by_claim.setdefault(r["id"], []).append(r)
    for cid, tests in by_claim.items():
        lines = []
        for r in tests:
            if r["verdict"] != "cannot tell":
                continue
            an, bn = int(float(r["a_n"] or 0)), int(float(r["b_n"] or 0))
            diff = float(r["diff"]) * 100
            what = f"{r['a']} vs {r['b']} ({r['metric']}): Δ {diff:+.2f} points"
            if min(an, bn) < 2:
                lines.append(f"{what} from n = {an} / {bn} seeds: Welch's test needs 2 or more per side; "
                             "the sweep's remaining seeds give it.")
                continue
            a = Summary(float(r["a_mean"]), float(r["a_std"]), an)
            b = Summary(float(r["b_mean"]), float(r["b_std"]), bn)
            det = float(r["detectable"]) * 100 if r["detectable"] not in ("", "nan") else math.nan
            if r["direction"] == "equal":
                lines.append(f"{what}, n = {an} / {bn}, detectable {det:.2f}: an '≈' claim is decided only "
                             "by an equivalence margin in the claims file (or contradicted by a significant "
                             "difference); more seeds alone cannot support it.")
                continue
            if r["test"] == "paired":  # the paired t-test: the per-seed differences' spread decides
                d = Summary(float(r["pairs_mean"]), float(r["pairs_std"]), int(float(r["pairs_n"])))
                need = next((n for n in range(2, 201) if min_detectable_difference_paired(
                    Summary(d.mean, d.std, n), alpha=0.05 / m) * 100 < abs(diff)), None)
                what += " (paired)"
            else:
                need = next((n for n in range(2, 201) if min_detectable_difference(
                    Summary(a.mean, a.std, n), Summary(b.mean, b.std, n), alpha=0.05 / m) * 100 < abs(diff)), None)
            rule = (f"{need} seeds per side" if need else "more than 200 seeds per side (too small for its "
                    "noise: only a larger effect, at a larger scale, would settle it)")
            lines.append(f"{what}, n = {an} / {bn}, detectable now {det:.2f} points at 5 %; detecting "
                         f"this Δ at 5 % / {m} (Holm's strictest step) takes {rule}.")
        if lines:
            out.append(f"- **{cid}**: " + " ".join(lines))
Path("results/round2/cannot_tell.md").write_text("\n".join(out).rstrip("\n") + "\n")
EOF
"$PY" scripts/report.py --refresh RESULTS.md
