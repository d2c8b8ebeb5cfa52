//! The floor server's readiness loop: epoll through mio, one thread.
//!
//! The system calls per request are those of sessiond's tokio handler and of memcached:
//! one `recv` (a short read means the socket is drained, as tokio assumes, so there is no
//! second `recv` returning `EAGAIN`), one `send` of everything answered, and a share of an
//! `epoll_wait`.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{Input, Replies};

const LISTENER: Token = Token(usize::MAX);

struct Connection {
    stream: TcpStream,
    input: Input,
    /// Replies not yet written, from `written` on.
    output: Vec<u8>,
    written: usize,
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
    let mut events = Events::with_capacity(1024);
    ready();
    loop {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut connections, &mut free)?;
                continue;
            }
            let slot = event.token().0;
            let Some(Some(connection)) = connections.get_mut(slot) else {
                continue;
            };
            if serve_one(connection, replies).is_err() {
                if let Some(mut gone) = connections[slot].take() {
                    let _ = poll.registry().deregister(&mut gone.stream);
                }
                free.push(slot);
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    connections: &mut Vec<Option<Connection>>,
    free: &mut Vec<usize>,
) -> io::Result<()> {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            // Out of descriptors or a connection reset while queued: this one is lost,
            // the listener is not.
            Err(_) => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let slot = free.pop().unwrap_or_else(|| {
            connections.push(None);
            connections.len() - 1
        });
        poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        connections[slot] = Some(Connection {
            stream,
            input: Input::new(),
            output: Vec::new(),
            written: 0,
        });
    }
}

/// Reads what is there, answers it and writes the replies. An error (or the peer's close)
/// means the connection is done. While earlier replies are still unwritten nothing more is
/// read, so a client that sends without reading cannot make the server buffer more.
fn serve_one(connection: &mut Connection, replies: &Replies) -> io::Result<()> {
    if !flush(connection)? {
        return Ok(());
    }
    loop {
        let spare = connection.input.spare();
        let room = spare.len();
        match connection.stream.read(spare) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                connection.input.received(n);
                connection
                    .input
                    .answer(replies, &mut connection.output)
                    .map_err(io::Error::other)?;
                if n < room {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    flush(connection).map(|_| ())
}

/// Writes the replies not yet written; whether all of them went. The rest goes when the
/// socket is writable again, whose event calls [`serve_one`].
fn flush(connection: &mut Connection) -> io::Result<bool> {
    while connection.written < connection.output.len() {
        match connection
            .stream
            .write(&connection.output[connection.written..])
        {
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
