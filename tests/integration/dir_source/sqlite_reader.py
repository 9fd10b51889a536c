# Read table t of the SQLite database PATH again and again while a writer
# fills it, until it holds FINAL rows: every read must see whole
# transactions of ROWS rows (also through the index on txn), and never
# fewer rows than the read before. Prints `first read` after the first
# read and `reads N distinct M` at the end.
import sqlite3
import sys
import time

path, rows, final = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None, timeout=30)
db.execute("PRAGMA mmap_size=268435456")
last, reads, seen = 0, 0, set()
deadline = time.monotonic() + 60
while last < final:
    assert time.monotonic() < deadline, "still %d rows of %d" % (last, final)
    db.execute("BEGIN")
    count, txns = db.execute("SELECT count(*), count(DISTINCT txn) FROM t").fetchone()
    assert count == txns * rows, "%d rows in %d transactions" % (count, txns)
    if txns:
        newest = db.execute("SELECT count(*) FROM t WHERE txn = ?", (txns - 1,)).fetchone()[0]
        assert newest == rows, "the newest transaction has %d rows" % newest
    db.execute("COMMIT")
    assert count >= last, "%d rows after %d" % (count, last)
    last = count
    reads += 1
    seen.add(count)
    if reads == 1:
        print("first read")
print("reads %d distinct %d" % (reads, len(seen)))
