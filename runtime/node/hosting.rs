//! The actors a node hosts: the kinds it starts on request, at start-up (`--actor
//! KIND:NAME`) and when a peer asks ([`crate::Node::spawn`]), and the actors it started,
//! bounded by [`crate::NodeConfig::max_hosted`] and stopped with it. A kind is a name and
//! an async constructor that spawns the actor and registers it; the constructor gets the
//! node as its first argument (`N`, the node's handle type: this module never names it).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorCell;

use super::registry::Registry;
use crate::error::SpawnError;
use crate::sync::lock;

/// What hosting one actor of a kind returns: the actor's cell (stopped at shutdown), or
/// why it could not start.
pub type Hosted = Pin<Box<dyn Future<Output = Result<ActorCell, String>> + Send>>;

type HostFn<N> = dyn Fn(N, ActorSpec) -> Hosted + Send + Sync;

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
pub(crate) struct Kind<N> {
    pub(crate) name: String,
    pub(crate) about: String,
    host: Arc<HostFn<N>>,
}

impl<N> Clone for Kind<N> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            about: self.about.clone(),
            host: self.host.clone(),
        }
    }
}

impl<N> Kind<N> {
    /// Starts an actor as `spec` says on `node`.
    pub(crate) fn host(&self, node: N, spec: ActorSpec) -> Hosted {
        (self.host)(node, spec)
    }
}

/// The kinds a node hosts, in registration order.
pub(crate) struct Kinds<N>(Vec<Kind<N>>);

impl<N> Default for Kinds<N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<N> Clone for Kinds<N> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<N> Kinds<N> {
    /// Adds `kind`, hosted by `host`.
    ///
    /// # Panics
    /// When `kind` was added already, or is not a name a node takes (programming
    /// errors).
    pub(crate) fn add<F, Fut>(&mut self, kind: &str, about: &str, host: F)
    where
        F: Fn(N, ActorSpec) -> Fut + Send + Sync + 'static,
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
    pub(crate) fn get(&self, kind: &str) -> Option<&Kind<N>> {
        self.0.iter().find(|k| k.name == kind)
    }

    /// Every kind, in registration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Kind<N>> {
        self.0.iter()
    }

    /// The kinds' names, in registration order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.0.iter().map(|k| k.name.clone()).collect()
    }
}

impl<N> fmt::Debug for Kinds<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| &k.name))
            .finish()
    }
}

/// The actors a node started by kind, and its kinds.
pub(crate) struct Hosting<N> {
    node: String,
    kinds: Kinds<N>,
    max_hosted: usize,
    max_names: usize,
    registry: Arc<Registry>,
    /// The actors it started, stopped by [`Hosting::stop_all`].
    hosted: Mutex<Vec<ActorCell>>,
    /// Spawns under way: they hold a place under `max_hosted` while their actor starts.
    starting: AtomicUsize,
}

impl<N> fmt::Debug for Hosting<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hosting")
            .field("kinds", &self.kinds)
            .field("hosted", &lock(&self.hosted).len())
            .finish_non_exhaustive()
    }
}

/// A spawn under way; its place under `max_hosted` goes back when it ends.
struct Starting<'a>(&'a AtomicUsize);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<N> Hosting<N> {
    /// What the node named `node` hosts: `kinds`, at most `max_hosted` actors at once,
    /// each registered in `registry` (which takes at most `max_names`).
    pub(crate) fn new(
        node: String,
        kinds: Kinds<N>,
        max_hosted: usize,
        max_names: usize,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            node,
            kinds,
            max_hosted,
            max_names,
            registry,
            hosted: Mutex::new(Vec::new()),
            starting: AtomicUsize::new(0),
        }
    }

    /// Starts an actor as `spec` says, its kind's constructor given `node`, and keeps it
    /// until [`Hosting::stop_all`]. See [`crate::Node::host`].
    pub(crate) async fn host(&self, node: N, spec: ActorSpec) -> Result<ActorCell, SpawnError> {
        let name = self.node.clone();
        let Some(kind) = self.kinds.get(&spec.kind).cloned() else {
            return Err(SpawnError::UnknownKind {
                node: name,
                kind: crate::names::printable(&spec.kind, 80),
                known: self.kinds.names(),
            });
        };
        if let Err(reason) = crate::names::check_name(&spec.name) {
            return Err(SpawnError::InvalidName {
                node: name,
                name: crate::names::printable(&spec.name, 80),
                reason: reason.to_owned(),
            });
        }
        if self.registry.holds(&spec.name) {
            return Err(SpawnError::NameTaken {
                node: name,
                name: spec.name,
            });
        }
        let limit = self.max_hosted;
        {
            let mut hosted = lock(&self.hosted);
            let starting = self.starting.load(Ordering::SeqCst);
            if hosted.len() + starting >= limit {
                // Actors that stopped leave as new ones come.
                hosted.retain(|cell| {
                    !matches!(
                        cell.get_status(),
                        ractor::ActorStatus::Stopped | ractor::ActorStatus::Stopping
                    )
                });
            }
            if hosted.len() + starting >= limit {
                return Err(SpawnError::LimitReached {
                    node: name,
                    detail: format!("it hosts {limit} actors (max_hosted)"),
                });
            }
            // A place under the bound, held while the actor starts.
            self.starting.fetch_add(1, Ordering::SeqCst);
        }
        let _starting = Starting(&self.starting);
        // The kind registers its actor under the name: refused up front, typed, rather
        // than as the constructor's words.
        let names = self.max_names;
        if self.registry.held() >= names {
            return Err(SpawnError::LimitReached {
                node: name,
                detail: format!("it holds {names} named actors (max_names)"),
            });
        }
        match kind.host(node, spec).await {
            Ok(cell) => {
                lock(&self.hosted).push(cell.clone());
                Ok(cell)
            }
            Err(reason) => Err(SpawnError::Failed { node: name, reason }),
        }
    }

    /// Stops every actor it started, each given `within` to run its `post_stop`; returns
    /// the names of those that did not stop in time.
    pub(crate) async fn stop_all(&self, within: Duration) -> Vec<String> {
        let hosted = std::mem::take(&mut *lock(&self.hosted));
        let mut late = Vec::new();
        for actor in hosted {
            let name = actor
                .get_name()
                .unwrap_or_else(|| actor.get_id().to_string());
            if actor
                .stop_and_wait(Some("node shutdown".into()), Some(within))
                .await
                .is_err()
            {
                late.push(name);
            }
        }
        late
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
