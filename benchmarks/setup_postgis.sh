#!/bin/sh
# Set up PostGIS for `python -m benchmarks matching` (which runs this script first).
#
# Installs Debian's postgresql-15-postgis-3 with apt-get where it can (root, or
# sudo), then creates the `proximity_bench` database and the postgis extension
# on the local server (127.0.0.1:5432, user postgres, trust auth).
#
#   sh benchmarks/setup_postgis.sh            # install + create
#   PGHOST=... PGPORT=... sh benchmarks/setup_postgis.sh
#
# Exit status: 0 ready, 1 PostGIS could not be installed, 2 no server answers.
set -u
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
DB=${PROXIMITY_BENCH_DB:-proximity_bench}
export PGHOST PGPORT PGUSER

if ! psql -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    echo "setup_postgis: no PostgreSQL answers on $PGHOST:$PGPORT as $PGUSER" >&2
    exit 2
fi

have_postgis() {
    psql -d postgres -Atqc "select 1 from pg_available_extensions where name = 'postgis'" 2>/dev/null | grep -q 1
}

if ! have_postgis; then
    major=$(psql -d postgres -Atqc 'show server_version_num' | cut -c1-2)
    pkg="postgresql-${major}-postgis-3"
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=none; fi
    if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup_postgis: cannot install $pkg here (needs apt-get and root or sudo)" >&2
        exit 1
    fi
    echo "setup_postgis: installing $pkg with apt-get" >&2
    $SUDO apt-get install -y -q --no-install-recommends "$pkg" >&2 \
        || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q --no-install-recommends "$pkg" >&2; } \
        || { echo "setup_postgis: apt-get could not install $pkg" >&2; exit 1; }
    have_postgis || { echo "setup_postgis: $pkg installed but the server does not list postgis" >&2; exit 1; }
fi

psql -d postgres -Atqc "select 1 from pg_database where datname = '$DB'" | grep -q 1 \
    || psql -d postgres -qc "create database $DB" || exit 2
psql -d "$DB" -qc 'create extension if not exists postgis' || exit 1
echo "setup_postgis: ready: postgis $(psql -d "$DB" -Atqc 'select postgis_lib_version()') in database $DB" >&2
