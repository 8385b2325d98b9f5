//! Can this build output run on that server? The ELF files among a deploy's artifacts, what each
//! needs (architecture, program interpreter, glibc version), and the judgement of those needs
//! against a server's platform as [`PLATFORM_PROBE`] reports it.
//!
//! Reading is cheap by design: the first 4 bytes of a file tell whether it is ELF at all, and an
//! ELF file is read through [`ReadCache`], which reads only the ranges parsed (the file header,
//! the program headers, the interpreter path, the section headers, the version-needed section
//! and the strings it names), never the whole file. Judging ([`incompatibility`]) is pure.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::Path;

use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{FileHeader, ProgramHeader, SectionTable};
use object::read::{FileKind, ReadCache, ReadRef, StringTable};
use object::Endianness;

/// A POSIX `sh` snippet that prints the server's platform as lines [`parse_platform`] reads:
/// `platform machine <uname -m>`, `platform glibc <x.y>` when `getconf GNU_LIBC_VERSION` names a
/// glibc, and `platform interp <path>` for each program interpreter present in the usual places.
/// Besides `uname` and `getconf` it uses only shell builtins, and it exits 0.
pub const PLATFORM_PROBE: &str = r#"printf 'platform machine %s\n' "$(uname -m)"
if v=$(getconf GNU_LIBC_VERSION 2>/dev/null); then
  case $v in 'glibc '*) printf 'platform glibc %s\n' "${v#glibc }" ;; esac
