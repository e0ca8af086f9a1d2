//! PE/COFF headers, as far as kiln needs them to append sections to an EFI application.
//!
//! Field names and offsets follow Microsoft's "PE Format" specification
//! (<https://learn.microsoft.com/en-us/windows/win32/debug/pe-format>): the MS-DOS stub whose
//! `e_lfanew` (offset 0x3c) points at `PE\0\0`, the 20-byte COFF file header, the PE32+
//! optional header (magic 0x20b; EFI images for x64 and AArch64 are PE32+), then the 40-byte
//! section headers.

/// `IMAGE_FILE_MACHINE_AMD64` and `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_AMD64: u16 = 0x8664;
pub const MACHINE_ARM64: u16 = 0xaa64;
/// Section flags (spec §"Section Flags").
pub const SCN_CNT_CODE: u32 = 0x0000_0020;
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
pub const SCN_MEM_READ: u32 = 0x4000_0000;

const PE32PLUS: u16 = 0x20b;
const COFF_LEN: usize = 20;
pub const SECTION_LEN: usize = 40;
/// Offsets inside the PE32+ optional header.
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
const OPT_NUMBER_OF_RVA_AND_SIZES: usize = 108;
const OPT_DATA_DIRECTORIES: usize = 112;
/// Data directory 4: the attribute certificate table (Authenticode signature).
const DIR_SECURITY: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoffHeader {
    pub machine: u16,
    pub number_of_sections: u16,
    pub time_date_stamp: u32,
    pub pointer_to_symbol_table: u32,
    pub number_of_symbols: u32,
    pub size_of_optional_header: u16,
    pub characteristics: u16,
}

impl CoffHeader {
    pub fn decode(b: &[u8; COFF_LEN]) -> Self {
        CoffHeader {
            machine: le16(b, 0),
            number_of_sections: le16(b, 2),
            time_date_stamp: le32(b, 4),
            pointer_to_symbol_table: le32(b, 8),
            number_of_symbols: le32(b, 12),
            size_of_optional_header: le16(b, 16),
            characteristics: le16(b, 18),
        }
    }

    pub fn encode(&self) -> [u8; COFF_LEN] {
        let mut b = [0u8; COFF_LEN];
        b[0..2].copy_from_slice(&self.machine.to_le_bytes());
        b[2..4].copy_from_slice(&self.number_of_sections.to_le_bytes());
        b[4..8].copy_from_slice(&self.time_date_stamp.to_le_bytes());
        b[8..12].copy_from_slice(&self.pointer_to_symbol_table.to_le_bytes());
        b[12..16].copy_from_slice(&self.number_of_symbols.to_le_bytes());
        b[16..18].copy_from_slice(&self.size_of_optional_header.to_le_bytes());
        b[18..20].copy_from_slice(&self.characteristics.to_le_bytes());
        b
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    /// NUL-padded; names longer than 8 bytes are not used in images.
    pub name: [u8; 8],
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub pointer_to_relocations: u32,
    pub pointer_to_linenumbers: u32,
    pub number_of_relocations: u16,
    pub number_of_linenumbers: u16,
    pub characteristics: u32,
}

impl SectionHeader {
    pub fn decode(b: &[u8; SECTION_LEN]) -> Self {
        let mut name = [0u8; 8];
        name.copy_from_slice(&b[0..8]);
        SectionHeader {
            name,
            virtual_size: le32(b, 8),
            virtual_address: le32(b, 12),
            size_of_raw_data: le32(b, 16),
            pointer_to_raw_data: le32(b, 20),
            pointer_to_relocations: le32(b, 24),
            pointer_to_linenumbers: le32(b, 28),
            number_of_relocations: le16(b, 32),
            number_of_linenumbers: le16(b, 34),
            characteristics: le32(b, 36),
        }
    }

