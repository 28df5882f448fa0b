//! A test that the control plane's modules form layers: no module reaches, through its
//! imports, back to itself. A module and its own submodules are one unit (a parent wires its
//! children, a child uses its parent's helpers); any other cycle fails with the modules named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

fn modules(dir: &Path, prefix: &Module, out: &mut BTreeMap<Module, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            let mut p = prefix.clone();
            p.push(name);
            modules(&path, &p, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut p = prefix.clone();
            if !matches!(stem, "mod" | "lib" | "main") {
                p.push(stem.to_string());
            }
            if stem != "main" {
                out.insert(p, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
}

/// The path segments after each `crate::` or `super::` in `text` (code only, not comments).
fn references(text: &str, me: &Module) -> Vec<Module> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        // `super` is the parent module, whether the module is a file or a directory's mod.rs.
        let parent = me[..me.len().saturating_sub(1)].to_vec();
        for (anchor, base) in [("crate::", Vec::new()), ("super::", parent)] {
            let mut rest = code;
            while let Some(i) = rest.find(anchor) {
                let before = rest[..i].chars().last();
                rest = &rest[i + anchor.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let mut p = base.clone();
                for seg in rest.split("::") {
                    let ident: String = seg.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if ident.is_empty() || ident != seg.get(..ident.len()).unwrap_or_default() {
                        break;
                    }
                    p.push(ident.clone());
                    if seg.len() != ident.len() {
                        break;
                    }
                }
                out.push(p);
            }
        }
    }
    out
}

fn related(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[test]
fn module_imports_form_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    modules(&root, &Vec::new(), &mut files);
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (me, text) in &files {
        for r in references(text, me) {
            // The longest known module the path starts with.
            let Some(target) = (1..=r.len()).rev().map(|n| r[..n].to_vec()).find(|p| known.contains(p)) else {
                continue;
            };
            if !related(me, &target) && !me.is_empty() && target != *me {
                edges.entry(me.clone()).or_default().insert(target);
            }
        }
    }
    // Depth-first search for a back edge; the cycle is the stack from its target.
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for n in edges.get(m).into_iter().flatten() {
            match state.get(n).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == n).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(n, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(m, &edges, &mut state, &mut stack) {
                let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
                panic!("module import cycle: {}", names.join(" → "));
            }
        }
    }
}
