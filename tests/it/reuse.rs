//! Releases that cost what changed (`reuse = "link"`, the default): a new release's unchanged
//! files are hard links of the previous release's, read-only, and only what changed is
//! extracted; whenever the previous release cannot be trusted, the whole tree is.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{self, git, World};

/// What a path of a release is: a file (its contents, and whether it is executable), a
/// symbolic link (its target) or a directory; `git archive` makes the same of a commit.
fn tree_of(root: &Path) -> BTreeMap<PathBuf, String> {
    let files = support::paths_under(root, |path, meta| {
        let executable = meta.permissions().mode() & 0o100 != 0;
        format!("file {:?} executable {executable}", String::from_utf8_lossy(&fs::read(path).unwrap()))
    });
    files.into_iter().map(|(path, what)| (path.strip_prefix(root).unwrap().to_path_buf(), what)).collect()
}

/// Asserts that `release` holds what `git archive <sha>` makes (contents, executable bits,
/// links, directories), and `REVISION`.
fn assert_archive(world: &World, release: &str, sha: &str) {
    let expected = tempfile::tempdir().unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("git archive --format=tar \"$1\" | tar -x -f - -C \"$2\"")
        .args(["sh", sha])
        .arg(expected.path())
        .current_dir(world.app.dir())
        .status()
        .unwrap();
    assert!(status.success(), "git archive of {sha}");
    let mut actual = tree_of(&world.deploy_to.join("releases").join(release));
    assert!(actual.remove(Path::new("REVISION")).unwrap().starts_with(&format!("file {:?}", format!("{sha}\n"))));
    assert_eq!(actual, tree_of(expected.path()), "release {release} differs from git archive {sha}");
}

fn inode(world: &World, release: &str, path: &str) -> u64 {
    fs::symlink_metadata(world.deploy_to.join("releases").join(release).join(path)).unwrap().ino()
}

/// The app with an executable script, a link and files in directories, committed.
fn app_with_more_files(world: &World) {
    world.app.write("bin/run.sh", "#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(world.app.dir().join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../assets/data.txt", world.app.dir().join("bin/data")).unwrap();
    for index in 0..6 {
        world.app.write(&format!("docs/page{index}.md"), &format!("page {index}\n")).unwrap();
    }
    world.app.commit_all("more files").unwrap();
}

#[test]
fn a_release_made_by_reuse_is_the_commit_and_links_the_unchanged_files() {
    let world = World::new();
    app_with_more_files(&world);
    world.setup();
    let first = world.deploy();
    assert_archive(&world, &first.release, &first.sha);
    world.commit("src/main.rs", "fn main() {\n    println!(\"hello again\");\n}\n");
    let second = world.deploy();
    assert_archive(&world, &second.release, &second.sha);
    for unchanged in ["assets/data.txt", "bin/run.sh", "bin/data", "docs/page3.md", "Cargo.toml"] {
        assert_eq!(
            inode(&world, &second.release, unchanged),
            inode(&world, &first.release, unchanged),
            "`{unchanged}` is a hard link of the previous release's"
        );
    }
    assert_ne!(inode(&world, &second.release, "src/main.rs"), inode(&world, &first.release, "src/main.rs"));
    // Every file of both releases is read-only; their directories are not.
    for release in [&first.release, &second.release] {
        for (path, what) in tree_of(&world.deploy_to.join("releases").join(release)) {
            let mode = fs::symlink_metadata(world.deploy_to.join("releases").join(release).join(&path)).unwrap().mode();
            match what.as_str() {
                "dir" => assert_ne!(mode & 0o200, 0, "{release}/{} is writable", path.display()),
                what if what.starts_with("file") => {
                    assert_eq!(mode & 0o222, 0, "{release}/{} is read-only", path.display())
                }
                _ => {}
            }
        }
    }
    // A third deploy reuses the second release, itself made by reuse.
    world.commit("docs/page1.md", "page one, again\n");
    let third = world.deploy();
    assert_archive(&world, &third.release, &third.sha);
    assert_eq!(inode(&world, &third.release, "src/main.rs"), inode(&world, &second.release, "src/main.rs"));
    assert_eq!(inode(&world, &third.release, "assets/data.txt"), inode(&world, &first.release, "assets/data.txt"));
}

