#!/usr/bin/env bash
# What: a cluster of N simulated hosts on this one Linux machine, for the multihost tests (and
# for people who want to try a multi-node launch without a cluster). Each host is a network
# namespace with its own IP on a veth pair plugged into a private bridge, and its own hostname
# (a UTS namespace the rsh agent makes when mpirun starts the host's daemon, exactly as ssh
# would). mpirun runs in the root namespace. Nothing leaves the machine: no routes, forwarding
# or NAT are added.
# Why: every other test runs all ranks on one host, so nothing else checks host and local-rank
# detection, placement of groups inside a host, a host dying or a link going silent.
#
# Sourced (tests):                       Run (people):
#   source tests/multihost/simhosts.sh   bash tests/multihost/simhosts.sh up 2
#   mh_require   (exit 77 when namespaces cannot be made here)
#   mh_up N      hosts ${MH_PREFIX}1..N  bash tests/multihost/simhosts.sh mpirun -np 4 hostname
#   mh_mpirun ARGS...                    bash tests/multihost/simhosts.sh down
#   mh_slow RATE / mh_fast               (slow RATE | fast | status as subcommands too)
#   mh_host_pids H, mh_kill_host H, mh_cut_link H, mh_heal_link H
#   mh_down      (set as an EXIT trap by mh_up; removes exactly what mh_up made, nothing else)
# Settings (environment): MH_PREFIX (host names; default mh<pid mod 1000>x, unique per
# process so concurrent tests do not collide), MH_NET (a free /24 as "10.X.Y", picked
# automatically), MH_SLOTS (ranks per host, default 2), MH_DIR (scratch directory),
# MH_TIMEOUT (seconds: mh_mpirun runs mpirun under `timeout -k 5`).
# Sourcing sets no shell options of its own beyond what the caller has.

_mh_given_prefix=${MH_PREFIX:-}
MH_PREFIX=${MH_PREFIX:-mh$(($$ % 1000))x}
MH_SLOTS=${MH_SLOTS:-2}
MH_DIR=${MH_DIR:-${TMPDIR:-/tmp}/simhosts-$MH_PREFIX}
MH_TAG="# meshtrain-simhosts:$MH_PREFIX"   # on the /etc/hosts lines we add
MH_BR=${MH_PREFIX}br                        # bridge (root namespace); interface names <= 15 chars

mh_host() { echo "$MH_PREFIX$1"; }          # mh_host K -> the K-th host's name (= its netns)
mh_hosts() { [ -f "$MH_DIR/hosts.list" ] && cat "$MH_DIR/hosts.list" || true; }
mh_made() { echo "$*" >> "$MH_DIR/made.list"; }  # every object is recorded right after it exists

# mh_require: skip (exit 77, with the reason) where simulated hosts cannot be made.
mh_require() {
  local why=""
  if [ "$(id -u)" -ne 0 ]; then why="network namespaces need root"
  elif ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then why="needs ip (iproute2) and unshare (util-linux)"
  elif ! ip netns add "${MH_PREFIX}probe" 2>/dev/null; then why="cannot create a network namespace here (container without CAP_SYS_ADMIN?)"
  else
    ip netns del "${MH_PREFIX}probe" 2>/dev/null
    if ! ip link add "${MH_PREFIX}pb" type bridge 2>/dev/null; then why="cannot create a bridge here"
    else ip link del "${MH_PREFIX}pb" 2>/dev/null; fi
  fi
  if [ -n "$why" ]; then echo "SKIP: simulated hosts: $why"; exit 77; fi
}

# a /24 on no interface and in no route yet: 10.200-249.x, starting from the prefix's hash
mh_pick_net() {
  local h; h=$(cksum <<<"$MH_PREFIX" | cut -d' ' -f1)
  for k in $(seq 0 200); do
    local net="10.$((200 + (h / 250 + k) % 50)).$(((h + k) % 250))"
    ip route show | grep -q "^$net\.0/24" || { echo "$net"; return; }
  done
  echo "no free 10.2xx.y.0/24 for simulated hosts" >&2; return 1
}

