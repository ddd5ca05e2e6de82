//! The design and the semantics point at the code that holds them, and those pointers
//! stay true: every relative markdown link in `docs/semantics.md` and `docs/DESIGN.md`
//! names a file or folder that exists, and every `name` in backticks right after a link
//! to a `.rs` file (`([actors/tests/resume.rs](../actors/tests/resume.rs)
//! `a_frozen_peer_interrupts_then_resumes_with_nothing_lost`)`, several separated by
//! commas) is a `fn name` in that file. A test renamed or moved without its guarantee's
//! link fails here, naming the document, the line and the link.
//!
//! Links inside fenced code blocks are not links and are not read.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// The documents checked, from the repository's root.
const DOCS: &[&str] = &["docs/semantics.md", "docs/DESIGN.md"];

/// One relative link of a document, with the names in backticks that follow it.
#[derive(Debug, PartialEq)]
struct Link {
    /// The line it starts on, from 1.
    line: usize,
    /// The target as written, without a `#fragment`.
    target: String,
    /// The backticked words right after it: `(link) `a`, `b``.
    names: Vec<String>,
}

/// The relative links of a markdown text, outside fenced code blocks.
fn links(markdown: &str) -> Vec<Link> {
    let mut found = Vec::new();
    // Blank out fenced code blocks, keeping line breaks so line numbers stay right.
    let mut text = String::with_capacity(markdown.len());
    let mut fenced = false;
    for line in markdown.split_inclusive('\n') {
        let fence = line.trim_start().starts_with("```");
        if fence || fenced {
            text.extend(line.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        } else {
            text.push_str(line);
        }
        if fence {
            fenced = !fenced;
        }
    }
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found_at) = text[at..].find("](") {
        let open = at + found_at + 2;
        let Some(close) = text[open..].find(')').map(|c| open + c) else {
            break;
        };
        at = close + 1;
        let target = text[open..close].trim();
        if target.contains(char::is_whitespace)
            || target.starts_with('#')
            || target.contains("://")
            || target.starts_with("mailto:")
        {
            continue;
        }
        let target = target.split('#').next().unwrap_or_default().to_owned();
        // The names in backticks right after it: `a`, `b` and so on.
        let mut names = Vec::new();
        let mut rest = close + 1;
        loop {
            let mut next = rest;
            while next < bytes.len() && (bytes[next] == b' ' || bytes[next] == b'\n') {
                next += 1;
            }
            if next >= bytes.len() || bytes[next] != b'`' {
                break;
            }
            let Some(end) = text[next + 1..].find('`').map(|e| next + 1 + e) else {
                break;
            };
            names.push(text[next + 1..end].to_owned());
            rest = end + 1;
            if rest < bytes.len() && bytes[rest] == b',' {
                rest += 1;
            }
        }
        let line = text[..open].matches('\n').count() + 1;
        found.push(Link {
            line,
            target,
            names,
        });
    }
    found
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether `source` declares `fn name` (any visibility, async or not, in a macro or not).
fn declares_fn(source: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let wanted = format!("fn {name}");
    source.match_indices(&wanted).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = source[at + wanted.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// What is wrong with the links of the document `doc` (its path from the root), reading
/// files through `read` (`None`: no such file; `Some(None)`: a folder).
fn check(doc: &str, markdown: &str, read: &dyn Fn(&Path) -> Option<Option<String>>) -> Vec<String> {
    let dir = Path::new(doc).parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for link in links(markdown) {
        let path = normalize(&dir.join(&link.target));
        let Some(contents) = read(&path) else {
            problems.push(format!(
                "{doc}:{}: ({}) links {}, which does not exist",
                link.line,
                link.target,
                path.display()
            ));
            continue;
        };
        if !link.target.ends_with(".rs") {
            continue;
        }
        let source = contents.unwrap_or_default();
        for name in &link.names {
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                problems.push(format!(
                    "{doc}:{}: `{name}` after the link to {} is not a function's name",
                    link.line, link.target
                ));
            } else if !declares_fn(&source, name) {
                problems.push(format!(
                    "{doc}:{}: {} has no `fn {name}`",
                    link.line,
                    path.display()
                ));
            }
        }
    }
    problems
}

#[test]
fn every_link_of_the_design_and_the_semantics_to_the_code_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &Path| -> Option<Option<String>> {
        let full = root.join(path);
        if full.is_dir() {
            Some(None)
        } else {
            fs::read_to_string(full).ok().map(Some)
        }
    };
    let mut problems = Vec::new();
    let mut tests_named = 0;
    for doc in DOCS {
        let markdown = fs::read_to_string(root.join(doc)).expect("the document reads");
        tests_named += links(&markdown)
            .iter()
            .filter(|l| l.target.ends_with(".rs"))
            .map(|l| l.names.len())
            .sum::<usize>();
        problems.extend(check(doc, &markdown, &read));
    }
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The semantics names its tests: a parser that stopped finding them would pass above.
    assert!(
        tests_named > 50,
        "only {tests_named} tests named in the docs' links"
    );
}

#[test]
fn the_checker_finds_a_missing_file_a_missing_test_and_a_name_that_is_no_name() {
    let markdown = "\
# A guarantee

- Held ([a.rs](../tests/a.rs) `holds`, `also_holds`).
- Broken ([gone.rs](../tests/gone.rs) `anything`).
- Renamed ([a.rs](../tests/a.rs)
  `was_renamed`).
- Not a name ([a.rs](../tests/a.rs) `a::b`), a folder ([tests](../tests/)), and
  [a page](https://example.com/x.rs) left alone.

```
[in a code block](../tests/nowhere.rs) `not_read`
```
";
    let read = |path: &Path| -> Option<Option<String>> {
        match path.to_str()? {
            "tests/a.rs" => Some(Some(
                "#[test]\nfn holds() {}\n#[tokio::test]\nasync fn also_holds() {}\nfn holds_not() {}\n"
                    .to_owned(),
            )),
            "tests" => Some(None),
            _ => None,
        }
    };
    let problems = check("docs/x.md", markdown, &read);
    assert_eq!(
        problems,
        [
            "docs/x.md:4: (../tests/gone.rs) links tests/gone.rs, which does not exist",
            "docs/x.md:5: tests/a.rs has no `fn was_renamed`",
            "docs/x.md:7: `a::b` after the link to ../tests/a.rs is not a function's name",
        ],
    );
    let found = links(markdown);
    assert_eq!(found[0].names, ["holds", "also_holds"]);
    assert_eq!(found.len(), 5, "{found:?}");
}

#[test]
fn a_function_is_found_by_its_whole_name() {
    let source = "pub(crate) async fn send_all(x: u8) {}\nfn send<T>() {}";
    assert!(declares_fn(source, "send_all"));
    assert!(declares_fn(source, "send"));
    assert!(!declares_fn(source, "send_al"));
    assert!(!declares_fn(source, "all"));
}
