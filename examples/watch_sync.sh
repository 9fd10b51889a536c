#!/usr/bin/env bash
# Watch a write become dirty page-cache pages, then watch msync clean them.
#
#   mmapfs --size 1M src.bin mnt
#   examples/watch_sync.sh mnt/src.bin
#
# A write(2) to `data` only changes pages in memory: they are "dirty" until
# they are written back to the source file. `echo sync > msync` makes mmapfs
# call msync(MS_SYNC) on its mapping, which writes them back and waits.

set -euo pipefail

usage() {
    cat <<'EOF'
Usage: watch_sync.sh MOUNTDIR [TEXT]

Write TEXT (default: "hello from watch_sync") into page 1 of MOUNTDIR/data
with dd, show dirty_pages, the dirty_pages line of stats and the last events,
then `echo sync > MOUNTDIR/msync` and show them again.

MOUNTDIR is one source directory of an mmapfs mount, e.g. mnt/src.bin.
EOF
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    "")
        usage >&2
        exit 2
        ;;
esac

dir=$1
text=${2:-hello from watch_sync}
if [[ ! -f $dir/data || ! -f $dir/msync ]]; then
    echo "watch_sync.sh: $dir is not an mmapfs source directory (no data/msync)" >&2
    exit 1
fi

show() {
    echo "== $1"
    # One line, page indices in cpulist form (0-3,17); empty when clean.
    echo "dirty_pages: $(cat "$dir/dirty_pages")"
    grep '^dirty_pages ' "$dir/stats"
    echo "events (last 3):"
    tail -n 3 "$dir/events" | sed 's/^/  /'
}

# Write into the second page, so the dirty page index (1) is easy to spot.
# conv=notrunc keeps dd from trying to truncate the file first.
page=$(getconf PAGESIZE)
printf '%s' "$text" | dd of="$dir/data" bs="$page" seek=1 conv=notrunc status=none

show "after dd into page 1"

# The write returns only when msync(MS_SYNC) has finished.
echo sync > "$dir/msync"

show "after echo sync > msync"
echo "msync result:"
sed 's/^/  /' "$dir/msync"
