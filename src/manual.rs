//! `mmapfs --man` and `mmapfs --completions SHELL`: the man page and shell
//! completions, generated from the same clap definition as `--help`.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Sections beyond what clap knows: the tree, the file formats, exit codes.
/// `{event_kinds}` is filled in from the list the log itself uses.
const EXTRA_SECTIONS: &[(&str, &str)] = &[
    (
        "THE TREE",
        "MOUNTPOINT/stats and MOUNTPOINT/metrics sum the sources the reader may read. Each SOURCE (or --anon NAME) \
         gets a directory named after its basename (a repeated basename becomes name~2) holding:\n\
         data: the mapped bytes. Read, write and mmap it like the file itself. For a whole file \
         mapped shared it is the file for size purposes: writes past the end extend the source and \
         truncate changes it. Windows (--offset, --length), --private and --anon keep their size \
         (writes past the end: ENOSPC; truncate to another size: EPERM). O_TRUNC is always ignored, \
         so `echo hi > data` overwrites three bytes.\n\
         msync: write `sync` (also `1` or an empty line), `async` or `invalidate`. Every control \
         file takes a range after its command: nothing (the whole mapping), OFFSET [LENGTH] \
         (OFFSET page-aligned) or `pages CPULIST` as resident_pages prints it. The write returns \
         when done, with the errno of the call on failure and EINVAL for a malformed command. Read \
         it for the last result: command, offset_bytes, length_bytes, result, reached_source, \
         resident, dirty and locked pages before and after, duration_ns, at_unix_ns.\n\
         madvise: willneed, dontneed, cold, pageout, populate_read, populate_write, random, \
         sequential or normal on the daemon's mapping; `willneed missing` and `populate_read \
         missing` touch only pages not resident now.\n\
         fadvise: dontneed, willneed (also `willneed missing`), noreuse, sequential, random or \
         normal on the source; after dontneed the result says which pages stayed and why.\n\
         mlock: `lock`, `lock onfault` or `unlock`; locks hold until unlock or unmount.\n\
         dirty_pages, resident_pages: page indices (relative to the mapping) in the kernel's \
         cpulist format, e.g. 0-3,17,1024-1030; an empty line for none. From cachestat(2) (in --private mode, dirty pages are the copied ones, from PAGEMAP_SCAN). In cached mode, pages in that state in either the source's page cache or the kernel's own cache of data (stats counts the latter as fuse_resident_pages, fuse_dirty_pages).\n\
         stats: key value lines: {stats_keys}.\n\
         events: `<unix_ns> <kind> key=value ...` lines ({event_kinds}), at most 512 bytes, \
         free text quoted; follow it with tail -f.\n\
         mappers: `pid comm start-end perms offset_bytes` for every other process mapping the file.\n\
         map: a chart of the mapping, one cell per bucket of pages: ' ' none resident, o some, \
         O all, d some dirty, D all dirty.\n\
         With --crash-test: unsynced_pages lists the pages written but not yet synced (fsync, \
         fdatasync, msync(MS_SYNC), O_SYNC writes, `echo sync > msync`), which a crash now would \
         lose; crash takes `now`, `keep pages CPULIST`, `keep random:P [seed=N]` or `at sync N \
         before|after`, and reads as the last crash (pages lost and kept), what is armed, and the \
         syncs and crashes so far. After a crash, handles opened before it get EIO and mappings \
         made before it SIGBUS; new opens see the source as a power cut left it.\n\
         trace: the kernel's page events on the source, `<unix_ns> <kind> pages=F[-L] pid=P \
         comm=C [key=value...]`: fault, map (fault-around), readahead, cached, dirtied, written \
         (cause=periodic, background, sync or reclaim), evicted, and `lost count=N` if the \
         kernel dropped events. Follow it with tail -f; tracing (a tracefs instance of the \
         daemon's own, root only) runs while it is open, or always with --trace. Where it cannot \
         run, it reads one line saying why.\n\
         writeback: key value lines: dirty and writeback pages, the oldest dirty page's age, when \
         the periodic flusher will take the file, the system's dirty settings and background \
         threshold, pages written by cause, dirtied-to-written p50/p99/max.\n\
         history: `unix_ns resident dirty writeback` samples, one a second, the last ten minutes.\n\
         timeline.svg: those samples drawn, with a mark for each sync and flusher writeback.\n\
         A SOURCE that is a directory gets data/ (the directory itself, recursively: every \
         operation a program does there is carried out in it by the daemon, as the caller, \
         relative to descriptors it holds; files are passed through, so mappings are coherent with \
         the source), files/PATH/ (for each regular file: msync, dirty_pages, resident_pages, stats, \
         events, mappers, map), stats (sums over the tree, files, directories), top \
         (`resident_pages dirty_pages writeback_pages path`, most page cache first), msync \
         (`sync`: fdatasync every dirty file) and events (create, mkdir, mknod, symlink, link, \
         unlink, rmdir, rename, open, msync, with paths). --offset, --length, --size, --private and \
         --crash-test do not apply to directories.",
    ),
    (
        "SIGNALS",
        "SIGTERM, SIGINT, SIGHUP and SIGQUIT unmount, run the final msync and exit. SIGUSR1, \
         SIGUSR2, SIGALRM, SIGTSTP, SIGTTIN and SIGTTOU are ignored. SIGKILL leaves a dead mount: \
         clean it with `fusermount3 -uz MOUNTPOINT`.",
    ),
    (
        "SECURITY",
        "The mount always has default_permissions. A source's files carry its owner and group; \
         data its mode, msync its read and write bits, the other files its read bits. mappers shows \
         a user only their own processes, events masks the pids of other users' processes, and the \
         root stats and metrics cover only the sources the reader may read. Source paths are \
         opened without following symbolic links that belong to other users.",
    ),
    (
        "EXIT STATUS",
        "0 after a clean unmount (fusermount3 -u, umount, SIGTERM, SIGINT, SIGHUP, SIGQUIT) whose final msync \
         succeeded; 1 when the sources or the mountpoint are refused at start, the mount fails, \
         or the final msync fails; 2 for a usage error.",
    ),
    (
        "EXAMPLES",
        "mmapfs --size 64M demo.bin /mnt/demo\n\
         echo sync > /mnt/demo/demo.bin/msync; cat /mnt/demo/demo.bin/msync\n\
         mmapfs --private -o ro db.sqlite /mnt/db\n\
         mmapfs --anon shm=16M /mnt/shm\n\
         echo dontneed > /mnt/demo/demo.bin/fadvise   (evict, like vmtouch -e)\n\
         echo populate_read > /mnt/demo/demo.bin/madvise   (warm, like vmtouch -t)\n\
         echo lock > /mnt/demo/demo.bin/mlock   (pin, like vmtouch -l -d)\n\
         cat resident_pages > ws; echo \"populate_read pages $(cat ws)\" > madvise   (record and replay)\n\
         mount -t fuse.mmapfs /srv/file.bin /mnt/x -o mmap_private\n\
         fstab: /srv/file.bin /mnt/x fuse.mmapfs defaults,mmap_private 0 0\n\
         fusermount3 -u /mnt/demo",
    ),
    ("SEE ALSO", "mmap(2), msync(2), cachestat(2), mincore(2), vmtouch(8), fusermount3(1)"),
];

