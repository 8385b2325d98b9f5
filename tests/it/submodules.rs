//! Submodules pushed over the same tunnel: given an app with a submodule and a nested one whose
//! `.gitmodules` URLs cannot be reached, when I deploy, then the release holds a recursive
//! checkout, made from the server's own repositories.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{files_under, git, incompressible, World};
use xtask_deploy::demo::AppRepo;
use xtask_deploy::Error;

/// An app with `libs/middle`, which has `vendor/inner` (holding a 150 KB blob). Every
/// `.gitmodules` URL points at `git.invalid`, and the upstream repositories are deleted.
fn world_with_nested_submodules(extra_config: &str) -> World {
    let world = World::with_config(extra_config);
    let upstream = world.server.dir().join("upstream");
    let inner = AppRepo::create(
        &upstream.join("inner"),
        &[("inner.txt", "inner v1\n"), ("big.bin", &incompressible(150_000, 3))],
    )
    .unwrap();
    let middle = AppRepo::create(&upstream.join("middle"), &[("middle.txt", "middle v1\n")]).unwrap();
    git(middle.dir(), &["submodule", "add", "-q", inner.dir().to_str().unwrap(), "vendor/inner"]);
    git(middle.dir(), &["commit", "-q", "-m", "add inner"]);

    let app = world.app.dir();
    git(app, &["submodule", "add", "-q", middle.dir().to_str().unwrap(), "libs/middle"]);
    git(app, &["submodule", "update", "--init", "--recursive", "-q"]);

    // Point the nested URL away, in a new middle commit that the app then records.
    git(middle.dir(), &["config", "-f", ".gitmodules", "submodule.vendor/inner.url", "https://git.invalid/inner.git"]);
    git(middle.dir(), &["commit", "-q", "-am", "inner moved"]);
    let checkout = app.join("libs/middle");
    git(&checkout, &["fetch", "-q", "origin"]);
    git(&checkout, &["checkout", "-q", "FETCH_HEAD"]);
    git(app, &["config", "-f", ".gitmodules", "submodule.libs/middle.url", "https://git.invalid/middle.git"]);
    git(app, &["add", ".gitmodules", "libs/middle"]);
    git(app, &["commit", "-q", "-m", "add middle"]);
    fs::remove_dir_all(&upstream).unwrap();
    world
}

/// The app's worktree as a recursive checkout: every file but git's own and build output.
fn recursive_checkout(app: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    files_under(app)
        .into_iter()
        .filter(|(path, _)| !path.components().any(|part| part.as_os_str() == ".git" || part.as_os_str() == "target"))
        .collect()
}

fn release_files(world: &World, release: &str) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = files_under(&world.deploy_to.join("releases").join(release));
    files.remove(Path::new("REVISION"));
    files
}

#[test]
fn nested_submodules_deploy_from_the_servers_own_repositories() {
    nested_submodules_deploy("");
}

#[test]
fn nested_submodules_deploy_through_the_exec_transport() {
    nested_submodules_deploy("transport = \"exec\"");
}

fn nested_submodules_deploy(config: &str) {
    let world = world_with_nested_submodules(config);
    world.setup();
    let first = world.deploy();
    assert_eq!(release_files(&world, &first.release), recursive_checkout(world.app.dir()));
    let release = world.deploy_to.join("releases").join(&first.release);
    assert_eq!(fs::read_to_string(release.join("libs/middle/vendor/inner/inner.txt")).unwrap(), "inner v1\n");
    let first_bytes = first.servers[0].bytes_sent;
    assert!(first_bytes > 100_000, "the nested blob travelled: {first_bytes} bytes");
    let middle_repo = world.deploy_to.join("repo/modules/libs/middle");
    let inner_repo = middle_repo.join("modules/vendor/inner");
    for repo in [&middle_repo, &inner_repo] {
        let config = fs::read_to_string(repo.join("config")).unwrap();
        assert!(!config.contains("[remote"), "{} has a remote:\n{config}", repo.display());
    }

    // The submodule pointer moves: only the new objects travel.
    let checkout = world.app.dir().join("libs/middle");
    fs::write(checkout.join("middle.txt"), "middle v2\n").unwrap();
    git(&checkout, &["commit", "-q", "-am", "middle v2"]);
    git(world.app.dir(), &["commit", "-q", "-am", "bump middle"]);
    let second = world.deploy();
    assert_eq!(release_files(&world, &second.release), recursive_checkout(world.app.dir()));
    let release = world.deploy_to.join("releases").join(&second.release);
    assert_eq!(fs::read_to_string(release.join("libs/middle/middle.txt")).unwrap(), "middle v2\n");
    let second_bytes = second.servers[0].bytes_sent;
    assert!(second_bytes < 3_000, "only the new commits travel: {second_bytes} bytes");
    assert!(world.daemons().is_empty());
}

#[test]
fn a_submodule_commit_missing_locally_is_named_before_anything_is_sent() {
    let world = world_with_nested_submodules("");
    world.setup();
    let missing = "0123456789abcdef0123456789abcdef01234567";
    git(world.app.dir(), &["update-index", "--cacheinfo", &format!("160000,{missing},libs/middle")]);
    git(world.app.dir(), &["commit", "-q", "-m", "point at a commit nobody fetched"]);
    let err = world.try_deploy().expect_err("the commit is not there");
    assert!(matches!(err, Error::Local { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("`libs/middle`") && text.contains(missing) && text.contains("nothing was sent"), "{text}");
    let server_repo = git2::Repository::open_bare(world.deploy_to.join("repo")).unwrap();
    assert!(server_repo.references().unwrap().next().is_none(), "something was pushed");
}

#[test]
fn submodules_false_deploys_without_them() {
    let world = world_with_nested_submodules("submodules = false");
    world.setup();
    let report = world.deploy();
    let middle = world.deploy_to.join("releases").join(&report.release).join("libs/middle");
    assert!(middle.is_dir() && fs::read_dir(&middle).unwrap().next().is_none(), "libs/middle should be empty");
    assert!(!world.deploy_to.join("repo/modules").exists());
}
