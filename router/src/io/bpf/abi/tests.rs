use std::collections::HashMap;

use object::{Object, ObjectSection};

use super::*;
use crate::io::bpf::XDP_OBJECT;

#[test]
fn config_value_follows_the_limits() {
    let limits = RateLimits {
        handshake_per_source: RateLimit::new(1, 2),
        handshake_global: RateLimit::new(3, 4),
        neighbor_data: RateLimit::new(5, 6),
    };
    let value = Config::new(&limits, Duration::from_millis(1500));
    assert_eq!(value.limits(), limits);
    assert_eq!(value.idle_timeout_ns, 1_500_000_000);
    assert_eq!(value.generation, 1);
    assert_eq!(value.flags, 0, "no local ID: the cache is off");
    let mut forever = value;
    forever.set_idle_timeout(Duration::MAX);
    assert_eq!(forever.idle_timeout_ns, u64::MAX);
}

/// A struct as the compiled object's BTF describes it.
#[derive(Debug, PartialEq)]
struct BtfStruct {
    size: usize,
    /// Every member: name, byte offset, size.
    members: Vec<(String, usize, usize)>,
}

/// One BTF type: kind, name, size or type, and where its kind-specific
/// data starts.
struct BtfType {
    kind: u32,
    name_off: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    extra: usize,
}

/// A `.BTF` section (the kernel's format, `Documentation/bpf/btf.rst`):
/// enough of it to read struct layouts, and strict about the rest (an
/// unknown kind, a bitfield or a read past the end fails the test).
struct Btf<'a> {
    data: &'a [u8],
    little_endian: bool,
    strings: usize,
    /// By ID - 1 (ID 0 is void).
    types: Vec<BtfType>,
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8], little_endian: bool) -> Btf<'a> {
        let mut btf = Btf {
            data,
            little_endian,
            strings: 0,
            types: Vec::new(),
        };
        let magic = btf.word(0) & 0xffff;
        assert_eq!(magic, 0xeb9f, "not BTF (magic {magic:#x})");
        let header_len = btf.word(4) as usize;
        let (type_off, type_len) = (btf.word(8) as usize, btf.word(12) as usize);
        btf.strings = header_len + btf.word(16) as usize;
        let types_start = header_len + type_off;
        let mut at = types_start;
        while at < types_start + type_len {
            let info = btf.word(at + 4);
            let ty = BtfType {
                kind: (info >> 24) & 0x1f,
                name_off: btf.word(at),
                vlen: (info & 0xffff) as usize,
                kind_flag: info >> 31 == 1,
                size_or_type: btf.word(at + 8),
                extra: at + 12,
            };
            let extra = match ty.kind {
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                // INT, VAR, DECL_TAG
                1 | 14 | 17 => 4,
                // ARRAY
                3 => 12,
                // STRUCT, UNION, DATASEC, ENUM64: 12 bytes per member
                4 | 5 | 15 | 19 => 12 * ty.vlen,
                // ENUM, FUNC_PROTO: 8 bytes per member
                6 | 13 => 8 * ty.vlen,
                other => panic!("unknown BTF kind {other}"),
            };
            at = ty.extra + extra;
            btf.types.push(ty);
        }
        btf
    }

    fn word(&self, at: usize) -> u32 {
        let bytes: [u8; 4] = self
            .data
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_else(|| panic!("BTF truncated at byte {at}"));
        if self.little_endian {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    }

    fn name(&self, offset: u32) -> String {
        let rest = &self.data[self.strings + offset as usize..];
        let end = rest.iter().position(|&b| b == 0).expect("BTF string ends");
        String::from_utf8_lossy(&rest[..end]).into_owned()
    }

    fn by_id(&self, id: u32) -> &BtfType {
        let index = id.checked_sub(1).expect("a type, not void") as usize;
        self.types.get(index).expect("BTF type ID in range")
    }

    /// The size in bytes of type `id`.
    fn size(&self, id: u32) -> usize {
        let ty = self.by_id(id);
        match ty.kind {
            // INT, STRUCT, UNION, ENUM, ENUM64: a size
            1 | 4 | 5 | 6 | 19 => ty.size_or_type as usize,
            // TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: another type's
            8 | 9 | 10 | 11 | 18 => self.size(ty.size_or_type),
            // ARRAY: element type, index type, count
            3 => self.size(self.word(ty.extra)) * self.word(ty.extra + 8) as usize,
            other => panic!("BTF kind {other} has no size here"),
        }
    }

    /// Every named struct, by name.
    fn structs(&self) -> HashMap<String, BtfStruct> {
        let mut structs = HashMap::new();
        for ty in self.types.iter().filter(|t| t.kind == 4 && t.name_off != 0) {
            let name = self.name(ty.name_off);
            let members = (0..ty.vlen)
                .map(|i| {
                    let at = ty.extra + 12 * i;
                    let member = self.name(self.word(at));
                    let offset = self.word(at + 8);
                    let (bits, bitfield) = if ty.kind_flag {
                        (offset & 0xff_ffff, offset >> 24)
                    } else {
                        (offset, 0)
                    };
                    assert!(
                        bitfield == 0 && bits % 8 == 0,
                        "{name}.{member}: a bitfield"
                    );
                    (member, bits as usize / 8, self.size(self.word(at + 4)))
                })
                .collect();
            let size = ty.size_or_type as usize;
            structs.insert(name, BtfStruct { size, members });
        }
        structs
    }
}

/// The generated structs against what clang laid out for the program: the
/// size, and every member's name, offset and size, from the BTF of
/// [`XDP_OBJECT`] (compiled with `-g`). Rust and C agree with the compiler,
/// not only with each other.
#[test]
fn generated_structs_match_the_objects_btf() {
    let file = object::File::parse(XDP_OBJECT).expect("XDP_OBJECT is an ELF object");
    let section = file
        .section_by_name(".BTF")
        .expect("XDP_OBJECT has BTF (clang -g)");
    let btf = section.data().expect("the .BTF section's bytes");
    let structs = Btf::parse(btf, file.is_little_endian()).structs();
    assert!(!LAYOUTS.is_empty());
    for layout in LAYOUTS {
        let Some(compiled) = structs.get(layout.c_name) else {
            panic!(
                "struct {} is not in the object's BTF (no map uses it?)",
                layout.c_name
            );
        };
        let rust = BtfStruct {
            size: layout.size,
            members: layout
                .members
                .iter()
                .map(|&(name, offset, size)| (name.to_string(), offset, size))
                .collect(),
        };
        assert_eq!(
            &rust, compiled,
            "struct {}: the generated Rust struct (left) and the BTF of the compiled object \
             (right) disagree",
            layout.c_name
        );
    }
}
