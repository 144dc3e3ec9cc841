//! A bounded table of non-blocking, one-request connections, shared by the
//! control socket and the HTTP metrics endpoint.
//!
//! A connection reads one request (framed by the protocol's `frame`
//! function), waits for the driver's answer, writes it, shuts down its
//! sending side and closes once the peer has closed too. Reading and
//! writing-and-lingering each have a deadline; waiting for the driver has
//! none, since a step-down answer may follow a hook.
//!
//! Architecture Invariant: nothing here blocks or reads a clock; `now` comes
//! from the driver, and sockets are registered edge-triggered, so every
//! readiness event is followed by reading or writing until `WouldBlock`.

use std::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

/// A connection's handle, valid until the connection closes. A handle of a
/// closed connection never matches a later one in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId {
    slot: usize,
    generation: u64,
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client #{}", self.generation)
    }
}

/// A protocol's verdict on the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<R> {
    /// Not a whole request yet; read more.
    Incomplete,
    /// A whole request, for the driver.
    Request(R),
    /// Answer this at once and close, without asking the driver.
    Reject(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the request.
    Reading,
    /// The request went to the driver; waiting for `reply`.
    Waiting,
    /// Writing the answer.
    Writing,
    /// The answer is written and our side shut down; waiting for the peer to
    /// close, so that unread input does not reset the connection (and the
    /// answer with it) as a plain close would.
    Lingering,
}

