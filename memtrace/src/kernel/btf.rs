//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) for memtrace's programs: the
//! size of `struct page` (to turn a `struct page *` into a pfn), member offsets (to read an
//! object's slab cache: `struct page`, `struct slab`, `struct kmem_cache`), and the argument
//! types of tracepoints (`btf_trace_<event>` typedefs), so a kernel whose tracepoint prototype
//! differs falls back to the classic tracepoints instead of reading the wrong argument.
//!
//! Format: `include/uapi/linux/btf.h` (header, then type records, then the string section).

use std::{collections::HashMap, path::Path};

use thiserror::Error;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Environment variable naming another file to read as the kernel's BTF instead of
/// [`VMLINUX`] (for tests: a missing file exercises the path of a kernel without BTF).
pub const PATH_ENV: &str = "MEMTRACE_BTF_PATH";

/// The kernel BTF file memtrace uses: [`VMLINUX`], or what [`PATH_ENV`] names.
pub fn vmlinux_path() -> std::path::PathBuf {
    match std::env::var_os(PATH_ENV) {
        Some(p) if !p.is_empty() => p.into(),
        _ => VMLINUX.into(),
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("not BTF data (bad magic or truncated header)")]
    BadHeader,
    #[error("truncated BTF type section")]
    Truncated,
    #[error("unknown BTF kind {0}")]
    UnknownKind(u32),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Type {
    kind: u32,
    name: String,
    /// `size` for sized kinds, `type` for reference kinds.
    size_or_type: u32,
    /// FUNC_PROTO parameter types.
    params: Vec<u32>,
    /// STRUCT / UNION members: (name, type, offset in bits).
    members: Vec<(String, u32, u32)>,
}

/// The parsed type records (id 0 is `void`).
#[derive(Debug)]
pub struct KernelBtf {
    types: Vec<Type>,
    by_name: HashMap<(u32, String), u32>,
}

/// A type as the tp_btf checks spell it: `struct page *`, `unsigned int`, `gfp_t`, `int`.
impl KernelBtf {
    #[cfg(test)]
    /// The running kernel's BTF ([`vmlinux_path`]).
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(&vmlinux_path())
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|e| BtfError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |o: usize| -> Option<u16> {
            data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |o: usize| -> Option<u32> {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(0xeb9f) {
            return Err(BtfError::BadHeader);
        }
        let hdr_len = u32_at(4).ok_or(BtfError::BadHeader)? as usize;
        let field = |i: usize| {
            u32_at(8 + 4 * i)
                .map(|v| v as usize)
                .ok_or(BtfError::BadHeader)
        };
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let types_start = hdr_len + type_off;
        let strs_start = hdr_len + str_off;
        let strings = data
            .get(strs_start..strs_start + str_len)
            .ok_or(BtfError::Truncated)?;
        let name_at = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or(&[]);
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        let end = types_start + type_len;
        if data.len() < end {
            return Err(BtfError::Truncated);
        }
        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            size_or_type: 0,
            params: Vec::new(),
            members: Vec::new(),
        }];
        let mut o = types_start;
        while o < end {
            let name_off = u32_at(o).ok_or(BtfError::Truncated)?;
            let info = u32_at(o + 4).ok_or(BtfError::Truncated)?;
            let size_or_type = u32_at(o + 8).ok_or(BtfError::Truncated)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            o += 12;
            let mut params = Vec::new();
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = o + 12 * i;
                        let name = u32_at(m).ok_or(BtfError::Truncated)?;
                        let ty = u32_at(m + 4).ok_or(BtfError::Truncated)?;
                        let offset = u32_at(m + 8).ok_or(BtfError::Truncated)?;
                        // With kind_flag the top 8 bits hold a bitfield's size.
                        let bits = if kind_flag {
                            offset & 0xff_ffff
                        } else {
                            offset
                        };
                        members.push((name_at(name), ty, bits));
                    }
                    12 * vlen
                }
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM => 8 * vlen,
                KIND_FUNC_PROTO => {
                    for i in 0..vlen {
                        params.push(u32_at(o + 8 * i + 4).ok_or(BtfError::Truncated)?);
                    }
                    8 * vlen
                }
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                k => return Err(BtfError::UnknownKind(k)),
            };
            o += extra;
            if o > end {
                return Err(BtfError::Truncated);
            }
            types.push(Type {
                kind,
                name: name_at(name_off),
                size_or_type,
                params,
                members,
            });
        }
        let mut by_name = HashMap::new();
        for (id, t) in types.iter().enumerate().skip(1) {
            if !t.name.is_empty() {
                by_name.entry((t.kind, t.name.clone())).or_insert(id as u32);
            }
        }
        Ok(KernelBtf { types, by_name })
    }

    /// `sizeof(struct <name>)`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        let id = *self.by_name.get(&(KIND_STRUCT, name.to_string()))?;
        Some(self.types[id as usize].size_or_type)
    }

    /// Byte offset of `member` in `struct <name>`, looking into anonymous struct and union
    /// members (`struct page` keeps most of its fields in anonymous unions).
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = *self.by_name.get(&(KIND_STRUCT, name.to_string()))?;
        self.find_member(id, member, 0).map(|bits| bits / 8)
    }

    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        if let Some((_, _, bits)) = t.members.iter().find(|(n, _, _)| n == member) {
            return Some(*bits);
        }
        t.members
            .iter()
            .filter(|(n, _, _)| n.is_empty())
            .find_map(|(_, ty, bits)| {
                let inner = self.strip_modifiers(*ty);
                self.find_member(inner, member, depth + 1).map(|b| b + bits)
            })
    }

    /// `id` with const/volatile/restrict/typedef/type tags peeled off.
    fn strip_modifiers(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPEDEF | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// The C spelling of type `id`, with typedef names kept (`gfp_t`) and qualifiers dropped.
    pub fn type_name(&self, id: u32) -> String {
        let mut id = id;
        let mut stars = String::new();
        for _ in 0..16 {
            let Some(t) = self.types.get(id as usize) else {
                return "?".into();
            };
            match t.kind {
                0 => return format!("void{stars}"),
                KIND_PTR => {
                    stars.push('*');
                    id = t.size_or_type;
                }
                KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                KIND_STRUCT => return format!("struct {}{}", t.name, spaced(&stars)),
                KIND_UNION => return format!("union {}{}", t.name, spaced(&stars)),
                _ => return format!("{}{}", t.name, spaced(&stars)),
            }
        }
        "?".into()
    }

    /// The argument types of tracepoint `event` as tp_btf programs see them (the
    /// `btf_trace_<event>` typedef is a pointer to a prototype whose first parameter is the
    /// `void *` context, left out here).
    pub fn tracepoint_args(&self, event: &str) -> Option<Vec<String>> {
        let id = *self
            .by_name
            .get(&(KIND_TYPEDEF, format!("btf_trace_{event}")))?;
        let ptr = self
            .types
            .get(self.types[id as usize].size_or_type as usize)?;
        if ptr.kind != KIND_PTR {
            return None;
        }
        let proto = self.types.get(ptr.size_or_type as usize)?;
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        Some(
            proto
                .params
                .iter()
                .skip(1)
                .map(|&p| self.type_name(p))
                .collect(),
        )
    }
}