pub fn write_man_page(out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(Cli::command());
    man.render(out)?;
    let stats_keys: Vec<&str> = crate::stats::ALL.iter().map(|k| k.name).collect();
    let stats_keys = stats_keys.join(", ");
    for (title, body) in EXTRA_SECTIONS {
        writeln!(out, ".SH \"{title}\"")?;
        for paragraph in body.split('\n') {
            let paragraph = paragraph
                .replace("{event_kinds}", &crate::events::KINDS.join(", "))
                .replace("{stats_keys}", &stats_keys);
            writeln!(out, ".PP")?;
            writeln!(out, "{}", roff_escape(&paragraph))?;
        }
    }
    Ok(())
}

/// Escape text for a roff line: backslashes, and a leading dot or quote.
fn roff_escape(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

pub fn write_completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "mmapfs", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_has_every_section() {
        let mut page = Vec::new();
        write_man_page(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for needle in [
            ".TH mmapfs",
            "\\-\\-private",
            "THE TREE",
            "EXIT STATUS",
            "EXAMPLES",
            "cpulist",
            "source_resized",
        ] {
            assert!(page.contains(needle), "{needle}");
        }
    }

    #[test]
    fn completions_name_the_options() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            write_completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("no-sync-on-exit"), "{shell}");
        }
    }
}