    pub fn encode(&self) -> [u8; SECTION_LEN] {
        let mut b = [0u8; SECTION_LEN];
        b[0..8].copy_from_slice(&self.name);
        b[8..12].copy_from_slice(&self.virtual_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.virtual_address.to_le_bytes());
        b[16..20].copy_from_slice(&self.size_of_raw_data.to_le_bytes());
        b[20..24].copy_from_slice(&self.pointer_to_raw_data.to_le_bytes());
        b[24..28].copy_from_slice(&self.pointer_to_relocations.to_le_bytes());
        b[28..32].copy_from_slice(&self.pointer_to_linenumbers.to_le_bytes());
        b[32..34].copy_from_slice(&self.number_of_relocations.to_le_bytes());
        b[34..36].copy_from_slice(&self.number_of_linenumbers.to_le_bytes());
        b[36..40].copy_from_slice(&self.characteristics.to_le_bytes());
        b
    }

    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(8);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// The end of the section in memory (relative virtual address).
    pub fn virtual_end(&self) -> u64 {
        self.virtual_address as u64 + self.virtual_size.max(self.size_of_raw_data) as u64
    }
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// A parsed PE32+ image: where its headers are, and their decoded values.
#[derive(Debug, Clone)]
pub struct Pe {
    /// File offset of the COFF header (just after `PE\0\0`).
    pub coff_offset: usize,
    pub coff: CoffHeader,
    /// File offset of the optional header.
    pub opt_offset: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub size_of_initialized_data: u32,
    /// The attribute certificate table's (file offset, size), when the image is signed.
    pub security: (u32, u32),
    pub sections: Vec<SectionHeader>,
}

impl Pe {
    /// Where the last section ends in memory (relative virtual address).
    pub fn sections_end(&self) -> u64 {
        self.sections
            .iter()
            .map(|e| e.virtual_end())
            .max()
            .unwrap_or(0)
    }

    pub fn parse(b: &[u8]) -> Result<Pe, String> {
        if b.len() < 0x40 || &b[0..2] != b"MZ" {
            return Err("no MS-DOS header (\"MZ\")".into());
        }
        let pe = le32(b, 0x3c) as usize;
        if b.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err("no PE signature at e_lfanew".into());
        }
        let coff_offset = pe + 4;
        let coff_bytes: &[u8; COFF_LEN] = b
            .get(coff_offset..coff_offset + COFF_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or("truncated COFF header")?;
        let coff = CoffHeader::decode(coff_bytes);
        let opt_offset = coff_offset + COFF_LEN;
        let opt_len = coff.size_of_optional_header as usize;
        let opt = b
            .get(opt_offset..opt_offset + opt_len)
            .ok_or("truncated optional header")?;
        if opt_len < OPT_DATA_DIRECTORIES || le16(opt, 0) != PE32PLUS {
            return Err("not a PE32+ image".into());
        }
        let dirs = le32(opt, OPT_NUMBER_OF_RVA_AND_SIZES) as usize;
        let security = if dirs > DIR_SECURITY && opt_len >= OPT_DATA_DIRECTORIES + 8 * 5 {
            let o = OPT_DATA_DIRECTORIES + 8 * DIR_SECURITY;
            (le32(opt, o), le32(opt, o + 4))
        } else {
            (0, 0)
        };
        let table = opt_offset + opt_len;
        let mut sections = Vec::new();
        for i in 0..coff.number_of_sections as usize {
            let o = table + i * SECTION_LEN;
            let s: &[u8; SECTION_LEN] = b
                .get(o..o + SECTION_LEN)
                .and_then(|s| s.try_into().ok())
                .ok_or("truncated section table")?;
            sections.push(SectionHeader::decode(s));
        }
        let p = Pe {
            coff_offset,
            opt_offset,
            section_alignment: le32(opt, OPT_SECTION_ALIGNMENT),
            file_alignment: le32(opt, OPT_FILE_ALIGNMENT),
            size_of_image: le32(opt, OPT_SIZE_OF_IMAGE),
            size_of_headers: le32(opt, OPT_SIZE_OF_HEADERS),
            size_of_initialized_data: le32(opt, OPT_SIZE_OF_INITIALIZED_DATA),
            security,
            coff,
            sections,
        };
        let pow2 = |a: u32| a != 0 && a.is_power_of_two();
        if !pow2(p.file_alignment) || !pow2(p.section_alignment) {
            return Err("section or file alignment is not a power of two".into());
        }
        Ok(p)
    }

    /// File offset of the section table.
    pub fn section_table_offset(&self) -> usize {
        self.opt_offset + self.coff.size_of_optional_header as usize
    }

