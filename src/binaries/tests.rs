use std::process::Command;

use super::*;

/// What `program args` prints, trimmed.
fn output(program: &str, args: &[&str]) -> String {
    let res = Command::new(program).args(args).output().unwrap();
    assert!(res.status.success(), "`{program}` failed: {res:?}");
    String::from_utf8(res.stdout).unwrap().trim().to_string()
}

/// The running test binary: a dynamic glibc executable of this machine.
fn this_binary() -> Needs {
    let mut found = scan(&std::env::current_exe().unwrap(), "target/debug/tests").unwrap();
    assert_eq!(found.len(), 1);
    found.remove(0)
}

/// This machine's platform, asked of `uname` and `getconf` directly.
fn this_machine(interpreters: Vec<String>) -> Platform {
    let glibc = output("getconf", &["GNU_LIBC_VERSION"]).strip_prefix("glibc ").and_then(parse_version);
    Platform { machine: output("uname", &["-m"]), glibc, interpreters }
}

/// A 64-byte ELF64 little-endian executable header for aarch64 (`e_machine` 183), nothing more.
fn aarch64_header() -> Vec<u8> {
    let mut header = vec![0; 64];
    header[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    header[16..18].copy_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    header[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine: EM_AARCH64
    header[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
    header[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    header
}

/// What a 64-bit `target/release/hello` needs.
fn needs(architecture: Architecture, interpreter: Option<&str>, glibc: Option<(u32, u32)>) -> Needs {
    let interpreter = interpreter.map(str::to_string);
    Needs { path: "target/release/hello".to_string(), architecture, bits: 64, interpreter, glibc }
}

/// A platform from literal values.
fn platform(machine: &str, glibc: Option<(u32, u32)>, interpreters: &[&str]) -> Platform {
    let interpreters = interpreters.iter().map(|path| path.to_string()).collect();
    Platform { machine: machine.to_string(), glibc, interpreters }
}

#[test]
fn a_glibc_binary_of_this_machine_names_its_architecture_interpreter_and_glibc() {
    let needs = this_binary();
    assert_eq!(needs.path, "target/debug/tests");
    assert_eq!(needs.architecture.name(), output("uname", &["-m"]));
    assert_eq!(usize::from(needs.bits), 8 * std::mem::size_of::<usize>());
    assert!(needs.interpreter.as_deref().is_some_and(|path| path.starts_with('/')), "{needs:?}");
    assert!(needs.glibc >= Some((2, 2)), "{needs:?}");
}

#[test]
fn a_glibc_binary_fits_the_machine_it_was_built_on() {
    let needs = this_binary();
    let platform = this_machine(needs.interpreter.iter().cloned().collect());
    assert_eq!(incompatibility(&needs, "localhost", &platform), None);
}

#[test]
fn a_glibc_binary_is_refused_where_glibc_is_older() {
    let needs = this_binary();
    let mut platform = this_machine(needs.interpreter.iter().cloned().collect());
    platform.glibc = Some((2, 17));
    let message = incompatibility(&needs, "deploy@web1:22", &platform).unwrap();
    let needed = version(needs.glibc.unwrap());
    assert!(message.contains(&format!("needs glibc {needed} but `deploy@web1:22` has glibc 2.17")), "{message}");
    let (gnu, _) = targets(&platform.machine).unwrap();
    assert!(message.contains(&format!("`cargo zigbuild --target {gnu}.2.17`")), "{message}");
}

#[test]
fn a_glibc_binary_is_refused_on_another_architecture() {
    let needs = this_binary();
    let machine = if needs.architecture == Architecture::Aarch64 { "x86_64" } else { "aarch64" };
    let message = incompatibility(&needs, "web1", &platform(machine, Some((2, 99)), &[])).unwrap();
    let built = format!("is built for {} (ELF 64-bit) but `web1` is {machine}", needs.architecture.name());
    assert!(message.contains(&built), "{message}");
}

#[test]
fn a_hand_made_aarch64_header_is_refused_on_x86_64() {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), aarch64_header()).unwrap();
    let found = scan(file.path(), "target/release/hello").unwrap();
    assert_eq!(found, [needs(Architecture::Aarch64, None, None)]);
    let message = incompatibility(&found[0], "web1", &platform("x86_64", Some((2, 36)), &[])).unwrap();
    assert_eq!(
        message,
        "`target/release/hello` is built for aarch64 (ELF 64-bit) but `web1` is x86_64: build for \
         `x86_64-unknown-linux-gnu` (or `x86_64-unknown-linux-musl`)"
    );
}

#[test]
fn files_that_are_not_elf_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [("run.sh", "#!/bin/sh\necho hi\n"), ("README", "hello\n"), ("tiny", "\x7fE"), ("empty", "")]
    {
        fs::write(dir.path().join(name), content).unwrap();
        assert_eq!(scan(&dir.path().join(name), name), Ok(vec![]), "{name}");
    }
    assert_eq!(scan(dir.path(), "dist"), Ok(vec![]));
}

#[test]
fn a_directory_reports_a_nested_elf_once_and_follows_no_symlink() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("bin/arm")).unwrap();
    fs::write(dir.path().join("bin/arm/hello"), aarch64_header()).unwrap();
    fs::write(dir.path().join("bin/start.sh"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("bin/arm/hello", dir.path().join("hello")).unwrap();
    std::os::unix::fs::symlink("bin", dir.path().join("linked-bin")).unwrap();
    let found = scan(dir.path(), "dist/").unwrap();
    let paths: Vec<_> = found.iter().map(|needs| needs.path.as_str()).collect();
    assert_eq!(paths, ["dist/bin/arm/hello"]);
}

#[test]
fn a_static_binary_needs_only_its_architecture() {
    let needs = needs(Architecture::X86_64, None, None);
    assert_eq!(incompatibility(&needs, "web1", &platform("x86_64", None, &[])), None);
    let i386 = Needs { architecture: Architecture::I386, bits: 32, ..needs };
    assert_eq!(incompatibility(&i386, "web1", &platform("x86_64", None, &[])), None);
}

#[test]
fn a_glibc_binary_is_refused_where_there_is_no_glibc() {
    let needs = needs(Architecture::Aarch64, Some("/lib/ld-linux-aarch64.so.1"), Some((2, 17)));
    let alpine = platform("aarch64", None, &["/lib/ld-linux-aarch64.so.1"]);
    let message = incompatibility(&needs, "web1", &alpine).unwrap();
    assert!(message.contains("needs glibc 2.17 but `web1` has no glibc"), "{message}");
    assert!(message.contains("`aarch64-unknown-linux-musl`"), "{message}");
}

#[test]
fn a_missing_interpreter_is_refused_unless_it_lies_outside_the_probed_directories() {
    let musl = needs(Architecture::X86_64, Some("/lib/ld-musl-x86_64.so.1"), None);
    let debian = platform("x86_64", Some((2, 36)), &["/lib64/ld-linux-x86-64.so.2"]);
    let message = incompatibility(&musl, "web1", &debian).unwrap();
    assert!(message.starts_with("`target/release/hello` needs the interpreter `/lib/ld-musl-x86_64.so.1`, which `web1` lacks: build for `x86_64-unknown-linux-musl`"), "{message}");
    let nix = needs(Architecture::X86_64, Some("/nix/store/abc-glibc/lib/ld-linux-x86-64.so.2"), None);
    assert_eq!(incompatibility(&nix, "web1", &debian), None);
}

#[test]
fn architectures_match_the_names_uname_prints() {
    assert!(Architecture::Aarch64.runs_on("arm64"));
    assert!(Architecture::Arm.runs_on("armv7l") && Architecture::Arm.runs_on("aarch64"));
    assert!(Architecture::I386.runs_on("i686") && !Architecture::X86_64.runs_on("i686"));
    assert!(Architecture::Ppc64le.runs_on("ppc64le") && !Architecture::Ppc64le.runs_on("ppc64"));
    assert!(Architecture::Other("mips64".into()).runs_on("mips64"));
    assert!(!Architecture::Other("e_machine 9999".into()).runs_on("x86_64"));
}

#[test]
fn glibc_versions_come_from_version_names() {
    assert_eq!(glibc_version(b"GLIBC_2.2.5"), Some((2, 2)));
    assert_eq!(glibc_version(b"GLIBC_2.34"), Some((2, 34)));
    assert_eq!(glibc_version(b"GLIBC_ABI_DT_RELR"), Some((2, 36)));
    assert_eq!(glibc_version(b"GLIBC_PRIVATE"), None);
    assert_eq!(glibc_version(b"GLIBCXX_3.4.29"), None);
}

#[test]
fn parse_platform_reads_platform_lines_and_ignores_others() {
    let stdout = "hello\nplatform machine aarch64\nplatform glibc 2.31\nplatform interp /lib/ld-linux-aarch64.so.1\n\
                  platform interp /lib/aarch64-linux-gnu/ld-linux-aarch64.so.1\nplatform later 1\n";
    let expected = platform(
        "aarch64",
        Some((2, 31)),
        &["/lib/ld-linux-aarch64.so.1", "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"],
    );
    assert_eq!(parse_platform(stdout), Some(expected));
    assert_eq!(parse_platform("platform machine x86_64\n"), Some(platform("x86_64", None, &[])));
    assert_eq!(parse_platform("ok\nfree 12345\n"), None);
    assert_eq!(parse_platform(""), None);
}

#[test]
fn the_probe_reports_this_machine() {
    let reported = parse_platform(&output("sh", &["-c", PLATFORM_PROBE])).unwrap();
    // The interpreters that exist where the probe's patterns look, found here without a shell.
    let mut dirs: Vec<_> = ["/lib", "/lib64", "/usr/lib", "/usr/lib64"].map(String::from).into();
    let below_lib = fs::read_dir("/lib").unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap());
    dirs.extend(below_lib.filter(|name| !name.starts_with('.')).map(|name| format!("/lib/{name}")));
    let mut expected: Vec<String> = (dirs.iter().filter_map(|dir| fs::read_dir(dir).ok()).flatten())
        .map(|entry| entry.unwrap().path().to_string_lossy().into_owned())
        .filter(|path| probed(path) && Path::new(path).exists())
        .collect();
    expected.sort();
    let mut interpreters = reported.interpreters.clone();
    interpreters.sort();
    assert_eq!(Platform { interpreters, ..reported.clone() }, this_machine(expected));
    assert!(reported.interpreters.contains(this_binary().interpreter.as_ref().unwrap()));
}

#[test]
fn a_macos_or_windows_program_as_a_file_artifact_is_refused_but_not_inside_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let macho = dir.path().join("hello");
    std::fs::write(&macho, [0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1]).unwrap();
    let err = scan(&macho, "target/release/hello").unwrap_err();
    assert!(err.contains("`target/release/hello` is a macOS (Mach-O) executable"), "{err}");
    let exe = dir.path().join("hello.exe");
    std::fs::write(&exe, b"MZ\x90\x00rest").unwrap();
    assert!(scan(&exe, "hello.exe").unwrap_err().contains("Windows (PE)"));
    // A directory of downloads for other systems is not judged.
    assert_eq!(scan(dir.path(), "downloads").unwrap(), vec![]);
}
