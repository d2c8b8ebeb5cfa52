//! `unsafe` code lives in one module of the server, `store::raw`, and each block there
//! carries its safety argument (STYLE.md: "`unsafe` lives in one module with a `// SAFETY:`
//! argument per block"). The compiler only enforces that some module allows it; this test
//! keeps the exception from spreading again, as it had to the sweep, the prefetch and the
//! store's bucket walk.
//!
//! The one other place is outside the daemon: the load generator's io_uring floor server,
//! whose submissions are raw pointers into buffers the kernel uses later, which no safe
//! interface of the `io-uring` crate can express. It is held to the same rule.

use std::fs;
use std::path::{Path, PathBuf};

/// The modules allowed to contain `unsafe`, relative to the workspace's `crates`: the
/// server's raw store, and the load generator's io_uring floor server.
const ALLOWED: [&str; 2] = ["server/src/store/raw", "bench/src/floor/uring.rs"];

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line: without its string literals and its `//` comment (doc comments
/// included). A line-by-line approximation, good enough for this code base: strings do not
/// span lines where it matters.
fn code(line: &str) -> String {
    let mut code = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_string => {
                chars.next();
            }
            '"' => in_string = !in_string,
            // A `'"'` char literal does not open a string.
            '\'' if !in_string && chars.peek() == Some(&'"') => {
                chars.next();
            }
            '/' if !in_string && chars.peek() == Some(&'/') => break,
            c if !in_string => code.push(c),
            _ => {}
        }
    }
    code
}

/// Whether `code` contains the keyword `unsafe` (not as part of a longer identifier).
fn has_unsafe(code: &str) -> bool {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word == "unsafe")
}

/// Whether the lines just above `at` (comments and attributes) hold a `// SAFETY:` argument,
/// or, for an `unsafe fn`, a `# Safety` section in its docs.
fn has_safety_argument(lines: &[&str], at: usize) -> bool {
    let is_fn = code(lines[at]).contains("unsafe fn");
    for line in lines[..at].iter().rev() {
        let line = line.trim();
        if line.starts_with("// SAFETY:") || (is_fn && line == "/// # Safety") {
            return true;
        }
        if !(line.starts_with("//") || line.starts_with("#[")) {
            return false;
        }
    }
    false
}

#[test]
fn unsafe_code_lives_only_where_allowed_with_a_safety_argument_per_block() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the server crate is in the crates directory");
    let mut files = Vec::new();
    rust_files(crates, &mut files);
    rust_files(&crates.join("../tests"), &mut files);
    assert!(files.len() > 50, "found only {} source files", files.len());
    let allowed: Vec<PathBuf> = ALLOWED.iter().map(|place| crates.join(place)).collect();
    let mut outside = Vec::new();
    let mut unargued = Vec::new();
    let mut blocks = 0;
    for file in &files {
        if file.components().any(|c| c.as_os_str() == "target") {
            continue;
        }
        let text = fs::read_to_string(file).expect("source files are readable UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let code = &code(line);
            let place = format!("{}:{}", file.display(), at + 1);
            if !allowed.iter().any(|place| file.starts_with(place)) {
                if has_unsafe(code) || code.contains("allow(unsafe_code") {
                    outside.push(place);
                }
                continue;
            }
            if has_unsafe(code) {
                blocks += 1;
                if !has_safety_argument(&lines, at) {
                    unargued.push(place);
                }
            }
        }
    }
    assert!(
        outside.is_empty(),
        "`unsafe` outside {ALLOWED:?}: {outside:#?}; put it behind a safe function there"
    );
    assert!(
        unargued.is_empty(),
        "`unsafe` without a `// SAFETY:` comment (or `/// # Safety` docs) right above: {unargued:#?}"
    );
    assert!(blocks > 0, "no unsafe found in {ALLOWED:?}: has it moved?");
}