    /// Writes the COFF header, the optional header fields kiln changes and the section table
    /// back into `b` (the file's bytes). CheckSum is set to 0: UEFI does not check it, and a
    /// stale value would be wrong (ukify does the same).
    pub fn write_headers(&self, b: &mut [u8]) {
        b[self.coff_offset..self.coff_offset + COFF_LEN].copy_from_slice(&self.coff.encode());
        let o = self.opt_offset;
        let put32 = |b: &mut [u8], at: usize, v: u32| {
            b[o + at..o + at + 4].copy_from_slice(&v.to_le_bytes())
        };
        put32(
            b,
            OPT_SIZE_OF_INITIALIZED_DATA,
            self.size_of_initialized_data,
        );
        put32(b, OPT_SIZE_OF_IMAGE, self.size_of_image);
        put32(b, OPT_SIZE_OF_HEADERS, self.size_of_headers);
        put32(b, OPT_CHECKSUM, 0);
        let t = self.section_table_offset();
        for (i, s) in self.sections.iter().enumerate() {
            b[t + i * SECTION_LEN..t + (i + 1) * SECTION_LEN].copy_from_slice(&s.encode());
        }
    }
}

pub fn round_up(x: u64, align: u64) -> u64 {
    x.div_ceil(align) * align
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small PE32+ EFI application: headers in 0x400 bytes, `.text` and `.data`.
    pub(crate) fn tiny_pe(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 0x600];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = CoffHeader {
            machine,
            number_of_sections: 2,
            time_date_stamp: 0,
            pointer_to_symbol_table: 0,
            number_of_symbols: 0,
            size_of_optional_header: (OPT_DATA_DIRECTORIES + 16 * 8) as u16,
            characteristics: 0x206,
        };
        b[0x84..0x98].copy_from_slice(&coff.encode());
        let o = 0x98;
        b[o..o + 2].copy_from_slice(&PE32PLUS.to_le_bytes());
        let put = |b: &mut Vec<u8>, at: usize, v: u32| {
            b[o + at..o + at + 4].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut b, OPT_SECTION_ALIGNMENT, 0x1000);
        put(&mut b, OPT_FILE_ALIGNMENT, 0x200);
        put(&mut b, OPT_SIZE_OF_IMAGE, 0x3000);
        put(&mut b, OPT_SIZE_OF_HEADERS, 0x400);
        put(&mut b, OPT_NUMBER_OF_RVA_AND_SIZES, 16);
        let t = o + coff.size_of_optional_header as usize;
        let sec = |name: &[u8], va: u32, raw: u32, ch: u32| {
            let mut n = [0u8; 8];
            n[..name.len()].copy_from_slice(name);
            SectionHeader {
                name: n,
                virtual_size: 0x10,
                virtual_address: va,
                size_of_raw_data: 0x100,
                pointer_to_raw_data: raw,
                pointer_to_relocations: 0,
                pointer_to_linenumbers: 0,
                number_of_relocations: 0,
                number_of_linenumbers: 0,
                characteristics: ch,
            }
        };
        let text = sec(b".text", 0x1000, 0x400, 0x6000_0020);
        let data = sec(b".data", 0x2000, 0x500, 0xc000_0040);
        b[t..t + 40].copy_from_slice(&text.encode());
        b[t + 40..t + 80].copy_from_slice(&data.encode());
        b
    }

    #[test]
    fn headers_round_trip() {
        let b = tiny_pe(MACHINE_AMD64);
        let p = Pe::parse(&b).unwrap();
        assert_eq!(p.coff.machine, MACHINE_AMD64);
        assert_eq!(p.sections.len(), 2);
        assert_eq!(p.sections[1].name(), ".data");
        assert_eq!((p.section_alignment, p.file_alignment), (0x1000, 0x200));
        for s in &p.sections {
            assert_eq!(SectionHeader::decode(&s.encode()), *s);
        }
        assert_eq!(CoffHeader::decode(&p.coff.encode()), p.coff);
        let mut again = b.clone();
        p.write_headers(&mut again);
        assert_eq!(again, b, "writing unchanged headers back changes nothing");
        assert!(Pe::parse(&b[..0x90]).is_err());
        assert!(Pe::parse(b"MZ").is_err());
    }
}
