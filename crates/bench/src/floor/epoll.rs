//! The floor server's readiness loop: epoll through mio, one thread.
//!
//! The system calls per request are those of sessiond's tokio handler and of memcached:
//! one `recv` (a short read means the socket is drained, as tokio assumes, so there is no
//! second `recv` returning `EAGAIN`), one `send` of everything answered, and a share of an
//! `epoll_wait`.
//!
//! mio's readiness is edge-triggered: a connection left with bytes unread gets no new event
//! for them. So a connection is only left in one of two states: drained (a short read or
//! `EAGAIN`; after an event that says the peer closed its side, only the end of the stream
//! counts, since its bytes and its close may come in one event), or waiting for its socket
//! to become writable (replies backed up past
//! [`MAX_QUEUED_OUTPUT`], which that writable event resumes). A connection that still had
//! data after [`READS_PER_TURN`] reads goes on a list served again before the next wait, so
//! that one busy client cannot keep the others waiting.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{Input, Replies, MAX_QUEUED_OUTPUT};

const LISTENER: Token = Token(usize::MAX);

/// Reads one connection may do before the others get their turn.
const READS_PER_TURN: usize = 16;

struct Connection {
    stream: TcpStream,
    input: Input,
    /// Replies not yet written, from `written` on.
    output: Vec<u8>,
    written: usize,
    /// The peer has closed its side (an event said so): read to the end of the stream, as
    /// a short read no longer means drained.
    peer_closed: bool,
    /// Nothing more is read (the stream ended, or a frame could not be read); the
    /// connection ends once the replies already owed are written.
    closing: bool,
}

/// Where [`serve_one`] left a connection.
#[derive(Debug, PartialEq, Eq)]
enum Left {
    /// Drained, or waiting for its writable event.
    Waiting,
    /// It had more to read when its turn ended: serve it again before the next wait.
    MoreToRead,
    /// The peer closed it, or it failed: drop it.
    Done,
}

/// Serves `listener` until an I/O error of the poll itself, calling `ready` once it polls.
pub fn serve(
    listener: std::net::TcpListener,
    replies: &Replies,
    ready: impl FnOnce(),
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut again: Vec<usize> = Vec::new();
    let mut turn: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    ready();
    loop {
        // Connections with more to read are served now: do not sleep while they wait.
        let timeout = (!again.is_empty()).then_some(std::time::Duration::ZERO);
        if let Err(error) = poll.poll(&mut events, timeout) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        turn.clear();
        turn.append(&mut again);
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut connections, &mut free);
                continue;
            }
            let slot = event.token().0;
            if let Some(Some(connection)) = connections.get_mut(slot) {
                // Kept on the connection: the event saying so is not repeated.
                connection.peer_closed |= event.is_read_closed();
                turn.push(slot);
            }
        }
        // A connection with more to read may have an event too: serve it once.
        turn.sort_unstable();
        turn.dedup();
        for &slot in &turn {
            let Some(Some(connection)) = connections.get_mut(slot) else {
                continue;
            };
            match serve_one(connection, replies) {
                Left::Waiting => {}
                Left::MoreToRead => again.push(slot),
                Left::Done => {
                    if let Some(mut gone) = connections[slot].take() {
                        let _ = poll.registry().deregister(&mut gone.stream);
                    }
                    free.push(slot);
                }
            }
        }
    }
}

/// Accepts until the backlog is empty. A connection that fails on its way in is dropped;
/// running out of descriptors leaves the rest of the backlog for the next connection's event.
fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    connections: &mut Vec<Option<Connection>>,
    free: &mut Vec<usize>,
) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        let _ = stream.set_nodelay(true);
        let slot = free.pop().unwrap_or_else(|| {
            connections.push(None);
            connections.len() - 1
        });
        if poll
            .registry()
            .register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            free.push(slot);
            continue;
        }
        connections[slot] = Some(Connection {
            stream,
            input: Input::new(),
            output: Vec::new(),
            written: 0,
            peer_closed: false,
            closing: false,
        });
    }
}

