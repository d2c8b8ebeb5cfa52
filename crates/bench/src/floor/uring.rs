//! The floor server's submission loop: io_uring, one thread, one ring.
//!
//! Each connection keeps one receive in flight, and at most one send. The loop hands the
//! kernel everything it queued since the last turn and waits for completions in the same
//! `io_uring_enter`, so under load one system call carries the receives and sends of every
//! connection that was served in that turn, instead of a `recv` and a `send` each plus an
//! `epoll_wait`. The ring is made with `SINGLE_ISSUER` and `DEFER_TASKRUN` where the kernel
//! has them (6.1 and later): completions are then only processed inside that one call,
//! never by interrupting the thread.
//!
//! The kernel's work per packet (TCP over loopback, waking the peer) is the same as with
//! epoll; what this can save is the system calls' own entry and exit, and the readiness
//! round trip.
//!
//! The one module of the load generator with `unsafe`: io_uring's submissions carry raw
//! pointers into buffers the kernel reads or fills later, which no safe API can check, and
//! an accepted descriptor arrives as a bare integer. The invariants are stated where each
//! block is.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{Input, Replies, MAX_QUEUED_OUTPUT};

/// Submission queue entries; the completion queue gets four times as many.
const ENTRIES: u32 = 4096;

/// Completions handled per turn at most. Each can queue at most two entries (a send and the
/// next receive, or a cancel), so a turn takes no more than half the room left in the
/// submission queue (less than all of it if a submission left entries behind), and entries
/// are only ever submitted at the top of the loop.
const COMPLETIONS_PER_TURN: usize = ENTRIES as usize / 2 - 1;

/// The longest send submitted at once; the rest follows when it completes. Keeps the
/// length inside the entry's `u32`.
const MAX_SEND: usize = 1 << 30;

/// The oldest kernel with everything used here (multishot accept came in Linux 5.19).
const MIN_KERNEL: (u32, u32) = (5, 19);

// What a completion is for, in the low bits of its user data; the connection's slot is in
// the rest.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const CANCEL: u64 = 3;
const KIND_BITS: u32 = 2;

/// `IORING_RECVSEND_POLL_FIRST`: wait for data before trying to receive. A receive is armed
/// right after the last one drained the socket, so trying at once would only fail with
/// `EAGAIN` and then wait anyway: one wasted attempt per request, the `recv` that tokio's
/// short-read rule saves the epoll path.
const RECV_POLL_FIRST: u16 = 1;

struct Connection {
    stream: TcpStream,
    input: Input,
    /// Replies answered while a send was in flight.
    queued: Vec<u8>,
    /// The buffer a send in flight reads from (from `sent` on); untouched until it completes.
    sending: Vec<u8>,
    sent: usize,
    receiving: bool,
    in_send: bool,
    /// No more receives: the peer closed its side, or sent a frame that cannot be read.
    /// Replies already answered are still sent.
    closing: bool,
    /// A send failed: nothing more is sent either.
    failed: bool,
}

impl Connection {
    fn unsent(&self) -> usize {
        self.sending.len() - self.sent.min(self.sending.len()) + self.queued.len()
    }
}

/// A ring and the connections it serves.
struct Server<'a> {
    ring: IoUring,
    listener: std::net::TcpListener,
    replies: &'a Replies,
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
}

/// Whether the running kernel is at least [`MIN_KERNEL`], from `/proc/sys/kernel/osrelease`
/// (`6.18.44-...`); `None` if that cannot be read.
fn kernel_is_recent_enough() -> Option<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().ok());
    let major = numbers.next()??;
    let minor = numbers.next()??;
    Some((major, minor) >= MIN_KERNEL)
}

/// Makes the ring, with the flags that keep completions inside `io_uring_enter` if the
/// kernel knows them. Fails where io_uring is missing or forbidden (Docker's default
/// seccomp profile refuses `io_uring_setup`) or the kernel is older than [`MIN_KERNEL`].
fn ring() -> io::Result<IoUring> {
    if kernel_is_recent_enough() == Some(false) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("needs Linux {}.{} or later", MIN_KERNEL.0, MIN_KERNEL.1),
        ));
    }
    let deferred = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(ENTRIES * 4)
        .build(ENTRIES);
    match deferred {
        Ok(ring) => Ok(ring),
        Err(_) => IoUring::builder().setup_cqsize(ENTRIES * 4).build(ENTRIES),
    }
}

