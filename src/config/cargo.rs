//! What `cargo metadata --no-deps` says of a manifest (through the `cargo_metadata` crate), kept
//! to the few fields a deploy uses: each package's name, manifest and `metadata` table, the
//! workspace's, and cargo's target directory (which `CARGO_TARGET_DIR` and `build.target-dir`
//! move).

use std::path::{Path, PathBuf};

/// The parts of `cargo metadata`'s output a deploy reads.
#[derive(Debug)]
pub(super) struct Metadata {
    pub packages: Vec<Package>,
    /// `[workspace.metadata]`, `null` when there is none.
    pub workspace_metadata: serde_json::Value,
    pub workspace_root: PathBuf,
    /// Where cargo puts what it builds.
    pub target_directory: PathBuf,
}

/// One package of the workspace.
#[derive(Debug)]
pub(super) struct Package {
    pub name: String,
    pub manifest_path: PathBuf,
    /// `[package.metadata]`, `null` when there is none.
    pub metadata: serde_json::Value,
}

impl From<cargo_metadata::Metadata> for Metadata {
    fn from(metadata: cargo_metadata::Metadata) -> Metadata {
        let packages = metadata.packages.into_iter().map(|package| Package {
            name: package.name.to_string(),
            manifest_path: package.manifest_path.into(),
            metadata: package.metadata,
        });
        Metadata {
            packages: packages.collect(),
            workspace_metadata: metadata.workspace_metadata,
            workspace_root: metadata.workspace_root.into(),
            target_directory: metadata.target_directory.into(),
        }
    }
}

impl Metadata {
    /// Runs `cargo metadata --no-deps` (the `cargo` that runs this process, if any, as
    /// `$CARGO`) on `manifest_path`, or on the manifest cargo finds from the current directory;
    /// on failure, what went wrong in one line.
    pub fn read(manifest_path: Option<&Path>) -> Result<Metadata, String> {
        let mut command = cargo_metadata::MetadataCommand::new();
        command.no_deps();
        if let Some(path) = manifest_path {
            command.manifest_path(path);
        }
        match command.exec() {
            Ok(metadata) => Ok(metadata.into()),
            Err(cargo_metadata::Error::CargoMetadata { stderr }) => Err(one_paragraph(&stderr)),
            Err(cargo_metadata::Error::Io(err)) => {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                Err(format!("cannot run `{}`: {err}", cargo.to_string_lossy()))
            }
            Err(err) => Err(format!("cannot read its output: {err}")),
        }
    }

    /// The manifest to read the deploy table of, from the current directory: the one cargo
    /// would use (the nearest `Cargo.toml` up from it, else the workspace root's), unless it has
    /// no deploy table and the workspace root's manifest has one: `cd xtask && cargo xtask
    /// deploy` means the workspace's app (issue 27, item 7).
    pub fn manifest_with_table_from_cwd(&self) -> PathBuf {
        let cwd = std::env::current_dir().unwrap_or_default();
        let root = self.root_manifest();
        let nearest = cwd
            .ancestors()
            .map(|dir| dir.join("Cargo.toml"))
            .find(|candidate| candidate.is_file())
            .and_then(|candidate| std::fs::canonicalize(candidate).ok());
        match nearest {
            Some(nearest) if self.has_deploy_table(&nearest) || !self.has_deploy_table(&root) => nearest,
            _ => root,
        }
    }

    /// Whether the manifest `manifest` (canonical) has a deploy table where
    /// [`Config::load`](super::Config::load) reads it: its package's metadata, or for a
    /// manifest of no package of the workspace, the workspace's.
    fn has_deploy_table(&self, manifest: &Path) -> bool {
        let table = match self.packages.iter().find(|package| package.manifest_path == manifest) {
            Some(package) => &package.metadata,
            None if manifest == self.root_manifest() => &self.workspace_metadata,
            None => return false,
        };
        table.get("deploy").is_some()
    }

    /// The workspace root's manifest, canonical.
    fn root_manifest(&self) -> PathBuf {
        let root = self.workspace_root.join("Cargo.toml");
        std::fs::canonicalize(&root).unwrap_or(root)
    }
}

/// Cargo's error output in one line: its messages and `-->` locations, without the source
/// snippet and its gutter.
fn one_paragraph(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains('|'))
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_errors_are_condensed_to_one_line() {
        let stderr = "error: extra `=`, expected nothing\n --> Cargo.toml:7:13\n  |\n7 | deploy_to = = \"x\"\n  |             ^\n";
        assert_eq!(one_paragraph(stderr), "extra `=`, expected nothing --> Cargo.toml:7:13");
    }

    #[test]
    fn the_workspace_table_is_cargos_top_level_metadata() {
        let json = r#"{"packages": [], "workspace_members": [], "resolve": null, "version": 1,
                       "metadata": {"deploy": {"application": "w"}}, "workspace_root": "/w",
                       "target_directory": "/w/target"}"#;
        let metadata: Metadata = serde_json::from_str::<cargo_metadata::Metadata>(json).unwrap().into();
        assert_eq!(metadata.workspace_metadata["deploy"]["application"], "w");
    }

    #[test]
    fn this_repository_is_read_with_its_target_directory() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let metadata = Metadata::read(Some(&manifest)).unwrap();
        let package = metadata.packages.iter().find(|package| package.name == "xtask-deploy").unwrap();
        assert_eq!(package.manifest_path, manifest);
        assert_eq!(package.metadata["deploy"]["application"], "xtask-deploy");
        assert_eq!(metadata.workspace_root, Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(metadata.target_directory.is_absolute(), "{}", metadata.target_directory.display());
    }
}
