//! Peer wake-ups. After a commit that other instances must deliver, the writer sends a one-byte UDP datagram to
//! the doorbell of every live peer (loopback addresses, registered in `instances.wake_addr` with each
//! heartbeat), and the peer's watcher reads at once instead of at its next poll: the 1 ms poll's 0.5 ms
//! average detection becomes a few tens of microseconds, and an instance that backed off to its idle interval
//! still sees the first message of a new burst at once.
//!
//! A hint, never a promise: a lost datagram, a peer not yet in the list, or instances that cannot reach each
//! other's loopback (separate network namespaces) only fall back to polling, which stays on. The datagram
//! carries nothing; whatever rings, the watcher only checks `PRAGMA data_version` and reads what is new.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::Progress;

/// This instance's doorbell: the socket peers ring, and from which it rings theirs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Doorbell {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
}

impl Doorbell {
    /// Binds a fresh loopback port.
    pub fn bind() -> io::Result<Doorbell> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        Ok(Doorbell { socket: Arc::new(socket), addr })
    }

    /// Where peers ring this instance.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Rings every peer; returns how many rings left. A peer that just went away (or a full receive buffer,
    /// which means it has plenty to read already) is not an error worth anything.
    pub fn ring(&self, peers: &[SocketAddr]) -> usize {
        peers.iter().filter(|peer| self.socket.send_to(&[1], peer).is_ok()).count()
    }

    /// Starts the thread that turns rings into watcher wake-ups. It ends when the watcher is stopped and
    /// [`Doorbell::ring_self`] unblocks it.
    pub fn listen(&self, progress: Arc<Progress>, received: metrics::Counter) -> io::Result<JoinHandle<()>> {
        let socket = self.socket.clone();
        std::thread::Builder::new().name("relay-doorbell".into()).spawn(move || {
            let mut buf = [0u8; 16];
            loop {
                match socket.recv(&mut buf) {
                    Ok(_) => {
                        received.increment(1);
                        if !progress.signal.ring() {
                            return;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    // ECONNREFUSED from an earlier send to a peer that was gone, reported on this socket.
                    Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(error) => {
                        tracing::warn!(%error, "peer wake-ups stopped; polling alone finds other instances' commits");
                        return;
                    }
                }
            }
        })
    }

    /// Unblocks the listening thread (after the watcher was told to stop).
    pub fn ring_self(&self) {
        let _ = self.ring(&[self.addr]);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_ring_wakes_the_watcher_and_stop_ends_the_listener() {
        let progress = Arc::new(Progress::default());
        let (ours, peer) = (Doorbell::bind().unwrap(), Doorbell::bind().unwrap());
        let listener = ours.listen(progress.clone(), metrics::Counter::noop()).unwrap();
        assert_eq!(peer.ring(&[ours.addr()]), 1);
        let woken = progress.signal.wait(Duration::from_secs(10));
        assert!(woken.rung, "the datagram reached the watcher's signal");
        progress.signal.stop();
        assert!(progress.signal.wait(Duration::ZERO).stop, "the watcher takes the stop");
        ours.ring_self();
        listener.join().unwrap();
    }
}
