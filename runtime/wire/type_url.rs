//! [`TypeUrl`]: a message type's name, interned, so that naming the type of every message
//! costs no allocation to send, copy into the replay buffer, receive or check.
//!
//! A process has few message types, so the URLs of its own types ([`TypeUrl::of`]) are
//! leaked once into a global set, up to [`INTERN_LIMIT`], and copied around as
//! `&'static str`. A name that arrives from a peer is only looked up there: a known name
//! becomes the interned one, an unknown one is reference-counted and freed with the last
//! message that carries it, so a peer (authenticated or not) cannot grow memory through
//! names.

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// How many distinct type URLs a process interns.
pub const INTERN_LIMIT: usize = 4096;

/// The type URL of a message (`type.googleapis.com/<package>.<Message>`), cheap to copy
/// and compare.
#[derive(Clone)]
pub struct TypeUrl(Repr);

#[derive(Clone)]
enum Repr {
    Interned(&'static str),
    Shared(Arc<str>),
}

impl TypeUrl {
    /// The type URL of `M`, as [`prost::Name::type_url`] spells it (looked up once per
    /// type and thread).
    pub fn of<M: prost::Name + 'static>() -> Self {
        let id = TypeId::of::<M>();
        let known = LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if let Some((last_id, url)) = &local.last
                && *last_id == id
            {
                return Some(url.clone());
            }
            let url = local.by_type.get(&id).cloned()?;
            local.last = Some((id, url.clone()));
            Some(url)
        });
        known.unwrap_or_else(|| {
            // `M::type_url` is the user's code: called with no borrow held.
            let url = Self::intern(&M::type_url());
            LOCAL.with(|local| {
                let mut local = local.borrow_mut();
                local.by_type.insert(id, url.clone());
                local.last = Some((id, url.clone()));
            });
            url
        })
    }

    /// The type URL `name`: the interned one if a local type has it, otherwise a
    /// reference-counted copy (names from peers are never interned).
    pub fn new(name: &str) -> Self {
        if name.is_empty() {
            return Self::empty();
        }
        // Batches of one type arrive one after another: the last name this thread read
        // answers most lookups without the process-wide lock.
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            match &local.last_named {
                // (A shared name is looked up again: a local type may have interned it since.)
                Some(url @ Self(Repr::Interned(_))) if url.as_str() == name => url.clone(),
                _ => {
                    let url = match interned().get(name) {
                        Some(&known) => Self(Repr::Interned(known)),
                        None => Self(Repr::Shared(Arc::from(name))),
                    };
                    local.last_named = Some(url.clone());
                    url
                }
            }
        })
    }

    /// Interns a local type's `name`, while the process has room for more.
    fn intern(name: &str) -> Self {
        if name.is_empty() {
            return Self::empty();
        }
        let mut interned = interned();
        if let Some(&known) = interned.get(name) {
            return Self(Repr::Interned(known));
        }
        if interned.len() >= INTERN_LIMIT {
            return Self(Repr::Shared(Arc::from(name)));
        }
        let leaked: &'static str = Box::leak(name.into());
        interned.insert(leaked);
        Self(Repr::Interned(leaked))
    }

    /// The empty type URL (a fault carries no payload, so it names no type).
    pub const fn empty() -> Self {
        Self(Repr::Interned(""))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Interned(name) => name,
            Repr::Shared(name) => name,
        }
    }

    /// Whether this is the empty type URL.
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

/// Every thread's memo of the type URLs it looked up by type.
#[derive(Default)]
struct Local {
    /// The last type looked up: a sending loop names one type over and over.
    last: Option<(TypeId, TypeUrl)>,
    /// With foldhash, not SipHash: a lookup by type on every message cost about 230
    /// instructions of each call on an echo's node, where a request and a reply alternate
    /// types (benches/README.md, instructions.sh). Keys are the process's own types.
    by_type: HashMap<TypeId, TypeUrl, foldhash::fast::FixedState>,
    /// The last name interned by text: a receiving loop reads one name over and over.
    last_named: Option<TypeUrl>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::default();
}

static INTERNED: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();

/// The process-wide set of interned names.
fn interned() -> MutexGuard<'static, HashSet<&'static str>> {
    INTERNED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PartialEq for TypeUrl {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            // The same interned name: the common case, decided without reading the text.
            (Repr::Interned(a), Repr::Interned(b)) if std::ptr::eq(*a, *b) => true,
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for TypeUrl {}

impl PartialEq<str> for TypeUrl {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TypeUrl {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for TypeUrl {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for TypeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for TypeUrl {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl AsRef<str> for TypeUrl {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_interns_to_one_pointer() {
        let a = TypeUrl::intern("type.googleapis.com/test.A");
        let b = TypeUrl::new(&String::from("type.googleapis.com/test.A"));
        assert_eq!(a, b);
        assert!(
            matches!((&a.0, &b.0), (Repr::Interned(x), Repr::Interned(y)) if std::ptr::eq(*x, *y))
        );
        assert_ne!(a, TypeUrl::new("type.googleapis.com/test.B"));
        assert_eq!(a, "type.googleapis.com/test.A");
    }

    #[test]
    fn names_from_peers_are_never_interned() {
        let name = "type.googleapis.com/test.FromAPeer";
        let received = TypeUrl::new(name);
        assert!(matches!(received.0, Repr::Shared(_)));
        assert!(!interned().contains(name));
        // Once a local type has the name, a received one is the interned one.
        let local = TypeUrl::intern(name);
        let again = TypeUrl::new(name);
        assert!(matches!(again.0, Repr::Interned(_)));
        assert_eq!(received, local);
        assert_eq!(again, local);
    }

    #[test]
    fn the_empty_name_is_one_name() {
        assert_eq!(TypeUrl::new(""), TypeUrl::empty());
        assert!(TypeUrl::new("").is_empty());
        assert_ne!(TypeUrl::new(""), TypeUrl::new("t"));
    }

    #[test]
    fn shared_and_interned_compare_by_text() {
        let interned = TypeUrl::new("type.googleapis.com/test.C");
        let shared = TypeUrl(Repr::Shared(Arc::from("type.googleapis.com/test.C")));
        assert_eq!(interned, shared);
        assert_eq!(shared, interned);
    }

    #[test]
    fn of_a_type_is_its_prost_name() {
        assert_eq!(
            TypeUrl::of::<crate::wire::pb::Frame>(),
            <crate::wire::pb::Frame as prost::Name>::type_url().as_str()
        );
        // The memo answers the second time, and a second type does not confuse it.
        assert_eq!(
            TypeUrl::of::<crate::wire::pb::Envelope>(),
            <crate::wire::pb::Envelope as prost::Name>::type_url().as_str()
        );
        assert_eq!(
            TypeUrl::of::<crate::wire::pb::Frame>(),
            <crate::wire::pb::Frame as prost::Name>::type_url().as_str()
        );
    }
}
