# Read the LMDB environment in the directory PATH in one read transaction
# after another until it holds FINAL commits (once, with FINAL 0): every
# snapshot must be whole (as many keys as `count` says, each with its
# value) and never older than the one before. Prints `first read` after
# the first read and `reads N distinct M` at the end.
import sys
import time

import lmdb

path, final = sys.argv[1], int(sys.argv[2])
env = lmdb.open(path, map_size=64 << 20, readonly=True)
last, reads, seen = 0, 0, set()
deadline = time.monotonic() + 60
while True:
    assert time.monotonic() < deadline, "still %d commits of %d" % (last, final)
    with env.begin() as txn:
        count = int(txn.get(b"count", b"0"))
        keys = 0
        for key, value in txn.cursor():
            if key == b"count":
                continue
            n = int(key[3:])
            assert value == b"value %d " % n * 40, key
            assert n < count, "key %d beyond count %d" % (n, count)
            keys += 1
        assert keys == count, "%d keys, count %d" % (keys, count)
    assert count >= last, "%d commits after %d" % (count, last)
    last = count
    reads += 1
    seen.add(count)
    if reads == 1:
        print("first read")
    if last >= final:
        break
print("reads %d distinct %d" % (reads, len(seen)))