/// Serves `listener` until an error of the ring itself, calling `ready` once the ring is
/// made (an error before that means io_uring is not available here).
pub fn serve(
    listener: std::net::TcpListener,
    replies: &Replies,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let ring = ring().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("io_uring is not available here ({e}); --io epoll works everywhere"),
        )
    })?;
    let mut server = Server {
        ring,
        listener,
        replies,
        connections: Vec::new(),
        free: Vec::new(),
    };
    server.arm_accept()?;
    ready();
    let mut completed: Vec<(u64, i32, u32)> = Vec::with_capacity(COMPLETIONS_PER_TURN);
    loop {
        match server.ring.submit_and_wait(1) {
            Ok(_) => {}
            // EBUSY: completions are waiting to be reaped, which is what comes next.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        completed.clear();
        let room = {
            let submission = server.ring.submission();
            submission.capacity() - submission.len()
        };
        // One entry of room is kept for re-arming the accept.
        let take = COMPLETIONS_PER_TURN.min(room.saturating_sub(1) / 2);
        completed.extend(
            server
                .ring
                .completion()
                .take(take)
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, result, flags) in &completed {
            let slot = (data >> KIND_BITS) as usize;
            match data & ((1 << KIND_BITS) - 1) {
                ACCEPT => server.accepted(result, flags)?,
                RECV => server.received(slot, result)?,
                SEND => server.sent(slot, result)?,
                // A cancel's own completion: the receive it cancelled completes separately.
                _ => {}
            }
        }
    }
}

