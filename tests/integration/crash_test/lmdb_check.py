# Open the database and print every committed number found, one per line;
# exit 1 if LMDB cannot open or read it.
import sys

import lmdb

env = lmdb.open(sys.argv[1], subdir=False, lock=False, readonly=True)
with env.begin() as txn:
    for key, value in txn.cursor():
        n = int(key[3:])
        assert value == b"value %d " % n * 50, key
        print(n)
