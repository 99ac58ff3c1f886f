//! Turns C struct declarations of a BPF header into `#[repr(C)]` Rust
//! structs, so a struct that C and Rust share is written once, in C.
//! Included by `router/build.rs` with
//! `#[path = "../build-support/c_structs.rs"] mod c_structs;`.
//!
//! The parser is small and strict. It reads only the structs it is asked
//! for, and each must be written as
//!
//! ```c
//! /* optional comment: the struct's documentation */
//! struct xorlay_name {
//!     /* optional comment: documents the member below */
//!     __u32 member;          /* optional: documents the member */
//!     __u8 bytes[16];        /* length: an integer or an XORLAY_* define */
//!     struct xorlay_other x[XORLAY_N]; /* a struct generated before it */
//! } __attribute__((aligned(N))); /* the attribute is optional */
//! ```
//!
//! with member types `__u8`, `__u16`, `__u32`, `__u64`, `__be16` or a
//! struct generated earlier, and no implicit padding (every pad byte is a
//! member). Anything else fails the build, naming the line.

use std::collections::HashMap;
use std::fmt::Write as _;

/// A member's type.
#[derive(Clone)]
enum Type {
    /// `__u8` .. `__u64` (`be`: `__be16`, network byte order).
    Int { bytes: u64, be: bool },
    /// A struct generated earlier, by its index.
    Struct(usize),
}

struct Member {
    /// The line it is declared on (1-based).
    line: usize,
    name: String,
    ty: Type,
    /// The array length as written and its value.
    len: Option<(String, u64)>,
    doc: Vec<String>,
}

struct CStruct {
    c_name: String,
    rust_name: String,
    doc: Vec<String>,
    /// `__attribute__((aligned(N)))`.
    align_attr: Option<u64>,
    members: Vec<Member>,
    size: u64,
    align: u64,
}

/// The Rust source of the structs `names` (in this order, each declared in
/// `text`, the header shown as `header` in messages and docs), with the
/// integer `constants` (`XORLAY_*` defines) for array lengths. Each C
/// struct `xorlay_foo_bar` becomes `pub struct FooBar`. Also emits, for
/// tests, `LAYOUTS`: every struct's C name, size and members (name, offset,
/// size) as Rust lays them out. Panics, naming the line, on anything the
/// parser does not understand.
pub fn generate(
    header: &str,
    text: &str,
    names: &[&str],
    constants: &HashMap<String, u64>,
) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut structs: Vec<CStruct> = Vec::new();
    for name in names {
        let parsed = parse_struct(header, &lines, name, constants, &structs);
        structs.push(parsed);
    }
    emit(header, &structs)
}

