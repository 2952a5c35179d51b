#!/bin/bash
# Two ssh "nodes" on this machine for the multi-node launch tests: one sshd listening on the loopback
# aliases 127.0.0.2 and 127.0.0.3 only (Linux routes all of 127.0.0.0/8 to the loopback interface),
# named mantis-node1 and mantis-node2 in /etc/hosts, reached with a key generated for the test.
#
#   bash tests/hpc/local_sshd.sh [start]   # prints NAME=value lines: MANTIS_SSH_PORT, MANTIS_SSH_KEY, ...
#   bash tests/hpc/local_sshd.sh stop      # stops the sshd it started, removes what it added
#
# Needs root. Installs openssh-server and openssh-client from Debian with apt-get when sshd or ssh is
# missing (apt-get update only when the first attempt fails), with a policy-rc.d that keeps the
# package's own sshd (port 22, every address) from starting. Everything else lives in SSHD_BASE
# (default /tmp/mantis-sshd): host and client keys, sshd_config, the pid file, sshd.log,
# known_hosts. Outside it, the script adds, and `stop` removes only what it added:
#   - /etc/hosts lines "127.0.0.2 mantis-node1" and "127.0.0.3 mantis-node2" (unless the names are
#     already there), edited in place (the file may be a bind mount)
#   - /etc/ssh/ssh_config.d/mantis-test-nodes.conf: for these two names only, the known_hosts file in
#     SSHD_BASE, so that root's ~/.ssh/known_hosts is left alone.
# SSHD_PORT picks the port (default: a random free one in 20000-39999).
set -euo pipefail

BASE=${SSHD_BASE:-/tmp/mantis-sshd}
NODES=("mantis-node1 127.0.0.2" "mantis-node2 127.0.0.3")
HOSTS_TAG="# mantis-test-node"
CLIENT_CONF=/etc/ssh/ssh_config.d/mantis-test-nodes.conf
SSHD=/usr/sbin/sshd

say() { echo "[local_sshd] $*" >&2; }
fail() { echo "error: $*" >&2; exit 2; }

write_in_place() {  # write stdin into file $1 without replacing the file (bind mounts, open handles)
    local tmp
    tmp=$(mktemp)
    cat > "$tmp"
    cat "$tmp" > "$1"
    rm -f "$tmp"
}

running_pid() {  # pid of the sshd this script started, if it is alive
    local pid
    [ -f "$BASE/sshd.pid" ] || return 1
    pid=$(cat "$BASE/sshd.pid")
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$BASE/sshd_config" \
        && echo "$pid"
}

stop_sshd() {
    local pid
    if pid=$(running_pid); then
        kill "$pid"
        for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        say "stopped sshd $pid"
    fi
    rm -f "$BASE/sshd.pid"
}

stop() {
    stop_sshd
    if [ -f "$BASE/hosts_added" ]; then
        grep -vxF -f "$BASE/hosts_added" /etc/hosts | write_in_place /etc/hosts || true
        rm -f "$BASE/hosts_added"
    fi
    if [ -f "$BASE/client_conf_added" ]; then
        rm -f "$CLIENT_CONF" "$BASE/client_conf_added"
    fi
}

install_ssh() {
    command -v apt-get >/dev/null || fail "sshd/ssh missing and apt-get unavailable to install them"
    local policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
    if [ ! -e "$policy" ]; then  # keep the package's postinst from starting a system-wide sshd
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
    fi
    say "installing openssh-server openssh-client with apt-get"
    local install=(apt-get install -y -q --no-install-recommends openssh-server openssh-client)
    DEBIAN_FRONTEND=noninteractive "${install[@]}" >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive "${install[@]}" >&2; } || rc=$?
    [ "$added_policy" = 0 ] || rm -f "$policy"
    [ "$rc" = 0 ] || fail "apt-get could not install openssh-server openssh-client (exit $rc)"
}

port_free() {  # nothing listens on port $1 of either node address
    local entry
    for entry in "${NODES[@]}"; do
        (exec 3<>"/dev/tcp/${entry#* }/$1") 2>/dev/null && return 1
    done
    return 0
}

