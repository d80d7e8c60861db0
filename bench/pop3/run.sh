#!/bin/sh
# POP3 RETR throughput: Tidings (SQLite, PostgreSQL) against Dovecot's
# pop3d, 10 concurrent clients over implicit TLS, alternating runs.
# Needs: apt-get install -y dovecot-pop3d; PostgreSQL as for the tests
# (TIDINGS_TEST_POSTGRES or 127.0.0.1:5432). Extra arguments go to the
# benchmark, e.g.: bench/pop3/run.sh -msgs 200 -runs 3 -size 16384
set -eu
cd "$(dirname "$0")/../.."
if ! command -v dovecot >/dev/null 2>&1; then
	echo "dovecot not installed: apt-get install -y dovecot-pop3d" >&2
	exit 1
fi
exec go test -run '^$' -bench '^BenchmarkCompare$' -benchtime 1x -timeout 15m ./bench/pop3 -args "$@"
