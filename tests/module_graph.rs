//! The runtime's module tree has no knots: no two modules that are not ancestor and
//! descendant of each other depend on each other, directly or through others.
//!
//! The test parses `runtime/` with `syn`, from `lib.rs` along its `mod` declarations
//! (`#[path]` respected), and collects every path that names a module of the crate:
//! `use` trees and paths in code alike (`crate::wire::GoodbyeReason::Finished` in an
//! expression, in a type, inside a macro call), following `use` re-exports to where an
//! item lives. An edge from `a::x` to `b::y` is lifted to the children of their common
//! ancestor (`a -> b`): each level of the tree must be layered, so a child's dependency
//! counts as its parent's. `#[cfg(test)]` items and modules are left out.
//!
//! Run `cargo test --test module_graph -- --nocapture` to print the graph.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use syn::visit::Visit;
use syn::{Attribute, Item, UseTree};

/// A module path: `[]` is the crate root, `["node", "link"]` is `node::link`.
type ModPath = Vec<String>;

/// What one module declares and uses.
#[derive(Debug, Default)]
struct Module {
    /// Child modules, by name.
    children: BTreeSet<String>,
    /// Names brought in by `use` (any visibility), with the path they name.
    imports: HashMap<String, Vec<String>>,
    /// Every path that starts at `crate`, `super`, `self` or a child module, as written.
    uses: Vec<Vec<String>>,
}

/// The crate's module tree.
#[derive(Debug, Default)]
struct Tree {
    modules: BTreeMap<ModPath, Module>,
    /// The source files read, to check none was missed.
    files: BTreeSet<PathBuf>,
}

impl Tree {
    /// Reads the tree rooted at `lib`, following `mod` declarations into files under
    /// `within`.
    fn load(lib: &Path, within: &Path) -> Self {
        let mut tree = Self::default();
        tree.load_file(lib, Vec::new(), lib.parent().unwrap(), within);
        tree
    }

    /// A tree from one source text, with inline modules only (for testing the check).
    fn from_source(source: &str) -> Self {
        let file = syn::parse_file(source).expect("test source parses");
        let mut tree = Self::default();
        tree.load_items(&file.items, Vec::new(), None);
        tree
    }

