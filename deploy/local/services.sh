#!/usr/bin/env bash
# Install (when missing) and start what the tests and a one-machine cluster need:
# Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 with a `test` and a
# `crawlcluster` database, and Debian's chromium for the render tier.
# Debian/Ubuntu, as root. Idempotent: run it as often as you like.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "services: installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Redis: a private instance bound to loopback, no persistence (tests own its data).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "services: starting redis on 127.0.0.1:6379"
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no \
        --logfile /tmp/crawlcluster-redis.log
fi

# PostgreSQL: Debian's cluster, started with pg_ctlcluster; loopback connections from the
# postgres user are trusted so the test URL needs no password (a dev/CI machine only).
pg_version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q "^$pg_version main"; then
    pg_createcluster "$pg_version" main >/dev/null
fi
hba="/etc/postgresql/$pg_version/main/pg_hba.conf"
if ! grep -q "crawlcluster-test" "$hba"; then
    sed -i '1i host all postgres 127.0.0.1/32 trust # crawlcluster-test\nhost all postgres ::1/128 trust # crawlcluster-test' "$hba"
    pg_ctlcluster "$pg_version" main reload 2>/dev/null || true
fi
# Debian's default shared_buffers (128MB) keeps little of a large frontier in memory; the
# scheduler benchmark at 10^7 rows claims from a 6 GB table.
tuning="/etc/postgresql/$pg_version/main/conf.d/crawlcluster.conf"
wanted="shared_buffers = 1GB  # crawlcluster: deploy/local/services.sh
huge_pages = try  # with the huge pages below; plain pages where there are none"
# Huge pages for those buffers: the claim touches rows all over a large table, and with 4 kB
# pages most of those touches also miss the TLB (at 10^7 rows the claim's read went from
# 55-71 to 46 ms, its UPDATE from 80-95 to 71 ms: bench/RESULTS.md).
# 1 GB needs about 540 pages of 2 MB; reserved only where this machine lets us.
huge_wanted=600
if [ -w /proc/sys/vm/nr_hugepages ] && [ "$(cat /proc/sys/vm/nr_hugepages)" -lt "$huge_wanted" ]; then
    if echo "$huge_wanted" > /proc/sys/vm/nr_hugepages 2>/dev/null; then
        echo "services: reserved $(cat /proc/sys/vm/nr_hugepages) huge pages for postgresql"
        if pg_isready -h 127.0.0.1 -p 5432 -q && [ "$(cat "$tuning" 2>/dev/null)" = "$wanted" ]; then
            pg_ctlcluster "$pg_version" main restart  # it takes huge pages only when it starts
        fi
    fi
fi
if [ "$(cat "$tuning" 2>/dev/null)" != "$wanted" ]; then
    mkdir -p "$(dirname "$tuning")"
    echo "$wanted" > "$tuning"
    if pg_isready -h 127.0.0.1 -p 5432 -q; then
        echo "services: restarting postgresql $pg_version for $tuning"
        pg_ctlcluster "$pg_version" main restart
    fi
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "services: starting postgresql $pg_version on 127.0.0.1:5432"
    pg_ctlcluster "$pg_version" main start
fi
for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
for db in test crawlcluster; do
    if ! su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='$db'\"" | grep -q 1; then
        su postgres -c "createdb $db"
    fi
done
echo "services: redis $(redis-cli -h 127.0.0.1 ping), postgres $(pg_isready -h 127.0.0.1 -p 5432)"
