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
        "MOUNTPOINT/stats and MOUNTPOINT/metrics sum all sources. Each SOURCE (or --anon NAME) \
         gets a directory named after its basename (a repeated basename becomes name~2) holding:\n\
         data: the mapped bytes. Read, write and mmap it like the file itself. Its size is the \
         mapping length and cannot change (truncate to another size: EPERM); O_TRUNC is ignored, \
         so `echo hi > data` overwrites three bytes.\n\
         msync: write `sync` (also `1` or an empty line), `async` or `invalidate`, optionally \
         followed by OFFSET [LENGTH] (OFFSET page-aligned). The write returns when done, with the \
         errno of msync(2) on failure and EINVAL for a malformed command. Read it for the last \
         result: command, offset_bytes, length_bytes, result, reached_source, dirty_pages_before, \
         dirty_pages_after, duration_ns, at_unix_ns.\n\
         dirty_pages, resident_pages: page indices (relative to the mapping) in the kernel's \
         cpulist format, e.g. 0-3,17,1024-1030; an empty line for none. From cachestat(2).\n\
         stats: key value lines: source, mode, io_mode, writable, offset_bytes, length_bytes, \
         page_size_bytes, pages, resident_pages, dirty_pages, writeback_pages, evicted_pages, \
         reads, read_bytes, writes, write_bytes, msync_calls, msync_errors, msync_last_ns, \
         msync_total_ns, invalidations, open_handles, mappers, source_size_bytes, source_state, \
         uptime_ns.\n\
         events: `<unix_ns> <kind> key=value ...` lines ({event_kinds}), at most 512 bytes, \
         free text quoted; follow it with tail -f.\n\
         mappers: `pid comm start-end perms offset_bytes` for every other process mapping the file.\n\
         map: a chart of the mapping, one cell per bucket of pages: ' ' none resident, o some, \
         O all, d some dirty, D all dirty.",
    ),
    (
        "EXIT STATUS",
        "0 after a clean unmount (fusermount3 -u, umount, SIGTERM, SIGINT) whose final msync \
         succeeded; 1 when the sources or the mountpoint are refused at start, the mount fails, \
         or the final msync fails; 2 for a usage error.",
    ),
    (
        "EXAMPLES",
        "mmapfs --size 64M demo.bin /mnt/demo\n\
         echo sync > /mnt/demo/demo.bin/msync; cat /mnt/demo/demo.bin/msync\n\
         mmapfs --private -o ro db.sqlite /mnt/db\n\
         mmapfs --anon shm=16M /mnt/shm\n\
         mount -t fuse.mmapfs /srv/file.bin /mnt/x -o private\n\
         fstab: /srv/file.bin /mnt/x fuse.mmapfs defaults,private 0 0\n\
         fusermount3 -u /mnt/demo",
    ),
    ("SEE ALSO", "mmap(2), msync(2), cachestat(2), mincore(2), vmtouch(8), fusermount3(1)"),
];

pub fn write_man_page(out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(Cli::command());
    man.render(out)?;
    for (title, body) in EXTRA_SECTIONS {
        writeln!(out, ".SH \"{title}\"")?;
        for paragraph in body.split('\n') {
            let paragraph = paragraph.replace("{event_kinds}", &crate::events::KINDS.join(", "));
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