impl Server<'_> {
    /// Queues an entry for the next submission. There is always room (see
    /// [`COMPLETIONS_PER_TURN`]); running out would be a bug here, reported as an error.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: the entry's buffer, if any, is a heap allocation owned by a connection in
        // `connections` (a `Vec<u8>` whose storage does not move when the `Connection`
        // itself moves), and the entry's descriptor is that connection's open socket, or the
        // listener, which lives as long as the server. A connection is only dropped by
        // `close_if_idle` once neither a receive nor a send is in flight (a cancel carries no
        // buffer). A receive buffer is only touched (`Input::spare`'s resize, `Input::answer`'s
        // move and shrink) in `arm_recv` and `received`, when no receive is in flight; a send
        // buffer is only cleared or swapped by `start_send` when no send is in flight. So the
        // buffer and the descriptor outlive the kernel's use of them.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("submission queue full"))
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT);
        self.push(entry)
    }

    fn accepted(&mut self, result: i32, flags: u32) -> io::Result<()> {
        if result == -libc::EINVAL {
            return Err(io::Error::other(
                "io_uring refused a multishot accept: this kernel is too old",
            ));
        }
        if result >= 0 {
            // SAFETY: the kernel just created this descriptor for us, and nothing else owns it.
            let stream = unsafe { TcpStream::from_raw_fd(result) };
            let _ = stream.set_nodelay(true);
            let slot = self.free.pop().unwrap_or_else(|| {
                self.connections.push(None);
                self.connections.len() - 1
            });
            self.connections[slot] = Some(Connection {
                stream,
                input: Input::new(),
                queued: Vec::new(),
                sending: Vec::new(),
                sent: 0,
                receiving: false,
                in_send: false,
                closing: false,
                failed: false,
            });
            self.arm_recv(slot)?;
        } else if result != -libc::ECONNABORTED && result != -libc::EINTR {
            // Out of descriptors, most likely: retrying at once would spin until one is
            // closed. A pause stalls every connection, but only in that state.
            std::thread::sleep(Duration::from_millis(10));
        }
        // A multishot accept ends on an error: start another.
        if !cqueue::more(flags) {
            self.arm_accept()?;
        }
        Ok(())
    }

    /// Arms a receive unless one is in flight, the connection is closing, or its replies
    /// are backed up past [`MAX_QUEUED_OUTPUT`] (a completed send arms it again).
    fn arm_recv(&mut self, slot: usize) -> io::Result<()> {
        let Some(connection) = self.connections[slot].as_mut() else {
            return Ok(());
        };
        if connection.receiving || connection.closing || connection.unsent() > MAX_QUEUED_OUTPUT {
            return Ok(());
        }
        connection.receiving = true;
        let fd = types::Fd(connection.stream.as_raw_fd());
        let spare = connection.input.spare();
        let entry = opcode::Recv::new(fd, spare.as_mut_ptr(), spare.len() as u32)
            .ioprio(RECV_POLL_FIRST)
            .build()
            .user_data(user_data(slot, RECV));
        self.push(entry)
    }

    /// Sends what is owed, unless a send is in flight or one failed.
    fn start_send(&mut self, slot: usize) -> io::Result<()> {
        let Some(connection) = self.connections[slot].as_mut() else {
            return Ok(());
        };
        if connection.in_send || connection.failed {
            return Ok(());
        }
        if connection.sent >= connection.sending.len() {
            if connection.queued.is_empty() {
                return Ok(());
            }
            connection.sending.clear();
            connection.sent = 0;
            std::mem::swap(&mut connection.sending, &mut connection.queued);
        }
        connection.in_send = true;
        let fd = types::Fd(connection.stream.as_raw_fd());
        let rest = &connection.sending[connection.sent..];
        let len = rest.len().min(MAX_SEND) as u32;
        let entry = opcode::Send::new(fd, rest.as_ptr(), len)
            .build()
            .user_data(user_data(slot, SEND));
        self.push(entry)
    }

    fn received(&mut self, slot: usize, result: i32) -> io::Result<()> {
        let replies = self.replies;
        let Some(connection) = self.connections[slot].as_mut() else {
            return Ok(());
        };
        connection.receiving = false;
        if connection.closing || connection.failed {
            // Data that raced a cancel: the connection is on its way out.
            return self.close_if_idle(slot);
        }
        if result <= 0 {
            // 0: the peer closed its side; below 0: an error.
            connection.closing = true;
            if result < 0 {
                connection.failed = true;
            }
        } else {
            connection.input.received(result as usize);
            if connection
                .input
                .answer(replies, &mut connection.queued)
                .is_err()
            {
                connection.closing = true;
            }
        }
        self.start_send(slot)?;
        self.arm_recv(slot)?;
        self.close_if_idle(slot)
    }

    fn sent(&mut self, slot: usize, result: i32) -> io::Result<()> {
        let Some(connection) = self.connections[slot].as_mut() else {
            return Ok(());
        };
        connection.in_send = false;
        if result <= 0 {
            connection.failed = true;
            connection.closing = true;
        } else {
            connection.sent += result as usize;
        }
        self.start_send(slot)?;
        // Receiving stops while replies back up (see `arm_recv`); a completed send resumes it.
        self.arm_recv(slot)?;
        self.close_if_idle(slot)
    }

    /// Closes a connection that is closing once nothing is in flight and nothing more will
    /// be sent; a receive still waiting for data is cancelled first.
    fn close_if_idle(&mut self, slot: usize) -> io::Result<()> {
        let Some(connection) = self.connections[slot].as_ref() else {
            return Ok(());
        };
        if !connection.closing || connection.in_send {
            return Ok(());
        }
        if connection.unsent() > 0 && !connection.failed {
            return Ok(());
        }
        if connection.receiving {
            // The slot is not reused before the receive's completion arrives, and entries are
            // issued in the order they are queued, so the cancel cannot reach a later
            // connection's receive in the same slot.
            let entry = opcode::AsyncCancel::new(user_data(slot, RECV))
                .build()
                .user_data(user_data(slot, CANCEL));
            return self.push(entry);
        }
        self.connections[slot] = None;
        self.free.push(slot);
        Ok(())
    }
}

fn user_data(slot: usize, kind: u64) -> u64 {
    ((slot as u64) << KIND_BITS) | kind
}