/// Shutting down the sending side of a stream.
pub(crate) trait HalfClose {
    /// Sends end of stream; the peer still reads what was written before.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl HalfClose for mio::net::UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl HalfClose for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

#[derive(Debug)]
struct Conn<S> {
    stream: S,
    id: ClientId,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    phase: Phase,
    /// The peer shut down its sending side.
    read_closed: bool,
    deadline: Option<Instant>,
}

/// Up to `capacity` connections, with tokens `first_token..first_token + capacity`.
#[derive(Debug)]
pub(crate) struct Conns<S> {
    first_token: usize,
    slots: Vec<Option<Conn<S>>>,
    generation: u64,
    /// The longest request accepted, in bytes.
    input_limit: usize,
    /// How long reading a request or writing an answer may take.
    io_timeout: Duration,
}

impl<S> Conns<S>
where
    S: mio::event::Source + Read + Write + HalfClose,
{
    pub(crate) fn new(
        first_token: usize,
        capacity: usize,
        input_limit: usize,
        io_timeout: Duration,
    ) -> Conns<S> {
        Conns {
            first_token,
            slots: (0..capacity).map(|_| None).collect(),
            generation: 0,
            input_limit,
            io_timeout,
        }
    }

    /// Whether `t` is one of the connections' tokens.
    pub(crate) fn owns_token(&self, t: Token) -> bool {
        (self.first_token..self.first_token + self.slots.len()).contains(&t.0)
    }

    /// Open connections.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Takes a freshly accepted stream. Returns it back when the table is full.
    pub(crate) fn insert(
        &mut self,
        mut stream: S,
        registry: &Registry,
        now: Instant,
    ) -> Result<ClientId, S> {
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            return Err(stream);
        };
        let token = Token(self.first_token + slot);
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("control: cannot register a connection: {e}");
            return Err(stream);
        }
        self.generation += 1;
        let id = ClientId {
            slot,
            generation: self.generation,
        };
        self.slots[slot] = Some(Conn {
            stream,
            id,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            phase: Phase::Reading,
            read_closed: false,
            deadline: Some(now + self.io_timeout),
        });
        Ok(id)
    }

    /// Takes a stream that gets `answer` and nothing else (refused peers).
    /// Returns the stream back when the table is full.
    pub(crate) fn insert_answered(
        &mut self,
        stream: S,
        answer: Vec<u8>,
        registry: &Registry,
        now: Instant,
    ) -> Result<ClientId, S> {
        let id = self.insert(stream, registry, now)?;
        self.answer(id.slot, answer, registry, now);
        Ok(id)
    }

    /// Handles a readiness event on `t`; returns the request read, if one
    /// completed.
    pub(crate) fn on_event<R>(
        &mut self,
        t: Token,
        registry: &Registry,
        frame: impl Fn(&[u8], bool) -> Frame<R>,
    ) -> Option<(ClientId, R)> {
        let slot = t.0.checked_sub(self.first_token)?;
        let conn = self.slots.get_mut(slot)?.as_mut()?;
        let mut request = None;
        match conn.phase {
            Phase::Reading => match conn.read_request(self.input_limit) {
                Err(e) => {
                    log::debug!("control: {}: read failed: {e}", conn.id);
                    self.close(slot, registry);
                    return None;
                }
                Ok(()) => match frame(&conn.input, conn.read_closed) {
                    // A framer rejects over-long input itself; this is the
                    // backstop that keeps a connection from stalling.
                    Frame::Incomplete
                        if conn.read_closed || conn.input.len() >= self.input_limit =>
                    {
                        self.close(slot, registry);
                        return None;
                    }
                    Frame::Incomplete => {}
                    Frame::Request(r) => {
                        conn.phase = Phase::Waiting;
                        conn.deadline = None;
                        conn.input = Vec::new();
                        request = Some((conn.id, r));
                    }
                    Frame::Reject(answer) => {
                        conn.output = answer;
                        conn.phase = Phase::Writing;
                    }
                },
            },
            Phase::Waiting => {
                // Anything after the request is ignored, but reading it keeps
                // the edge-triggered registration armed.
                if conn.drain().is_err() {
                    self.close(slot, registry);
                    return None;
                }
            }
            Phase::Writing | Phase::Lingering => {
                if conn.drain().is_err() || (conn.phase == Phase::Lingering && conn.read_closed) {
                    self.close(slot, registry);
                    return None;
                }
            }
        }
        if conn.phase == Phase::Writing {
            self.flush(slot, registry);
        }
        request
    }

    /// Queues `answer` for the connection `id` and starts writing it; closes
    /// the connection once it is written. A closed `id` is ignored.
    pub(crate) fn reply(
        &mut self,
        id: ClientId,
        answer: Vec<u8>,
        registry: &Registry,
        now: Instant,
    ) {
        let Some(Some(conn)) = self.slots.get_mut(id.slot) else {
            log::debug!("control: {id} left before its answer");
            return;
        };
        if conn.id != id || conn.phase != Phase::Waiting {
            log::debug!("control: {id} left before its answer");
            return;
        }
        self.answer(id.slot, answer, registry, now);
    }

    /// Starts writing `answer` on the connection in `slot`, whatever it was
    /// doing: a request it is still sending is never read.
    fn answer(&mut self, slot: usize, answer: Vec<u8>, registry: &Registry, now: Instant) {
        let Some(Some(conn)) = self.slots.get_mut(slot) else {
            return;
        };
        conn.output = answer;
        conn.written = 0;
        conn.phase = Phase::Writing;
        conn.deadline = Some(now + self.io_timeout);
        self.flush(slot, registry);
    }

    /// Writes what the socket takes; once all is written, shuts down the
    /// sending side and lingers until the peer closes. Closes on error.
    fn flush(&mut self, slot: usize, registry: &Registry) {
        let Some(Some(conn)) = self.slots.get_mut(slot) else {
            return;
        };
        loop {
            if conn.written >= conn.output.len() {
                conn.output = Vec::new();
                let lingering = conn.stream.shutdown_write().is_ok()
                    && conn.drain().is_ok()
                    && !conn.read_closed;
                if lingering {
                    conn.phase = Phase::Lingering;
                } else {
                    self.close(slot, registry);
                }
                return;
            }
            match conn.stream.write(&conn.output[conn.written..]) {
                Ok(0) => {
                    self.close(slot, registry);
                    return;
                }
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("control: {}: write failed: {e}", conn.id);
                    self.close(slot, registry);
                    return;
                }
            }
        }
    }

    /// The earliest deadline of a connection that is reading or writing.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.slots.iter().flatten().filter_map(|c| c.deadline).min()
    }

    /// Closes every connection whose deadline has passed.
    pub(crate) fn on_timeout(&mut self, now: Instant, registry: &Registry) {
        for slot in 0..self.slots.len() {
            if let Some(conn) = &self.slots[slot] {
                if conn.deadline.is_some_and(|d| d <= now) {
                    log::debug!("control: {}: timed out while {:?}", conn.id, conn.phase);
                    self.close(slot, registry);
                }
            }
        }
    }

    /// Closes every connection.
    pub(crate) fn close_all(&mut self, registry: &Registry) {
        for slot in 0..self.slots.len() {
            self.close(slot, registry);
        }
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut conn) = self.slots[slot].take() {
            if let Err(e) = registry.deregister(&mut conn.stream) {
                log::debug!("control: {}: deregister failed: {e}", conn.id);
            }
        }
    }
}

