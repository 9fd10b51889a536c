# Commit transactions to an LMDB database in one file; after each commit
# returns, append its number to LOG (outside the mount) and make that
# durable: those are the commits a correct program may rely on.
import os
import sys

import lmdb

path, log, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sync = mode == "sync"
env = lmdb.open(path, subdir=False, lock=False, map_size=os.path.getsize(path),
                sync=sync, metasync=sync, readahead=False)
with open(log, "a") as out:
    for n in range(count):
        with env.begin(write=True) as txn:
            txn.put(b"key%04d" % n, b"value %d " % n * 50)
        out.write("%d\n" % n)
        out.flush()
        os.fsync(out.fileno())
env.close()