fn spaced(stars: &str) -> String {
    if stars.is_empty() {
        String::new()
    } else {
        format!(" {stars}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob from (kind, name, size_or_type, extra words) records.
    pub(crate) fn blob(types: &[(u32, &str, u32, u32, Vec<u32>)]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut tbytes = Vec::new();
        for (kind, name, vlen, size_or_type, extra) in types {
            let off = if name.is_empty() {
                0
            } else {
                let o = strings.len() as u32;
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                o
            };
            tbytes.extend(off.to_le_bytes());
            tbytes.extend(((kind << 24) | vlen).to_le_bytes());
            tbytes.extend(size_or_type.to_le_bytes());
            for w in extra {
                tbytes.extend(w.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend(0xeb9fu16.to_le_bytes());
        out.push(1);
        out.push(0);
        out.extend(24u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((tbytes.len() as u32).to_le_bytes());
        out.extend((tbytes.len() as u32).to_le_bytes());
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(tbytes);
        out.extend(strings);
        out
    }

    /// The shape of the real thing: `struct page` (64 bytes, one member), `unsigned int`,
    /// `int`, `gfp_t`, and `btf_trace_mm_page_alloc` = pointer to
    /// `void (void *, struct page *, unsigned int, gfp_t, int)`.
    pub(crate) fn kernel_like(page_size: u32) -> Vec<u8> {
        blob(&[
            (KIND_INT, "unsigned int", 0, 4, vec![32]),         // 1
            (KIND_INT, "int", 0, 4, vec![(1 << 24) | 32]),      // 2
            (KIND_STRUCT, "page", 1, page_size, vec![0, 1, 0]), // 3
            (KIND_PTR, "", 0, 3, vec![]),                       // 4: struct page *
            (KIND_TYPEDEF, "gfp_t", 0, 1, vec![]),              // 5
            (KIND_PTR, "", 0, 0, vec![]),                       // 6: void *
            (
                KIND_FUNC_PROTO,
                "",
                5,
                0,
                vec![0, 6, 0, 4, 0, 1, 0, 5, 0, 2],
            ), // 7
            (KIND_PTR, "", 0, 7, vec![]),                       // 8
            (KIND_TYPEDEF, "btf_trace_mm_page_alloc", 0, 8, vec![]), // 9
            (KIND_FUNC_PROTO, "", 3, 0, vec![0, 6, 0, 4, 0, 1]), // 10
            (KIND_PTR, "", 0, 10, vec![]),                      // 11
            (KIND_TYPEDEF, "btf_trace_mm_page_free", 0, 11, vec![]), // 12
            (KIND_ENUM, "e", 1, 4, vec![0, 0]),                 // 13
            (KIND_DATASEC, ".data..percpu", 1, 0, vec![0, 0, 8]), // 14
        ])
    }

    #[test]
    fn reads_struct_size_and_tracepoint_args() {
        let btf = KernelBtf::parse(&kernel_like(64)).unwrap();
        assert_eq!(btf.struct_size("page"), Some(64));
        assert_eq!(btf.struct_size("folio"), None);
        assert_eq!(
            btf.tracepoint_args("mm_page_alloc").unwrap(),
            ["struct page *", "unsigned int", "gfp_t", "int"]
        );
        assert_eq!(
            btf.tracepoint_args("mm_page_free").unwrap(),
            ["struct page *", "unsigned int"]
        );
        assert_eq!(btf.tracepoint_args("kfree"), None);
    }

    /// A STRUCT/UNION member: (name, type, bit offset).
    type Member<'a> = (&'a str, u32, u32);

    /// `blob` with member names.
    fn blob_with_members(types: &[(u32, &str, u32, Vec<Member<'_>>)]) -> Vec<u8> {
        // Names go first into the string section, in order, so their offsets are known.
        let mut strings = vec![0u8];
        let off = |name: &str, strings: &mut Vec<u8>| -> u32 {
            if name.is_empty() {
                return 0;
            }
            let o = strings.len() as u32;
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            o
        };
        let mut tbytes = Vec::new();
        for (kind, name, size, members) in types {
            let name_off = off(name, &mut strings);
            tbytes.extend(name_off.to_le_bytes());
            tbytes.extend(((kind << 24) | members.len() as u32).to_le_bytes());
            tbytes.extend(size.to_le_bytes());
            if *kind == KIND_INT {
                tbytes.extend(64u32.to_le_bytes());
            }
            for (m, ty, bits) in members {
                let m_off = off(m, &mut strings);
                tbytes.extend(m_off.to_le_bytes());
                tbytes.extend(ty.to_le_bytes());
                tbytes.extend(bits.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend(0xeb9fu16.to_le_bytes());
        out.extend([1, 0]);
        out.extend(24u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((tbytes.len() as u32).to_le_bytes());
        out.extend((tbytes.len() as u32).to_le_bytes());
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(tbytes);
        out.extend(strings);
        out
    }

    #[test]
    fn member_offsets_look_into_anonymous_members() {
        // struct page { unsigned long flags; union { struct { void *lru[2]; } ;
        //   struct { unsigned long compound_head; }; }; ... };  struct slab { unsigned long
        //   __page_flags; struct kmem_cache *slab_cache (at 8 here); }
        let data = blob_with_members(&[
            (KIND_INT, "unsigned long", 8, vec![]),              // 1
            (KIND_STRUCT, "", 16, vec![("lru", 1, 0)]),          // 2
            (KIND_STRUCT, "", 8, vec![("compound_head", 1, 0)]), // 3
            (KIND_UNION, "", 16, vec![("", 2, 0), ("", 3, 0)]),  // 4
            (KIND_CONST, "", 4, vec![]),                         // 5: const union
            (KIND_STRUCT, "page", 64, vec![("flags", 1, 0), ("", 5, 64)]), // 6
            (
                KIND_STRUCT,
                "slab",
                64,
                vec![("__page_flags", 1, 0), ("slab_cache", 1, 64)],
            ),
        ]);
        let btf = KernelBtf::parse(&data).unwrap();
        assert_eq!(btf.member_offset("page", "flags"), Some(0));
        assert_eq!(btf.member_offset("page", "compound_head"), Some(8));
        assert_eq!(btf.member_offset("page", "lru"), Some(8));
        assert_eq!(btf.member_offset("slab", "slab_cache"), Some(8));
        assert_eq!(btf.member_offset("page", "slab_cache"), None);
        assert_eq!(btf.member_offset("folio", "flags"), None);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert_eq!(KernelBtf::parse(b"nope").unwrap_err(), BtfError::BadHeader);
        let mut b = kernel_like(64);
        b.truncate(b.len() - 40);
        assert!(KernelBtf::parse(&b).is_err());
        let mut b = blob(&[(31, "x", 0, 0, vec![])]);
        assert_eq!(KernelBtf::parse(&b).unwrap_err(), BtfError::UnknownKind(31));
        b[0] = 0;
        assert_eq!(KernelBtf::parse(&b).unwrap_err(), BtfError::BadHeader);
    }

    #[test]
    fn this_machines_btf_when_present() {
        // Not a root-only test: /sys/kernel/btf/vmlinux is world-readable where it exists.
        let Ok(btf) = KernelBtf::from_sys_fs() else {
            return;
        };
        let size = btf.struct_size("page").expect("struct page in vmlinux BTF");
        assert!((32..=128).contains(&size), "sizeof(struct page) = {size}");
        let args = btf
            .tracepoint_args("mm_page_alloc")
            .expect("btf_trace_mm_page_alloc");
        assert_eq!(args[0], "struct page *");
        // What the slab programs read an object's cache through.
        assert_eq!(btf.member_offset("page", "compound_head"), Some(8));
        assert!(btf.member_offset("slab", "slab_cache").is_some());
        assert!(btf.member_offset("kmem_cache", "name").is_some());
        assert!(btf.member_offset("kmem_cache", "size").is_some());
    }
}