impl<S: Read> Conn<S> {
    /// Reads until `WouldBlock`, end of stream, or `limit` bytes.
    fn read_request(&mut self, limit: usize) -> io::Result<()> {
        let mut buf = [0u8; 1024];
        while !self.read_closed && self.input.len() < limit {
            let room = (limit - self.input.len()).min(buf.len());
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => self.read_closed = true,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads and discards until `WouldBlock` or end of stream. A half-closed
    /// peer is fine: it may still read the answer.
    fn drain(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 1024];
        while !self.read_closed {
            match self.stream.read(&mut buf) {
                Ok(0) => self.read_closed = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::UnixStream;

    #[allow(clippy::disallowed_methods)] // the test's own clock
    fn clock() -> Instant {
        Instant::now()
    }

    /// Frames one line.
    fn line(input: &[u8], _eof: bool) -> Frame<Vec<u8>> {
        match input.iter().position(|&b| b == b'\n') {
            Some(end) => Frame::Request(input[..end].to_vec()),
            None => Frame::Incomplete,
        }
    }

    fn read_all(peer: &mut UnixStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// A refused peer gets its answer, and whatever it sends is never
    /// framed into a request.
    #[test]
    fn an_answered_connection_yields_no_request() {
        let poll = mio::Poll::new().expect("poll");
        let mut conns: Conns<UnixStream> = Conns::new(1, 2, 64, Duration::from_secs(5));
        let (ours, mut peer) = UnixStream::pair().expect("pair");
        peer.write_all(b"status\n").expect("write");
        let id = conns
            .insert_answered(
                ours,
                b"error: permission denied\n".to_vec(),
                poll.registry(),
                clock(),
            )
            .expect("room");
        let token = Token(1 + id.slot);
        assert_eq!(conns.on_event(token, poll.registry(), line), None);
        assert_eq!(read_all(&mut peer), b"error: permission denied\n");
        // It lingers until the peer closes, then goes.
        drop(peer);
        assert_eq!(conns.on_event(token, poll.registry(), line), None);
        assert_eq!(conns.len(), 0);
    }

    #[test]
    fn a_request_then_its_answer() {
        let poll = mio::Poll::new().expect("poll");
        let mut conns: Conns<UnixStream> = Conns::new(1, 2, 64, Duration::from_secs(5));
        let (ours, mut peer) = UnixStream::pair().expect("pair");
        let id = conns.insert(ours, poll.registry(), clock()).expect("room");
        let token = Token(1 + id.slot);
        assert_eq!(conns.on_event(token, poll.registry(), line), None);
        peer.write_all(b"status\nand more").expect("write");
        let (got, req) = conns
            .on_event(token, poll.registry(), line)
            .expect("a request");
        assert_eq!((got, req.as_slice()), (id, &b"status"[..]));
        assert_eq!(
            conns.next_timeout(),
            None,
            "no deadline while the driver works"
        );
        conns.reply(id, b"ok\n".to_vec(), poll.registry(), clock());
        assert_eq!(read_all(&mut peer), b"ok\n");
        // A second reply, or one to a stale id, does nothing.
        conns.reply(id, b"again\n".to_vec(), poll.registry(), clock());
        drop(peer);
        conns.on_event(token, poll.registry(), line);
        assert_eq!(conns.len(), 0);
        conns.reply(id, b"late\n".to_vec(), poll.registry(), clock());
    }
}