#[test]
fn a_change_never_reaches_an_older_release() {
    let world = World::new();
    app_with_more_files(&world);
    world.setup();
    let first = world.deploy();
    let old = world.deploy_to.join("releases").join(&first.release);
    let before = (fs::read(old.join("docs/page2.md")).unwrap(), inode(&world, &first.release, "docs/page2.md"));
    world.app.write("docs/page2.md", "page two, changed\n").unwrap();
    git(world.app.dir(), &["rm", "-q", "docs/page4.md"]);
    let sha = world.app.commit_all("change one page, delete another").unwrap();
    let second = world.deploy();
    assert_eq!(second.sha, sha);
    assert_archive(&world, &second.release, &second.sha);
    let new = world.deploy_to.join("releases").join(&second.release);
    assert_eq!(fs::read_to_string(new.join("docs/page2.md")).unwrap(), "page two, changed\n");
    assert_eq!(
        (fs::read(old.join("docs/page2.md")).unwrap(), inode(&world, &first.release, "docs/page2.md")),
        before,
        "the older release's file is untouched"
    );
    assert!(!new.join("docs/page4.md").exists(), "deleted in the new release");
    assert_eq!(fs::read_to_string(old.join("docs/page4.md")).unwrap(), "page 4\n", "still in the older one");
    assert_eq!(inode(&world, &second.release, "docs/page3.md"), inode(&world, &first.release, "docs/page3.md"));
    assert_archive(&world, &first.release, &first.sha);
}

#[test]
fn a_previous_release_that_lacks_a_file_or_was_changed_is_not_trusted() {
    let world = World::new();
    app_with_more_files(&world);
    world.setup();
    let first = world.deploy();
    // The app deleted one of its release's files.
    fs::remove_file(world.deploy_to.join("releases").join(&first.release).join("docs/page0.md")).unwrap();
    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    assert_archive(&world, &second.release, &second.sha);
    // The whole tree was extracted: no file is shared with the previous release.
    assert_ne!(inode(&world, &second.release, "docs/page1.md"), inode(&world, &first.release, "docs/page1.md"));

    // The app replaced one of its release's files (a new file renamed over it, as `sed -i` does).
    let replaced = world.deploy_to.join("releases").join(&second.release).join("docs/page5.md");
    fs::write(replaced.with_extension("new"), "not the commit's\n").unwrap();
    fs::rename(replaced.with_extension("new"), &replaced).unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"3\"); }\n");
    let third = world.deploy();
    assert_archive(&world, &third.release, &third.sha);
    assert_ne!(inode(&world, &third.release, "docs/page1.md"), inode(&world, &second.release, "docs/page1.md"));

    // With nothing off, the next release reuses the third.
    world.commit("src/main.rs", "fn main() { println!(\"4\"); }\n");
    let fourth = world.deploy();
    assert_archive(&world, &fourth.release, &fourth.sha);
    assert_eq!(inode(&world, &fourth.release, "docs/page1.md"), inode(&world, &third.release, "docs/page1.md"));

    // The app put an older file of its release in place of another: its time tells nothing,
    // its inode does.
    let dir = world.deploy_to.join("releases").join(&fourth.release).join("docs");
    let copied = Command::new("cp").arg("-p").arg(dir.join("page1.md")).arg(dir.join("page2.new")).status().unwrap();
    assert!(copied.success());
    fs::rename(dir.join("page2.new"), dir.join("page2.md")).unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"5\"); }\n");
    let fifth = world.deploy();
    assert_archive(&world, &fifth.release, &fifth.sha);

    // Root (these tests' deploy user) writes into a read-only file in place: same inode, a
    // later time. And the app makes a file executable: same inode, another mode.
    let dir = world.deploy_to.join("releases").join(&fifth.release).join("docs");
    fs::OpenOptions::new().append(true).open(dir.join("page3.md")).unwrap().write_all(b"appended\n").unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"6\"); }\n");
    let sixth = world.deploy();
    assert_archive(&world, &sixth.release, &sixth.sha);
    let dir = world.deploy_to.join("releases").join(&sixth.release).join("docs");
    fs::set_permissions(dir.join("page3.md"), fs::Permissions::from_mode(0o555)).unwrap();
    world.commit("src/main.rs", "fn main() { println!(\"7\"); }\n");
    let seventh = world.deploy();
    assert_archive(&world, &seventh.release, &seventh.sha);
}

