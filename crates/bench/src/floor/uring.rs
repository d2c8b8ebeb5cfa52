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

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{Input, Replies};

/// Submission queue entries; the completion queue gets four times as many, since every
/// connection can have a receive and a send completing in the same turn.
const ENTRIES: u32 = 4096;

/// Replies waiting behind a send in flight beyond which a connection stops receiving until
/// the send completes: what a client that sends without reading can make the server hold.
const MAX_QUEUED_OUTPUT: usize = 4 * 1024 * 1024;

/// What a completion is for, in the low bits of its user data; the connection's slot is in
/// the rest.
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
    closing: bool,
}

/// A ring and the connections it serves.
struct Server<'a> {
    ring: IoUring,
    listener: std::net::TcpListener,
    replies: &'a Replies,
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
}

/// Makes the ring, with the flags that keep completions inside `io_uring_enter` if the
/// kernel knows them. Fails where io_uring is missing or forbidden (Docker's default
/// seccomp profile refuses `io_uring_setup`).
fn ring() -> io::Result<IoUring> {
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
    let mut completed: Vec<(u64, i32, u32)> = Vec::with_capacity(ENTRIES as usize * 4);
    loop {
        match server.ring.submit_and_wait(1) {
            Ok(_) => {}
            // EBUSY: the completion queue is full; draining it below is the remedy.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        completed.clear();
        completed.extend(
            server
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, result, flags) in &completed {
            let slot = (data >> KIND_BITS) as usize;
            match data & ((1 << KIND_BITS) - 1) {
                ACCEPT => server.accepted(result, flags)?,
                RECV => server.received(slot, result)?,
                SEND => server.sent(slot, result)?,
                _ => {}
            }
        }
    }
}

impl Server<'_> {
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points into belongs to a connection that stays
            // in `connections`, untouched, until the entry's completion (see `received`,
            // `sent` and `close_if_idle`).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT);
        self.push(entry)
    }

    fn accepted(&mut self, result: i32, flags: u32) -> io::Result<()> {
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
            });
            self.arm_recv(slot)?;
        }
        // A multishot accept ends on an error (out of descriptors, say): start another.
        if !cqueue::more(flags) {
            self.arm_accept()?;
        }
        Ok(())
    }

    fn arm_recv(&mut self, slot: usize) -> io::Result<()> {
        let Some(connection) = self.connections[slot].as_mut() else {
            return Ok(());
        };
        if connection.receiving || connection.closing {
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

    fn start_send(&mut self, slot: usize) -> io::Result<()> {
        let Some(connection) = self.connections[slot].as_mut() else {
            return Ok(());
        };
        if connection.in_send || connection.closing {
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
        let entry = opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
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
        if result <= 0 {
            // 0: the peer closed; below 0: an error, or the cancel from `close_if_idle`.
            connection.closing = true;
            return self.close_if_idle(slot);
        }
        connection.input.received(result as usize);
        if connection
            .input
            .answer(replies, &mut connection.queued)
            .is_err()
        {
            connection.closing = true;
            return self.close_if_idle(slot);
        }
        let backed_up = connection.queued.len() > MAX_QUEUED_OUTPUT;
        self.start_send(slot)?;
        if !backed_up {
            self.arm_recv(slot)?;
        }
        Ok(())
    }

    fn sent(&mut self, slot: usize, result: i32) -> io::Result<()> {
        let Some(connection) = self.connections[slot].as_mut() else {
            return Ok(());
        };
        connection.in_send = false;
        if result < 0 {
            connection.closing = true;
        }
        if connection.closing {
            return self.close_if_idle(slot);
        }
        connection.sent += result as usize;
        self.start_send(slot)?;
        // Receiving stops while replies back up (see `received`); a completed send resumes it.
        self.arm_recv(slot)
    }

    /// Closes a connection marked closing once nothing in flight points into it; a receive
    /// still waiting for data is cancelled first.
    fn close_if_idle(&mut self, slot: usize) -> io::Result<()> {
        let Some(connection) = self.connections[slot].as_ref() else {
            return Ok(());
        };
        if connection.in_send {
            return Ok(());
        }
        if connection.receiving {
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
