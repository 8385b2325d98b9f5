//! The modules depend downwards only (ARCHITECTURE.md, "Architecture invariants"), checked on
//! the source: which top-level modules each module's code names as `crate::<module>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// For each top-level module of `src/`, the other top-level modules its code (not its comments,
/// not its tests) names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_string())
        .filter(|name| name != "lib")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        let is_test = relative.split('/').any(|part| part == "tests" || part == "tests.rs");
        if path.extension().is_none_or(|ext| ext != "rs") || is_test || relative == "lib.rs" {
            continue;
        }
        let module = relative.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
        let named = graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|line| !line.trim_start().starts_with("//")) {
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
                if modules.contains(&name) && name != module {
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
    none_of("check", &["run", "cli"]);
    none_of("services", &["run", "check", "cli"]);
    none_of("plan", &["report", "run", "fleet", "ssh", "manage", "check", "cli"]);
}
