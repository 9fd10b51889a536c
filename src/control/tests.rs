use super::*;

const PAGE: u64 = 4096;
const WINDOW: u64 = 100 * PAGE;

fn target(text: &str) -> Result<Target> {
    parse("t", text.as_bytes(), WINDOW, PAGE, &["missing"]).map(|c| c.target)
}

#[test]
fn ranges_are_spans_or_page_lists() {
    assert_eq!(target("x").unwrap().pages, vec![(0, 99)]);
    assert_eq!(target("x 8192 4096").unwrap().pages, vec![(2, 2)]);
    let t = target("x missing pages 5-9,0,7,50").unwrap();
    assert_eq!(t.pages, vec![(0, 0), (5, 9), (50, 50)]);
    assert_eq!((t.offset, t.length), (0, 51 * PAGE));
    assert_eq!(target("x pages").unwrap().pages, Vec::new());
    for bad in [
        "x pages 100",
        "x pages 3-1",
        "x pages a",
        "x pages 1 2",
        "x 100",
    ] {
        assert_eq!(target(bad).unwrap_err().errno, libc::EINVAL, "{bad}");
    }
    let c = parse("t", b"x missing", WINDOW, PAGE, &["missing"]).unwrap();
    assert_eq!(c.qualifiers, vec!["missing"]);
}

#[test]
fn targets_split_by_other_ranges() {
    let t = target("x pages 0-9,20-29").unwrap();
    assert_eq!(intersect(&t.pages, &[(5, 24)]), vec![(5, 9), (20, 24)]);
    assert_eq!(t.without(&[(5, 24)]).pages, vec![(0, 4), (25, 29)]);
    assert_eq!(
        t.byte_ranges(PAGE, WINDOW),
        vec![(0, 10 * PAGE), (20 * PAGE, 10 * PAGE)]
    );
}

#[test]
fn long_input_is_refused_and_never_quoted_whole() {
    let long = vec![b'x'; COMMAND_MAX + 1];
    assert_eq!(
        parse("msync", &long, 4096, 4096, &[]).unwrap_err().errno,
        libc::EINVAL
    );
    let err = parse(
        "msync",
        format!("sync {}", "9".repeat(200)).as_bytes(),
        4096,
        4096,
        &[],
    )
    .unwrap_err();
    assert!(err.message.len() < 200, "{}", err.message);
}
