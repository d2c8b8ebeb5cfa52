//! Reading the worked examples of a specification: the ```` ```hex ```` blocks of
//! `proto/PROTOCOL.md` and `proto/AOF.md`. Shared by the test crates of both specs (included
//! with `#[path]`), so that both read the documents the same way.

/// The bytes of a hex block: pairs of hex digits, with everything after `#` ignored.
pub fn hex(block: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in block.lines() {
        let data = line.split('#').next().unwrap_or("");
        for token in data.split_whitespace() {
            assert_eq!(token.len(), 2, "not a hex byte: {token:?} in line {line:?}");
            let byte = u8::from_str_radix(token, 16)
                .unwrap_or_else(|_| panic!("not a hex byte: {token:?} in line {line:?}"));
            bytes.push(byte);
        }
    }
    bytes
}

/// The contents of every ```` ```hex ```` block in a markdown text, in order.
pub fn hex_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim() == "```hex" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "unterminated hex block in the spec");
    blocks
}