fi
for f in /lib/ld-* /lib64/ld-* /usr/lib/ld-* /usr/lib64/ld-* /lib/*/ld-*; do
  if [ -e "$f" ]; then printf 'platform interp %s\n' "$f"; fi
done
"#;

/// What a server's platform offers, from the `platform ...` lines of [`PLATFORM_PROBE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    /// The machine hardware name as `uname -m` prints it: `x86_64`, `aarch64`, `armv7l`.
    pub machine: String,
    /// The glibc version `(major, minor)`; `None` where `getconf` names no glibc (musl, others).
    pub glibc: Option<(u32, u32)>,
    /// The program interpreters present among the probed paths (`/lib64/ld-linux-x86-64.so.2`).
    pub interpreters: Vec<String>,
}

/// What one ELF file needs from the server that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// The file as messages show it: the artifact path, then the path under it for a directory
    /// (`target/release/hello`, `dist/bin/tool`).
    pub path: String,
    /// The processor it is built for.
    pub architecture: Architecture,
    /// Its ELF class: 32 or 64.
    pub bits: u8,
    /// The program interpreter it names (`PT_INTERP`); `None` for a static binary.
    pub interpreter: Option<String>,
    /// The highest `GLIBC_x.y` among the versions it needs (`.gnu.version_r`); `None` when it
    /// needs no glibc symbol version (static, or musl).
    pub glibc: Option<(u32, u32)>,
}

/// A processor family, as far as telling where a binary runs needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Architecture {
    /// 64-bit x86 (`EM_X86_64`, ELF 64-bit).
    X86_64,
    /// 32-bit x86 (`EM_386`); runs on `x86_64` and `i?86`.
    I386,
    /// 64-bit ARM (`EM_AARCH64`, ELF 64-bit).
    Aarch64,
    /// 32-bit ARM (`EM_ARM`); runs on `armv6l`, `armv7l`, `armv8l` and `aarch64`.
    Arm,
    /// 64-bit RISC-V (`EM_RISCV`, ELF 64-bit).
    Riscv64,
    /// 64-bit little-endian POWER (`EM_PPC64`, ELF 64-bit, little-endian).
    Ppc64le,
    /// IBM Z (`EM_S390`, ELF 64-bit).
    S390x,
    /// 64-bit LoongArch (`EM_LOONGARCH`, ELF 64-bit).
    Loongarch64,
    /// Anything else, by the name `uname -m` would print for it where known (`ppc64`, `mips`),
    /// else `e_machine <number>`; it runs only where `uname -m` prints that very name.
    Other(String),
}

impl Architecture {
    /// The name messages use, the one `uname -m` prints for it where there is one.
    pub fn name(&self) -> &str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::I386 => "i386",
            Architecture::Aarch64 => "aarch64",
            Architecture::Arm => "arm",
            Architecture::Riscv64 => "riscv64",
            Architecture::Ppc64le => "ppc64le",
            Architecture::S390x => "s390x",
            Architecture::Loongarch64 => "loongarch64",
            Architecture::Other(name) => name,
        }
    }

    /// Whether a binary built for this runs on a machine whose `uname -m` is `machine`.
    pub fn runs_on(&self, machine: &str) -> bool {
        match self {
            Architecture::X86_64 => matches!(machine, "x86_64" | "amd64"),
            Architecture::I386 => matches!(machine, "x86_64" | "amd64" | "i386" | "i486" | "i586" | "i686"),
            Architecture::Aarch64 => matches!(machine, "aarch64" | "arm64"),
            Architecture::Arm => matches!(machine, "armv6l" | "armv7l" | "armv8l" | "aarch64" | "arm64"),
            other => other.name() == machine,
        }
    }

    /// The architecture of an ELF file's `e_machine`, class and byte order.
    fn from_elf(machine: elf::Machine, bits: u8, endian: Endianness) -> Architecture {
        match (machine, bits) {
            (elf::EM_X86_64, 64) => Architecture::X86_64,
            (elf::EM_386, 32) => Architecture::I386,
            (elf::EM_AARCH64, 64) => Architecture::Aarch64,
            (elf::EM_ARM, 32) => Architecture::Arm,
            (elf::EM_RISCV, 64) => Architecture::Riscv64,
            (elf::EM_PPC64, 64) if endian == Endianness::Little => Architecture::Ppc64le,
            (elf::EM_S390, 64) => Architecture::S390x,
            (elf::EM_LOONGARCH, 64) => Architecture::Loongarch64,
            _ => {
                let name = match (machine, bits) {
                    (elf::EM_X86_64, 32) => "x32",
                    (elf::EM_PPC64, 64) => "ppc64",
                    (elf::EM_PPC, 32) => "ppc",
                    (elf::EM_RISCV, 32) => "riscv32",
                    (elf::EM_MIPS, 32) => "mips",
                    (elf::EM_MIPS, 64) => "mips64",
                    (elf::EM_SPARCV9, 64) => "sparc64",
                    _ => return Architecture::Other(format!("e_machine {}", machine.0)),
                };
                Architecture::Other(name.to_string())
            }
        }
    }
}

/// Reads the `platform ...` lines of a script's standard output ([`PLATFORM_PROBE`]); other
/// lines are ignored. `None` when there is no `platform machine` line (the probe did not run).
pub fn parse_platform(stdout: &str) -> Option<Platform> {
    let mut machine = None;
    let mut platform = Platform::default();
    for line in stdout.lines() {
        let Some(line) = line.strip_prefix("platform ") else { continue };
        if let Some(value) = line.strip_prefix("machine ") {
            machine = Some(value.trim().to_string());
        } else if let Some(value) = line.strip_prefix("glibc ") {
            platform.glibc = parse_version(value.trim());
        } else if let Some(value) = line.strip_prefix("interp ") {
            platform.interpreters.push(value.to_string());
        }
    }
    platform.machine = machine?;
    Some(platform)
}

/// Every ELF executable and shared library under `local` with what it needs. `local` is a file
/// or a directory; the path itself is resolved as the upload reads it, but under a directory
/// symbolic links are not followed. `display` names `local` in messages, and a file under it is
/// shown as `display/relative/path`. Relocatable objects (`.o`, eBPF programs) and files that
/// are not ELF are skipped.
pub fn scan(local: &Path, display: &str) -> Result<Vec<Needs>, String> {
    let display = display.trim_end_matches('/');
    let metadata = fs::metadata(local).map_err(|err| unreadable(display, err))?;
    let mut found = Vec::new();
    if metadata.is_dir() {
        walk(local, display, &mut found)?;
    } else if metadata.is_file() {
        if let Some(kind) = foreign_executable(local) {
            // A file artifact is the program to run; inside a directory one, such files may be
            // downloads for other systems, and are left alone.
            return Err(format!(
                "`{display}` is a {kind} executable, which no Linux server runs: build it for a Linux target \
                 (in a Linux container, or with `cargo zigbuild --target x86_64-unknown-linux-gnu`)"
            ));
        }
        found.extend(read_needs(local, display)?);
    }
    Ok(found)
}

/// Whether the file at `local` is a macOS (Mach-O) or Windows (PE) program, by its first bytes.
fn foreign_executable(local: &Path) -> Option<&'static str> {
    let mut magic = [0u8; 4];
    File::open(local).and_then(|mut file| file.read_exact(&mut magic)).ok()?;
    match u32::from_be_bytes(magic) {
        0xfeed_face | 0xfeed_facf | 0xcefa_edfe | 0xcffa_edfe => Some("macOS (Mach-O)"),
        _ if magic[..2] == *b"MZ" => Some("Windows (PE)"),
        _ => None,
    }
}

/// Why a binary that needs `needs` cannot run on `platform` of `server`, with the fix; `None`
/// when it can. A static binary needs only the architecture; an interpreter outside the probed
/// directories (`/nix/store/...`) is not judged.
pub fn incompatibility(needs: &Needs, server: &str, platform: &Platform) -> Option<String> {
    let (path, machine) = (&needs.path, &platform.machine);
    let targets = targets(machine);
    let musl = targets.map_or_else(|| "a musl target".to_string(), |(_, musl)| format!("`{musl}`"));
    if !needs.architecture.runs_on(machine) {
        let fix = match targets {
            Some((gnu, musl)) => format!("build for `{gnu}` (or `{musl}`)"),
            None => format!("build for the target of `{machine}`"),
        };
        let built = format!("is built for {} (ELF {}-bit)", needs.architecture.name(), needs.bits);
        return Some(format!("`{path}` {built} but `{server}` is {machine}: {fix}"));
    }
    if let Some(needed) = needs.glibc {
        match platform.glibc {
            Some(has) if has >= needed => {}
            Some(has) => {
                let (gnu, has) = (targets.map_or("<target>", |(gnu, _)| gnu), version(has));
                return Some(format!(
                    "`{path}` needs glibc {} but `{server}` has glibc {has}: build against an older glibc (in a \
                     container of the server's distribution, or with `cargo zigbuild --target {gnu}.{has}`), \
                     or for a musl target",
                    version(needed),
                ));
            }
            None => {
                return Some(format!(
                    "`{path}` needs glibc {} but `{server}` has no glibc (`getconf GNU_LIBC_VERSION` names \
                     none; musl or another C library): build for {musl}, which links statically",
                    version(needed)
                ));
            }
        }
    }
    let interpreter = needs.interpreter.as_ref().filter(|interpreter| probed(interpreter))?;
    if platform.interpreters.contains(interpreter) {
        return None;
    }
    Some(format!(
        "`{path}` needs the interpreter `{interpreter}`, which `{server}` lacks: build for {musl}, which links \
         statically, or install the C library that provides it"
    ))
}

/// Adds the ELF files under directory `dir` (shown as `display`) to `found`, in name order.
fn walk(dir: &Path, display: &str, found: &mut Vec<Needs>) -> Result<(), String> {
    let entries = fs::read_dir(dir).and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
    let mut entries = entries.map_err(|err| unreadable(display, err))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let shown = format!("{display}/{}", entry.file_name().to_string_lossy());
        // `DirEntry::file_type` does not follow symbolic links: a link is neither file nor dir.
        let file_type = entry.file_type().map_err(|err| unreadable(&shown, err))?;
        if file_type.is_dir() {
            walk(&entry.path(), &shown, found)?;
        } else if file_type.is_file() {
            found.extend(read_needs(&entry.path(), &shown)?);
        }
    }
    Ok(())
}

/// What the file at `local` needs, or `None` when it is not an ELF executable or library.
fn read_needs(local: &Path, display: &str) -> Result<Option<Needs>, String> {
    let mut file = File::open(local).map_err(|err| unreadable(display, err))?;
    let mut magic = [0; 4];
    match file.read_exact(&mut magic) {
        Ok(()) if magic == elf::ELFMAG => {}
        Ok(()) => return Ok(None),
        Err(err) if err.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(unreadable(display, err)),
    }
    // The cache reads (and keeps) only the byte ranges the parser asks for.
    let cache = ReadCache::new(file);
    let res = match FileKind::parse(&cache) {
        Ok(FileKind::Elf32) => read_elf::<FileHeader32<Endianness>, _>(&cache, display),
        Ok(FileKind::Elf64) => read_elf::<FileHeader64<Endianness>, _>(&cache, display),
        Ok(_) => return Ok(None),
        Err(err) => Err(err),
    };
    res.map_err(|err| {
        format!("cannot parse the ELF file `{display}`: {err}: rebuild it, or leave it out of `artifacts`")
    })
}

/// What the ELF file in `data` needs, or `None` when it is neither executable nor library.
fn read_elf<'data, Elf, R>(data: R, display: &str) -> object::read::Result<Option<Needs>>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    if !matches!(header.e_type(endian), elf::ET_EXEC | elf::ET_DYN) {
        return Ok(None);
    }
    let bits = if header.is_type_64() { 64 } else { 32 };
    let mut interpreter = None;
    for segment in header.program_headers(endian, data)? {
        if let Some(path) = segment.interpreter(endian, data)? {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    // Section names are not needed, so the table is made without `.shstrtab`.
    let sections = SectionTable::<Elf, R>::new(header.section_headers(endian, data)?, StringTable::default());
    let mut glibc = None;
    if let Some((mut files, strings_index)) = sections.gnu_verneed(endian, data)? {
        let strings = sections.strings(endian, data, strings_index)?;
        while let Some((_, mut versions)) = files.next()? {
            while let Some(version) = versions.next()? {
                glibc = glibc.max(glibc_version(version.name(endian, strings)?));
            }
        }
    }
    Ok(Some(Needs {
        path: display.to_string(),
        architecture: Architecture::from_elf(header.e_machine(endian), bits, endian),
        bits,
        interpreter,
        glibc,
    }))
}

/// The glibc release a needed version name stands for: `GLIBC_2.2.5` is 2.2. Names that are no
/// release are none, except `GLIBC_ABI_DT_RELR` (packed relocations), which glibc 2.36 added.
fn glibc_version(name: &[u8]) -> Option<(u32, u32)> {
    if name == b"GLIBC_ABI_DT_RELR" {
        return Some((2, 36));
    }
    parse_version(std::str::from_utf8(name).ok()?.strip_prefix("GLIBC_")?)
}

/// `(major, minor)` of `2.31` or `2.2.5`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `2.31` for `(2, 31)`.
fn version((major, minor): (u32, u32)) -> String {
    format!("{major}.{minor}")
}

/// Whether `interpreter` lies where [`PLATFORM_PROBE`] looks: `ld-*` in `/lib`, `/lib64`,
/// `/usr/lib`, `/usr/lib64`, or one directory below `/lib`.
fn probed(interpreter: &str) -> bool {
    let Some((dir, file)) = interpreter.rsplit_once('/') else { return false };
    let under_lib = dir.strip_prefix("/lib/").is_some_and(|sub| !sub.is_empty() && !sub.contains('/'));
    file.starts_with("ld-") && (matches!(dir, "/lib" | "/lib64" | "/usr/lib" | "/usr/lib64") || under_lib)
}

/// The Rust targets (glibc, musl) for a machine whose `uname -m` is `machine`.
fn targets(machine: &str) -> Option<(&'static str, &'static str)> {
    Some(match machine {
        "x86_64" | "amd64" => ("x86_64-unknown-linux-gnu", "x86_64-unknown-linux-musl"),
        "i686" => ("i686-unknown-linux-gnu", "i686-unknown-linux-musl"),
        "i586" => ("i586-unknown-linux-gnu", "i586-unknown-linux-musl"),
        "aarch64" | "arm64" => ("aarch64-unknown-linux-gnu", "aarch64-unknown-linux-musl"),
        "armv7l" | "armv8l" => ("armv7-unknown-linux-gnueabihf", "armv7-unknown-linux-musleabihf"),
        "armv6l" => ("arm-unknown-linux-gnueabihf", "arm-unknown-linux-musleabihf"),
        "riscv64" => ("riscv64gc-unknown-linux-gnu", "riscv64gc-unknown-linux-musl"),
        "ppc64le" => ("powerpc64le-unknown-linux-gnu", "powerpc64le-unknown-linux-musl"),
        "s390x" => ("s390x-unknown-linux-gnu", "s390x-unknown-linux-musl"),
        "loongarch64" => ("loongarch64-unknown-linux-gnu", "loongarch64-unknown-linux-musl"),
        _ => return None,
    })
}

/// The message for an artifact that cannot be read.
fn unreadable(display: &str, err: std::io::Error) -> String {
    format!("cannot read artifact `{display}`: {err}: did the build make it?")
}

/// Every ELF file among `artifacts` (each a local file or directory and its path in the
/// release) with what it needs. An artifact that does not exist, or is neither a file nor a
/// directory, is an error that says what to do.
pub fn scan_artifacts<'a>(artifacts: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Result<Vec<Needs>, String> {
    let mut found = Vec::new();
    for (local, path) in artifacts {
        match fs::metadata(local) {
            Err(_) => {
                return Err(format!(
                    "artifact `{path}` is not at `{}` after the build: have a `build` command make it there, or \
                     correct its path in `artifacts`",
                    local.display()
                ))
            }
            Ok(metadata) if !metadata.is_file() && !metadata.is_dir() => {
                return Err(format!(
                    "artifact `{path}` at `{}` is neither a file nor a directory: a release holds only those",
                    local.display()
                ))
            }
            Ok(_) => found.extend(scan(local, path)?),
        }
    }
    Ok(found)
}

/// Why the binaries in `needs` cannot run on `servers` (each a name and the platform it
/// reported): one line per problem, or `None` when every binary fits every server.
pub fn problems(needs: &[Needs], servers: &[(&str, Option<&Platform>)]) -> Option<String> {
    let mut lines: Vec<String> = Vec::new();
    for (server, platform) in servers {
        let Some(platform) = platform else {
            if !needs.is_empty() {
                lines.push(format!("`{server}` did not report its platform, so its binaries were not checked"));
            }
            continue;
        };
        lines.extend(needs.iter().filter_map(|needs| incompatibility(needs, server, platform)));
    }
    (!lines.is_empty()).then(|| lines.join("; "))
}

#[cfg(test)]
mod tests;