/// The Rust name of C struct `xorlay_foo_bar`: `FooBar`.
fn rust_name(header: &str, c_name: &str) -> String {
    let Some(short) = c_name.strip_prefix("xorlay_") else {
        panic!("{header}: struct {c_name}: a generated struct's name starts with xorlay_");
    };
    short
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The text of a comment's line: without `/*`, `*/`, a leading `*` and
/// surrounding blanks.
fn comment_words(line: &str) -> String {
    let line = line.trim();
    let line = line.strip_prefix("/*").unwrap_or(line);
    let line = line.strip_suffix("*/").unwrap_or(line).trim();
    line.strip_prefix('*').unwrap_or(line).trim().to_string()
}

/// Reads a comment that starts on line `start` at byte `from` (the `/*`)
/// and may run over further lines; returns its lines and the line it ends
/// on.
fn read_comment(header: &str, lines: &[&str], start: usize, from: usize) -> (Vec<String>, usize) {
    let mut doc = Vec::new();
    let mut at = start;
    let mut text = &lines[start][from..];
    loop {
        doc.push(comment_words(text));
        if text.contains("*/") {
            let after = text.split_once("*/").map_or("", |(_, rest)| rest).trim();
            assert!(
                after.is_empty(),
                "{header}:{}: text after a comment: `{after}`",
                at + 1
            );
            // No leading or trailing blank lines.
            while doc.first().is_some_and(String::is_empty) {
                doc.remove(0);
            }
            while doc.last().is_some_and(String::is_empty) {
                doc.pop();
            }
            return (doc, at);
        }
        at += 1;
        let Some(next) = lines.get(at) else {
            panic!("{header}:{}: unterminated comment", start + 1);
        };
        text = next;
    }
}

/// Finds `struct <name> {` in `lines` and parses its declaration.
fn parse_struct(
    header: &str,
    lines: &[&str],
    name: &str,
    constants: &HashMap<String, u64>,
    earlier: &[CStruct],
) -> CStruct {
    let opening = format!("struct {name} {{");
    let found: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_end() == opening)
        .collect();
    let start = match found[..] {
        [one] => one,
        [] => panic!(
            "{header}: no line `{opening}` (a struct router/build.rs generates; it must open \
             on a line of its own)"
        ),
        _ => panic!("{header}: `{opening}` appears more than once"),
    };
    let doc = comment_above(lines, start);
    let mut members: Vec<Member> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut at = start + 1;
    let align_attr = loop {
        let Some(line) = lines.get(at) else {
            panic!("{header}:{}: struct {name} has no closing `}};`", start + 1);
        };
        let trimmed = line.trim();
        let line_no = at + 1;
        if trimmed.is_empty() {
            at += 1;
        } else if trimmed.starts_with("/*") {
            let (comment, end) = read_comment(header, lines, at, line.find("/*").unwrap_or(0));
            pending.extend(comment);
            at = end + 1;
        } else if let Some(rest) = trimmed.strip_prefix('}') {
            let (closing, trailing) = match rest.find("/*") {
                Some(c) => (&rest[..c], Some(c)),
                None => (rest, None),
            };
            if trailing.is_some() {
                // Only to check that it ends; a closing comment documents
                // nothing.
                let from = line.find("/*").unwrap_or(0);
                read_comment(header, lines, at, from);
            }
            assert!(
                pending.is_empty(),
                "{header}:{line_no}: a comment documents no member of struct {name}"
            );
            break parse_closing(header, line_no, line.trim(), closing.trim());
        } else {
            let member = parse_member(header, lines, &mut at, constants, earlier, name);
            let mut doc = std::mem::take(&mut pending);
            if !doc.is_empty() && !member.doc.is_empty() {
                doc.push(String::new());
            }
            doc.extend(member.doc);
            members.push(Member { doc, ..member });
        }
    };
    assert!(
        !members.is_empty(),
        "{header}:{}: struct {name} has no members",
        start + 1
    );
    let (size, align) = layout(header, start + 1, name, &members, align_attr, earlier);
    CStruct {
        c_name: name.to_string(),
        rust_name: rust_name(header, name),
        doc,
        align_attr,
        members,
        size,
        align,
    }
}

/// The lines of the comment that ends on the line just above `line`, if
/// one does.
fn comment_above(lines: &[&str], line: usize) -> Vec<String> {
    let Some(end) = line.checked_sub(1) else {
        return Vec::new();
    };
    if !lines[end].trim_end().ends_with("*/") {
        return Vec::new();
    }
    // Back to the line that opens it, through comment lines only (a code
    // line with a trailing comment is not the struct's documentation).
    let mut begin = end;
    loop {
        let text = lines[begin].trim_start();
        if text.starts_with("/*") {
            break;
        }
        if !text.starts_with('*') || begin == 0 {
            return Vec::new();
        }
        begin -= 1;
    }
    let mut doc: Vec<String> = lines[begin..=end]
        .iter()
        .map(|l| comment_words(l))
        .collect();
    while doc.first().is_some_and(String::is_empty) {
        doc.remove(0);
    }
    while doc.last().is_some_and(String::is_empty) {
        doc.pop();
    }
    doc
}

