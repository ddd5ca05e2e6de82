//! Thread-per-core: one current-thread tokio runtime per core, none stealing another's
//! work (as Pingora's no-steal runtime and actix-rt's arbiters do). The thread that runs
//! [`NodeRuntime::block_on`] is the first core; one thread per other core runs the rest.
//!
//! A node started on such a runtime spreads its connections over the cores, in turn: each
//! accepted or dialled connection lives on one core, with its HTTP/2 tasks and the drivers
//! of every session it carries, so a message crosses no thread between the socket and its
//! session, and no worker is woken to search for work. Actors run where they were spawned
//! (the first core, for those spawned from `block_on`). Connections to different peers
//! use different cores; one connection's traffic uses one.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// The cores of the thread-per-core runtime this thread belongs to.
    static CURRENT: RefCell<Option<Cores>> = const { RefCell::new(None) };
}

/// The runtime a node process runs on, as [`crate::settings::RuntimeFlavor::build`]
/// makes it: tokio's own, or, for `thread-per-core`, the first core's with the others
/// running beside it.
#[derive(Debug)]
pub struct NodeRuntime {
    main: tokio::runtime::Runtime,
    cores: Option<Cores>,
    /// Dropping one ends the thread of one core beyond the first.
    stops: Vec<oneshot::Sender<()>>,
}

impl NodeRuntime {
    /// tokio's runtime alone.
    pub(crate) fn single(main: tokio::runtime::Runtime) -> Self {
        Self {
            main,
            cores: None,
            stops: Vec::new(),
        }
    }

    /// One current-thread runtime per core: `count` in all, at least one.
    pub(crate) fn per_core(count: usize) -> std::io::Result<Self> {
        let build = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        };
        let main = build()?;
        let mut handles = vec![main.handle().clone()];
        let mut others = Vec::new();
        for _ in 1..count.max(1) {
            let runtime = build()?;
            handles.push(runtime.handle().clone());
            others.push(runtime);
        }
        let cores = Cores {
            handles: handles.into(),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let mut stops = Vec::new();
        for (index, runtime) in others.into_iter().enumerate() {
            let (stop, stopped) = oneshot::channel::<()>();
            let cores = cores.clone();
            std::thread::Builder::new()
                .name(format!("duologue-core-{}", index + 1))
                .spawn(move || {
                    CURRENT.with(|current| *current.borrow_mut() = Some(cores));
                    let _ = runtime.block_on(stopped);
                    runtime.shutdown_background();
                })?;
            stops.push(stop);
        }
        Ok(Self {
            main,
            cores: Some(cores),
            stops,
        })
    }

    /// Runs `future` to completion on this thread (the first core, for
    /// `thread-per-core`).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let previous = CURRENT.with(|current| current.replace(self.cores.clone()));
        let output = self.main.block_on(future);
        CURRENT.with(|current| *current.borrow_mut() = previous);
        output
    }

    /// Shuts every core down without waiting for their tasks.
    pub fn shutdown_background(self) {
        drop(self.stops);
        self.main.shutdown_background();
    }

    /// How many cores run tasks: 1 but for `thread-per-core`.
    pub fn cores(&self) -> usize {
        self.cores.as_ref().map_or(1, |cores| cores.handles.len())
    }
}

/// The cores of a thread-per-core runtime, and which one the next connection goes to.
#[derive(Clone, Debug)]
pub(crate) struct Cores {
    handles: Arc<[Handle]>,
    next: Arc<AtomicUsize>,
}

impl Cores {
    /// The cores of the thread-per-core runtime the calling thread runs on, if it does.
    pub(crate) fn current() -> Option<Self> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// The index of the core the next connection goes to: each in turn, the first core
    /// first. The first connection shares its core with the actors spawned from
    /// `block_on`, so a call through it crosses no thread: placing it on the second core
    /// instead cost calls 41 µs against 23 µs at p50 and ping-pong 1.25 M msgs/s against
    /// 1.59 M in `two_process` (benches/README.md).
    pub(crate) fn turn(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()
    }

    /// The core the next connection goes to (see [`Cores::turn`]).
    pub(crate) fn next(&self) -> Core {
        Core(self.handles[self.turn()].clone())
    }

    /// Every core, the first one first.
    pub(crate) fn all(&self) -> impl Iterator<Item = Core> + '_ {
        self.handles.iter().cloned().map(Core)
    }
}

/// One core: where a connection's tasks, and its sessions' drivers, are spawned.
#[derive(Clone, Debug)]
pub(crate) struct Core(Handle);

impl Core {
    /// The runtime of the core.
    pub(crate) fn handle(&self) -> &Handle {
        &self.0
    }
}

impl<F> hyper::rt::Executor<F> for Core
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    #[test]
    fn connections_go_to_each_core_in_turn_beginning_with_the_first() {
        let runtime = NodeRuntime::per_core(3).unwrap();
        assert_eq!(runtime.cores(), 3);
        let main = thread_name();
        let places = runtime.block_on(async {
            let cores = Cores::current().expect("block_on runs on the first core");
            let mut places = Vec::new();
            for _ in 0..4 {
                let core = cores.next();
                let (tx, rx) = oneshot::channel();
                core.handle().spawn(async move {
                    // A task spawned from a core's task stays on that core.
                    let nested = tokio::spawn(async { thread_name() }).await.unwrap();
                    let _ = tx.send((thread_name(), nested));
                });
                places.push(rx.await.unwrap());
            }
            places
        });
        let names: Vec<_> = places.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [main.as_str(), "duologue-core-1", "duologue-core-2", &main]
        );
        assert!(places.iter().all(|(name, nested)| name == nested));
        runtime.shutdown_background();
    }

    #[test]
    fn outside_a_thread_per_core_runtime_there_are_no_cores() {
        assert!(Cores::current().is_none());
        let runtime = crate::settings::RuntimeFlavor::MultiThread.build().unwrap();
        assert_eq!(runtime.cores(), 1);
        assert!(runtime.block_on(async { Cores::current().is_none() }));
        runtime.shutdown_background();
    }
}
