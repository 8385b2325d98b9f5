//! The modules depend downwards only (ARCHITECTURE.md, "Architecture invariants"), checked on
//! the source: which top-level modules each module's code names as `crate::<module>`; and no
//! file of `src/` imports itself through other files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// For each top-level module of `src/`, the other top-level modules its code (not its comments,
/// not its tests) names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let files = files();
    let modules: BTreeSet<String> = files.keys().map(|module| module[0].clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &files {
        let module = &module[0];
        let named = graph.entry(module.clone()).or_default();
        for line in code.lines() {
            // `crate::x`, and the `x::` or `x,` of a `use crate::{x::..., y, ...}` group.
            let mut words = Vec::new();
            for (at, _) in line.match_indices("crate::") {
                words.push(&line[at + 7..]);
            }
            if let Some(group) = line.trim_start().strip_prefix("use crate::{") {
                words.extend(group.split([',', '{']).map(str::trim));
            }
            for word in words {
                let name: String = word.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                let name = if name == "exit" { "error".to_string() } else { name };
                if modules.contains(&name) && name != *module {
                    named.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let graph = imports();
    // Depth-first: a module met again while it is still on the path closes a cycle.
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|on| on == module) {
            panic!("an import cycle: {} -> {module}", path[at..].join(" -> "));
        }
        if !done.insert(module.to_string()) {
            return;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            visit(graph, next, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(&graph, module, &mut Vec::new(), &mut done);
    }
    assert!(graph["run"].contains("fleet"), "the reading of imports found nothing: {graph:?}");
}

#[test]
fn the_layers_are_as_the_architecture_says() {
    let graph = imports();
    let none_of = |module: &str, others: &[&str]| {
        let named: Vec<&String> = graph[module].iter().filter(|name| others.contains(&name.as_str())).collect();
        assert!(named.is_empty(), "`{module}` imports {named:?}");
    };
    none_of("report", &["run", "manage", "check", "fleet", "cli"]);
    none_of("fleet", &["run", "manage", "check", "cli"]);
    none_of("manage", &["run", "cli"]);
    none_of("check", &["run", "manage", "cli"]);
    none_of("services", &["run", "check", "cli"]);
    none_of("plan", &["report", "run", "fleet", "ssh", "transport", "manage", "check", "cli"]);
}

/// The module path of each file of `src/` outside tests (`run/walk.rs` is `run::walk`,
/// `plan/scripts/mod.rs` is `plan::scripts`), with the file's code: its text up to its
/// `#[cfg(test)]` module, comment lines left out.
fn files() -> BTreeMap<Vec<String>, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut paths = vec![src.clone()];
    while let Some(path) = paths.pop() {
        if path.is_dir() {
            paths.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        let is_test = relative.split('/').any(|part| part == "tests" || part == "tests.rs");
        if path.extension().is_none_or(|ext| ext != "rs") || is_test || relative == "lib.rs" {
            continue;
        }
        let mut module: Vec<String> = relative.trim_end_matches(".rs").split('/').map(str::to_string).collect();
        if module.last().is_some_and(|last| last == "mod") {
            module.pop();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
        let code: Vec<&str> = code.lines().filter(|line| !line.trim_start().starts_with("//")).collect();
        found.insert(module, code.join("\n"));
    }
    found
}

/// The paths a file's code names from the crate's root, `self` or `super`: each `use` tree
/// expanded (`use super::{a::B, c}` names `super::a::B` and `super::c`), and every path written
/// in the code (`crate::x::y(...)`).
fn named_paths(code: &str) -> Vec<String> {
    fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
        let tree = tree.trim();
        match tree.find('{') {
            Some(open) => {
                let head = tree[..open].trim_end_matches("::");
                let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
                let mut depth = 0;
                let mut start = 0;
                for (at, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(&join(prefix, head), &inner[start..at], out);
                            start = at + 1;
                        }
                        _ => {}
                    }
                }
                expand(&join(prefix, head), &inner[start..], out);
            }
            None if !tree.is_empty() => out.push(join(prefix, tree.split(" as ").next().unwrap().trim())),
            None => {}
        }
    }
    fn join(prefix: &str, rest: &str) -> String {
        match (prefix.is_empty(), rest.is_empty()) {
            (true, _) => rest.to_string(),
            (_, true) => prefix.to_string(),
            _ => format!("{prefix}::{rest}"),
        }
    }
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let tail = &rest[at + 4..];
        let end = tail.find(';').unwrap_or(tail.len());
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            let tree = tail[..end].trim();
            if ["crate::", "super::", "self::"].iter().any(|root| tree.starts_with(root)) {
                expand("", tree, &mut out);
            }
        }
        rest = &tail[end.min(tail.len())..];
    }
    for root in ["crate::", "super::"] {
        for (at, _) in code.match_indices(root) {
            if code[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String =
                code[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            out.push(path.trim_end_matches(':').to_string());
        }
    }
    out
}

/// For each file (by module path), the other files its code names an item of, a file and the
/// files of its own submodules aside: a module declares its submodules and may re-export their
/// items, and they may use what it defines; between any two other files, imports go one way.
fn file_imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = files();
    let mut graph = BTreeMap::new();
    for (module, code) in &files {
        let mut named = BTreeSet::new();
        for path in named_paths(code) {
            let mut parts: Vec<String> = Vec::new();
            let mut words = path.split("::").peekable();
            match words.peek().copied() {
                Some("crate") => {
                    words.next();
                }
                Some("self") => {
                    words.next();
                    parts = module.clone();
                }
                Some("super") => {
                    parts = module.clone();
                    while words.peek() == Some(&"super") {
                        words.next();
                        parts.pop();
                    }
                }
                _ => continue,
            }
            parts.extend(words.map(str::to_string));
            // The longest prefix that is a file: the file that holds the item.
            let target =
                (1..=parts.len()).rev().map(|len| parts[..len].to_vec()).find(|prefix| files.contains_key(prefix));
            if let Some(target) = target {
                let related = target.starts_with(module) || module.starts_with(&target);
                if !related {
                    named.insert(target);
                }
            }
        }
        graph.insert(module.clone(), named);
    }
    graph
}

#[test]
fn no_file_imports_itself_through_other_files() {
    let graph = file_imports();
    let name = |module: &Vec<String>| module.join("::");
    fn visit(
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        file: &Vec<String>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|on| on == file) {
            let names: Vec<String> = path[at..].iter().chain([file]).map(|module| module.join("::")).collect();
            circles.push(names.join(" -> "));
            return;
        }
        if !done.insert(file.clone()) {
            return;
        }
        path.push(file.clone());
        for next in graph.get(file).into_iter().flatten() {
            visit(graph, next, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for file in graph.keys() {
        visit(&graph, file, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(circles.is_empty(), "files that import themselves through others:\n{}", circles.join("\n"));
    // The reading found the imports there are.
    let walk = graph.keys().find(|module| name(module) == "run::walk").expect("run/walk.rs");
    assert!(graph[walk].iter().any(|target| name(target) == "fleet"), "{:?}", graph[walk]);
}

#[test]
fn the_reading_of_imports_expands_use_trees_and_resolves_super() {
    let paths =
        named_paths("use super::{push::{self, Push}, walk::Walk as W};\nlet x = crate::plan::scripts::lock(1);");
    for expected in ["super::push::self", "super::push::Push", "super::walk::Walk", "crate::plan::scripts::lock"] {
        assert!(paths.iter().any(|path| path == expected), "{expected} in {paths:?}");
    }
}