/// `;` or `__attribute__((aligned(N)));` after the closing brace.
fn parse_closing(header: &str, line_no: usize, line: &str, closing: &str) -> Option<u64> {
    if closing == ";" {
        return None;
    }
    let align = closing
        .strip_prefix("__attribute__((aligned(")
        .and_then(|rest| rest.strip_suffix(")));"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .filter(|n| n.is_power_of_two());
    match align {
        Some(n) => Some(n),
        None => panic!(
            "{header}:{line_no}: cannot parse `{line}`: a struct ends with `}};` or \
             `}} __attribute__((aligned(N)));` (N a power of two)"
        ),
    }
}

/// Parses the member declared on line `*at` (and the comment after it,
/// which may run over further lines); leaves `*at` on the next line.
fn parse_member(
    header: &str,
    lines: &[&str],
    at: &mut usize,
    constants: &HashMap<String, u64>,
    earlier: &[CStruct],
    in_struct: &str,
) -> Member {
    let line = lines[*at];
    let line_no = *at + 1;
    let fail = |why: &str| -> ! {
        panic!(
            "{header}:{line_no}: cannot parse member `{}` of struct {in_struct}: {why} \
             (build-support/c_structs.rs reads `TYPE NAME;` or `TYPE NAME[LEN];` with an \
             optional trailing comment)",
            line.trim()
        )
    };
    let Some((declaration, rest)) = line.split_once(';') else {
        fail("no `;` on the line");
    };
    let rest = rest.trim();
    let doc = if rest.is_empty() {
        *at += 1;
        Vec::new()
    } else if rest.starts_with("/*") {
        let (doc, end) = read_comment(header, lines, *at, line.find("/*").unwrap_or(0));
        *at = end + 1;
        doc
    } else {
        fail("only a comment may follow the `;`");
    };
    let words: Vec<&str> = declaration.split_whitespace().collect();
    let (ty, declarator) = match words[..] {
        ["struct", tag, declarator] => {
            let Some(index) = earlier.iter().position(|s| s.c_name == tag) else {
                fail(&format!(
                    "struct {tag} is not a struct generated before it (list it first in \
                     router/build.rs, or it is kernel-only)"
                ));
            };
            (Type::Struct(index), declarator)
        }
        [ty, declarator] => {
            let ty = match ty {
                "__u8" => Type::Int {
                    bytes: 1,
                    be: false,
                },
                "__u16" => Type::Int {
                    bytes: 2,
                    be: false,
                },
                "__u32" => Type::Int {
                    bytes: 4,
                    be: false,
                },
                "__u64" => Type::Int {
                    bytes: 8,
                    be: false,
                },
                "__be16" => Type::Int { bytes: 2, be: true },
                other => fail(&format!(
                    "type `{other}` is not one of __u8, __u16, __u32, __u64, __be16, struct xorlay_*"
                )),
            };
            (ty, declarator)
        }
        _ => fail("expected a type and a name"),
    };
    let (name, len) = match declarator.split_once('[') {
        None => (declarator, None),
        Some((name, len)) => {
            let Some(len) = len.strip_suffix(']') else {
                fail("an array length ends with `]`");
            };
            let value = if len.starts_with("XORLAY_") {
                match constants.get(len) {
                    Some(&value) => value,
                    None => fail(&format!(
                        "`{len}` is not an integer #define XORLAY_* of wire.h or consts.h"
                    )),
                }
            } else {
                match len.parse::<u64>() {
                    Ok(value) => value,
                    Err(_) => fail(&format!(
                        "array length `{len}` is not an integer or an XORLAY_* define"
                    )),
                }
            };
            if value == 0 {
                fail("an array of length 0");
            }
            (name, Some((len.to_string(), value)))
        }
    };
    let is_ident = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !is_ident {
        fail(&format!("`{name}` is not a plain name"));
    }
    Member {
        line: line_no,
        name: name.to_string(),
        ty,
        len,
        doc,
    }
}

/// The size and alignment of a member's type (not counting its array
/// length).
fn type_layout(ty: &Type, earlier: &[CStruct]) -> (u64, u64) {
    match ty {
        Type::Int { bytes, .. } => (*bytes, *bytes),
        Type::Struct(index) => (earlier[*index].size, earlier[*index].align),
    }
}

/// The C layout (size, alignment) of a struct of `members`; panics on any
/// implicit padding, which would make the Rust struct unsafe to copy from
/// the kernel as bytes (and its padding undefined).
fn layout(
    header: &str,
    line_no: usize,
    name: &str,
    members: &[Member],
    align_attr: Option<u64>,
    earlier: &[CStruct],
) -> (u64, u64) {
    let mut offset = 0;
    let mut align = align_attr.unwrap_or(1);
    for member in members {
        let (size, member_align) = type_layout(&member.ty, earlier);
        assert!(
            offset % member_align == 0,
            "{header}:{}: struct {name}: implicit padding before `{}` (offset {offset}, \
             alignment {member_align}): declare the pad bytes as a member",
            member.line,
            member.name
        );
        offset += size * member.len.as_ref().map_or(1, |(_, n)| *n);
        align = align.max(member_align);
    }
    assert!(
        offset % align == 0,
        "{header}:{line_no}: struct {name}: implicit padding at the end ({offset} bytes, \
         alignment {align}): declare the pad bytes as a member"
    );
    (offset, align)
}

/// The Rust type of a member.
fn rust_type(member: &Member, structs: &[CStruct]) -> String {
    let element = match &member.ty {
        Type::Int { bytes, .. } => format!("u{}", bytes * 8),
        Type::Struct(index) => structs[*index].rust_name.clone(),
    };
    match &member.len {
        None => element,
        Some((_, n)) => format!("[{element}; {n}]"),
    }
}

/// `derive(Default)` works: no array longer than 32 (std's limit) and only
/// structs that derive it.
fn derives_default(s: &CStruct, structs: &[CStruct]) -> bool {
    s.members.iter().all(|m| {
        m.len.as_ref().is_none_or(|(_, n)| *n <= 32)
            && match m.ty {
                Type::Int { .. } => true,
                Type::Struct(index) => derives_default(&structs[index], structs),
            }
    })
}

/// A C comment as Markdown: `[`, `]`, `<`, `>` escaped outside code spans,
/// so rustdoc takes them for text (not links or HTML).
fn escape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code && matches!(c, '[' | ']' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn write_doc(rust: &mut String, indent: &str, doc: &[String]) {
    for line in doc {
        if line.is_empty() {
            writeln!(rust, "{indent}///").expect("write to String");
        } else {
            writeln!(rust, "{indent}/// {}", escape(line)).expect("write to String");
        }
    }
}

fn emit(header: &str, structs: &[CStruct]) -> String {
    let mut rust = format!(
        "// @generated by router/build.rs (build-support/c_structs.rs) from {header}; do not \
         edit.\n"
    );
    for s in structs {
        rust.push('\n');
        let mut doc = vec![format!(
            "`struct {}` of `{header}`, generated from its declaration there.",
            s.c_name
        )];
        if !s.doc.is_empty() {
            doc.push(String::new());
            doc.extend(s.doc.iter().cloned());
        }
        write_doc(&mut rust, "", &doc);
        match s.align_attr {
            Some(n) => writeln!(rust, "#[repr(C, align({n}))]"),
            None => writeln!(rust, "#[repr(C)]"),
        }
        .expect("write to String");
        let default = if derives_default(s, structs) {
            ", Default"
        } else {
            ""
        };
        writeln!(
            rust,
            "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash{default})]\npub struct {} {{",
            s.rust_name
        )
        .expect("write to String");
        for m in &s.members {
            let mut doc = m.doc.clone();
            if let Type::Int { be: true, .. } = m.ty {
                if !doc.is_empty() {
                    doc.push(String::new());
                }
                doc.push(
                    "`__be16` in C: the bytes in network order. Read it with `u16::from_be`, \
                     write it with `u16::to_be`."
                        .to_string(),
                );
            }
            if let Some((written, _)) = &m.len
                && written.starts_with("XORLAY_")
            {
                if !doc.is_empty() {
                    doc.push(String::new());
                }
                doc.push(format!("Length `{written}`."));
            }
            write_doc(&mut rust, "    ", &doc);
            writeln!(rust, "    pub {}: {},", m.name, rust_type(m, structs))
                .expect("write to String");
        }
        let sum: Vec<String> = s
            .members
            .iter()
            .map(|m| format!("size_of::<{}>()", rust_type(m, structs)))
            .collect();
        writeln!(
            rust,
            "}}\n\n\
             // No padding: the size is the sum of the members' sizes.\n\
             const _: () = assert!(size_of::<{name}>() == {sum});\n\n\
             // SAFETY: `#[repr(C)]`, every member a plain integer, an integer array or a \
             struct of\n\
             // them (each `Pod` itself), and no implicit padding (asserted above), so every \
             bit\n\
             // pattern is a valid value and every byte is initialized.\n\
             unsafe impl aya::Pod for {name} {{}}",
            name = s.rust_name,
            sum = sum.join(" + ")
        )
        .expect("write to String");
    }
    rust.push_str(
        "\n/// Every generated struct as Rust lays it out: its C name, size, and members\n\
         /// (name, offset, size), for the test that compares them with the compiled\n\
         /// object's BTF.\n\
         #[cfg(test)]\n\
         const LAYOUTS: &[StructLayout] = &[\n",
    );
    for s in structs {
        writeln!(
            rust,
            "    StructLayout {{\n        c_name: {:?},\n        size: size_of::<{}>(),\n        members: &[",
            s.c_name, s.rust_name
        )
        .expect("write to String");
        for m in &s.members {
            writeln!(
                rust,
                "            ({:?}, std::mem::offset_of!({}, {}), size_of::<{}>()),",
                m.name,
                s.rust_name,
                m.name,
                rust_type(m, structs)
            )
            .expect("write to String");
        }
        rust.push_str("        ],\n    },\n");
    }
    rust.push_str("];\n");
    rust
}
