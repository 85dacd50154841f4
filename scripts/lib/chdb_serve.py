#!/usr/bin/env python3
"""Serve an embedded chDB (ClickHouse 26.9, PyPI chdb-core) on real HTTP/TCP ports.

Started by scripts/servers.sh. It must run FROM the directory that holds config.xml
(listen_host, http_port, tcp_port): chDB's embedded server reads ./config.xml.

`chdb.connect("...?http_port=...")` opens no port. What works is one `_chdb.query` call
that starts the listeners and then keeps the session alive with a query that sleeps
(one row per second, practically forever). The process ends on SIGTERM/SIGINT/SIGKILL;
MergeTree data under --path survives all three.

Usage: chdb_serve.py --path /abs/path/to/db
"""

import argparse
import os
import signal
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True, help="absolute path of the database directory")
    args = ap.parse_args()

    if not os.path.exists("config.xml"):
        print("chdb_serve.py: no ./config.xml in %s" % os.getcwd(), file=sys.stderr)
        return 2
    db = os.path.abspath(args.path)
    os.makedirs(db, exist_ok=True)

    # Exit promptly and quietly on SIGTERM/SIGINT. The handler runs only between
    # Python bytecodes, which never happens while the blocking query below runs,
    # so restore the default actions: the kernel then ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    from chdb import _chdb  # imported late: loading the 500 MB library takes a moment

    print("chdb_serve.py: serving %s (pid %d)" % (db, os.getpid()), flush=True)
    _chdb.query(
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        "SELECT sleepEachRow(1) FROM numbers(1000000000) "
        "SETTINGS max_block_size=1, function_sleep_max_microseconds_per_block=0, "
        "max_execution_time=0 FORMAT Null",
        # This format becomes the server's default_format, i.e. what an HTTP query
        # without FORMAT returns. TabSeparated = what a real ClickHouse server answers
        # (with "CSV" here, `SELECT version()` came back as "26.9.2.1", quoted).
        "TabSeparated",
        path=db,
    )
    print("chdb_serve.py: keep-alive query returned; exiting", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