    fn load_file(&mut self, file: &Path, path: ModPath, dir: &Path, within: &Path) {
        let source = fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let parsed = syn::parse_file(&source)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()));
        self.files.insert(file.to_path_buf());
        self.load_items(&parsed.items, path, Some((file, dir, within)));
    }

    /// `source`: the file these items are in, the directory its child modules' files are
    /// in, and the directory no file may be outside of.
    fn load_items(&mut self, items: &[Item], path: ModPath, source: Option<(&Path, &Path, &Path)>) {
        self.modules.entry(path.clone()).or_default();
        let mut collector = Collector::default();
        for item in items {
            if is_test_only(item_attrs(item)) {
                continue;
            }
            match item {
                Item::Mod(m) => {
                    let name = m.ident.to_string();
                    let mut child = path.clone();
                    child.push(name.clone());
                    if let Some((_, content)) = &m.content {
                        self.module(&path).children.insert(name.clone());
                        // Files of modules declared inside it are in a directory of its name.
                        let dir = source.map(|(file, dir, within)| (file, dir.join(&name), within));
                        let dir_ref = dir.as_ref().map(|(f, d, w)| (*f, d.as_path(), *w));
                        self.load_items(content, child, dir_ref);
                        continue;
                    }
                    let Some((_, dir, within)) = source else {
                        panic!("`mod {name};` without a file in an in-memory source");
                    };
                    let file = match path_attr(&m.attrs) {
                        Some(relative) => dir.join(relative),
                        None => {
                            let flat = dir.join(format!("{name}.rs"));
                            if flat.exists() {
                                flat
                            } else {
                                dir.join(&name).join("mod.rs")
                            }
                        }
                    };
                    let file = normalize(&file);
                    if !file.starts_with(within) {
                        // Declared here, kept outside runtime/ (a `#[path]`): not ours.
                        continue;
                    }
                    self.module(&path).children.insert(name.clone());
                    let child_dir = if file.file_name().is_some_and(|n| n == "mod.rs") {
                        file.parent().unwrap().to_path_buf()
                    } else {
                        file.with_extension("")
                    };
                    self.load_file(&file, child, &child_dir, within);
                }
                Item::Use(u) => {
                    let mut flat = Vec::new();
                    flatten(&u.tree, Vec::new(), &mut flat);
                    let module = self.module(&path);
                    for (name, target) in flat {
                        if let Some(name) = name {
                            module.imports.insert(name, target.clone());
                        }
                        module.uses.push(target);
                    }
                }
                other => collector.visit_item(other),
            }
        }
        self.module(&path).uses.extend(collector.paths);
    }

    fn module(&mut self, path: &[String]) -> &mut Module {
        self.modules.entry(path.to_vec()).or_default()
    }

    /// The module `segments`, written in module `from`, names (the module an item lives
    /// in, for a path to an item), or `None` for a path outside the crate.
    fn resolve(&self, from: &[String], segments: &[String], depth: usize) -> Option<ModPath> {
        if depth > 16 {
            return None;
        }
        let (mut current, rest): (ModPath, &[String]) = match segments.first()?.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (from.to_vec(), &segments[1..]),
            "super" => {
                let mut current = from.to_vec();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    current.pop()?;
                    rest = &rest[1..];
                }
                (current, rest)
            }
            first if self.modules.get(from)?.children.contains(first) => (from.to_vec(), segments),
            _ => return None,
        };
        for (i, segment) in rest.iter().enumerate() {
            let module = self.modules.get(&current)?;
            if module.children.contains(segment) {
                current.push(segment.clone());
            } else if let Some(target) = module.imports.get(segment) {
                // A name brought in by `use`: go where it points, then on.
                let mut through: Vec<String> = target.clone();
                through.extend(rest[i + 1..].iter().cloned());
                return self
                    .resolve(&current, &through, depth + 1)
                    .or(Some(current));
            } else {
                break;
            }
        }
        Some(current)
    }

    /// The graph between siblings: each edge lifted to the children of the common
    /// ancestor of its ends, with the paths that make it.
    fn graph(&self) -> BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>> {
        let mut graph: BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>> = BTreeMap::new();
        for (from, module) in &self.modules {
            for used in &module.uses {
                let Some(to) = self.resolve(from, used, 0) else {
                    continue;
                };
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    // The same module, an ancestor or a descendant.
                    continue;
                }
                let evidence = format!("{} uses {}", display(from), used.join("::"));
                graph
                    .entry(from[..=common].to_vec())
                    .or_default()
                    .entry(to[..=common].to_vec())
                    .or_default()
                    .insert(evidence);
            }
        }
        graph
    }

    /// A cycle in the sibling graph, as the edges that make it, with their evidence.
    fn find_cycle(&self) -> Option<Vec<String>> {
        let graph = self.graph();
        let mut state: HashMap<&ModPath, bool> = HashMap::new(); // false: on the stack
        let mut stack: Vec<&ModPath> = Vec::new();
        for start in graph.keys() {
            if let Some(cycle) = dfs(&graph, start, &mut state, &mut stack) {
                let mut report = Vec::new();
                for pair in cycle.windows(2) {
                    let evidence = &graph[pair[0]][pair[1]];
                    report.push(format!(
                        "{} -> {}   ({})",
                        display(pair[0]),
                        display(pair[1]),
                        evidence.iter().cloned().collect::<Vec<_>>().join("; ")
                    ));
                }
                return Some(report);
            }
        }
        None
    }
}

fn dfs<'a>(
    graph: &'a BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>>,
    node: &'a ModPath,
    state: &mut HashMap<&'a ModPath, bool>,
    stack: &mut Vec<&'a ModPath>,
) -> Option<Vec<&'a ModPath>> {
    match state.get(node) {
        Some(true) => return None,
        Some(false) => {
            let at = stack.iter().position(|n| *n == node).expect("on the stack");
            let mut cycle = stack[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        None => {}
    }
    state.insert(node, false);
    stack.push(node);
    for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
        if let Some(cycle) = dfs(graph, next, state, stack) {
            return Some(cycle);
        }
    }
    stack.pop();
    state.insert(node, true);
    None
}

