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

/// Asserts that the worked examples a test file checks are exactly the hex blocks of the
/// specification `spec_name` (text `spec`): each block tested, each example in the text byte
/// for byte, none twice. A specification and its tests thus cannot drift apart.
pub fn assert_examples_match_spec(spec_name: &str, spec: &str, examples: &[(&str, &str)]) {
    let in_spec: Vec<Vec<u8>> = hex_blocks(spec).iter().map(|block| hex(block)).collect();
    let here: Vec<(&str, Vec<u8>)> = examples
        .iter()
        .map(|(name, block)| (*name, hex(block)))
        .collect();
    for (i, bytes) in in_spec.iter().enumerate() {
        assert!(
            here.iter().any(|(_, b)| b == bytes),
            "hex block #{} of {spec_name} ({:02x?}) is not among the tested examples",
            i + 1,
            bytes
        );
    }
    for (name, bytes) in &here {
        assert!(
            in_spec.contains(bytes),
            "{name} does not appear byte for byte in {spec_name}"
        );
    }
    assert_eq!(in_spec.len(), here.len(), "a block appears twice");
}

#[test]
fn hex_blocks_are_found_and_parsed() {
    let blocks = hex_blocks("text\n```hex\nb5 01  # x\n\n0a\n```\n```text\nff\n```\n");
    assert_eq!(blocks.len(), 1);
    assert_eq!(hex(&blocks[0]), [0xb5, 0x01, 0x0a]);
}
