# Commit TXNS transactions to the LMDB environment in the directory PATH,
# in LMDB's default layout (data.mdb and lock.mdb in it): transaction n
# puts key n and sets `count` to n + 1. Prints `opened`, then `paused`
# after half of them and waits for stdin to end; prints `done` at the end.
import sys

import lmdb

path, txns = sys.argv[1], int(sys.argv[2])
env = lmdb.open(path, map_size=64 << 20)
print("opened")
for n in range(txns):
    with env.begin(write=True) as txn:
        txn.put(b"key%06d" % n, b"value %d " % n * 40)
        txn.put(b"count", b"%d" % (n + 1))
    if n == txns // 2:
        print("paused")
        sys.stdin.read()
env.close()
print("done")