#[test]
fn a_write_in_place_fails_and_reuse_off_keeps_releases_apart() {
    let world = World::as_user(Path::new("/bin/bash"), "");
    let user = world.deploy_user.as_ref().unwrap();
    world.setup();
    let first = world.deploy();
    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    let shared = inode(&world, &second.release, "assets/data.txt");
    assert_eq!(shared, inode(&world, &first.release, "assets/data.txt"));
    let file = world.deploy_to.join("releases").join(&second.release).join("assets/data.txt");
    let file = file.to_str().unwrap();
    let written = user.sh(&format!("echo more >> '{file}'")).expect("run `runuser`");
    assert!(!written.status.success(), "an in-place write fails");
    assert!(String::from_utf8_lossy(&written.stderr).contains("Permission denied"), "{written:?}");
    // A new file renamed over it (as `sed -i` does) changes that release only.
    let edited = user.sh(&format!("sed -i 's/some data/other data/' '{file}'")).expect("run `runuser`");
    assert!(edited.status.success(), "{edited:?}");
    assert!(fs::read_to_string(file).unwrap().starts_with("other data"));
    let old = world.deploy_to.join("releases").join(&first.release).join("assets/data.txt");
    assert!(fs::read_to_string(old).unwrap().starts_with("some data"), "the older release is untouched");

    let world = World::with_config("reuse = \"off\"");
    world.setup();
    let first = world.deploy();
    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    assert_archive(&world, &second.release, &second.sha);
    assert_ne!(inode(&world, &second.release, "assets/data.txt"), inode(&world, &first.release, "assets/data.txt"));
    let mode =
        fs::metadata(world.deploy_to.join("releases").join(&second.release).join("assets/data.txt")).unwrap().mode();
    assert_ne!(mode & 0o200, 0, "writable, as before reuse");
    assert!(!world.deploy_to.join(".xtask-deploy").join(format!("tree.{}", second.release)).exists());
}

#[test]
fn odd_names_are_reused_and_a_name_with_a_newline_is_extracted() {
    let world = World::new();
    let odd = ["-rf", "a b/c d.txt", "back\\slash", "tab\there", "quote'\"", "*", "dir/--help"];
    for (index, name) in odd.iter().enumerate() {
        world.app.write(name, &format!("odd {index}\n")).unwrap();
    }
    world.app.commit_all("odd names").unwrap();
    world.setup();
    let first = world.deploy();
    world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    assert_archive(&world, &second.release, &second.sha);
    for name in odd {
        assert_eq!(inode(&world, &second.release, name), inode(&world, &first.release, name), "`{name}` reused");
    }
    // A name with a newline cannot be in a list of lines: the whole tree is extracted.
    world.commit("new\nline", "odd\n");
    let third = world.deploy();
    assert_archive(&world, &third.release, &third.sha);
    assert_ne!(inode(&world, &third.release, "-rf"), inode(&world, &second.release, "-rf"));
}