mh_up() {
  local n=${1:-2} i
  mkdir -p "$MH_DIR"
  [ -s "$MH_DIR/made.list" ] && { echo "simhosts $MH_PREFIX: already up; run down first" >&2; return 1; }
  MH_NET=${MH_NET:-$(mh_pick_net)}
  echo "$MH_NET" > "$MH_DIR/net"
  # teardown first, then whatever EXIT trap the caller had (e2e/lib.sh removes its $WORK)
  local _mh_prev=""
  _mh_capture() { _mh_prev=${3:-}; }
  eval "_mh_capture $(trap -p EXIT)"
  trap "mh_down; $_mh_prev" EXIT
  : > "$MH_DIR/hosts.list"; : > "$MH_DIR/hostfile"
  ip link add "$MH_BR" type bridge && mh_made link "$MH_BR"
  ip addr add "$MH_NET.1/24" dev "$MH_BR"
  ip link set "$MH_BR" up
  for i in $(seq 1 "$n"); do
    local h; h=$(mh_host "$i")
    ip netns add "$h" && mh_made netns "$h"
    echo "$h" >> "$MH_DIR/hosts.list"
    ip link add "${MH_PREFIX}v$i" type veth peer name eth0 netns "$h" && mh_made link "${MH_PREFIX}v$i"
    ip link set "${MH_PREFIX}v$i" master "$MH_BR" up
    ip -n "$h" link set lo up
    ip -n "$h" addr add "$MH_NET.$((10 + i))/24" dev eth0
    ip -n "$h" link set eth0 up
    echo "$h slots=$MH_SLOTS" >> "$MH_DIR/hostfile"
  done
  # /etc/hosts: our tagged lines, appended in place under a lock (other harnesses edit it too)
  {
    flock 9
    for i in $(seq 1 "$n"); do echo "$MH_NET.$((10 + i)) $(mh_host "$i") $MH_TAG" >> /etc/hosts; done
  } 9>/tmp/.meshtrain-simhosts.lock
  mh_made etc-hosts
  # rsh agent: mpirun calls "agent HOST word..." exactly like "ssh HOST word...".
  cat > "$MH_DIR/agent.sh" <<'EOF'
#!/bin/sh
# Fake ssh: run the command inside network namespace $1 with hostname $1.
h="$1"; shift
exec ip netns exec "$h" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$h" "$*"
EOF
  chmod +x "$MH_DIR/agent.sh"
  # each host reaches the bridge address ("connection refused" from a closed port = the link works)
  local h ok t
  for h in $(mh_hosts); do
    ok=0
    for t in $(seq 1 20); do
      case $(timeout 3 ip netns exec "$h" bash -c "exec 3<>/dev/tcp/$MH_NET.1/9" 2>&1 || true) in
        *refused*) ok=1; break ;;
      esac
      sleep 0.25
    done
    [ $ok = 1 ] || { echo "simhosts: $h has no link to $MH_NET.1" >&2; return 1; }
  done
  echo "simhosts: $n hosts up ($(mh_hosts | tr '\n' ' ')on $MH_NET.0/24, $MH_SLOTS slots each)"
}

