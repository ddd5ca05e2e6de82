//! The kinds of actor a node starts on request: at start-up (`--actor KIND:NAME`) and
//! when a peer asks ([`crate::Node::spawn`]). A kind is a name and an async constructor
//! that spawns the actor and registers it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::ActorCell;

use crate::node::Node;

/// What hosting one actor of a kind returns: the actor's cell (stopped at shutdown), or
/// why it could not start.
pub type Hosted = Pin<Box<dyn Future<Output = Result<ActorCell, String>> + Send>>;

type HostFn = dyn Fn(Node, ActorSpec) -> Hosted + Send + Sync;

/// An actor of a registered kind to host under a name: `KIND:NAME` or `KIND:NAME@ARG`
/// on a node's command line, or a spawn request from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorSpec {
    /// The kind, as registered with [`crate::NodeBuilder::kind`].
    pub kind: String,
    /// The name peers connect to.
    pub name: String,
    /// What follows `@`, for the kind to interpret (a rate, a size...).
    pub arg: Option<String>,
}

impl ActorSpec {
    /// An actor of `kind` under `name`, without an argument.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            arg: None,
        }
    }

    /// Parses `KIND:NAME` or `KIND:NAME@ARG`.
    ///
    /// # Errors
    /// A message saying what is missing.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: expected KIND:NAME or KIND:NAME@ARG"))?;
        let (name, arg) = match rest.split_once('@') {
            Some((name, arg)) => (name, Some(arg.to_owned())),
            None => (rest, None),
        };
        if kind.is_empty() || name.is_empty() {
            return Err(format!("{text:?}: KIND and NAME must not be empty"));
        }
        if let Err(reason) = crate::names::check_name(name) {
            let name = crate::names::printable(name, 80);
            return Err(format!("{name:?}: {reason}"));
        }
        Ok(Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            arg,
        })
    }
}

impl fmt::Display for ActorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)?;
        match &self.arg {
            Some(arg) => write!(f, "@{arg}"),
            None => Ok(()),
        }
    }
}

/// One kind of actor a node can host.
#[derive(Clone)]
pub(crate) struct Kind {
    pub(crate) name: String,
    pub(crate) about: String,
    host: Arc<HostFn>,
}

impl Kind {
    /// Starts an actor as `spec` says on `node`.
    pub(crate) fn host(&self, node: Node, spec: ActorSpec) -> Hosted {
        (self.host)(node, spec)
    }
}

/// The kinds a node hosts, in registration order.
#[derive(Clone, Default)]
pub(crate) struct Kinds(Vec<Kind>);

impl Kinds {
    /// Adds `kind`, hosted by `host`.
    ///
    /// # Panics
    /// When `kind` was added already, or is not a name a node takes (programming
    /// errors).
    pub(crate) fn add<F, Fut>(&mut self, kind: &str, about: &str, host: F)
    where
        F: Fn(Node, ActorSpec) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, String>> + Send + 'static,
    {
        assert!(
            self.get(kind).is_none(),
            "actor kind {kind:?} registered twice"
        );
        // Published in gossip as a name is.
        if let Err(reason) = crate::names::check_name(kind) {
            panic!("actor kind {kind:?}: {reason}");
        }
        self.0.push(Kind {
            name: kind.to_owned(),
            about: about.to_owned(),
            host: Arc::new(move |node, spec| Box::pin(host(node, spec))),
        });
    }

    /// The kind named `kind`.
    pub(crate) fn get(&self, kind: &str) -> Option<&Kind> {
        self.0.iter().find(|k| k.name == kind)
    }

    /// Every kind, in registration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Kind> {
        self.0.iter()
    }

    /// The kinds' names, in registration order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.0.iter().map(|k| k.name.clone()).collect()
    }
}

impl fmt::Debug for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| &k.name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_specs_parse_and_print_back() {
        let spec = ActorSpec::parse("seq-check:ticks@500").unwrap();
        assert_eq!(spec.kind, "seq-check");
        assert_eq!(spec.name, "ticks");
        assert_eq!(spec.arg.as_deref(), Some("500"));
        assert_eq!(spec.to_string(), "seq-check:ticks@500");
        assert_eq!(ActorSpec::parse("room:general").unwrap().arg, None);
        for bad in ["room", ":general", "room:", "room:@x"] {
            assert!(ActorSpec::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