#[test]
fn a_file_whose_text_names_its_commit_is_written_again() {
    let world = World::new();
    world.app.write(".gitattributes", "version.txt export-subst\n").unwrap();
    world.app.write("version.txt", "$Format:%H$\n").unwrap();
    world.app.commit_all("version").unwrap();
    world.setup();
    let first = world.deploy();
    let sha = world.commit("src/main.rs", "fn main() {}\n");
    let second = world.deploy();
    let version = world.deploy_to.join("releases").join(&second.release).join("version.txt");
    assert_eq!(fs::read_to_string(version).unwrap(), format!("{sha}\n"));
    assert_archive(&world, &second.release, &second.sha);
    // `export-subst` is in play: the whole tree was extracted.
    assert_ne!(inode(&world, &second.release, "assets/data.txt"), inode(&world, &first.release, "assets/data.txt"));
}

#[test]
fn a_path_that_was_linked_to_shared_is_extracted_and_shared_is_left_alone() {
    let world = World::with_config("linked_dirs = [\"log\"]");
    world.app.write("log/keep.txt", "the commit's\n").unwrap();
    world.app.commit_all("log").unwrap();
    world.setup();
    let shared = world.deploy_to.join("shared/log/keep.txt");
    fs::write(&shared, "shared\n").unwrap();
    let first = world.deploy();
    // The app's files no longer link `log`: the previous release's `log` is a link to
    // `shared/`, and nothing is read through it.
    world.edit_manifest(|manifest| manifest.replacen("linked_dirs = [\"log\"]\n", "", 1));
    world.app.commit_all("log is the app's own").unwrap();
    let second = world.deploy();
    assert_archive(&world, &second.release, &second.sha);
    assert_eq!(fs::read_to_string(&shared).unwrap(), "shared\n");
    assert_ne!(fs::metadata(&shared).unwrap().mode() & 0o200, 0, "shared/ is untouched");
    assert_ne!(inode(&world, &second.release, "log/keep.txt"), fs::metadata(&shared).unwrap().ino());
    assert!(fs::symlink_metadata(world.deploy_to.join("releases").join(&first.release).join("log"))
        .unwrap()
        .is_symlink());
}

#[test]
fn build_output_unchanged_since_the_previous_release_is_reused_too() {
    let world = World::with_config(
        r#"build = ["mkdir -p target/release", "cp src/main.rs target/release/hello", "chmod 755 target/release/hello"]
artifacts = ["target/release/hello"]"#,
    );
    world.setup();
    let first = world.deploy();
    world.commit("assets/data.txt", "other data\n");
    let second = world.deploy();
    world.assert_release_matches_except(&second.release, &second.sha, &["target/release/hello"]);
    let artifact = world.deploy_to.join("releases").join(&second.release).join("target/release/hello");
    assert_eq!(fs::read(&artifact).unwrap(), fs::read(world.app.dir().join("src/main.rs")).unwrap());
    let mode = fs::metadata(&artifact).unwrap().mode();
    assert_eq!((mode & 0o100, mode & 0o222), (0o100, 0), "executable, read-only");
    for unchanged in ["target/release/hello", "src/main.rs"] {
        assert_eq!(inode(&world, &second.release, unchanged), inode(&world, &first.release, unchanged), "{unchanged}");
    }
    assert_ne!(inode(&world, &second.release, "assets/data.txt"), inode(&world, &first.release, "assets/data.txt"));
}

#[test]
fn after_a_rollback_the_next_release_reuses_the_one_gone_back_to() {
    let world = World::new();
    world.setup();
    let first = world.deploy();
    world.commit("assets/data.txt", "second data\n");
    let second = world.deploy();
    world.rollback(None).unwrap();
    assert_eq!(world.current(), Some(first.release.clone()));
    world.commit("src/main.rs", "fn main() {}\n");
    let third = world.deploy();
    assert_archive(&world, &third.release, &third.sha);
    assert_eq!(inode(&world, &third.release, "Cargo.toml"), inode(&world, &first.release, "Cargo.toml"));
    // Only `current`'s files are reused: this one changed since the release gone back to.
    assert_ne!(inode(&world, &third.release, "assets/data.txt"), inode(&world, &second.release, "assets/data.txt"));
}
