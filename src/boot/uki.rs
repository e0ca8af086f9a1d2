//! A Unified Kernel Image: systemd-stub with the kernel, initrd, command line and os-release
//! appended as PE sections (the Unified Kernel Image specification, uapi-group.org).
//!
//! The rules are the PE/COFF ones, as ukify applies them: each new section starts at the end of
//! the previous one rounded up to SectionAlignment (so above all of the stub's sections), its
//! raw data at a FileAlignment multiple with SizeOfRawData rounded up likewise; SizeOfImage
//! covers the last section; the new headers must fit in SizeOfHeaders (the space before the first
//! section's data); `.linux` gets the kernel's own SizeOfImage as VirtualSize so that a stub that
//! runs it in place has room for its uninitialised data. Signed stubs are refused: appending
//! would invalidate the signature.

use super::pe::{self, round_up, Pe, SectionHeader, SECTION_LEN};

/// One section to append.
pub struct Section<'a> {
    pub name: &'static str,
    pub data: &'a [u8],
}

/// The stub with `sections` appended, in order. `machine` is the architecture's COFF machine.
pub fn assemble(stub: &[u8], machine: u16, sections: &[Section]) -> Result<Vec<u8>, String> {
    let mut p = Pe::parse(stub).map_err(|e| format!("the stub is not a PE32+ image: {e}"))?;
    if p.coff.machine != machine {
        return Err(format!(
            "the stub is for machine {:#06x}, the image's architecture needs {machine:#06x}",
            p.coff.machine
        ));
    }
    if p.security != (0, 0) {
        return Err("the stub is signed; appending sections would break its signature".into());
    }
    let mut out = stub.to_vec();
    // A symbol table at the very end (older stubs keep one) is dropped, as ukify does: an
    // image file should not have one, and the new sections go where it was.
    if p.coff.pointer_to_symbol_table != 0 {
        let at = p.coff.pointer_to_symbol_table as usize;
        let syms = at + 18 * p.coff.number_of_symbols as usize;
        let strings = out
            .get(syms..syms + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if syms + strings == out.len() || syms == out.len() {
            out.truncate(at);
            p.coff.pointer_to_symbol_table = 0;
            p.coff.number_of_symbols = 0;
        }
    }
    let fa = p.file_alignment as u64;
    let sa = p.section_alignment as u64;
    p.size_of_headers = round_up(p.size_of_headers as u64, fa) as u32;
    let first_raw = p
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .map(|s| s.pointer_to_raw_data)
        .min()
        .unwrap_or(p.size_of_headers);
    let table_end = p.section_table_offset() + (p.sections.len() + sections.len()) * SECTION_LEN;
    if table_end as u64 > p.size_of_headers.min(first_raw) as u64 {
        return Err(format!(
            "the stub's headers have no room for {} more section headers",
            sections.len()
        ));
    }
    for s in sections {
        if p.sections.iter().any(|e| e.name() == s.name) {
            return Err(format!("the stub already has a {} section", s.name));
        }
        let virtual_address = round_up(p.sections_end(), sa);
        let raw_at = round_up(out.len() as u64, fa);
        let raw_size = round_up(s.data.len() as u64, fa);
        let mut virtual_size = s.data.len() as u64;
        let mut characteristics = pe::SCN_MEM_READ | pe::SCN_CNT_INITIALIZED_DATA;
        if s.name == ".linux" {
            if let Ok(k) = Pe::parse(s.data) {
                virtual_size = virtual_size.max(k.size_of_image as u64);
            }
            // Kernels started through the EFI handover protocol run from this section.
            characteristics = pe::SCN_MEM_READ | pe::SCN_CNT_CODE;
        }
        let end = virtual_address + virtual_size.max(raw_size);
        if end > u32::MAX as u64 || raw_at + raw_size > u32::MAX as u64 {
            return Err(format!("{} makes the image larger than 4 GiB", s.name));
        }
        let mut name = [0u8; 8];
        if s.name.len() > 8 {
            return Err(format!("section name {} is longer than 8 bytes", s.name));
        }
        name[..s.name.len()].copy_from_slice(s.name.as_bytes());
        out.resize(raw_at as usize, 0);
        out.extend_from_slice(s.data);
        out.resize((raw_at + raw_size) as usize, 0);
        p.size_of_initialized_data = p
            .size_of_initialized_data
            .saturating_add(virtual_size as u32);
        p.sections.push(SectionHeader {
            name,
            virtual_size: virtual_size as u32,
            virtual_address: virtual_address as u32,
            size_of_raw_data: raw_size as u32,
            pointer_to_raw_data: raw_at as u32,
            pointer_to_relocations: 0,
            pointer_to_linenumbers: 0,
            number_of_relocations: 0,
            number_of_linenumbers: 0,
            characteristics,
        });
    }
    p.coff.number_of_sections = p.sections.len() as u16;
    p.size_of_image = round_up(p.sections_end(), sa) as u32;
    p.write_headers(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::pe::tests::tiny_pe;
    use super::super::pe::MACHINE_AMD64;
    use super::*;

    #[test]
    fn sections_follow_the_stub_aligned() {
        let stub = tiny_pe(MACHINE_AMD64);
        let osrel = b"ID=debian\n".to_vec();
        let linux = vec![0xabu8; 5000];
        let uki = assemble(
            &stub,
            MACHINE_AMD64,
            &[
                Section {
                    name: ".osrel",
                    data: &osrel,
                },
                Section {
                    name: ".linux",
                    data: &linux,
                },
            ],
        )
        .unwrap();
        let p = Pe::parse(&uki).unwrap();
        assert_eq!(p.sections.len(), 4);
        let (o, l) = (&p.sections[2], &p.sections[3]);
        assert_eq!(o.name(), ".osrel");
        assert_eq!(
            o.virtual_address, 0x3000,
            "after .data (0x2000 + 0x100), 4 KiB aligned"
        );
        assert_eq!(o.virtual_size, 10);
        assert_eq!(o.size_of_raw_data, 0x200);
        assert_eq!(o.pointer_to_raw_data, 0x600);
        assert_eq!(l.virtual_address, 0x4000);
        assert_eq!(l.size_of_raw_data, 5120);
        assert_eq!(l.pointer_to_raw_data, 0x800);
        let at = l.pointer_to_raw_data as usize;
        assert_eq!(&uki[at..at + 5000], &linux[..]);
        assert_eq!(p.size_of_image, 0x6000);
        assert_eq!(uki.len(), 0x800 + 5120);
        assert!(assemble(&stub, pe::MACHINE_ARM64, &[]).is_err());
    }

    #[test]
    fn full_headers_are_refused() {
        let stub = tiny_pe(MACHINE_AMD64);
        let many: Vec<Section> = (0..20)
            .map(|_| Section {
                name: ".x",
                data: b"x",
            })
            .collect();
        let e = assemble(&stub, MACHINE_AMD64, &many).unwrap_err();
        assert!(e.contains("no room"), "{e}");
    }
}
