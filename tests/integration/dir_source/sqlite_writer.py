# Commit TXNS transactions of ROWS rows each to table t of the SQLite
# database PATH, in MODE: `wal` (journal_mode=WAL with mmap_size) or
# `rollback` (the default journal, with a cache so small that a
# transaction spills into the database file before it commits).
# Prints `created` once the table exists and `paused` halfway (in rollback
# mode inside the open transaction, in WAL mode after a commit), then
# waits for stdin to end before going on; prints `done` at the end.
import sqlite3
import sys

path, mode, txns, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
db = sqlite3.connect(path, isolation_level=None, timeout=30)
if mode == "wal":
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.execute("PRAGMA mmap_size=268435456")
    db.execute("PRAGMA synchronous=NORMAL")
else:
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.execute("PRAGMA cache_size=8")
db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, txn INTEGER, v TEXT)")
db.execute("CREATE INDEX IF NOT EXISTS t_txn ON t(txn)")
print("created")


def pause():
    print("paused")
    sys.stdin.read()


for n in range(txns):
    db.execute("BEGIN")
    for i in range(rows):
        db.execute("INSERT INTO t(txn, v) VALUES (?, ?)", (n, "%d-%d-%s" % (n, i, "v" * 100)))
    if n == txns // 2 and mode == "rollback":
        pause()
    db.execute("COMMIT")
    if n == txns // 2 and mode == "wal":
        pause()
db.close()
print("done")
