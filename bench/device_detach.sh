#!/usr/bin/env bash
# bench/device_detach.sh SCRIPT WAIT_S: run a device script that needs more than one call's 10 minutes.
#
# The first call copies the working tree to /tmp/detached/work and starts SCRIPT there in a process
# session of its own (setsid), which outlives the call while the machine stays warm (30 s after a call
# returns, so the next call must follow at once). Every call, the first too, then waits up to WAIT_S
# seconds for SCRIPT to finish, printing its steps.txt as it grows, and copies what SCRIPT wrote to its
# OUT into this call's $OUT. Call it again with the same arguments until it says "finished".
#
#   device run: VAR=... bash bench/device_detach.sh bench/gpu_fit.sh 560     (again until "finished")
set -u
script=$1 wait_s=${2:-560}
D=/tmp/detached
if [ -f $D/pid ]; then
  echo "== $script already started on this machine (pid $(cat $D/pid)); waiting for it"
else
  mkdir -p $D/out && cp -a . $D/work
  ( cd $D/work && OUT=$D/out setsid bash -c 'bash "$0"; echo $? > /tmp/detached/rc' "$script" \
      > $D/log 2>&1 < /dev/null & echo $! > $D/pid )
  echo "== started $script (pid $(cat $D/pid)), detached"
fi
shown=0
while [ ! -f $D/rc ] && [ $SECONDS -lt "$wait_s" ]; do
  sleep 5
  n=$(wc -l < $D/out/steps.txt 2>/dev/null || echo 0)
  [ "$n" -gt "$shown" ] && sed -n "$((shown + 1)),${n}p" $D/out/steps.txt && shown=$n
done
[ -f $D/out/steps.txt ] && sed -n "$((shown + 1)),\$p" $D/out/steps.txt
cp -a $D/out/. "${OUT:-/tmp/out}/" 2>/dev/null
if [ -f $D/rc ]; then
  echo "== finished: $script exited $(cat $D/rc)"; tail -20 $D/log; exit "$(cat $D/rc)"
fi
echo "== still running after ${wait_s} s: call again with the same arguments"
tail -3 $D/log