/// Collects paths in code: types, expressions, patterns, and paths inside macro calls.
#[derive(Default)]
struct Collector {
    paths: Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast Item) {
        if !is_test_only(item_attrs(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Fn(f) => &f.attrs,
            syn::ImplItem::Const(c) => &c.attrs,
            syn::ImplItem::Type(t) => &t.attrs,
            _ => return syn::visit::visit_impl_item(self, item),
        };
        if !is_test_only(attrs) {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if path.leading_colon.is_none() {
            self.paths.push(segments);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Macro input is tokens, not syntax: find `crate :: a :: b` runs in its text.
        let text = mac.tokens.to_string();
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let mut i = 0;
        while i < tokens.len() {
            if matches!(tokens[i], "crate" | "super" | "self") && tokens.get(i + 1) == Some(&"::") {
                let mut segments = vec![tokens[i].to_owned()];
                let mut j = i + 1;
                while tokens.get(j) == Some(&"::") && tokens.get(j + 1).is_some_and(|t| is_ident(t))
                {
                    segments.push(tokens[j + 1].to_owned());
                    j += 2;
                }
                self.paths.push(segments);
                i = j;
            } else {
                i += 1;
            }
        }
        syn::visit::visit_macro(self, mac);
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && token.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Every path a `use` tree names, with the name it binds (none for a glob).
fn flatten(tree: &UseTree, prefix: Vec<String>, out: &mut Vec<(Option<String>, Vec<String>)>) {
    match tree {
        UseTree::Path(p) => {
            let mut prefix = prefix;
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
        }
        UseTree::Name(n) if n.ident == "self" => {
            out.push((prefix.last().cloned(), prefix));
        }
        UseTree::Name(n) => {
            let mut path = prefix;
            path.push(n.ident.to_string());
            out.push((Some(n.ident.to_string()), path));
        }
        UseTree::Rename(r) => {
            let mut path = prefix;
            path.push(r.ident.to_string());
            out.push((Some(r.rename.to_string()), path));
        }
        UseTree::Glob(_) => out.push((None, prefix)),
        UseTree::Group(g) => {
            for tree in &g.items {
                flatten(tree, prefix.clone(), out);
            }
        }
    }
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Whether the attributes include `#[cfg(test)]`.
fn is_test_only(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

/// The value of a `#[path = "…"]` attribute.
fn path_attr(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| match &attr.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn display(path: &[String]) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

/// Every `.rs` file under `dir` the check is about.
fn runtime_files(dir: &Path, root: &Path, out: &mut BTreeSet<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let excluded = relative.ends_with("tests.rs");
        if excluded {
            continue;
        }
        if path.is_dir() {
            runtime_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.insert(path);
        }
    }
}

fn runtime() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime")
}

#[test]
fn runtime_modules_form_no_cycle() {
    let root = runtime();
    let tree = Tree::load(&root.join("lib.rs"), &root);
    println!("module graph of runtime/ (edges between siblings):");
    for (from, edges) in tree.graph() {
        let to: Vec<String> = edges.keys().map(|m| display(m)).collect();
        println!("  {} -> {}", display(&from), to.join(", "));
    }
    if let Some(cycle) = tree.find_cycle() {
        panic!("the module graph has a cycle:\n  {}", cycle.join("\n  "));
    }
}

#[test]
fn every_runtime_file_is_read() {
    let root = runtime();
    let tree = Tree::load(&root.join("lib.rs"), &root);
    let mut expected = BTreeSet::new();
    runtime_files(&root, &root, &mut expected);
    let missed: Vec<_> = expected.difference(&tree.files).collect();
    assert!(
        missed.is_empty(),
        "files the check never reached: {missed:?}"
    );
}

#[test]
fn check_finds_a_cycle_through_a_use_and_an_inline_path() {
    let tree = Tree::from_source(
        "mod a { mod inner { use crate::b::Thing; } }
         mod b { fn f() { let _ = crate::c::make(); } }
         mod c { fn g() -> crate::a::Other { todo!() } }",
    );
    let cycle = tree.find_cycle().expect("a -> b -> c -> a is a cycle");
    assert_eq!(cycle.len(), 3, "{cycle:?}");
    assert!(cycle[0].starts_with("a -> b"), "{cycle:?}");
}

#[test]
fn check_sees_paths_in_macros_and_through_reexports() {
    let tree = Tree::from_source(
        "mod a { pub use self::deep::Thing; pub mod deep { pub struct Thing; } fn f() { matches!(x, crate::b::K::V); } }
         mod b { use crate::a::Thing; }",
    );
    let cycle = tree.find_cycle().expect("a -> b -> a is a cycle");
    assert_eq!(cycle.len(), 2, "{cycle:?}");
}

#[test]
fn check_allows_parent_and_child() {
    let tree = Tree::from_source(
        "mod a { use self::inner::X; mod inner { use super::Y; use crate::a::Z; } }
         mod b { use crate::a::inner::X; }",
    );
    assert_eq!(tree.find_cycle(), None);
}
