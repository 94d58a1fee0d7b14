# Sourced by .ci/run (or: bash -c 'source .ci/postgres.sh && python -m pytest tests/test_serve_feedback.py -q'):
# start a throwaway PostgreSQL cluster on 127.0.0.1 (a free port) for the PostgreSQL feedback-store tests, export
# MTLREC_TEST_POSTGRES=postgresql://... and stop and delete the cluster when the sourcing shell exits (EXIT trap).
# Installs Debian's postgresql package when initdb is missing (needs root). As root the cluster runs as the
# 'postgres' user (initdb refuses root), created if missing.

_mtlrec_pg_bin() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

_mtlrec_pg_start() {
    local bin as port password
    bin=$(_mtlrec_pg_bin) || true
    if [ -z "$bin" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "postgres.sh: initdb not found and not root: apt-get install postgresql" >&2
            return 1
        fi
        echo "postgres.sh: installing PostgreSQL (Debian package)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        # Debian's package starts its own cluster on 5432; this script uses its own, so stop that one.
        command -v pg_ctlcluster >/dev/null 2>&1 && pg_ctlcluster --force "$(ls /etc/postgresql | sort -V | tail -n 1)" main stop 2>/dev/null
        bin=$(_mtlrec_pg_bin) || { echo "postgres.sh: initdb still missing after install" >&2; return 1; }
    fi
    MTLREC_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mtlrec-pg.XXXXXX")
    as=()
    if [ "$(id -u)" -eq 0 ]; then
        id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        chown postgres "$MTLREC_PG_DIR"
        as=(runuser -u postgres --)
    fi
    chmod 700 "$MTLREC_PG_DIR"
    password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s\n' "$password" >"$MTLREC_PG_DIR/pw"
    [ ${#as[@]} -eq 0 ] || chown postgres "$MTLREC_PG_DIR/pw"
    "${as[@]}" "$bin/initdb" -D "$MTLREC_PG_DIR/data" -U mtlrec --pwfile="$MTLREC_PG_DIR/pw" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$MTLREC_PG_DIR/initdb.log" 2>&1 \
        || { cat "$MTLREC_PG_DIR/initdb.log" >&2; return 1; }
    rm -f "$MTLREC_PG_DIR/pw"
    MTLREC_PG_CTL=("${as[@]}" "$bin/pg_ctl" -D "$MTLREC_PG_DIR/data")
    "${MTLREC_PG_CTL[@]}" -w -t 60 -l "$MTLREC_PG_DIR/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $MTLREC_PG_DIR -c fsync=off" start >/dev/null \
        || { cat "$MTLREC_PG_DIR/server.log" >&2; return 1; }
    export MTLREC_TEST_POSTGRES="postgresql://mtlrec:$password@127.0.0.1:$port/postgres"
    echo "postgres.sh: $("$bin/postgres" --version) on 127.0.0.1:$port ($MTLREC_PG_DIR)" >&2
}

_mtlrec_pg_stop() {
    if [ -n "${MTLREC_PG_DIR:-}" ] && [ -d "$MTLREC_PG_DIR" ]; then
        [ -f "$MTLREC_PG_DIR/data/postmaster.pid" ] && "${MTLREC_PG_CTL[@]}" -m fast -w stop >/dev/null 2>&1
        rm -rf "$MTLREC_PG_DIR"
    fi
    MTLREC_PG_DIR=
    return 0
}

# Chain onto an EXIT trap the sourcing shell may already have, then start (stopping again if the start fails).
_mtlrec_pg_prev_trap=$(trap -p EXIT | sed -e "s/^trap -- '\(.*\)' EXIT$/\1/")
trap -- "_mtlrec_pg_stop${_mtlrec_pg_prev_trap:+; $_mtlrec_pg_prev_trap}" EXIT
_mtlrec_pg_start || { _mtlrec_pg_stop; false; }
