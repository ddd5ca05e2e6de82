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
//! A child may use what its ancestors declare, except their *state types*: a struct,
//! enum or alias that holds, in a field or through another type declared in the same
//! ancestor, a lock, an atomic, a cell, a channel end, a `Notify` or a task handle. Such
//! state has an owner; a child that needs it is handed the part that owns it, not its
//! parent's fields. A handle to another part's state (a type declared elsewhere) is that
//! part's business.
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
    /// Types declared here (structs, enums, unions, aliases), with every path written in
    /// their fields (generic arguments included).
    types: HashMap<String, Vec<Vec<String>>>,
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
                Item::Struct(_) | Item::Enum(_) | Item::Union(_) | Item::Type(_) => {
                    let (name, fields) = declared_type(item);
                    self.module(&path).types.insert(name, fields);
                    collector.visit_item(item);
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

    /// The type a path written in module `from` names, as the module it is declared in
    /// and its name, or `None` for a type outside the crate (or not a type).
    fn resolve_type(
        &self,
        from: &[String],
        segments: &[String],
        depth: usize,
    ) -> Option<(ModPath, String)> {
        if depth > 16 {
            return None;
        }
        let (last, prefix) = segments.split_last()?;
        let module = if prefix.is_empty() {
            from.to_vec()
        } else if let Some(target) = self.modules.get(from)?.imports.get(&prefix[0]) {
            // `use crate::node; node::Thing`: go through the import.
            let mut through = target.clone();
            through.extend(prefix[1..].iter().cloned());
            through.push(last.clone());
            return self.resolve_type(from, &through, depth + 1);
        } else {
            let module = self.resolve(from, prefix, depth)?;
            // A prefix that does not reach a module is a path to something else (an
            // enum's variant, an associated item).
            let reached = prefix
                .iter()
                .filter(|s| !matches!(s.as_str(), "crate" | "self" | "super"))
                .count();
            if module.len() < reached.min(module.len() + 1)
                && !matches!(prefix[0].as_str(), "super")
            {
                return None;
            }
            module
        };
        let declared = self.modules.get(&module)?;
        if declared.types.contains_key(last) {
            return Some((module, last.clone()));
        }
        let target = declared.imports.get(last)?;
        self.resolve_type(&module, target, depth + 1)
    }

    /// Whether the type `name` declared in `module` holds state of its own (see the crate
    /// doc), with the chain of types that shows it. Only types declared under `owner`
    /// are followed: a field that is a handle to another part's state (the budget's
    /// account a session charges) is that part's, not the owner's.
    fn state_chain(
        &self,
        module: &ModPath,
        name: &str,
        owner: &ModPath,
        seen: &mut BTreeSet<(ModPath, String)>,
    ) -> Option<Vec<String>> {
        if !seen.insert((module.clone(), name.to_owned())) {
            return None;
        }
        let fields = self.modules.get(module)?.types.get(name)?;
        for path in fields {
            let here = format!("{}::{name}", display(module));
            if let Some((inner_module, inner)) = self.resolve_type(module, path, 0) {
                if !inner_module.starts_with(owner) {
                    continue;
                }
                if let Some(mut chain) = self.state_chain(&inner_module, &inner, owner, seen) {
                    chain.insert(0, here);
                    return Some(chain);
                }
            } else if path.last().is_some_and(|last| is_state_marker(last)) {
                return Some(vec![here, path.join("::")]);
            }
        }
        None
    }

    /// Every use of an ancestor's state type by a descendant, as `child uses path
    /// (type -> ... -> marker)`.
    fn state_reaching_up(&self) -> Vec<String> {
        let mut found = BTreeSet::new();
        for (from, module) in &self.modules {
            for used in &module.uses {
                let Some((declared_in, name)) = self.resolve_type(from, used, 0) else {
                    continue;
                };
                if declared_in.len() >= from.len() || !from.starts_with(&declared_in) {
                    continue;
                }
                let chain =
                    self.state_chain(&declared_in, &name, &declared_in, &mut BTreeSet::new());
                if let Some(chain) = chain {
                    found.insert(format!(
                        "{} uses {}   ({})",
                        display(from),
                        used.join("::"),
                        chain.join(" -> ")
                    ));
                }
            }
        }
        found.into_iter().collect()
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

/// Names of what holds state: locks, atomics, cells, channel ends, notifications, tasks.
fn is_state_marker(name: &str) -> bool {
    name.starts_with("Atomic")
        || matches!(
            name,
            "Mutex"
                | "RwLock"
                | "OnceLock"
                | "OnceCell"
                | "Cell"
                | "RefCell"
                | "Notify"
                | "Semaphore"
                | "Sender"
                | "Receiver"
                | "UnboundedSender"
                | "UnboundedReceiver"
                | "WeakSender"
                | "WeakUnboundedSender"
                | "JoinHandle"
                | "JoinSet"
                | "AbortHandle"
        )
}

/// A declared type's name and every path written in its fields.
fn declared_type(item: &Item) -> (String, Vec<Vec<String>>) {
    let mut collector = Collector::default();
    let name = match item {
        Item::Struct(s) => {
            collector.visit_fields(&s.fields);
            s.ident.to_string()
        }
        Item::Enum(e) => {
            for variant in &e.variants {
                collector.visit_fields(&variant.fields);
            }
            e.ident.to_string()
        }
        Item::Union(u) => {
            collector.visit_fields_named(&u.fields);
            u.ident.to_string()
        }
        Item::Type(t) => {
            collector.visit_type(&t.ty);
            t.ident.to_string()
        }
        _ => unreachable!("declared_type takes a type"),
    };
    (name, collector.paths)
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
fn no_child_uses_its_ancestors_state() {
    let root = runtime();
    let tree = Tree::load(&root.join("lib.rs"), &root);
    let found = tree.state_reaching_up();
    assert!(
        found.is_empty(),
        "children reach back into their ancestors' state (hand them the part they use):\n  {}",
        found.join("\n  ")
    );
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

#[test]
fn check_finds_a_child_using_its_parents_state() {
    let tree = Tree::from_source(
        "mod node {
             pub struct Inner { parts: std::sync::Arc<Parts> }
             struct Parts { count: std::sync::atomic::AtomicU64 }
             pub struct Plain { name: String }
             mod admin { use super::Inner; fn f(_: &super::Plain) {} }
             mod status { fn g(_: &crate::node::Parts) {} }
         }",
    );
    let found = tree.state_reaching_up();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("node::admin uses super::Inner"),
        "{found:?}"
    );
    assert!(found[0].contains("AtomicU64"), "{found:?}");
    assert!(
        found[1].starts_with("node::status uses crate::node::Parts"),
        "{found:?}"
    );
}

#[test]
fn check_allows_a_child_its_parents_plain_types_and_its_own_state() {
    let tree = Tree::from_source(
        "mod session {
             pub struct Session { seq: u64, queue: Vec<Frame> }
             pub struct Frame(u32);
             mod send { use super::{Frame, Session}; impl Session { fn next(&self) -> Frame { todo!() } } }
             mod owner { struct Own { lock: std::sync::Mutex<u32> } fn f(_: Own) {} }
         }
         mod driver { struct Task { inbox: tokio::sync::mpsc::Receiver<u8> } }
         mod node { fn f(_: crate::driver::Task) {} }
         mod budget { pub struct Account { used: std::sync::atomic::AtomicUsize } }
         mod core { pub struct Core { account: crate::budget::Account } mod part { use super::Core; } }",
    );
    assert_eq!(tree.state_reaching_up(), Vec::<String>::new());
}
