#!/usr/bin/env bash
# Do two builds of dni-train compute the same thing? Runs every committed config (and a Copy and an
# MNIST sweep) at a reduced budget with both binaries and compares their metrics record by record,
# leaving out only wall-clock fields. Use it after a refactor that should not change any result:
#
#   git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release -p dni-train)
#   cargo build --release -p dni-train
#   scripts/same-results.sh /tmp/before/target/release/dni-train target/release/dni-train
#
# MNIST runs use the single-thread schedule (mnist.threads = false): the threaded one interleaves its
# workers by timing, so two runs of one binary differ too. About 15 minutes on the 2-core machine.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 OLD_DNI_TRAIN NEW_DNI_TRAIN (two dni-train binaries to compare)" >&2
  exit 2
fi
old=$(realpath "$1"); new=$(realpath "$2")
for bin in "$old" "$new"; do
  [ -x "$bin" ] || { echo "error: $bin is not an executable dni-train binary" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
out=$(mktemp -d -t same-results.XXXXXX)
echo "old: $old"; echo "new: $new"; echo "runs in $out"
timing='s/"(wall_s|wall_clock_s|ms_per_step)":[-0-9.e+]*,?//g'
failed=0
compare() {
  local name=$1; shift
  for side in old new; do
    local bin=$old; [ $side = new ] && bin=$new
    if ! "$bin" "$@" --out "$out/$side-$name" > "$out/$side-$name.log" 2>&1; then
      echo "$name: the $side binary failed (log: $out/$side-$name.log)"; failed=1; return
    fi
  done
  local a b
  a=$(find "$out/old-$name" -name '*.jsonl' | sort); b=$(find "$out/new-$name" -name '*.jsonl' | sort)
  if [ -z "$a" ]; then echo "$name: no metrics written (log: $out/old-$name.log)"; failed=1; return; fi
  # shellcheck disable=SC2086
  if diff <(sed -E "$timing" $a) <(sed -E "$timing" $b) > "$out/$name.diff"; then
    echo "$name: identical ($(cat $a | wc -l) records)"
  else
    echo "$name: DIFFERENT (see $out/$name.diff)"; failed=1
  fi
}
compare copy --config configs/copy.toml --steps 3000
compare copy_bptt --config configs/copy.toml --steps 3000 --set rnn.method=bptt
compare copy_aux_every_step --config configs/copy.toml --steps 300 --set rnn.method=dni_aux --set rnn.aux_every_step=true
compare repeat_copy --config configs/repeat_copy.toml --steps 2000 --set rnn.T=4
compare repeat_copy_aux --config configs/repeat_copy.toml --steps 2000 --set rnn.method=dni_aux
compare charlm --config configs/charlm.toml --steps 600 --set charlm.eval_every=300
compare charlm_ptb --config configs/charlm_ptb.toml --steps 300 --set charlm.eval_every=150
compare two_timescale --config configs/two_timescale.toml --steps 1600
compare two_timescale_e2e --config configs/two_timescale.toml --steps 1600 --set timescale.method=e2e
for m in bp dni cdni nobp pupdate unlocked table2; do
  compare "mnist_$m" --config "configs/mnist_$m.toml" --steps 200 --set mnist.threads=false
done
compare sweep_copy sweep --config configs/copy.toml --t 2,3 --methods bptt,dni,dni_aux --steps 1500
compare sweep_mnist sweep --config configs/mnist_table2.toml --layers 1,2 --methods bp,dni,cdni --steps 100
exit $failed