# mpirun across the hosts. shared memory (vader) inside a host, TCP on the bridge between hosts.
# mpi_yield_when_idle 1: the hosts share this machine's cores but each daemon sees only its own
# slots, so Open MPI would busy-poll (2 hosts: 168 ms/step without, 38 ms with).
# oob_tcp_keepalive_*: what the user guide tells every multi-host mpirun user to pass ("When
# a host fails"): the daemons notice a host cut off silently within 11 s and end the job;
# with Open MPI's defaults (480 s) mpirun hangs after the abort.
# MH_TIMEOUT=S: mpirun runs under `timeout -k 5 S`, so a hang fails a test instead of blocking it.
# Extra mpirun options go first: mh_mpirun --mca X Y -np 4 prog ...
mh_mpirun() {
  local net; net=$(cat "$MH_DIR/net")
  ${MH_TIMEOUT:+timeout -k 5 "$MH_TIMEOUT"} \
  mpirun --allow-run-as-root --hostfile "${MH_HOSTFILE:-$MH_DIR/hostfile}" \
    --mca plm_rsh_agent "$MH_DIR/agent.sh" --mca plm_rsh_no_tree_spawn 1 \
    --mca oob_tcp_if_include "$net.0/24" --mca btl_tcp_if_include "$net.0/24" \
    --mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3 \
    --mca btl "${MH_BTL:-self,vader,tcp}" --mca mpi_yield_when_idle 1 --bind-to none "$@"
}

# rate-limit each host's NIC (egress, tbf; this kernel has no netem, so no delay emulation)
mh_slow() {
  local rate=${1:-1gbit} h
  for h in $(mh_hosts); do ip netns exec "$h" tc qdisc replace dev eth0 root tbf rate "$rate" burst 256kb latency 50ms; done
}
mh_fast() { local h; for h in $(mh_hosts); do ip netns exec "$h" tc qdisc del dev eth0 root 2>/dev/null || true; done; }

mh_host_pids() { ip netns pids "$1" 2>/dev/null || true; }      # every process living on host $1
mh_kill_host() { local p; for p in $(mh_host_pids "$1"); do kill -9 "$p" 2>/dev/null || true; done; }
mh_cut_link() { ip link set "${MH_PREFIX}v${1#"$MH_PREFIX"}" down; }  # silent: no RST, no FIN
mh_heal_link() { ip link set "${MH_PREFIX}v${1#"$MH_PREFIX"}" up; }

# Remove exactly what mh_up made (made.list), newest first; processes still inside a host's
# namespace are killed first so no orphan daemon survives. Safe to call twice.
mh_down() {
  local rc=$? kind name
  [ -f "$MH_DIR/made.list" ] || return $rc
  while read -r kind name; do
    case $kind in
      netns) mh_kill_host "$name"; ip netns del "$name" 2>/dev/null || true ;;
      link) ip link del "$name" 2>/dev/null || true ;;
      etc-hosts)
        { flock 9
          if grep -qF "$MH_TAG" /etc/hosts; then
            grep -vF "$MH_TAG" /etc/hosts > "$MH_DIR/hosts.new" || true
            cat "$MH_DIR/hosts.new" > /etc/hosts   # in place: keeps the inode and others' lines
          fi
        } 9>/tmp/.meshtrain-simhosts.lock ;;
    esac
  done < <(tac "$MH_DIR/made.list")
  rm -f "$MH_DIR/made.list" "$MH_DIR/hosts.list" "$MH_DIR/hosts.new"
  rm -rf "$MH_DIR"
  return $rc
}

mh_status() {
  local h
  for h in $(mh_hosts); do echo "$h: $(ip -n "$h" -br addr show eth0) $(ip netns exec "$h" tc qdisc show dev eth0 | head -1)"; done
}

# Command-line use: the state lives in MH_DIR, so give the same MH_PREFIX to each call
# (default: "sim", hosts sim1..simN).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  MH_PREFIX=${_mh_given_prefix:-sim}; MH_DIR=${TMPDIR:-/tmp}/simhosts-$MH_PREFIX
  MH_TAG="# meshtrain-simhosts:$MH_PREFIX"; MH_BR=${MH_PREFIX}br
  cmd=${1:-}; shift || true
  case "$cmd" in
    up) mh_require; mh_up "$@"; trap - EXIT ;;   # stays up until 'down'
    mpirun) mh_mpirun "$@" ;;
    slow) mh_slow "$@" ;;
    fast) mh_fast ;;
    down) mh_down; echo "simhosts: down" ;;
    status) mh_status ;;
    *) sed -n '2,24p' "$0"; exit 2 ;;
  esac
fi
