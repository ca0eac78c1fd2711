//! The threads and tasks a bus runs for as long as it is open (the SQLite writer, watcher and doorbell; the
//! Redis publisher and reader). One that ends before the bus closes (a panic, a bug) would leave the
//! instance looking alive while it commits or delivers nothing, so maintenance asks [`Workers::stopped`]
//! every heartbeat and stops the instance with the reason: a supervisor restarts it, and its clients resume
//! elsewhere meanwhile.

use std::sync::{Mutex, MutexGuard};

/// A bus's long-running threads and tasks.
#[derive(Default)]
pub struct Workers {
    /// std Mutex: taken to add, check or take the list, never across an await.
    list: Mutex<Vec<Worker>>,
}

struct Worker {
    name: &'static str,
    handle: Handle,
    /// Whether the bus is broken without it (the doorbell is only a hint: polling goes on without it).
    essential: bool,
}

enum Handle {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl Handle {
    fn is_finished(&self) -> bool {
        match self {
            Handle::Thread(thread) => thread.is_finished(),
            Handle::Task(task) => task.is_finished(),
        }
    }
}

impl Workers {
    fn list(&self) -> MutexGuard<'_, Vec<Worker>> {
        self.list.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A thread the bus cannot work without.
    pub fn thread(&self, name: &'static str, handle: std::thread::JoinHandle<()>) {
        self.list().push(Worker { name, handle: Handle::Thread(handle), essential: true });
    }

    /// A thread whose end only makes the bus slower (it is joined at close, never reported).
    pub fn helper_thread(&self, name: &'static str, handle: std::thread::JoinHandle<()>) {
        self.list().push(Worker { name, handle: Handle::Thread(handle), essential: false });
    }

    /// A task the bus cannot work without.
    pub fn task(&self, name: &'static str, handle: tokio::task::JoinHandle<()>) {
        self.list().push(Worker { name, handle: Handle::Task(handle), essential: true });
    }

    /// The first essential worker that has ended, if any: before `join_all`, that is a failure.
    pub fn stopped(&self) -> Option<&'static str> {
        self.list().iter().find(|worker| worker.essential && worker.handle.is_finished()).map(|worker| worker.name)
    }

    /// Waits for every worker to end (the bus told them to stop), threads on a blocking thread.
    pub async fn join_all(&self) {
        let workers = std::mem::take(&mut *self.list());
        for worker in workers {
            match worker.handle {
                Handle::Thread(thread) => drop(tokio::task::spawn_blocking(move || thread.join()).await),
                Handle::Task(task) => drop(task.await),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_that_ended_is_named_until_the_workers_are_joined() {
        let workers = Workers::default();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        workers.thread(
            "steady",
            std::thread::spawn(move || {
                let _ = stopped.recv();
            }),
        );
        workers.task("idle", tokio::spawn(std::future::pending()));
        assert_eq!(workers.stopped(), None);
        workers.thread("failing", std::thread::spawn(|| panic!("a bug")));
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while workers.stopped().is_none() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        waited.await.expect("the panicked thread is seen");
        assert_eq!(workers.stopped(), Some("failing"));
        drop(stop);
        workers.list().retain(|worker| !matches!(worker.handle, Handle::Task(_)));
        workers.join_all().await;
        assert_eq!(workers.stopped(), None, "joined workers are no longer watched");
    }
}