start() {
    [ "$(id -u)" = 0 ] || fail "needs root (sshd for root logins, /etc/hosts)"
    { [ -x "$SSHD" ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; } || install_ssh
    stop  # a restart starts clean
    mkdir -p "$BASE" /run/sshd
    chmod 700 "$BASE"
    [ -f "$BASE/host_key" ] || ssh-keygen -q -t ed25519 -N "" -C mantis-test-host -f "$BASE/host_key"
    [ -f "$BASE/client_key" ] || ssh-keygen -q -t ed25519 -N "" -C mantis-test-client -f "$BASE/client_key"
    cp "$BASE/client_key.pub" "$BASE/authorized_keys"

    # host names: add only the lines that are missing, remember them for stop
    : > "$BASE/hosts_added"
    local entry name addr line
    for entry in "${NODES[@]}"; do
        name=${entry% *} addr=${entry#* }
        line="$addr $name $HOSTS_TAG"
        # a line already there (another run's, or a crashed run's) is left to its owner
        if ! grep -qE "^[[:space:]]*${addr//./\\.}[[:space:]](.*[[:space:]])?${name}([[:space:]]|$)" /etc/hosts; then
            grep -qwF "$name" /etc/hosts && fail "/etc/hosts already maps $name to another address"
            echo "$line" >> /etc/hosts
            echo "$line" >> "$BASE/hosts_added"
        fi
    done
    [ -s "$BASE/hosts_added" ] || rm -f "$BASE/hosts_added"
    if [ ! -e "$CLIENT_CONF" ] && [ -d "$(dirname "$CLIENT_CONF")" ]; then
        printf 'Host %s\n    UserKnownHostsFile %s\n' "${NODES[*]%% *}" "$BASE/known_hosts" > "$CLIENT_CONF"
        touch "$BASE/client_conf_added"
    fi

    local port="" try
    for try in 1 2 3 4 5; do
        port=${SSHD_PORT:-$((20000 + RANDOM % 20000))}
        port_free "$port" || { [ -z "${SSHD_PORT:-}" ] || fail "port $port is in use"; continue; }
        {
            for entry in "${NODES[@]}"; do echo "ListenAddress ${entry#* }:$port"; done
            cat <<EOF
HostKey $BASE/host_key
PidFile $BASE/sshd.pid
AuthorizedKeysFile $BASE/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
MaxStartups 64
LogLevel VERBOSE
EOF
        } > "$BASE/sshd_config"
        "$SSHD" -t -f "$BASE/sshd_config" || { stop; fail "sshd rejects $BASE/sshd_config"; }
        "$SSHD" -f "$BASE/sshd_config" -E "$BASE/sshd.log" || { say "sshd did not start on port $port (try $try)"; continue; }
        local ok=0
        for _ in $(seq 50); do
            ok=1
            for entry in "${NODES[@]}"; do
                ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile="$BASE/known_hosts" \
                    -o ConnectTimeout=5 -i "$BASE/client_key" -p "$port" "${entry% *}" true 2>/dev/null || ok=0
            done
            [ "$ok" = 1 ] && break
            sleep 0.1
        done
        if [ "$ok" = 1 ]; then
            say "sshd $(cat "$BASE/sshd.pid") on ${NODES[*]#* } port $port (nodes ${NODES[*]%% *})"
            echo "MANTIS_SSH_PORT=$port"
            echo "MANTIS_SSH_KEY=$BASE/client_key"
            echo "MANTIS_SSH_NODES=${NODES[*]%% *}"
            echo "MANTIS_SSH_ADDRESSES=${NODES[*]#* }"
            return 0
        fi
        say "ssh to the nodes on port $port failed (try $try): $(tail -3 "$BASE/sshd.log" 2>/dev/null)"
        stop_sshd
        [ -z "${SSHD_PORT:-}" ] || break
    done
    stop
    fail "could not start sshd on ${NODES[*]#* } (log: $BASE/sshd.log)"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) fail "usage: $0 [start|stop]" ;;
esac