/// Writes what is owed, then reads what is there, answers it and writes the replies.
fn serve_one(connection: &mut Connection, replies: &Replies) -> Left {
    match flush(connection) {
        Ok(true) if connection.closing => return Left::Done,
        Ok(true) => {}
        Ok(false) => return Left::Waiting,
        Err(_) => return Left::Done,
    }
    for _ in 0..READS_PER_TURN {
        let spare = connection.input.spare();
        let room = spare.len();
        let drained = match connection.stream.read(spare) {
            // The peer is done sending: what it asked before is still answered.
            Ok(0) => return close(connection),
            Ok(n) => {
                connection.input.received(n);
                if connection
                    .input
                    .answer(replies, &mut connection.output)
                    .is_err()
                {
                    return close(connection);
                }
                n < room && !connection.peer_closed
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(_) => return Left::Done,
        };
        let backed_up = connection.output.len() - connection.written > MAX_QUEUED_OUTPUT;
        if drained || backed_up {
            return match flush(connection) {
                Ok(true) if !drained => Left::MoreToRead,
                Ok(_) => Left::Waiting,
                Err(_) => Left::Done,
            };
        }
    }
    match flush(connection) {
        Ok(true) => Left::MoreToRead,
        Ok(false) => Left::Waiting,
        Err(_) => Left::Done,
    }
}

/// Stops reading a connection: it ends now if its replies are all written, else when the
/// writable event that [`flush`] waits for has let them go.
fn close(connection: &mut Connection) -> Left {
    connection.closing = true;
    match flush(connection) {
        Ok(false) => Left::Waiting,
        Ok(true) | Err(_) => Left::Done,
    }
}

/// Writes the replies not yet written; whether all of them went. The rest goes when the
/// socket is writable again, whose event calls [`serve_one`].
fn flush(connection: &mut Connection) -> io::Result<bool> {
    while connection.written < connection.output.len() {
        match connection
            .stream
            .write(&connection.output[connection.written..])
        {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => connection.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    connection.output.clear();
    connection.written = 0;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floor::tests::requests;
    use crate::floor::READ_CHUNK;
    use bytes::Bytes;
    use sessiond_proto::command::Del;
    use sessiond_proto::Request;

    /// A server-side connection whose client has sent `count` DEL requests, and closed its
    /// side if `close`; with the client's end.
    fn connection_after(count: usize, close: bool) -> (Connection, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let del = Request::Del(Del {
            key: Bytes::from_static(b"session:01"),
            if_version: None,
        });
        let all: Vec<(Request, u32)> = (0..count).map(|i| (del.clone(), i as u32)).collect();
        client.write_all(&requests(&all)).unwrap();
        if close {
            client.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // Loopback delivers while the client writes; a moment more for a busy machine.
        std::thread::sleep(std::time::Duration::from_millis(100));
        server.set_nonblocking(true).unwrap();
        let connection = Connection {
            stream: TcpStream::from_std(server),
            input: Input::new(),
            output: Vec::new(),
            written: 0,
            peer_closed: close,
            closing: false,
        };
        (connection, client)
    }

    /// Requests filling a few reads and ending part-way through one, so that the last read
    /// is short.
    const COUNT: usize = 2 * READ_CHUNK / 26 + 7;

    #[test]
    fn a_short_read_ends_the_turn_of_an_open_connection() {
        let replies = Replies::new(10);
        let (mut connection, _client) = connection_after(COUNT, false);
        assert_eq!(serve_one(&mut connection, &replies), Left::Waiting);
        assert!(!connection.closing);
    }

    /// The close's event is not repeated: a connection whose peer has closed must be read to
    /// the end of the stream, not left at a short read, and every request before the close
    /// answered.
    #[test]
    fn a_closed_peer_is_read_to_the_end_and_answered() {
        let replies = Replies::new(10);
        let (mut connection, mut client) = connection_after(COUNT, true);
        assert_eq!(serve_one(&mut connection, &replies), Left::Done);
        drop(connection);
        let mut answered = Vec::new();
        client.read_to_end(&mut answered).unwrap();
        assert_eq!(answered.len(), COUNT * replies.del.len());
    }
}
