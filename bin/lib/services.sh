# The services of `make run`, sourced by bin/run and bin/factory.
# Each service runs in a session of its own and its process group id is kept in
# $RUN_DIR/pids/NAME: stopping a service signals its whole group, so that processes it forked
# are stopped too, even those reparented when their parent died (a django-q2 worker respawned
# by the sentinel during a shutdown). A signal sent to `make run`'s own group (Ctrl-C) reaches
# bin/run alone, which stops the services in order.

RUN_DIR=${RUN_DIR:-run}
STOP_TIMEOUT=${STOP_TIMEOUT:-5}

start_service() {  # NAME LOG COMMAND...: start COMMAND in a new session, output to LOG (-: ours)
  local name=$1 log=$2
  shift 2
  mkdir -p "$RUN_DIR/pids"
  if [ "$log" = - ]; then
    setsid "$@" </dev/null &
  else
    setsid "$@" >"$log" 2>&1 </dev/null &
  fi
  echo $! >"$RUN_DIR/pids/$name"
}

group_alive() {  # PGID: a process started from this checkout is still in the group
  local pid
  for pid in $(pgrep -g "$1"); do
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$PWD" ] && return 0
  done
  return 1
}

any_alive() {  # PGID...
  local pgid
  for pgid in "$@"; do group_alive "$pgid" && return 0; done
  return 1
}

stop_services() {  # NAME...: TERM each group's leader; KILL every group left after STOP_TIMEOUT
  local name pgid groups=() deadline=$((SECONDS + STOP_TIMEOUT))
  for name in "$@"; do
    pgid=$(cat "$RUN_DIR/pids/$name" 2>/dev/null) || continue
    rm -f "$RUN_DIR/pids/$name"
    group_alive "$pgid" || continue
    groups+=("$pgid")
    # The leader stops its own children in order; the group only if the leader is gone.
    kill -TERM "$pgid" 2>/dev/null || kill -TERM -- "-$pgid" 2>/dev/null || true
  done
  while any_alive "${groups[@]}" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  for pgid in "${groups[@]}"; do
    group_alive "$pgid" && kill -KILL -- "-$pgid" 2>/dev/null
  done
  for _ in $(seq 1 50); do any_alive "${groups[@]}" || break; sleep 0.1; done
}

wait_port() {  # NAME PORT: wait until something listens on 127.0.0.1:PORT
  for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$1 did not start on 127.0.0.1:$2; see $RUN_DIR/$1.log" >&2
  return 1
}
